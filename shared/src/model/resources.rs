//! What a node offers and a task asks for, shared by [`super::node`] and
//! [`super::service`]: CPU and memory ([`Resources`]) and the OS/architecture
//! pair ([`Platform`]).

use serde::{Deserialize, Serialize};

use super::is_zero_i64;

/// `Resources` (Docker's `ResourceObject`): a reservation, or what a node offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero_i64")]
    pub nano_cpus: i64,
    #[serde(rename = "MemoryBytes", skip_serializing_if = "is_zero_i64")]
    pub memory_bytes: i64,
}

/// An OS/architecture pair (`Description.Platform`, `Placement.Platforms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    /// e.g. `x86_64`, `aarch64`.
    #[serde(rename = "Architecture", skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(rename = "OS", skip_serializing_if = "String::is_empty")]
    pub os: String,
}
