//! Helpers for the API tests: a real `shoal-api` process on a store cluster,
//! the real `docker` CLI pointed at it, the `shoal` CLI, and raw requests the
//! CLIs never send (malformed bodies, odd headers) through the `shoal` CLI's
//! own HTTP client ([`Client::raw`]).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_cli::client::{self, ApiError, Client, Host, Response};

use crate::{bin, free_port, Proc, StoreCluster};

/// How long a raw request waits for its answer.
const RAW_TIMEOUT: Duration = Duration::from_secs(15);

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

/// A raw HTTP response, its body as text (for assertions and messages).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<Response> for RawResponse {
    fn from(r: Response) -> RawResponse {
        RawResponse {
            status: r.status,
            body: String::from_utf8_lossy(&r.body).into_owned(),
            headers: r.headers,
        }
    }
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        client::header(&self.headers, name)
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
        Api::start_on(&store.nats.url(), dir, extra)
    }

    /// Starts `shoal-api` with `--nats-url nats_url` (`none`: a host that
    /// reaches NATS only once it has joined).
    pub fn start_on(nats_url: &str, dir: tempfile::TempDir, extra: &[&str]) -> Api {
        let port = free_port();
        let mut cmd = Command::new(bin("shoal-api"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SHOAL_LOG", "info")
            .args(["--nats-url", nats_url])
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

    pub fn try_raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<RawResponse, ApiError> {
        raw_request(self.port, method, path, body, &[])
    }

    /// The CLI's client for this API over its unix socket (as `shoal` talks to it).
    pub fn unix_client(&self) -> Client {
        Client::new(Host::Unix(self.socket().display().to_string())).with_timeout(RAW_TIMEOUT)
    }
}

/// One request on a fresh connection to `127.0.0.1:port`, as given (see
/// [`Client::raw`]), reading the whole response.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<RawResponse, ApiError> {
    tcp_client(port).raw(method, path, headers, body).map(RawResponse::from)
}

/// The CLI's client for the API on `127.0.0.1:port`.
fn tcp_client(port: u16) -> Client {
    Client::new(Host::Tcp(format!("127.0.0.1:{port}"))).with_timeout(RAW_TIMEOUT)
}

/// A store cluster of one replica and one API on it.
pub fn single_manager() -> (StoreCluster, Api) {
    let store = StoreCluster::start(1, &[]);
    let api = Api::start(&store, &[]);
    (store, api)
}
