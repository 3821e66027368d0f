//! A small blocking HTTP/1.1 client for shoal-api over a unix socket or TCP
//! (one request per connection, `Connection: close`).
//!
//! [`Client::raw`] sends a request exactly as given (any method, path, headers
//! and body bytes) and returns status, headers and body, whatever the status;
//! the CLI's calls ([`Client::get`], [`Client::post`], ...) are built on it and
//! speak JSON under [`API_PREFIX`]. The cross-process tests use `raw` for the
//! requests no CLI sends (malformed bodies, odd headers).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The API version prefix every request uses.
pub const API_PREFIX: &str = "/v1.50";

/// How long a request may wait for the API's answer, unless [`Client::with_timeout`] says otherwise.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

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

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{p}"),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
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

/// Commands print an error as its text.
impl From<ApiError> for String {
    fn from(e: ApiError) -> String {
        e.to_string()
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
    timeout: Duration,
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

/// A response: status, headers (as sent, in order) and the body (de-chunked).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The first header of this name (any case) in a header list.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Client {
    pub fn new(host: Host) -> Client {
        Client {
            host,
            tls: None,
            timeout: READ_TIMEOUT,
        }
    }

    /// A client that speaks TLS to a TCP host.
    pub fn with_tls(host: Host, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Client {
        Client {
            tls,
            ..Client::new(host)
        }
    }

    /// How long to wait for an answer (30 s by default).
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client { timeout, ..self }
    }

    fn connect(&self) -> Result<Box<dyn Conn>, ApiError> {
        let cannot = |e: std::io::Error| {
            ApiError::Connect(format!(
                "Cannot connect to shoal-api at {}: {e}. Is shoal-api running? (set --host or SHOAL_HOST)",
                self.host
            ))
        };
        let timeout = Some(self.timeout);
        match &self.host {
            Host::Unix(p) => {
                let s = UnixStream::connect(p).map_err(cannot)?;
                s.set_read_timeout(timeout).ok();
                Ok(Box::new(s))
            }
            Host::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(cannot)?;
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

    /// Sends one request exactly as given: `path` as is (no [`API_PREFIX`]),
    /// `headers` in order, then the body bytes. Adds `Host` (unless given) and
    /// `Connection: close`; for a body, `Content-Type: application/json` and
    /// `Content-Length` unless `headers` declare a length or a transfer
    /// encoding. Returns the response whatever its status. A server may answer
    /// and close before it reads the whole body (a refused body): a failed
    /// write, or a reset after a complete answer, still gives that answer.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ApiError> {
        let mut conn = self.connect()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: shoal\r\n");
        }
        req.push_str("Connection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let framed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"));
        if let (Some(b), false) = (body, framed) {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let io = |e: std::io::Error| ApiError::Connect(format!("talking to shoal-api: {e}"));
        conn.write_all(req.as_bytes()).map_err(io)?;
        let written = match body {
            Some(b) => conn.write_all(b).and_then(|_| conn.flush()),
            None => conn.flush(),
        };
        let mut buf = Vec::new();
        let read = conn.read_to_end(&mut buf);
        // A TLS peer may close without close_notify, a refusing server may reset.
        let whole = |r: &Response| match &read {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::UnexpectedEof || complete(r),
        };
        match parse_response(&buf) {
            Some(r) if whole(&r) => Ok(r),
            _ => match written.and(read.map(|_| ())) {
                Err(e) => Err(io(e)),
                Ok(()) => Err(ApiError::Connect("malformed response from shoal-api".into())),
            },
        }
    }

    /// Sends one JSON request under [`API_PREFIX`]; returns the response whatever its status.
    pub fn send<B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Response, ApiError> {
        let payload = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::Connect(format!("encoding the request: {e}")))?;
        self.raw(method, &format!("{API_PREFIX}{path}"), &[], payload.as_deref())
    }

    /// Sends a request and decodes its JSON answer (`()` or [`Value`] take an
    /// empty one); an error status becomes [`ApiError::Daemon`].
    pub fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let r = self.send(method, path, body)?;
        if r.status >= 400 {
            let message = serde_json::from_slice::<ErrorBody>(&r.body)
                .ok()
                .and_then(|e| e.message)
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).trim().to_string());
            return Err(ApiError::Daemon {
                status: r.status,
                message,
            });
        }
        let bad = |e: serde_json::Error| ApiError::Connect(format!("bad JSON from shoal-api: {e}"));
        if r.body.iter().all(|b| b.is_ascii_whitespace()) {
            return serde_json::from_value(Value::Null).map_err(bad);
        }
        serde_json::from_slice(&r.body).map_err(bad)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call::<T, ()>("GET", path, None)
    }

    pub fn post<T: DeserializeOwned, B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<T, ApiError> {
        self.call("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call::<Value, ()>("DELETE", path, None).map(|_| ())
    }
}

/// Docker's error body, `{"message": "..."}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

/// Whether a response read up to an error is whole: its declared length arrived.
fn complete(r: &Response) -> bool {
    r.header("content-length")
        .and_then(|l| l.trim().parse::<usize>().ok())
        .is_some_and(|len| r.body.len() >= len)
}

fn parse_response(buf: &[u8]) -> Option<Response> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse::<u16>().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let raw = &buf[split + 4..];
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Some(Response { status, headers, body })
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
        assert_eq!(r.header("content-LENGTH"), Some("2"));
        assert!(complete(&r));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"OK");
        assert!(!complete(&r), "no declared length: not known to be whole");
        assert_eq!(urlencode("{\"a\":1}"), "%7B%22a%22%3A1%7D");
    }

    #[test]
    fn raw_requests_go_out_as_given() {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = [0u8; 3];
            reader.read_exact(&mut body).unwrap();
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nSwarm: inactive\r\nContent-Length: 17\r\n\r\n{\"message\":\"no\"}\n",
            )
            .unwrap();
            (head, body)
        });
        let c = Client::new(Host::Tcp(addr.to_string()));
        let r = c
            .raw("PUT", "/x?y=1", &[("Content-Length", "3"), ("X-A", "b")], Some(b"abc"))
            .unwrap();
        let (head, body) = server.join().unwrap();
        assert_eq!(
            head,
            "PUT /x?y=1 HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\nContent-Length: 3\r\nX-A: b\r\n\r\n"
        );
        assert_eq!(&body, b"abc");
        assert_eq!((r.status, r.header("swarm")), (400, Some("inactive")));
        assert_eq!(r.body, b"{\"message\":\"no\"}\n");
    }
}
