//! The dispatcher's Prometheus metrics (served when `--metrics-addr` is set).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use shoal_shared::metrics::{histogram, register, SLOW_SECONDS};

pub struct Metrics {
    /// Agent sessions open on this (acting) dispatcher.
    pub sessions: Gauge,
    /// Heartbeats answered.
    pub heartbeats: Counter,
    /// Assignment messages pushed to agents (full sets and increments).
    pub assignments_pushed: Counter,
    /// Task status reports committed to the store.
    pub status_updates_written: Counter,
    /// Nodes marked down after missed heartbeats.
    pub nodes_marked_down: Counter,
    /// How much later than one heartbeat period after the session was last
    /// heard from a heartbeat arrived (0 when on time).
    pub heartbeat_lag_seconds: Histogram,
    /// Network views published to nodes (only views that changed).
    pub net_views_published: Counter,
}

/// The dispatcher's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        sessions: register(
            "shoal_dispatcher_sessions",
            "Agent sessions open on this dispatcher (0 while it does not act).",
            Gauge::default(),
        ),
        heartbeats: register(
            "shoal_dispatcher_heartbeats",
            "Agent heartbeats answered.",
            Counter::default(),
        ),
        assignments_pushed: register(
            "shoal_dispatcher_assignments_pushed",
            "Assignment sets sent to agents (full sets answered and increments pushed).",
            Counter::default(),
        ),
        status_updates_written: register(
            "shoal_dispatcher_status_updates_written",
            "Task status reports merged into committed store writes.",
            Counter::default(),
        ),
        nodes_marked_down: register(
            "shoal_dispatcher_nodes_marked_down",
            "Nodes marked down after missed heartbeats.",
            Counter::default(),
        ),
        heartbeat_lag_seconds: register(
            "shoal_dispatcher_heartbeat_lag_seconds",
            "How late a heartbeat came: time since the session was last heard from, beyond one heartbeat period.",
            histogram(SLOW_SECONDS),
        ),
        net_views_published: register(
            "shoal_dispatcher_net_views_published",
            "Network views published to nodes (a node's view is sent when it changed).",
            Counter::default(),
        ),
    })
}
