//! `shoal-raft-store` configuration: flags, each also read from a `SHOAL_*` variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shoal_shared::config::{NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// shoal's replicated object store (one Raft replica).
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-raft-store", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// This replica's Raft id (a positive integer, unique in the cluster).
    #[arg(long, env = "SHOAL_REPLICA_ID")]
    pub replica_id: u64,

    /// Directory for this replica's write-ahead log (`wal/`: log, vote) and snapshot file.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Start a new single-voter cluster with this replica, unless already initialized.
    #[arg(long, env = "SHOAL_INIT", conflicts_with = "peers")]
    pub init: bool,

    /// Start a new cluster with these voters (comma separated ids, including this one),
    /// unless already initialized. Every listed replica is given the same list; the
    /// lowest id initializes the cluster and the others wait to be contacted by it.
    #[arg(long, env = "SHOAL_PEERS", value_delimiter = ',')]
    pub peers: Vec<u64>,

    /// Build a snapshot and compact the log after this many applied entries.
    #[arg(long, env = "SHOAL_SNAPSHOT_INTERVAL", default_value_t = 10_000)]
    pub snapshot_interval: u64,

    /// Log entries kept behind a snapshot so slow followers can catch up without it.
    #[arg(long, env = "SHOAL_KEEP_LOGS", default_value_t = 500)]
    pub keep_logs: u64,

    /// Proposals (log entries of batched transactions) the leader keeps in
    /// flight at once. Fewer means bigger batches and less work per write;
    /// on two cores one did best (store bench: 16 and 64 clients).
    #[arg(long, env = "SHOAL_PROPOSALS_IN_FLIGHT", default_value_t = 1)]
    pub proposals_in_flight: usize,

    /// Accepted for compatibility and ignored: the store no longer uses sled
    /// (its state machine is in memory, its log in the WAL).
    #[arg(long, env = "SHOAL_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,

    /// Length of one Raft tick in milliseconds.
    #[arg(long, env = "SHOAL_TICK_MS", default_value_t = 1000)]
    pub tick_ms: u64,

    /// Heartbeat interval in ticks (Docker's `Heartbeat tick`).
    #[arg(long, env = "SHOAL_HEARTBEAT_TICK", default_value_t = 1)]
    pub heartbeat_tick: u64,

    /// Election timeout in ticks (Docker's `Election tick`); randomized up to twice this.
    #[arg(long, env = "SHOAL_ELECTION_TICK", default_value_t = 3)]
    pub election_tick: u64,
}

impl Config {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        self.nats.validate(&mut p);
        self.metrics.validate(&mut p);
        if self.cache_mb == 0 {
            p.push("--cache-mb / SHOAL_CACHE_MB: must be at least 1");
        }
        if self.proposals_in_flight == 0 {
            p.push("--proposals-in-flight / SHOAL_PROPOSALS_IN_FLIGHT: must be at least 1");
        }
        if self.replica_id == 0 {
            p.push("--replica-id / SHOAL_REPLICA_ID: must be a positive integer");
        }
        if !self.peers.is_empty() && !self.peers.contains(&self.replica_id) {
            p.push(format!(
                "--peers / SHOAL_PEERS: {:?} does not include this replica ({})",
                self.peers, self.replica_id
            ));
        }
        if self.peers.contains(&0) {
            p.push("--peers / SHOAL_PEERS: replica ids must be positive");
        }
        if self.snapshot_interval == 0 {
            p.push("--snapshot-interval / SHOAL_SNAPSHOT_INTERVAL: must be at least 1");
        }
        if self.tick_ms == 0 {
            p.push("--tick-ms / SHOAL_TICK_MS: must be at least 1");
        }
        if self.heartbeat_tick == 0 || self.election_tick <= self.heartbeat_tick {
            p.push(format!(
                "--election-tick ({}) must be greater than --heartbeat-tick ({}), which must be at least 1",
                self.election_tick, self.heartbeat_tick
            ));
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            p.push(format!(
                "--data-dir / SHOAL_DATA_DIR: cannot create {}: {e}",
                self.data_dir.display()
            ));
        }
        p.into_result("shoal-raft-store")
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.tick_ms * self.heartbeat_tick)
    }

    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.tick_ms * self.election_tick)
    }

    /// A working configuration for tests: fast ticks, small snapshots.
    pub fn for_test(replica_id: u64, data_dir: PathBuf, nats_url: &str) -> Config {
        Config {
            nats: NatsArgs {
                nats_url: nats_url.to_string(),
            },
            metrics: MetricsArgs::default(),
            replica_id,
            data_dir,
            init: true,
            peers: Vec::new(),
            snapshot_interval: 1000,
            keep_logs: 100,
            proposals_in_flight: 1,
            cache_mb: 64,
            tick_ms: 100,
            heartbeat_tick: 1,
            election_tick: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::for_test(0, dir.path().join("d"), "bogus");
        c.peers = vec![2, 3];
        c.init = false;
        c.election_tick = 1;
        c.proposals_in_flight = 0;
        let msg = c.validate().unwrap_err();
        for needle in [
            "--replica-id",
            "--peers",
            "--election-tick",
            "--proposals-in-flight",
            "bogus",
        ] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        let ok = Config::for_test(1, dir.path().join("d"), "nats://127.0.0.1:4222");
        ok.validate().unwrap();
    }

    #[test]
    fn flags_and_environment_parse() {
        let c = Config::try_parse_from([
            "shoal-raft-store",
            "--replica-id",
            "2",
            "--data-dir",
            "/tmp/x",
            "--peers",
            "1,2,3",
        ])
        .unwrap();
        assert_eq!(c.peers, vec![1, 2, 3]);
        assert_eq!(c.snapshot_interval, 10_000);
        assert_eq!(c.cache_mb, 64);
        assert_eq!(c.heartbeat(), Duration::from_secs(1));
        assert_eq!(c.election_timeout(), Duration::from_secs(3));
    }
}
