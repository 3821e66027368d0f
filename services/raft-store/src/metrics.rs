//! The replica's Prometheus metrics (served when `--metrics-addr` is set).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use shoal_shared::metrics::{histogram, register, BATCH_SIZES, LATENCY_SECONDS, SLOW_SECONDS};

pub struct Metrics {
    /// Raft term this replica is in.
    pub term: Gauge,
    /// 1 while this replica leads.
    pub is_leader: Gauge,
    /// Highest log index known committed (saved by openraft).
    pub commit_index: Gauge,
    /// Highest log index applied to the state machine.
    pub applied_index: Gauge,
    /// Last index in this replica's log.
    pub last_log_index: Gauge,
    /// Log entries of batched transactions this replica proposed as leader.
    pub proposals: Counter,
    /// Transactions per proposal.
    pub batch_size: Histogram,
    /// Append + fsync of log entries.
    pub log_flush_seconds: Histogram,
    /// Building and saving one snapshot.
    pub snapshot_seconds: Histogram,
}

/// The replica's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        term: register("shoal_store_term", "Raft term this replica is in.", Gauge::default()),
        is_leader: register(
            "shoal_store_is_leader",
            "1 while this replica leads, else 0.",
            Gauge::default(),
        ),
        commit_index: register(
            "shoal_store_commit_index",
            "Highest log index this replica knows committed.",
            Gauge::default(),
        ),
        applied_index: register(
            "shoal_store_applied_index",
            "Highest log index applied to the state machine.",
            Gauge::default(),
        ),
        last_log_index: register(
            "shoal_store_last_log_index",
            "Last index in this replica's log.",
            Gauge::default(),
        ),
        proposals: register(
            "shoal_store_proposals",
            "Log entries (batches of transactions) proposed by this replica as leader.",
            Counter::default(),
        ),
        batch_size: register(
            "shoal_store_proposal_batch_size",
            "Transactions per proposed log entry.",
            histogram(BATCH_SIZES),
        ),
        log_flush_seconds: register(
            "shoal_store_log_flush_seconds",
            "Writing and fsyncing appended log entries, in seconds.",
            histogram(LATENCY_SECONDS),
        ),
        snapshot_seconds: register(
            "shoal_store_snapshot_seconds",
            "Building and saving one snapshot, in seconds.",
            histogram(SLOW_SECONDS),
        ),
    })
}
