//! Tracing setup shared by every binary.
//!
//! - Logs go to stderr through `tracing-subscriber`; the filter comes from
//!   `SHOAL_LOG` (or `RUST_LOG`), default `info`; `SHOAL_LOG_FORMAT=json` gives JSON lines.
//! - Spans are exported over OTLP (gRPC) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - `SHOAL_TRACE_FILE=/path` also writes each finished span as one JSON line
//!   (`trace_id`, `span_id`, `parent_span_id`, `name`, `service`): a collector-free
//!   way for tests and operators to follow one trace across processes.
//! - W3C trace context is the global propagator (see [`crate::envelope`]).
//! - JSON log lines carry `trace_id` and `span_id` of the span they were
//!   written in, when that span is exported (so a log line leads to its trace).

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
                "attributes": span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "links": span
                    .links
                    .iter()
                    .map(|l| [l.span_context.trace_id().to_string(), l.span_context.span_id().to_string()])
                    .collect::<Vec<_>>(),
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
    let fmt_json = json.then(|| json_layer(std::io::stderr));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_plain)
        .with(fmt_json)
        .try_init();
    Telemetry { provider }
}

/// tracing-subscriber's JSON log lines with the OpenTelemetry `trace_id` and
/// `span_id` of the span each was written in, written to `writer`.
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let dispatch = DispatchSlot::default();
    tracing_subscriber::fmt::layer()
        .event_format(JsonWithTrace {
            format: tracing_subscriber::fmt::format().json(),
            dispatch: dispatch.clone(),
        })
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .with_writer(writer)
        .and_then(CaptureDispatch(dispatch))
}

/// The subscriber this process logs through, once it is registered: a span's
/// OpenTelemetry context is looked up through it (`Span::current()` is not
/// available while an event is being written).
#[derive(Clone, Default)]
struct DispatchSlot(std::sync::Arc<std::sync::OnceLock<tracing::dispatcher::WeakDispatch>>);

struct CaptureDispatch(DispatchSlot);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        let _ = self.0 .0.set(dispatch.downgrade());
    }
}

struct JsonWithTrace {
    format: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    dispatch: DispatchSlot,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonWithTrace
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.format
            .format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| {
            let dispatch = self.dispatch.0.get()?.upgrade()?;
            otel_ids(&span.id(), &dispatch)
        });
        let Some((trace_id, span_id)) = ids else {
            return writer.write_str(&line);
        };
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line.trim_end()) {
            Ok(mut obj) => {
                obj.insert("trace_id".into(), trace_id.into());
                obj.insert("span_id".into(), span_id.into());
                writeln!(writer, "{}", serde_json::Value::Object(obj))
            }
            Err(_) => writer.write_str(&line),
        }
    }
}

/// The trace and span IDs of span `id`, when it is exported.
fn otel_ids(id: &tracing::span::Id, dispatch: &tracing::Dispatch) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;
    use std::sync::{Arc, Mutex};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_carry_the_trace_and_span_of_their_span() {
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(json_layer(move || writer.clone()));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 1, "outside any span");
            let span = tracing::info_span!("work", job = "x");
            span.in_scope(|| tracing::info!(n = 2, "inside"));
            let sc = span.context().span().span_context().clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let parsed: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(parsed.len(), 2, "{text}");
        assert_eq!(parsed[0]["fields"]["n"], 1);
        assert!(parsed[0].get("trace_id").is_none(), "no span, no ids: {}", parsed[0]);
        assert_eq!(parsed[1]["fields"]["n"], 2);
        assert_eq!(parsed[1]["span"]["job"], "x", "the JSON format's own fields are kept");
        assert_eq!(parsed[1]["trace_id"], trace_id.as_str());
        assert_eq!(parsed[1]["span_id"], span_id.as_str());
        assert_eq!(trace_id.len(), 32);
    }
}
