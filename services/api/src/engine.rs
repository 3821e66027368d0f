//! The host's Docker Engine behind the API. On a Docker Swarm manager one
//! `DOCKER_HOST` serves both the swarm and the host's own engine; shoal-api
//! does the same by passing every request that is not a swarm one
//! (containers, exec, images, volumes, plugins, events, system, build, auth,
//! local-scope networks) to the engine's unix socket (`--engine`), with the
//! same listeners (and so the same TLS and client certificates) as the swarm
//! endpoints.
//!
//! The proxy is hyper's HTTP/1 client over a fresh unix connection per
//! request: bodies stream both ways (`docker logs -f`, `events`, pulls,
//! builds), and a hijacked request (`Upgrade: tcp`: `exec`, `attach`,
//! `docker run`) is answered `101` and the engine's raw stream is relayed
//! until it ends. Hijacked `exec start` and `attach` requests never get here:
//! the API's listeners hand those to the engine themselves, both ways, so
//! stdin reaches the engine too (see [`crate::front`]); this path remains
//! for other upgrades.
//!
//! The engine may speak an older API than shoal (1.50): a `/v1.NN/` path
//! above the engine's version is sent as the engine's version.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// A request body for the engine. The client's body reader lives on the
/// actix worker's thread (it is not `Send`), and so do the engine
/// connections, so this need not be `Send` either.
enum EngineBody {
    Empty,
    Full(Option<web::Bytes>),
    /// The client's body, streamed as it arrives.
    Client(web::Payload),
}

/// Where the host's engine listens, and what it said about its API version.
pub struct Engine {
    socket: Option<PathBuf>,
    version: tokio::sync::OnceCell<String>,
}

/// Hop-by-hop headers: never passed on by a proxy (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

impl Engine {
    /// `spec`: `unix:///path`, a bare path, or `none` (no engine).
    pub fn new(spec: &str) -> Engine {
        let spec = spec.trim();
        let socket = match spec {
            "" | "none" => None,
            s => Some(PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))),
        };
        Engine {
            socket,
            version: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether an engine is configured.
    pub fn configured(&self) -> bool {
        self.socket.is_some()
    }

    /// The engine's address as the errors name it.
    fn address(&self) -> String {
        match &self.socket {
            Some(p) => format!("unix://{}", p.display()),
            None => "none".into(),
        }
    }

    /// The answer for an engine endpoint when there is no engine.
    fn missing(&self, why: impl std::fmt::Display) -> ApiError {
        ApiError::unavailable(format!(
            "Cannot connect to the Docker daemon at {}: this endpoint is served by the host's Docker Engine, which \
             shoal-api passes it to ({why}); start the engine or give shoal-api --engine",
            self.address()
        ))
    }

    /// A fresh raw connection to the engine's socket (for hijacked requests).
    pub(crate) async fn connect_raw(&self) -> std::io::Result<tokio::net::UnixStream> {
        match &self.socket {
            Some(path) => tokio::net::UnixStream::connect(path).await,
            None => Err(std::io::Error::other("shoal-api was started with --engine none")),
        }
    }

    /// A fresh HTTP/1 connection to the engine; the connection runs on this thread.
    async fn connect(&self) -> ApiResult<hyper::client::conn::http1::SendRequest<EngineBody>> {
        let Some(path) = &self.socket else {
            return Err(self.missing("shoal-api was started with --engine none"));
        };
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| self.missing(e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.missing(e))?;
        actix_web::rt::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "engine connection ended");
            }
        });
        Ok(sender)
    }

    /// The engine's API version (asked once).
    async fn api_version(&self) -> ApiResult<String> {
        self.version
            .get_or_try_init(|| async {
                let (status, body) = self.call_raw("GET", "/version".into(), None).await?;
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if !status.is_success() {
                    return Err(engine_error(status, &v, &body));
                }
                Ok::<String, ApiError>(
                    v.get("ApiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or(crate::state::API_VERSION)
                        .to_string(),
                )
            })
            .await
            .cloned()
    }

    /// `path` with a `/v1.NN/` above the engine's version lowered to it.
    pub(crate) async fn engine_path(&self, path_and_query: &str) -> ApiResult<String> {
        let Some(rest) = path_and_query.strip_prefix("/v") else {
            return Ok(path_and_query.to_string());
        };
        let (version, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Ok(path_and_query.to_string());
        }
        let engine = self.api_version().await?;
        if crate::compare_versions(version, &engine).is_gt() {
            Ok(format!("/v{engine}{tail}"))
        } else {
            Ok(path_and_query.to_string())
        }
    }

    /// `GET path` from the engine as JSON (an error answer becomes an [`ApiError`] with its words).
    pub async fn get_json(&self, path: &str) -> ApiResult<Value> {
        let (status, body) = self.call("GET", path, None).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(engine_error(status, &v, &body));
        }
        Ok(v)
    }

    /// One whole request to the engine (for the answers shoal merges); `path`
    /// is sent under the engine's own API version.
    pub async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> ApiResult<(StatusCode, web::Bytes)> {
        let path = if path == "/version" {
            path.to_string()
        } else {
            format!("/v{}{path}", self.api_version().await?)
        };
        self.call_raw(method, path, body).await
    }

    async fn call_raw(&self, method: &str, path: String, body: Option<Vec<u8>>) -> ApiResult<(StatusCode, web::Bytes)> {
        let mut sender = self.connect().await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "docker");
        let body = match body {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                EngineBody::Full(Some(web::Bytes::from(b)))
            }
            None => EngineBody::Empty,
        };
        let req = req.body(body).map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| self.missing(e))?;
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.missing(e))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// An engine's error answer as an [`ApiError`] (its status and message).
pub fn engine_error(status: StatusCode, v: &Value, body: &[u8]) -> ApiError {
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ApiError::new(status, message)
}

