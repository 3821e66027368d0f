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
    /// User-defined resources (`--generic-resource gpu=2`), named or discrete.
    #[serde(rename = "GenericResources", skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<GenericResource>,
}

/// One `GenericResource`: exactly one of its two kinds is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenericResource {
    #[serde(rename = "NamedResourceSpec", skip_serializing_if = "Option::is_none")]
    pub named: Option<NamedGenericResource>,
    #[serde(rename = "DiscreteResourceSpec", skip_serializing_if = "Option::is_none")]
    pub discrete: Option<DiscreteGenericResource>,
}

/// `NamedResourceSpec`: one named unit of a kind (`gpu=UUID-1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NamedGenericResource {
    pub kind: String,
    pub value: String,
}

/// `DiscreteResourceSpec`: a count of a kind (`gpu=2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DiscreteGenericResource {
    pub kind: String,
    pub value: i64,
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
