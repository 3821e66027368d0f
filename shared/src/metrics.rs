//! Prometheus metrics: one process-wide registry and the `/metrics` server.
//!
//! Each service keeps its metrics in a `metrics.rs` of its own: a struct of
//! `prometheus-client` counters, gauges and histograms built once (in a
//! `OnceLock`) and registered here with [`register`]. When `--metrics-addr` /
//! `SHOAL_METRICS_ADDR` is set, [`serve`] answers `GET /metrics` on that address
//! with the OpenMetrics text that Prometheus scrapes.
//!
//! Names follow Prometheus' conventions: `shoal_<component>_<thing>_<unit>`,
//! base units (seconds, bytes); counters are registered without their `_total`,
//! which the encoder appends.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Args;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::config::Problems;

/// Label set of a metric family: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Where to serve metrics (common to every service).
#[derive(Debug, Clone, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT, e.g. 127.0.0.1:9464); off when unset.
    #[arg(long = "metrics-addr", env = "SHOAL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl MetricsArgs {
    pub fn validate(&self, problems: &mut Problems) {
        if let Some(a) = &self.metrics_addr {
            if a.parse::<SocketAddr>().is_err() {
                problems.push(format!(
                    "--metrics-addr / SHOAL_METRICS_ADDR: {a:?} is not an IP:PORT address"
                ));
            }
        }
    }

    /// The validated address, if metrics are on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.metrics_addr.as_deref().and_then(|a| a.parse().ok())
    }
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
}

/// Registers `metric` under `name` in the process registry and returns it
/// (metrics are handles: the registry keeps a clone).
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: M) -> M {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .register(name, help, metric.clone());
    metric
}

/// A histogram with these bucket upper bounds.
pub fn histogram(buckets: &[f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

/// Builds each histogram of a [`HistogramFamily`] with the same buckets.
#[derive(Debug, Clone, Copy)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Histograms by label set (e.g. latency by operation).
pub type HistogramFamily = Family<Labels, Histogram, Buckets>;

/// A labelled family of histograms with these bucket upper bounds.
pub fn histogram_family(buckets: &'static [f64]) -> HistogramFamily {
    Family::new_with_constructor(Buckets(buckets))
}

/// Buckets for fast operations (an fsync, an HTTP request): 100 µs to ~3 s.
pub const LATENCY_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Buckets for slow operations (a pull, a container start, a snapshot): 1 ms to 2 min.
pub const SLOW_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets for batch sizes (entries or operations): 1 to 4096.
pub const BATCH_SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The registry as OpenMetrics text.
pub fn render() -> String {
    let mut out = String::new();
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

async fn metrics_handler() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(render())
}

/// Serves `GET /metrics` on `args`' address, if set, on the current actix
/// system until the process ends. Fails when the address cannot be bound.
pub fn serve(args: &MetricsArgs, program: &str) -> std::io::Result<()> {
    let Some(addr) = args.addr() else {
        return Ok(());
    };
    let server = HttpServer::new(|| App::new().route("/metrics", web::get().to(metrics_handler)))
        .workers(1)
        // The process' own shutdown_signal ends it; actix-web must not take SIGTERM.
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics-addr {addr}: {e}")))?
        .run();
    actix_web::rt::spawn(server);
    tracing::info!(%addr, "{program}: metrics at http://{addr}/metrics");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn counters_gauges_and_families_render_as_openmetrics() {
        let c: Counter = register("shoal_test_things", "Things.", Counter::default());
        c.inc_by(3);
        let g: Family<Labels, Gauge> = register("shoal_test_tasks", "Tasks by state.", Family::default());
        g.get_or_create(&vec![("state", "running".to_string())]).set(2);
        let h = register(
            "shoal_test_op_seconds",
            "Op latency.",
            histogram_family(LATENCY_SECONDS),
        );
        h.get_or_create(&vec![("op", "start".to_string())]).observe(0.002);
        let text = render();
        assert!(text.contains("shoal_test_things_total 3"), "{text}");
        assert!(text.contains("shoal_test_tasks{state=\"running\"} 2"), "{text}");
        assert!(text.contains("shoal_test_op_seconds_count{op=\"start\"} 1"), "{text}");
        let mut p = Problems::default();
        MetricsArgs {
            metrics_addr: Some("nope".into()),
        }
        .validate(&mut p);
        assert!(!p.is_empty());
    }
}
