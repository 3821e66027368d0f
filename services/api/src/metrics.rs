//! The API's Prometheus metrics (served when `--metrics-addr` is set):
//! requests by method, route pattern and status, and their latency.
//!
//! The route is the matched pattern (`/services/{id}`), never the raw path,
//! so the label values stay a small fixed set; requests no route matches
//! count as `unmatched`.

use std::sync::OnceLock;
use std::time::Instant;
use tracing::Instrument;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use futures::future::LocalBoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shoal_shared::metrics::{histogram_family, register, HistogramFamily, Labels, LATENCY_SECONDS};

pub struct Metrics {
    /// Requests answered, by method, route pattern and status code.
    pub requests: Family<Labels, Counter>,
    /// Time to the response head, by method and route pattern.
    pub request_seconds: HistogramFamily,
}

/// The API's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        requests: register(
            "shoal_api_requests",
            "Requests answered, by method, route pattern and status code.",
            Family::default(),
        ),
        request_seconds: register(
            "shoal_api_request_seconds",
            "Time from a request to its response head, by method and route pattern, in seconds.",
            histogram_family(LATENCY_SECONDS),
        ),
    })
}

/// Routes are mounted bare and under `/v{version}`: both count as the bare pattern.
const VERSION_SCOPE: &str = "/v{api_version:[0-9.]+}";

/// The label for a matched pattern (`None`: no route matched).
pub fn route_label(pattern: Option<String>) -> String {
    match pattern {
        None => "unmatched".to_string(),
        Some(p) => match p.strip_prefix(VERSION_SCOPE) {
            Some("") => "/".to_string(),
            Some(rest) => rest.to_string(),
            None => p,
        },
    }
}

fn record(method: &str, route: String, status: u16, started: Instant) {
    let m = metrics();
    m.request_seconds
        .get_or_create(&vec![("method", method.to_string()), ("route", route.clone())])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&vec![
            ("method", method.to_string()),
            ("route", route),
            ("status", status.to_string()),
        ])
        .inc();
}

/// Outermost middleware (`wrap_fn`): counts and times every request.
pub fn observe<S>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
    S::Future: 'static,
{
    let started = Instant::now();
    let method = req.method().to_string();
    // Matched against the resource map before routing (a clone of the
    // request kept across the call would stop the router from filling it in).
    let route = route_label(req.match_pattern());
    // The root of a request's trace (or the child of the caller's, when it
    // sends W3C `traceparent`): every store request the handler makes, and
    // everything they cause in other processes, hangs below it.
    let span = tracing::info_span!(
        "api.request",
        http.method = %method,
        http.route = route.as_str(),
        http.status_code = tracing::field::Empty
    );
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    shoal_shared::envelope::continue_traceparent(&span, traceparent.as_deref());
    let fut = span.in_scope(|| srv.call(req));
    Box::pin(
        async move {
            let res = fut.await;
            let status = match &res {
                Ok(r) => r.status().as_u16(),
                Err(e) => e.as_response_error().status_code().as_u16(),
            };
            tracing::Span::current().record("http.status_code", status);
            record(&method, route, status, started);
            res
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_and_bare_routes_share_a_label() {
        assert_eq!(
            route_label(Some("/v{api_version:[0-9.]+}/services/{id}".into())),
            "/services/{id}"
        );
        assert_eq!(route_label(Some("/services/{id}".into())), "/services/{id}");
        assert_eq!(route_label(None), "unmatched");
    }
}
