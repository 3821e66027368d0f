//! `shoal-scheduler` configuration: flags, each also read from a `SHOAL_*` variable.

use clap::Parser;
use shoal_shared::config::{LeadershipArgs, NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// shoal's orchestrator, allocator and scheduler (acts only on the store leader's node).
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-scheduler", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub leadership: LeadershipArgs,

    /// This host's node ID (from `<data-dir>/node-id`), for logs.
    #[arg(long, env = "SHOAL_NODE_ID", default_value = "")]
    pub node_id: String,

    /// Most operations per store transaction (a transaction also stays under ~1 MB).
    #[arg(long, env = "SHOAL_MAX_TX_OPS", default_value_t = 250)]
    pub max_tx_ops: usize,

    /// Transactions of one pass committed concurrently.
    #[arg(long, env = "SHOAL_TX_IN_FLIGHT", default_value_t = 8)]
    pub tx_in_flight: usize,
}

impl Config {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        self.nats.validate(&mut p);
        self.metrics.validate(&mut p);
        self.leadership.validate(&mut p);
        if self.max_tx_ops == 0 {
            p.push("--max-tx-ops / SHOAL_MAX_TX_OPS: must be at least 1");
        }
        if self.tx_in_flight == 0 {
            p.push("--tx-in-flight / SHOAL_TX_IN_FLIGHT: must be at least 1");
        }
        p.into_result("shoal-scheduler")
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
            max_tx_ops: 250,
            tx_in_flight: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together() {
        let mut c = Config::for_test("bogus", 0);
        c.max_tx_ops = 0;
        let msg = c.validate().unwrap_err();
        for needle in ["--store-replica", "--max-tx-ops", "bogus"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        Config::for_test("nats://127.0.0.1:4222", 1).validate().unwrap();
        let c = Config::try_parse_from(["shoal-scheduler", "--store-replica", "3"]).unwrap();
        assert_eq!(c.leadership.store_replica, 3);
    }
}
