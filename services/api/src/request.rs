//! What handlers take from a request: the JSON body within the API's
//! limits ([`Body`]), query parameters, the `{id}` of a path, and [`Manager`], the
//! extractor of handlers that serve managers only.

use std::collections::HashMap;

use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;

use crate::error::{self, ApiError, ApiResult};
use crate::state::{AppState, Ctx};

/// A request's query parameters.
pub type Query = web::Query<HashMap<String, String>>;

/// The `{id}` of a path (also under `/v{api_version}/`, whose extra parameter is ignored).
#[derive(Debug, serde::Deserialize)]
pub struct IdPath {
    pub id: String,
}

/// Whether a boolean query parameter is set (`1`, `true`).
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The `version` query parameter (required for writes to versioned objects).
pub fn parse_version(q: &HashMap<String, String>) -> ApiResult<u64> {
    q.get("version")
        .ok_or_else(|| ApiError::bad_request("version: the version query parameter is required"))?
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("version: invalid version: not an unsigned integer"))
}

/// Checks that a request with a body says it is JSON, as Docker's `CheckForJSON`
/// does: no `Content-Type` is fine only without a body.
pub fn check_json_content_type(req: &HttpRequest) -> ApiResult<()> {
    let headers = req.headers();
    let ct = match headers.get(CONTENT_TYPE) {
        None => "",
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::bad_request("malformed Content-Type header: mime: invalid media parameter"))?,
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let chunked = headers
        .get(TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if ct.is_empty() && declared == 0 && !chunked {
        return Ok(());
    }
    let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media.is_empty() {
        return Err(ApiError::bad_request(format!(
            "malformed Content-Type header ({}): mime: no media type",
            error::clip(ct)
        )));
    }
    if media != "application/json" {
        return Err(ApiError::bad_request(format!(
            "unsupported Content-Type header ({}): must be 'application/json'",
            error::clip(ct)
        )));
    }
    Ok(())
}

/// Reads a JSON request body within the API's limits: its `Content-Type`
/// must say JSON, it may be at most `--max-body` bytes, and it must arrive
/// within `--body-timeout-ms` (a client that sends headers and then trickles
/// or stalls gets 408, and its connection is closed).
pub async fn read_body(req: &HttpRequest, payload: web::Payload, state: &AppState) -> ApiResult<web::Bytes> {
    check_json_content_type(req)?;
    read_limited(req, payload, state.max_body, state.body_timeout).await
}

/// Reads a request body of at most `limit` bytes within `timeout`. A declared
/// length over the limit is refused before reading anything; a streamed body
/// is cut off at the limit; a body still incomplete at the deadline gets 408.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
) -> ApiResult<web::Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?;
        if len > limit {
            return Err(too_large());
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = web::BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received in time: the whole body must arrive within {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
        };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A JSON request body, read by [`read_body`] (the API's size and time
/// limits, `Content-Type` checked). Put it after the handler's path and query
/// extractors, so that their errors come first.
pub struct Body(pub web::Bytes);

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl FromRequest for Body {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = web::Payload::from_request(&req, payload);
        Box::pin(async move {
            let state = app_state(&req)?;
            let payload = payload
                .await
                .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
            read_body(&req, payload, &state).await.map(Body)
        })
    }
}

/// The API's shared state, as every handler gets it.
fn app_state(req: &HttpRequest) -> ApiResult<web::Data<AppState>> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("the API's state is not configured"))
}

/// The swarm's cluster, for a handler that serves managers only: Docker's
/// 503 (`This node is not a swarm manager...`) otherwise. Put it after the
/// handler's other extractors: they are checked first, as the handlers did
/// before this existed (a malformed path or query is a 400 even on a worker).
/// Handlers that validate their body or filters before asking whether this
/// node is a manager call [`AppState::manager`] themselves, after validating.
pub struct Manager(pub Ctx);

impl FromRequest for Manager {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = app_state(req);
        Box::pin(async move { state?.manager().await.map(Manager) })
    }
}
