//! `shoal-ingress` configuration: flags, each also read from a `SHOAL_*` variable.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use shoal_shared::config::{NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// shoal's routing mesh (one per host): listens on every service's
/// published port (publish mode ingress) and forwards to its tasks.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-ingress", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// This host's node ID (from `<data-dir>/node-id`): whose network view to follow.
    #[arg(long, env = "SHOAL_NODE_ID", default_value = "")]
    pub node_id: String,

    /// Wait for `docker swarm init`/`join` on this host, then take the node ID
    /// and the managers' NATS URLs from what it wrote there (as the agent does);
    /// close every published port and exit when the host leaves.
    #[arg(long, env = "SHOAL_SWARM_DIR")]
    pub swarm_dir: Option<std::path::PathBuf>,

    /// The address published ports listen on.
    #[arg(long, env = "SHOAL_PUBLISH_ADDR", default_value = "0.0.0.0")]
    pub publish_addr: IpAddr,

    /// A UDP flow (one client address) with no datagram either way for this long is forgotten, in milliseconds.
    #[arg(long, env = "SHOAL_INGRESS_UDP_IDLE_MS", default_value_t = 30_000)]
    pub udp_idle_ms: u64,

    /// How long a connect to one task may take before the next is tried, in milliseconds.
    #[arg(long, env = "SHOAL_INGRESS_CONNECT_TIMEOUT_MS", default_value_t = 2_000)]
    pub connect_timeout_ms: u64,
}

impl Config {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        // A joining host's NATS URLs come from its join (a worker has no
        // NATS server of its own: SHOAL_NATS_URL=none), as for the agent.
        if self.swarm_dir.is_none() {
            self.nats.validate(&mut p);
        }
        self.metrics.validate(&mut p);
        if self.node_id.is_empty() && self.swarm_dir.is_none() {
            p.push("--node-id / SHOAL_NODE_ID: required (this host's node ID) unless --swarm-dir is given");
        }
        if self.udp_idle_ms == 0 {
            p.push("--udp-idle-ms / SHOAL_INGRESS_UDP_IDLE_MS: must be at least 1");
        }
        if self.connect_timeout_ms == 0 {
            p.push("--connect-timeout-ms / SHOAL_INGRESS_CONNECT_TIMEOUT_MS: must be at least 1");
        }
        p.into_result("shoal-ingress")
    }

    pub fn udp_idle(&self) -> Duration {
        Duration::from_millis(self.udp_idle_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// A working configuration for tests.
    pub fn for_test(nats_url: &str, node_id: &str) -> Config {
        Config {
            nats: NatsArgs {
                nats_url: nats_url.to_string(),
            },
            metrics: MetricsArgs::default(),
            node_id: node_id.to_string(),
            swarm_dir: None,
            publish_addr: IpAddr::from([127, 0, 0, 1]),
            udp_idle_ms: 30_000,
            connect_timeout_ms: 2_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together() {
        let mut c = Config::for_test("bogus", "");
        c.udp_idle_ms = 0;
        let msg = c.validate().unwrap_err();
        for needle in ["--node-id", "--udp-idle-ms", "bogus"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        Config::for_test("nats://127.0.0.1:4222", "n1").validate().unwrap();
    }

    #[test]
    fn a_joining_host_needs_no_nats_url_of_its_own() {
        // A worker's shoal.env says SHOAL_NATS_URL=none; its join gives the URLs.
        let mut c = Config::for_test("none", "");
        assert!(c.validate().unwrap_err().contains("none"));
        c.swarm_dir = Some("/var/lib/shoal/swarm".into());
        c.validate().unwrap();
    }
}
