//! The routing mesh's Prometheus metrics (served when `--metrics-addr` is set).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use shoal_shared::metrics::{histogram, register, Labels, LATENCY_SECONDS};

pub struct Metrics {
    /// Connections (TCP) and flows (UDP) by `protocol` and `outcome`
    /// (`forwarded`, `no_backend`: no serving task or every connect failed).
    pub connections: Family<Labels, Counter>,
    /// Connections and UDP flows open now.
    pub active: Gauge,
    /// Bytes carried, by `direction` (`to_task`, `to_client`).
    pub bytes: Family<Labels, Counter>,
    /// How long a successful connect to a task took.
    pub connect_seconds: Histogram,
    /// Published ports listened on now.
    pub listeners: Gauge,
}

/// The mesh's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        connections: register(
            "shoal_ingress_connections",
            "Connections (TCP) and flows (UDP) through the routing mesh, by protocol and outcome.",
            Family::default(),
        ),
        active: register(
            "shoal_ingress_active_connections",
            "Connections and UDP flows open through the routing mesh.",
            Gauge::default(),
        ),
        bytes: register(
            "shoal_ingress_bytes",
            "Bytes carried by the routing mesh, by direction (to_task, to_client).",
            Family::default(),
        ),
        connect_seconds: register(
            "shoal_ingress_connect_seconds",
            "Time to connect to a task (successful connects).",
            histogram(LATENCY_SECONDS),
        ),
        listeners: register(
            "shoal_ingress_listeners",
            "Published ports this host listens on.",
            Gauge::default(),
        ),
    })
}

pub fn connection(protocol: &str, outcome: &str) {
    metrics()
        .connections
        .get_or_create(&vec![
            ("protocol", protocol.to_string()),
            ("outcome", outcome.to_string()),
        ])
        .inc();
}

pub fn bytes(direction: &str, n: u64) {
    if n > 0 {
        metrics()
            .bytes
            .get_or_create(&vec![("direction", direction.to_string())])
            .inc_by(n);
    }
}
