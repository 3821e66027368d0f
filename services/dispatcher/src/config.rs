//! `shoal-dispatcher` configuration: flags, each also read from a `SHOAL_*` variable.

use clap::Parser;
use shoal_shared::config::{LeadershipArgs, NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// shoal's dispatcher (acts only on the store leader's node).
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-dispatcher", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub leadership: LeadershipArgs,

    /// This host's node ID (from `<data-dir>/node-id`), for logs and session ids.
    #[arg(long, env = "SHOAL_NODE_ID", default_value = "")]
    pub node_id: String,

    /// How long status reports and registrations are gathered into one store write, in milliseconds.
    #[arg(long, env = "SHOAL_FLUSH_MS", default_value_t = 50)]
    pub flush_ms: u64,

    /// The managers' key for secret data (`<data-dir>/secrets.key`, shared
    /// with this host's shoal-api; made when absent). Without it, tasks that
    /// use secrets cannot be given them.
    #[arg(long, env = "SHOAL_SECRETS_KEY")]
    pub secrets_key: Option<std::path::PathBuf>,
}

impl Config {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        self.nats.validate(&mut p);
        self.metrics.validate(&mut p);
        self.leadership.validate(&mut p);
        if self.flush_ms == 0 {
            p.push("--flush-ms / SHOAL_FLUSH_MS: must be at least 1");
        }
        p.into_result("shoal-dispatcher")
    }

    /// A working configuration for tests.
    pub fn for_test(nats_url: &str, store_replica: u64) -> Config {
        Config {
            nats: NatsArgs {
                nats_url: nats_url.to_string(),
            },
            metrics: MetricsArgs::default(),
            leadership: LeadershipArgs::for_test(store_replica),
            node_id: String::new(),
            flush_ms: 50,
            secrets_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together() {
        let mut c = Config::for_test("bogus", 0);
        c.flush_ms = 0;
        let msg = c.validate().unwrap_err();
        for needle in ["--store-replica", "--flush-ms", "bogus"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        Config::for_test("nats://127.0.0.1:4222", 1).validate().unwrap();
    }
}
