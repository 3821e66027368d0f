//! What `swarm init` and `/info` need from this host: its description
//! (hostname, platform, CPUs, memory). The root CA and join tokens are in
//! [`crate::certs`].

use shoal_shared::model::{EngineDescription, NodeDescription, Platform, PluginDescription, Resources};

/// This host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Total memory from `/proc/meminfo`, in bytes (0 when unknown).
pub fn memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<i64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
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