/// Whether a request path (with or without `/v1.NN`) is a swarm one: those
/// are shoal's own, and an unknown one is Docker's 404, never the engine's.
pub fn is_swarm_path(path: &str) -> bool {
    let rest = match path.strip_prefix("/v") {
        Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => &r[r.find('/').unwrap_or(r.len())..],
        _ => path,
    };
    let first = rest.trim_start_matches('/').split('/').next().unwrap_or_default();
    matches!(
        first,
        "swarm"
            | "nodes"
            | "services"
            | "tasks"
            | "secrets"
            | "configs"
            | "distribution"
            | "_ping"
            | "version"
            | "info"
    )
}

/// The default service: a swarm path no route took is Docker's 404; every
/// other request is passed to the host's engine.
pub async fn passthrough(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    if is_swarm_path(req.path()) {
        return Ok(crate::page_not_found());
    }
    if let Some(rest) = req.path().strip_prefix("/v") {
        let version = rest.split('/').next().unwrap_or_default();
        if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if let Some(e) = crate::version_bounds(version) {
                return Err(e);
            }
        }
    }
    forward(&engine, &req, payload).await
}

/// Forwards `req` (streaming its body) and streams the engine's answer back.
pub async fn forward(engine: &Engine, req: &HttpRequest, payload: web::Payload) -> ApiResult<HttpResponse> {
    let mut sender = engine.connect().await?;
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = engine.engine_path(pq).await?;
    let hijack = req.headers().contains_key("upgrade");
    let mut out = hyper::Request::builder().method(req.method().as_str()).uri(path);
    for (name, value) in req.headers() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "host" {
            continue;
        }
        out = out.header(n, value.as_bytes());
    }
    out = out.header("Host", "docker");
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = req
        .headers()
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if let Some(len) = declared {
        out = out.header("Content-Length", len);
    }
    if hijack {
        out = out.header("Connection", "Upgrade").header(
            "Upgrade",
            req.headers().get("upgrade").map(|v| v.as_bytes()).unwrap_or(b"tcp"),
        );
    }
    let body = if declared.unwrap_or(0) > 0 || chunked {
        EngineBody::Client(payload)
    } else {
        EngineBody::Empty
    };
    let out = out.body(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut resp = sender.send_request(out).await.map_err(|e| engine.missing(e))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()) {
                answer.append_header((name.as_str(), v));
            }
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let upgraded = hyper::upgrade::on(&mut resp).await.map_err(|e| engine.missing(e))?;
        let upgrade = resp.headers().get("upgrade").map(|v| v.as_bytes().to_vec());
        let upgrade = actix_web::http::header::HeaderValue::from_bytes(upgrade.as_deref().unwrap_or(b"tcp"))
            .unwrap_or(actix_web::http::header::HeaderValue::from_static("tcp"));
        answer.insert_header(("Upgrade", upgrade));
        // The connection is the stream now: the client reads until it closes.
        answer.force_close();
        let mut res = answer.streaming(read_stream(TokioIo::new(upgraded)));
        res.head_mut().no_chunking(true);
        return Ok(res);
    }
    // No body may follow these (RFC 9110 6.4.1): a streamed one would be
    // sent chunked, and its `0\r\n\r\n` read by the client as a stray
    // answer on its idle connection (the docker CLI warned "Unsolicited
    // response received on idle HTTP channel" after `docker start`).
    if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || req.method() == actix_web::http::Method::HEAD
    {
        return Ok(answer.finish());
    }
    let stream = http_body_util::BodyStream::new(resp.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    });
    Ok(answer.streaming(stream))
}

/// The bytes of an upgraded connection, as they arrive.
fn read_stream<R: tokio::io::AsyncRead + Unpin + 'static>(
    reader: R,
) -> impl futures::Stream<Item = Result<web::Bytes, std::io::Error>> {
    futures::stream::unfold(Some(reader), |reader| async move {
        use tokio::io::AsyncReadExt;
        let mut reader = reader?;
        let mut buf = vec![0u8; 16 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(web::Bytes::from(buf)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

impl hyper::body::Body for EngineBody {
    type Data = web::Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<web::Bytes>, Self::Error>>> {
        match self.get_mut() {
            EngineBody::Empty => Poll::Ready(None),
            EngineBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            EngineBody::Client(p) => match p.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e.to_string())))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EngineBody::Empty => true,
            EngineBody::Full(b) => b.is_none(),
            EngineBody::Client(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            EngineBody::Empty => hyper::body::SizeHint::with_exact(0),
            EngineBody::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            EngineBody::Full(None) => hyper::body::SizeHint::with_exact(0),
            EngineBody::Client(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Whether an engine answered (for merged answers that work without one).
pub async fn optional_json(engine: &Engine, path: &str) -> Option<Value> {
    if !engine.configured() {
        return None;
    }
    match engine.get_json(path).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(path, error = %e, "engine not asked");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_paths_stay_with_shoal() {
        for p in [
            "/services",
            "/v1.50/services/x/update",
            "/nodes",
            "/v1.41/swarm/init",
            "/secrets",
            "/tasks/x",
        ] {
            assert!(is_swarm_path(p), "{p}");
        }
        for p in [
            "/containers/json",
            "/v1.50/images/json",
            "/exec/x/start",
            "/volumes",
            "/auth",
            "/vabc",
        ] {
            assert!(!is_swarm_path(p), "{p}");
        }
    }
}
