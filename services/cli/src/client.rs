//! A small blocking HTTP/1.1 client for shoal-api over a unix socket or TCP
//! (one request per connection, `Connection: close`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

/// The API version prefix every request uses.
pub const API_PREFIX: &str = "/v1.50";

/// Where shoal-api listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(String),
    Tcp(String),
}

impl Host {
    /// `unix:///path`, `tcp://host:port`, or a bare `host:port`.
    pub fn parse(s: &str) -> Result<Host, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(Host::Unix(p.to_string()));
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        if addr.contains(':') {
            Ok(Host::Tcp(addr.to_string()))
        } else {
            Err(format!("invalid host {s:?}: want unix:///path or tcp://HOST:PORT"))
        }
    }
}

/// An error from the API or the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The API answered with an error status and message.
    Daemon { status: u16, message: String },
    /// Could not talk to the API at all.
    Connect(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Daemon { message, .. } => write!(f, "Error response from daemon: {message}"),
            ApiError::Connect(m) => write!(f, "{m}"),
        }
    }
}

/// TLS settings for a TCP host (docker's `--tlscacert`, `--tlscert`, `--tlskey`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA that signed the API's certificate; TLS is used when set.
    pub ca: Option<std::path::PathBuf>,
    /// This client's certificate and key, for an API that verifies clients.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

pub struct Client {
    host: Host,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Builds a rustls client config: the API's CA as the only root, and the
/// client certificate when given.
pub fn tls_config(files: &TlsFiles) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &files.ca else {
        if files.cert.is_some() || files.key.is_some() {
            return Err("--tlscert/--tlskey need --tlscacert".into());
        }
        return Ok(None);
    };
    let read = |p: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("read {}: {e}", p.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("parse {}: {e}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in read(ca)? {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("read {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(read(cert)?, key)
                .map_err(|e| e.to_string())?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--tlscert and --tlskey go together".into()),
    };
    Ok(Some(std::sync::Arc::new(config)))
}

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Client {
    pub fn new(host: Host) -> Client {
        Client { host, tls: None }
    }

    /// A client that speaks TLS to a TCP host.
    pub fn with_tls(host: Host, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Client {
        Client { host, tls }
    }

    fn connect(&self) -> Result<Box<dyn Conn>, ApiError> {
        let timeout = Some(Duration::from_secs(30));
        match &self.host {
            Host::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| {
                    ApiError::Connect(format!(
                        "Cannot connect to shoal-api at unix://{p}: {e}. Is shoal-api running? (set --host or \
                         SHOAL_HOST)"
                    ))
                })?;
                s.set_read_timeout(timeout).ok();
                Ok(Box::new(s))
            }
            Host::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(|e| {
                    ApiError::Connect(format!(
                        "Cannot connect to shoal-api at tcp://{a}: {e}. Is shoal-api running? (set --host or \
                         SHOAL_HOST)"
                    ))
                })?;
                s.set_read_timeout(timeout).ok();
                let Some(tls) = &self.tls else {
                    return Ok(Box::new(s));
                };
                let host = a.rsplit_once(':').map(|(h, _)| h).unwrap_or(a);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| ApiError::Connect(format!("invalid TLS server name {host:?}: {e}")))?;
                let conn = rustls::ClientConnection::new(tls.clone(), name)
                    .map_err(|e| ApiError::Connect(format!("TLS: {e}")))?;
                Ok(Box::new(rustls::StreamOwned::new(conn, s)))
            }
        }
    }

    /// Sends one request; returns the response whatever its status.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, ApiError> {
        let mut conn = self.connect()?;
        let payload = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut req = format!("{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n");
        if let Some(p) = &payload {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                p.len()
            ));
        }
        req.push_str("\r\n");
        let io = |e: std::io::Error| ApiError::Connect(format!("talking to shoal-api: {e}"));
        conn.write_all(req.as_bytes()).map_err(io)?;
        if let Some(p) = &payload {
            conn.write_all(p).map_err(io)?;
        }
        let mut buf = Vec::new();
        if let Err(e) = conn.read_to_end(&mut buf) {
            // A TLS peer may close without close_notify after a complete response.
            if buf.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(io(e));
            }
        }
        parse_response(&buf).ok_or_else(|| ApiError::Connect("malformed response from shoal-api".into()))
    }

    /// Sends a request and decodes a JSON answer; an error status becomes [`ApiError::Daemon`].
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let r = self.send(method, path, body)?;
        if r.status >= 400 {
            let message = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).trim().to_string());
            return Err(ApiError::Daemon {
                status: r.status,
                message,
            });
        }
        if r.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).map_err(|e| ApiError::Connect(format!("bad JSON from shoal-api: {e}")))
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call("DELETE", path, None)
    }
}

fn parse_response(buf: &[u8]) -> Option<Response> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse::<u16>().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let raw = &buf[split + 4..];
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Some(Response { status, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_responses_parse() {
        assert_eq!(Host::parse("unix:///a/b.sock"), Ok(Host::Unix("/a/b.sock".into())));
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2375"),
            Ok(Host::Tcp("127.0.0.1:2375".into()))
        );
        assert!(Host::parse("nohost").is_err());
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, b"{}".as_slice()));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"OK");
        assert_eq!(urlencode("{\"a\":1}"), "%7B%22a%22%3A1%7D");
    }
}
