//! The scheduler's Prometheus metrics (served when `--metrics-addr` is set).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use shoal_shared::metrics::{histogram, register, Labels, SLOW_SECONDS};
use shoal_shared::model::TaskState;

use crate::snapshot::Snapshot;

pub struct Metrics {
    /// One reconcile pass (on its blocking thread).
    pub pass_seconds: Histogram,
    /// Passes run.
    pub passes: Counter,
    /// Tasks by observed state in the snapshot of the last pass (0 while not acting).
    pub tasks: Family<Labels, Gauge>,
    /// Tasks the last pass could not place, by reason.
    pub pending_tasks: Family<Labels, Gauge>,
    /// Store operations committed.
    pub ops_written: Counter,
}

/// The scheduler's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        pass_seconds: register(
            "shoal_scheduler_pass_seconds",
            "One reconcile pass, in seconds.",
            histogram(SLOW_SECONDS),
        ),
        passes: register("shoal_scheduler_passes", "Reconcile passes run.", Counter::default()),
        tasks: register(
            "shoal_scheduler_tasks",
            "Tasks by observed state, from the snapshot the last pass read.",
            Family::default(),
        ),
        pending_tasks: register(
            "shoal_scheduler_pending_tasks",
            "Tasks the last pass left pending (no node fits), by the most common reason no node fit.",
            Family::default(),
        ),
        ops_written: register(
            "shoal_scheduler_ops_written",
            "Store operations the scheduler committed.",
            Counter::default(),
        ),
    })
}

/// Sets `shoal_scheduler_tasks{state}` from `snap` (every state, 0 when none).
pub fn count_tasks(snap: &Snapshot) {
    let mut counts = [0i64; TaskState::ALL.len()];
    for t in snap.tasks.values() {
        if let Some(i) = TaskState::ALL.iter().position(|s| *s == t.status.state) {
            counts[i] += 1;
        }
    }
    let m = metrics();
    for (s, n) in TaskState::ALL.iter().zip(counts) {
        m.tasks.get_or_create(&vec![("state", s.as_str().to_string())]).set(n);
    }
}

/// Zeroes the task gauges (a scheduler that stops acting no longer reports them).
pub fn clear() {
    let m = metrics();
    for s in TaskState::ALL {
        m.tasks.get_or_create(&vec![("state", s.as_str().to_string())]).set(0);
    }
    count_pending(&Default::default());
}

/// Sets `shoal_scheduler_pending_tasks{reason}` (every reason, 0 when none).
pub fn count_pending(by_reason: &std::collections::BTreeMap<&'static str, usize>) {
    let m = metrics();
    for r in crate::placement::PENDING_REASONS {
        let n = by_reason.get(r).copied().unwrap_or(0);
        m.pending_tasks
            .get_or_create(&vec![("reason", r.to_string())])
            .set(n as i64);
    }
}
