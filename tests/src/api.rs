//! Helpers for the API tests: a real `shoal-api` process on a store cluster,
//! the real `docker` CLI pointed at it, the `shoal` CLI, and a tiny raw
//! HTTP/1.1 client for requests the CLIs never send (malformed bodies).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{bin, free_port, Proc, StoreCluster};

/// A running `shoal-api` with its own data dir (so its own node ID).
pub struct Api {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub proc: Proc,
}

/// What a CLI run printed and how it ended.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with everything printed unless the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed: stdout={:?} stderr={:?}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed with `needle` in its stderr.
    pub fn fails_with(self, needle: &str) -> Run {
        assert_ne!(
            self.code, 0,
            "command succeeded but should fail: stdout={:?}",
            self.stdout
        );
        assert!(
            self.stderr.contains(needle),
            "stderr {:?} does not contain {needle:?}",
            self.stderr
        );
        self
    }

    /// Non-empty stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// A raw HTTP response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Api {
    /// Starts `shoal-api` on `store`'s NATS with loopback TCP and a socket in its data dir.
    pub fn start(store: &StoreCluster, extra: &[&str]) -> Api {
        let dir = tempfile::Builder::new()
            .prefix("shoal-api-")
            .tempdir()
            .expect("temp dir");
        Api::start_in(store, dir, extra)
    }

    pub fn start_in(store: &StoreCluster, dir: tempfile::TempDir, extra: &[&str]) -> Api {
        let port = free_port();
        let mut cmd = Command::new(bin("shoal-api"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SHOAL_LOG", "info")
            .args(["--nats-url", &store.nats.url()])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &format!("tcp://127.0.0.1:{port}")])
            .args(extra);
        let proc = Proc::spawn("shoal-api", cmd, &dir.path().join("api.log"));
        let mut api = Api { port, dir, proc };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = api.try_raw("GET", "/_ping", None) {
                if r.status == 200 {
                    break;
                }
            }
            assert!(!api.proc.exited(), "shoal-api exited: {}", api.log());
            assert!(
                Instant::now() < deadline,
                "shoal-api did not answer /_ping: {}",
                api.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.log")).unwrap_or_default()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("shoal.sock")
    }

    pub fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// This API's node ID (from its data dir).
    pub fn node_id(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node-id"))
            .expect("node-id file")
            .trim()
            .to_string()
    }

    /// Runs the real docker CLI against this API (over TCP).
    pub fn docker(&self, args: &[&str]) -> Run {
        self.docker_host(&self.host(), args)
    }

    /// Runs the real docker CLI with `DOCKER_HOST=host`.
    pub fn docker_host(&self, host: &str, args: &[&str]) -> Run {
        let cfg = self.dir.path().join("docker-config");
        let _ = std::fs::create_dir_all(&cfg);
        let out = Command::new("docker")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("DOCKER_CONFIG", &cfg)
            .env("DOCKER_HOST", host)
            .env("DOCKER_CLI_HINTS", "false")
            .args(args)
            .output()
            .expect("run docker");
        Run::from(out)
    }

    /// Runs the `shoal` CLI against this API's unix socket.
    pub fn shoal(&self, args: &[&str]) -> Run {
        self.shoal_host(&format!("unix://{}", self.socket().display()), args)
    }

    /// Runs the `shoal` CLI against `host`.
    pub fn shoal_host(&self, host: &str, args: &[&str]) -> Run {
        let out = Command::new(bin("shoal"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SHOAL_HOST", host)
            .args(args)
            .output()
            .expect("run shoal");
        Run::from(out)
    }

    /// One raw HTTP/1.1 request; panics on a transport error.
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> RawResponse {
        self.try_raw(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> std::io::Result<RawResponse> {
        raw_request(self.port, method, path, body, &[])
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), reading
/// the whole response.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_len = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"));
    if let (Some(b), false) = (body, has_len) {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(b) = body {
        // The server may refuse (and close) before reading a large body.
        let _ = s.write_all(b);
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(raw_body) } else { raw_body.to_vec() };
    Ok(RawResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
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

/// A store cluster of one replica and one API on it.
pub fn single_manager() -> (StoreCluster, Api) {
    let store = StoreCluster::start(1, &[]);
    let api = Api::start(&store, &[]);
    (store, api)
}
