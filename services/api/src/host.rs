//! What `swarm init` and `/info` need from this host: its description
//! (hostname, platform, CPUs, memory). The root CA and join tokens are in
//! [`crate::certs`].

use shoal_shared::model::{EngineDescription, NodeDescription, Platform, PluginDescription, Resources};

pub use shoal_shared::procfs::hostname;

/// Total memory, in bytes (0 when unknown).
pub fn memory_bytes() -> i64 {
    shoal_shared::procfs::mem_total_bytes()
}

/// CPUs available to this process.
pub fn cpus() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
}

/// This host as a node description.
pub fn description() -> NodeDescription {
    NodeDescription {
        hostname: hostname(),
        platform: Platform {
            architecture: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
        },
        resources: Resources {
            generic_resources: Vec::new(),
            nano_cpus: cpus() * 1_000_000_000,
            memory_bytes: memory_bytes(),
        },
        engine: EngineDescription {
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            labels: Default::default(),
            plugins: vec![PluginDescription {
                kind: "Network".into(),
                name: "overlay".into(),
            }],
        },
        tls_info: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_is_described() {
        assert!(description().resources.nano_cpus >= 1_000_000_000);
        assert!(memory_bytes() > 0);
    }
}
