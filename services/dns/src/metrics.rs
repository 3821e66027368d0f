//! shoal-dns' Prometheus metrics (served when `--metrics-addr` is set).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use shoal_shared::metrics::{histogram, register, Labels, LATENCY_SECONDS};

/// How a query ended (`shoal_dns_queries_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A cluster name answered with records.
    Answered,
    /// A cluster name without records of the asked type (empty NOERROR).
    NoData,
    /// Relayed from an upstream resolver (whatever its response code).
    Forwarded,
    /// No upstream answered: SERVFAIL.
    UpstreamFailed,
    /// Not a query shoal-dns answers (FORMERR, NOTIMP).
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Answered,
        Outcome::NoData,
        Outcome::Forwarded,
        Outcome::UpstreamFailed,
        Outcome::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NoData => "nodata",
            Outcome::Forwarded => "forwarded",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::Refused => "refused",
        }
    }
}

pub struct Metrics {
    /// Per outcome, in [`Outcome::ALL`] order (made once: no allocation per query).
    queries: Vec<Counter>,
    /// From a query's arrival to its answer being handed to the socket.
    pub answer_seconds: Histogram,
    /// The version of the network view the answers come from.
    pub view_version: Gauge,
    /// Views taken (newer than the one held).
    pub views_applied: Counter,
}

impl Metrics {
    pub fn query(&self, outcome: Outcome) {
        self.queries[outcome as usize].inc();
    }
}

/// shoal-dns' metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let family: Family<Labels, Counter> = register(
            "shoal_dns_queries",
            "DNS queries by outcome (answered, nodata, forwarded, upstream_failed, refused).",
            Family::default(),
        );
        let queries = Outcome::ALL
            .iter()
            .map(|o| family.get_or_create(&vec![("outcome", o.label().to_string())]).clone())
            .collect();
        Metrics {
            queries,
            answer_seconds: register(
                "shoal_dns_answer_seconds",
                "Time from a query's arrival to its answer, in seconds (forwarded queries included).",
                histogram(LATENCY_SECONDS),
            ),
            view_version: register(
                "shoal_dns_view_version",
                "The version (store index) of the network view shoal-dns answers from.",
                Gauge::default(),
            ),
            views_applied: register(
                "shoal_dns_views_applied",
                "Network views taken (each newer than the one held before).",
                Counter::default(),
            ),
        }
    })
}
