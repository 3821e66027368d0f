//! Cross-process test helpers: a real `nats-server` on a free loopback port,
//! shoal binaries started as real processes in temp dirs, killed on drop
//! (also when a test fails), and [`eventually`] to poll for a state with a
//! deadline instead of sleeping.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod api;
pub mod dev;
pub mod hosts;
pub mod orch;
pub mod otlp;
pub mod up;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of a shoal binary built by `cargo build --workspace` (ops/test does it).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/, tools in target/<profile>/; binaries in target/<profile>/.
    let here = exe.parent().expect("exe dir");
    let dir = if here.ends_with("deps") {
        here.parent().expect("target dir")
    } else {
        here
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`, as ops/test does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(self.pid(), sig);
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the exit; its status code (`None` when killed by a signal).
    pub fn wait_code(&mut self) -> Option<i32> {
        self.child.wait().ok()?.code()
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) process must be continued to die promptly.
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real nats-server on a free loopback port.
pub struct Nats {
    pub port: u16,
    _proc: Proc,
}

impl Nats {
    /// Starts nats-server with shoal's settings: 8 MiB payloads and fast
    /// detection of dead (or stopped) clients.
    pub fn start(dir: &Path) -> Nats {
        let port = free_port();
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 8MB\nping_interval: \"1s\"\nping_max: 2\nwrite_deadline: \"2s\"\n"
            ),
        )
        .expect("nats config");
        let mut cmd = Command::new(which("nats-server"));
        cmd.arg("-c").arg(&conf);
        let proc = Proc::spawn("nats-server", cmd, &dir.join("nats.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}; see {}",
                dir.join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats { port, _proc: proc }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> async_nats::Client {
        shoal_shared::config::connect(&self.url(), "shoal-test")
            .await
            .expect("connect to nats")
    }
}

/// Finds an executable on PATH, with a clear message when it is missing.
pub fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH: run ops/bootstrap"))
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with
/// the last state it reported.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("(not checked)");
    while start.elapsed() < deadline {
        match check().await {
            Ok(v) => return v,
            Err(state) => last = state,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {deadline:?} waiting for {what}; last state: {last}");
}

/// A cluster of `shoal-raft-store` replicas on one NATS server.
pub struct StoreCluster {
    pub dir: tempfile::TempDir,
    pub nats: Nats,
    pub ids: Vec<u64>,
    extra: Vec<String>,
    procs: BTreeMap<u64, Proc>,
    starts: BTreeMap<u64, u32>,
    env: BTreeMap<u64, Vec<(String, String)>>,
    joiners: std::collections::BTreeSet<u64>,
}

impl StoreCluster {
    /// Starts `n` replicas (ids 1..=n) as one cluster; `extra` flags go to each.
    pub fn start(n: u64, extra: &[&str]) -> StoreCluster {
        let dir = tempfile::Builder::new()
            .prefix("shoal-store-")
            .tempdir()
            .expect("temp dir");
        let nats = Nats::start(dir.path());
        let mut c = StoreCluster {
            dir,
            nats,
            ids: (1..=n).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            procs: BTreeMap::new(),
            starts: BTreeMap::new(),
            env: BTreeMap::new(),
            joiners: Default::default(),
        };
        for id in c.ids.clone() {
            c.spawn(id);
        }
        c
    }

    fn spawn(&mut self, id: u64) {
        let peers = self.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let data = self.dir.path().join(format!("replica-{id}"));
        let n = self.starts.entry(id).or_insert(0);
        *n += 1;
        let log = self.dir.path().join(format!("replica-{id}.{n}.log"));
        let mut cmd = Command::new(bin("shoal-raft-store"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SHOAL_LOG", "info")
            .args(["--replica-id", &id.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .args(["--nats-url", &self.nats.url()]);
        // Fast failover for tests (100 ms ticks, elections after 0.5-1 s),
        // unless the caller sets its own timing.
        for (flag, value) in [("--tick-ms", "100"), ("--election-tick", "5")] {
            if !self.extra.iter().any(|e| e == flag) {
                cmd.args([flag, value]);
            }
        }
        // The allocator's options (`MIMALLOC_*`, for measuring memory) pass through.
        for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")) {
            cmd.env(k, v);
        }
        for (k, v) in self.env.get(&id).into_iter().flatten() {
            cmd.env(k, v);
        }
        if self.joiners.contains(&id) {
            // Started empty: it joins when the leader adds it.
        } else if self.ids.len() == 1 {
            cmd.arg("--init");
        } else {
            cmd.args(["--peers", &peers]);
        }
        cmd.args(&self.extra);
        self.procs.insert(id, Proc::spawn(&format!("replica-{id}"), cmd, &log));
    }

    /// Sets an environment variable for the next start of replica `id`.
    pub fn set_env(&mut self, id: u64, key: &str, value: &str) {
        self.env
            .entry(id)
            .or_default()
            .push((key.to_string(), value.to_string()));
    }

    /// Starts an empty replica `id` that is not a member until the leader adds it.
    pub fn start_joiner(&mut self, id: u64) {
        self.joiners.insert(id);
        self.spawn(id);
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(p) = self.procs.remove(&id) {
            p.signal(Signal::SIGKILL);
            drop(p);
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    /// Whether replica `id`'s process (last started) has exited.
    pub fn exited(&mut self, id: u64) -> bool {
        self.procs.get_mut(&id).is_some_and(|p| p.exited())
    }

    /// The data dir of replica `id`.
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("replica-{id}"))
    }

    /// The output (log) of replica `id`'s last start.
    pub fn log_text(&self, id: u64) -> String {
        let n = self.starts.get(&id).copied().unwrap_or(0);
        std::fs::read_to_string(self.dir.path().join(format!("replica-{id}.{n}.log"))).unwrap_or_default()
    }

    /// The PID of replica `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<i32> {
        self.procs.get(&id).map(|p| p.pid().as_raw())
    }

    pub fn pause(&self, id: u64) {
        self.procs[&id].signal(Signal::SIGSTOP);
    }

    pub fn resume(&self, id: u64) {
        self.procs[&id].signal(Signal::SIGCONT);
    }

    pub async fn client(&self) -> shoal_shared::store::StoreClient {
        shoal_shared::store::StoreClient::new(self.nats.client().await)
    }

    /// Waits until a replica other than those in `not` is leader, as seen by
    /// the replicas that are up.
    pub async fn leader(&self, client: &shoal_shared::store::StoreClient, not: &[u64], deadline: Duration) -> u64 {
        let ids: Vec<u64> = self.ids.iter().copied().filter(|i| !not.contains(i)).collect();
        eventually(deadline, "a store leader", || {
            let ids = ids.clone();
            let client = client.with_deadline(Duration::from_millis(500));
            async move {
                let mut seen = Vec::new();
                for id in &ids {
                    match client.status(*id).await {
                        Ok(s) if s.state == "leader" && s.leader == Some(*id) => return Ok(*id),
                        Ok(s) => seen.push(format!("{id}: {} leader={:?}", s.state, s.leader)),
                        Err(e) => seen.push(format!("{id}: {e}")),
                    }
                }
                Err(seen.join("; "))
            }
        })
        .await
    }
}

/// Resident memory of a process in MiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_mb(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Bytes of the files under `dir`, in MiB.
pub fn dir_mb(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else { return 0 };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}

/// Prints the tail of every `*.log` in `dir` (for a failing test's output).
pub fn dump_logs(dir: &Path, lines: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        eprintln!("----- {} (last {lines} lines) -----", p.display());
        for l in &all[all.len().saturating_sub(lines)..] {
            eprintln!("{l}");
        }
    }
}

impl Drop for StoreCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(self.dir.path(), 40);
        }
    }
}

/// `GET /` of `addr` (`ip:port`) from this machine over HTTP/1.0: the
/// body's last line (the test servers answer one line).
pub fn http_get_last_line(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    match body.lines().last().map(str::trim) {
        Some(l) if !l.is_empty() => Ok(l.to_string()),
        _ => Err(format!("empty answer: {body:?}")),
    }
}
