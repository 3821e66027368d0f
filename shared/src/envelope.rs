//! How a message crosses NATS: a JSON body, and W3C trace context
//! (`traceparent`, `tracestate`) in the NATS headers so that a span opened in
//! one process continues in the process that handles the message.
//!
//! Replies are a [`Reply`]: `{"ok": ...}` or `{"err": ShoalError}`.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::{ErrorCode, ShoalError};

/// A reply to a request: the value or a typed error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Ok(T),
    Err(ShoalError),
}

impl<T> From<Result<T, ShoalError>> for Reply<T> {
    fn from(r: Result<T, ShoalError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

impl<T> Reply<T> {
    pub fn into_result(self) -> Result<T, ShoalError> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Err(e) => Err(e),
        }
    }
}

/// Encodes a message body.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing our own types to JSON cannot fail (no non-string map keys).
    Bytes::from(serde_json::to_vec(value).expect("message types serialize to JSON"))
}

/// Decodes a message body; a malformed one is an invalid-argument error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ShoalError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ShoalError::new(ErrorCode::InvalidArgument, format!("malformed message: {e}")))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Headers carrying the current span's trace context.
pub fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
    headers
}

/// Makes `span` a child of the trace context carried in `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(headers) = headers {
        if headers.get("traceparent").is_some() {
            let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
            let _ = span.set_parent(cx);
        }
    }
}

/// The W3C `traceparent` of `span` (`00-<trace>-<span>-<flags>`), to carry
/// in a message body where one message serves many traces (a store change
/// batch, an assignment per task, a status report); `None` when tracing
/// export is off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace context a [`traceparent`] gave, if any.
pub fn continue_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        let carrier = std::collections::HashMap::from([("traceparent".to_string(), tp.to_string())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(cx);
    }
}

/// Adds a link from `span` to the trace a [`traceparent`] gave: a span that
/// serves several traces at once (a scheduler pass over many changes, one
/// write of many status reports) is the child of one and links the others.
pub fn link_traceparent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    let carrier = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// The trace id (32 hex digits) of `span`, or `None` when tracing export is off.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Sends a request with trace headers and waits for a [`Reply`] within `timeout`.
///
/// No responder and timeouts are [`ErrorCode::Unavailable`] (retryable).
pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, ShoalError> {
    let request = async_nats::Request::new()
        .payload(encode(req))
        .headers(trace_headers())
        .timeout(Some(timeout));
    let msg = nats
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| request_error(&subject, timeout, e))?;
    decode::<Reply<Resp>>(&msg.payload)?.into_result()
}

/// Asks every subscriber of `subject` at once and returns the first `Ok`
/// reply; `None` once `expected` replies have come and none was `Ok`, or
/// when `timeout` passes (subscribers that never answer cost the timeout).
pub async fn first_ok<Req: Serialize, Resp: DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    req: &Req,
    expected: usize,
    timeout: Duration,
) -> Result<Option<Resp>, ShoalError> {
    first_ok_counted(nats, subject, req, async move { Some(expected) }, timeout).await
}

/// [`first_ok`] with the number of expected replies learned while the
/// replies come (`None`: unknown, wait for an `Ok` or the timeout), so
/// counting never holds up an answer.
pub async fn first_ok_counted<Req: Serialize, Resp: DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    req: &Req,
    expected: impl std::future::Future<Output = Option<usize>>,
    timeout: Duration,
) -> Result<Option<Resp>, ShoalError> {
    use futures::{FutureExt, StreamExt};
    let inbox = nats.new_inbox();
    let mut replies = nats
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ShoalError::unavailable(format!("subscribe {inbox}: {e}")))?;
    nats.publish_with_reply_and_headers(subject.clone(), inbox, trace_headers(), encode(req))
        .await
        .map_err(|e| ShoalError::unavailable(format!("publish {subject}: {e}")))?;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let expected = expected.fuse();
    tokio::pin!(expected);
    let mut counted: Option<usize> = None;
    let mut answered = 0;
    while counted.is_none_or(|n| answered < n) {
        tokio::select! {
            msg = replies.next() => {
                let Some(msg) = msg else { break };
                answered += 1;
                if let Ok(Reply::Ok(v)) = decode::<Reply<Resp>>(&msg.payload) {
                    return Ok(Some(v));
                }
            }
            n = &mut expected, if counted.is_none() => match n {
                Some(n) => counted = Some(n),
                // Unknown: wait for an answer or the timeout.
                None => counted = Some(usize::MAX),
            },
            _ = &mut deadline => break,
        }
    }
    Ok(None)
}

/// Answers a request message with `reply` (no-op for a message without a reply subject).
pub async fn respond<T: Serialize>(nats: &async_nats::Client, msg: &async_nats::Message, reply: &Reply<T>) {
    respond_with_headers(nats, msg, reply, HeaderMap::new()).await
}

/// Like [`respond`], with headers (e.g. [`LEADER_HEADER`]).
pub async fn respond_with_headers<T: Serialize>(
    nats: &async_nats::Client,
    msg: &async_nats::Message,
    reply: &Reply<T>,
    headers: HeaderMap,
) {
    if let Some(to) = &msg.reply {
        if let Err(e) = nats.publish_with_headers(to.clone(), headers, encode(reply)).await {
            tracing::warn!(error = %e, "could not send reply");
        }
    }
}

/// Reply header in which a store replica says which replica leads, so
/// clients can address the leader directly.
pub const LEADER_HEADER: &str = "Shoal-Leader";

/// Like [`request`], also returning the replier's [`LEADER_HEADER`] hint.
pub async fn request_with_leader<Req: Serialize, Resp: DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    req: &Req,
    timeout: Duration,
) -> (Result<Resp, ShoalError>, Option<u64>) {
    let request = async_nats::Request::new()
        .payload(encode(req))
        .headers(trace_headers())
        .timeout(Some(timeout));
    match nats.send_request(subject.clone(), request).await {
        Err(e) => (Err(request_error(&subject, timeout, e)), None),
        Ok(msg) => {
            let leader = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(LEADER_HEADER))
                .and_then(|v| v.as_str().parse().ok());
            (decode::<Reply<Resp>>(&msg.payload).and_then(Reply::into_result), leader)
        }
    }
}

fn request_error(subject: &str, timeout: Duration, e: async_nats::RequestError) -> ShoalError {
    use async_nats::RequestErrorKind::*;
    match e.kind() {
        NoResponders => ShoalError::unavailable(format!("no responder on {subject}")),
        TimedOut => ShoalError::unavailable(format!("request on {subject} timed out after {timeout:?}")),
        MaxPayloadExceeded | InvalidSubject => ShoalError::invalid(format!("request on {subject}: {e}")),
        Other => ShoalError::unavailable(format!("request on {subject}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_with_their_error_code() {
        let ok: Reply<u32> = Reply::Ok(7);
        let back: Reply<u32> = decode(&encode(&ok)).unwrap();
        assert_eq!(back.into_result().unwrap(), 7);
        let err: Reply<u32> = Reply::Err(ShoalError::no_quorum());
        let back: Reply<u32> = decode(&encode(&err)).unwrap();
        assert_eq!(back.into_result().unwrap_err().code, ErrorCode::NoQuorum);
        let bad = decode::<Reply<u32>>(b"{nope").unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn trace_context_survives_a_header_round_trip() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let mut headers = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
        assert_eq!(
            headers.get("traceparent").unwrap().as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        assert_eq!(
            back.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
