//! The API's public listeners: a thin front before actix for hijacked
//! requests.
//!
//! `docker exec -i`, `docker run -i` and `docker attach` send
//! `POST /exec/{id}/start` or `POST /containers/{id}/attach` with
//! `Upgrade: tcp`, then, after the engine's `101`, write stdin on the same
//! connection. actix' HTTP/1 parser hands only `Upgrade: websocket`
//! connections on as streams, so what the client writes after such a request
//! never reaches a handler. The front accepts every connection itself (TLS
//! too), reads the request line, and:
//! - for those two hijackable endpoints with an `Upgrade` header (the head
//!   parsed with `httparse`), connects to the engine's socket, writes the
//!   request (the path at the engine's API version, `Host: docker`) and then
//!   copies bytes both ways until either side closes, half-closes included
//!   (stdin's end reaches the engine);
//! - for everything else, copies the connection's bytes to and from actix on
//!   a private unix socket, so every other request (and a keep-alive
//!   connection's later requests) is actix' as before.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::engine::Engine;

/// How long the request line, then the rest of a hijack's head, may take;
/// past it the bytes read go to actix, whose own timeouts answer.
const HEAD_WAIT: Duration = Duration::from_secs(5);
/// The longest request line and head looked at.
const MAX_LINE: usize = 8 * 1024;
const MAX_HEAD: usize = 64 * 1024;

/// Where the front sends what it does not handle itself, and the engine.
pub struct Front {
    /// actix' private socket.
    pub inner: PathBuf,
    pub engine: Arc<Engine>,
}

impl Front {
    /// Serves a TCP listener, with TLS when `tls` is given.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (front, acceptor) = (self.clone(), acceptor.clone());
            actix_web::rt::spawn(async move {
                let _ = stream.set_nodelay(true);
                let done = match acceptor {
                    Some(a) => match tokio::time::timeout(HEAD_WAIT, a.accept(stream)).await {
                        Ok(Ok(tls)) => front.handle(tls).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
                    },
                    None => front.handle(stream).await,
                };
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "api connection ended");
                }
            });
        }
    }

    /// Serves a unix socket listener.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let front = self.clone();
            actix_web::rt::spawn(async move {
                if let Err(e) = front.handle(stream).await {
                    tracing::debug!(error = %e, "api connection ended");
                }
            });
        }
    }

    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(&self, mut client: S) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let line = read_until(&mut client, &mut buf, b"\r\n", MAX_LINE).await;
        if line.is_some_and(|end| hijackable(&buf[..end])) && self.engine.configured() {
            if let Some(end) = read_until(&mut client, &mut buf, b"\r\n\r\n", MAX_HEAD).await {
                if let Some(head) = upgrade_head(&buf[..end]) {
                    return self.hijack(client, head, &buf[end..]).await;
                }
            }
        }
        let mut inner = UnixStream::connect(&self.inner).await?;
        inner.write_all(&buf).await?;
        relay(client, inner).await
    }

    /// Passes a hijacked request to the engine and then the raw connection.
    async fn hijack<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut client: S,
        head: Head,
        rest: &[u8],
    ) -> std::io::Result<()> {
        let path = match self.engine.engine_path(&head.path).await {
            Ok(p) => p,
            Err(e) => {
                let body = serde_json::json!({ "message": e.message }).to_string();
                let status = e.status;
                let answer = format!(
                    "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    body.len()
                );
                return client.write_all(answer.as_bytes()).await;
            }
        };
        let mut engine = self.engine.connect_raw().await?;
        let mut out = format!("{} {path} HTTP/1.1\r\nHost: docker\r\n", head.method).into_bytes();
        for (name, value) in &head.headers {
            if !name.eq_ignore_ascii_case("host") {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(rest);
        engine.write_all(&out).await?;
        relay(client, engine).await
    }
}

/// Copies bytes both ways until the server side ends. The client's end of
/// sending (stdin's EOF) is passed on as a half-close and the answer still
/// flows; the server's end (actix closing a connection it timed out, an
/// exec that finished) closes the client's connection, even when that
/// client never closes its side.
async fn relay<C, S>(client: C, server: S) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut server_rx, mut server_tx) = tokio::io::split(server);
    let up = async {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        let _ = server_tx.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        let copied = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
        copied.map(drop)
    };
    tokio::select! {
        r = down => r,
        _ = up => Ok(()),
    }
}

/// Reads into `buf` until it holds `delim` (or `max` bytes, EOF, or
/// [`HEAD_WAIT`]); the offset after the first `delim`, if it came.
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, delim: &[u8], max: usize) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + HEAD_WAIT;
    loop {
        if let Some(at) = buf.windows(delim.len()).position(|w| w == delim) {
            return Some(at + delim.len());
        }
        if buf.len() >= max {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether a request line is `POST` to a hijackable engine endpoint
/// (`/exec/{id}/start`, `/containers/{id}/attach`, bare or under `/v{version}`).
fn hijackable(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = line.split_whitespace();
    let (Some("POST"), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    let path = target.split('?').next().unwrap_or_default();
    let path = match path.strip_prefix("/v") {
        Some(rest) => match rest.split_once('/') {
            Some((v, tail)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') => tail,
            _ => path.trim_start_matches('/'),
        },
        None => path.trim_start_matches('/'),
    };
    let segs: Vec<&str> = path.split('/').collect();
    matches!(segs.as_slice(), ["exec", id, "start"] | ["containers", id, "attach"] if !id.is_empty())
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    /// Path and query, as sent.
    path: String,
    headers: Vec<(String, Vec<u8>)>,
}

/// The head, when it asks for an upgrade (`Upgrade` and `Connection: upgrade`).
fn upgrade_head(raw: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(raw).ok()? else {
        return None;
    };
    let has = |name: &str, token: Option<&str>| {
        req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case(name)
                && token.is_none_or(|t| {
                    String::from_utf8_lossy(h.value)
                        .split(',')
                        .any(|v| v.trim().eq_ignore_ascii_case(t))
                })
        })
    };
    if !has("upgrade", None) || !has("connection", Some("upgrade")) {
        return None;
    }
    Some(Head {
        method: req.method?.to_string(),
        path: req.path?.to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exec_start_and_attach_posts_are_looked_at() {
        for yes in [
            "POST /v1.47/exec/abc/start HTTP/1.1",
            "POST /exec/abc/start HTTP/1.1",
            "POST /v1.41/containers/c1/attach?stream=1&stdin=1 HTTP/1.1",
        ] {
            assert!(hijackable(yes.as_bytes()), "{yes}");
        }
        for no in [
            "GET /v1.47/exec/abc/json HTTP/1.1",
            "POST /v1.47/services/create HTTP/1.1",
            "POST /v1.47/containers/c1/start HTTP/1.1",
            "POST /v1.47/exec//start HTTP/1.1",
            "POST /vx/exec/a/start/more HTTP/1.1",
        ] {
            assert!(!hijackable(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn a_head_is_taken_only_when_it_asks_to_upgrade() {
        let raw = b"POST /v1.47/exec/abc/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 2\r\n\r\n";
        let h = upgrade_head(raw).expect("an upgrade");
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/v1.47/exec/abc/start"));
        assert!(h.headers.iter().any(|(n, v)| n == "Content-Length" && v == b"2"));
        let plain = b"POST /v1.47/exec/abc/start HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
        assert!(upgrade_head(plain).is_none(), "no upgrade: actix answers it");
    }
}
