//! Tracing setup shared by every binary.
//!
//! - Logs go to stderr through `tracing-subscriber`; the filter comes from
//!   `SHOAL_LOG` (or `RUST_LOG`), default `info`; `SHOAL_LOG_FORMAT=json` gives JSON lines.
//! - Spans are exported over OTLP (gRPC) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - `SHOAL_TRACE_FILE=/path` also writes each finished span as one JSON line
//!   (`trace_id`, `span_id`, `parent_span_id`, `name`, `service`): a collector-free
//!   way for tests and operators to follow one trace across processes.
//! - W3C trace context is the global propagator (see [`crate::envelope`]).

use std::io::Write;
use std::sync::Mutex;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps span export running; flushes on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Writes finished spans as JSON lines to a file.
#[derive(Debug)]
struct FileExporter {
    service: String,
    file: Mutex<std::fs::File>,
}

impl SpanExporter for FileExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut out = Vec::new();
        for span in batch {
            let line = serde_json::json!({
                "service": self.service,
                "name": span.name,
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "parent_span_id": span.parent_span_id.to_string(),
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&out)
            .and_then(|_| f.flush())
            .map_err(|e| opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string()))
    }
}

/// Installs logging and tracing for the process `service` (e.g. `shoal-raft-store`).
///
/// Safe to call more than once: later calls keep the first subscriber.
pub fn init(service: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());

    let filter = std::env::var("SHOAL_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));

    let mut builder =
        SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service.to_string()).build());
    let mut exporting = false;
    if let Ok(path) = std::env::var("SHOAL_TRACE_FILE") {
        match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                builder = builder.with_simple_exporter(FileExporter {
                    service: service.to_string(),
                    file: Mutex::new(file),
                });
                exporting = true;
            }
            Err(e) => eprintln!("{service}: SHOAL_TRACE_FILE={path}: {e}; span file export is off"),
        }
    }
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                builder = builder.with_batch_exporter(exporter);
                exporting = true;
            }
            Err(e) => eprintln!("{service}: OTLP exporter: {e}; OTLP export is off"),
        }
    }

    let provider = exporting.then(|| builder.build());
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_string())));
    let json = std::env::var("SHOAL_LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let fmt_plain = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let fmt_json = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_plain)
        .with(fmt_json)
        .try_init();
    Telemetry { provider }
}
