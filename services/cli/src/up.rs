//! `shoal up`: a whole manager node on this machine, in the foreground.
//!
//! Starts `nats-server` and every shoal process of a manager node
//! (raft-store, scheduler, dispatcher, api, agent, plus `--extra-agents`
//! agents with their own node names, IDs and data dirs) as supervised
//! children: a child that dies is restarted with exponential backoff (0.5 s
//! doubling to 30 s, reset after it ran 60 s), each child's output goes to
//! `<data-dir>/logs/<name>.log`. When the API answers, the swarm is
//! initialized (unless `--no-init` or already active) and
//! `DOCKER_HOST=tcp://...` is printed. SIGINT/SIGTERM stop everything: the
//! shoal processes, then the store, then NATS, each SIGTERMed with a grace
//! period before SIGKILL; task processes left behind by agents are stopped
//! last. State stays in the data dir; the next `shoal up` resumes it.
//!
//! Process model: children stay in `shoal up`'s process group, so a Ctrl-C
//! on the terminal or a `kill -- -<pgid>` reaches all of them, also when
//! `shoal up` itself was SIGKILLed. `shoal up` is a child subreaper, so
//! tasks orphaned by an agent that died are reparented to it, reaped, and
//! stopped with the rest. Every child (and so every task) carries
//! `SHOAL_UP_DATA_DIR=<data-dir>` in its environment: a `shoal up` that was
//! SIGKILLed leaves its children running, and the next `shoal up` on that
//! data dir (holding `<data-dir>/up.lock`) finds them by it and kills them
//! before it starts its own. Stop signals are counted by handlers on a small
//! thread (a blocked signal mask would be inherited by the children); one
//! loop reaps children (`waitpid(-1)`) and runs the restart timers. No
//! unsafe code.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::json;
use shoal_shared::procfs;

use crate::client::{ApiError, Client, Host};

/// Where a local Docker Engine answers, if one runs.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long gets its backoff reset when it dies.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long each stop phase waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the API and the swarm before saying so.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Set on every child (and so on their tasks) to the data dir they belong to.
const OWNER_ENV: &str = "SHOAL_UP_DATA_DIR";
/// Variables the children must not inherit: `shoal up` sets all of these per child.
const CHILD_ENV_DROP: &[&str] = &[
    "SHOAL_NODE_ID",
    "SHOAL_NODE_NAME",
    "SHOAL_DATA_DIR",
    "SHOAL_NATS_URL",
    "SHOAL_REPLICA_ID",
    "SHOAL_INIT",
    "SHOAL_PEERS",
    "SHOAL_LISTEN",
    "SHOAL_SOCKET",
    "SHOAL_EXECUTOR",
    "SHOAL_ROLE",
    "SHOAL_STORE_REPLICA",
    "SHOAL_HOST",
];

/// How the node's agents run tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    /// Docker containers through the local Docker Engine.
    Docker,
    /// Each task's Command + Args as a child process of its agent.
    Process,
}

impl Executor {
    fn flag(self) -> &'static str {
        match self {
            Executor::Docker => "docker",
            Executor::Process => "process",
        }
    }
}

/// `shoal up`: run a one-node swarm (manager and agent) on this machine.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// This host's shoal data directory: node-id, store, agents, logs.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Where the API listens (plain HTTP, loopback only): tcp://HOST:PORT.
    #[arg(long, env = "SHOAL_API_ADDR", default_value = "tcp://127.0.0.1:2375")]
    pub api_addr: String,
    /// Loopback port of this node's nats-server (0: any free port).
    #[arg(long, env = "SHOAL_NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,
    /// How agents run tasks (default: docker when the engine answers and the agent supports it, else process).
    #[arg(long, value_enum)]
    pub executor: Option<Executor>,
    /// Run this many more agents on this machine, each its own node (a local multi-node cluster).
    #[arg(long, default_value_t = 0)]
    pub extra_agents: u32,
    /// Do not initialize a swarm when none exists.
    #[arg(long)]
    pub no_init: bool,
}

/// Runs `shoal up` until SIGINT/SIGTERM; returns the exit status.
pub fn run(args: UpArgs) -> i32 {
    match up(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shoal up: {e}");
            1
        }
    }
}

/// One supervised child.
struct Child {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Stop order: lower first (shoal processes, then the store, then NATS).
    stop_phase: u8,
    log: PathBuf,
    /// The data dir, as [`OWNER_ENV`].
    owner: OsString,
    pid: Option<Pid>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Child {
    fn new(name: &str, program: &Path, args: Vec<OsString>, stop_phase: u8, logs: &Path) -> Child {
        Child {
            owner: logs.parent().unwrap_or(logs).as_os_str().to_os_string(),
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            stop_phase,
            log: logs.join(format!("{name}.log")),
            pid: None,
            started: Instant::now(),
            backoff: BACKOFF_MIN,
            restart_at: Some(Instant::now()),
        }
    }

    fn spawn(&mut self) {
        self.restart_at = None;
        self.started = Instant::now();
        match self.try_spawn() {
            Ok(pid) => self.pid = Some(pid),
            Err(e) => {
                eprintln!("shoal up: cannot start {}: {e}", self.name);
                self.schedule_restart();
            }
        }
    }

    fn try_spawn(&self) -> std::io::Result<Pid> {
        let mut out = OpenOptions::new().create(true).append(true).open(&self.log)?;
        writeln!(
            out,
            "----- shoal up: starting {} at {} -----",
            self.name,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        for v in CHILD_ENV_DROP {
            cmd.env_remove(v);
        }
        // Inherited by the tasks too: how a later `shoal up` finds what a killed one left.
        cmd.env(OWNER_ENV, &self.owner);
        // The std::process::Child handle is dropped: the loop reaps with waitpid(-1).
        let child = cmd.spawn()?;
        Ok(Pid::from_raw(child.id() as i32))
    }

    fn schedule_restart(&mut self) {
        if self.started.elapsed() >= HEALTHY_RUN {
            self.backoff = BACKOFF_MIN;
        }
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// Everything checked before any child starts.
struct Plan {
    data_dir: PathBuf,
    api: SocketAddr,
    nats_port: u16,
    node_id: String,
    children: Vec<Child>,
    no_init: bool,
}

fn up(args: UpArgs) -> Result<(), String> {
    let (plan, _lock) = prepare(&args)?;
    let Plan {
        data_dir,
        api,
        nats_port,
        node_id,
        mut children,
        no_init,
    } = plan;

    let mut signals = StopSignals::install().map_err(|e| format!("installing signal handlers: {e}"))?;
    // Orphaned task processes come back to us, so they are reaped and stopped with the rest.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("shoal up: cannot become a child subreaper ({e}); tasks of a dead agent are not tracked");
    }

    eprintln!(
        "shoal up: node {node_id}, data in {}, logs in {}",
        data_dir.display(),
        data_dir.join("logs").display()
    );
    eprintln!("shoal up: NATS on nats://127.0.0.1:{nats_port}");

    let stopping = Arc::new(AtomicBool::new(false));
    let ready = {
        let stopping = stopping.clone();
        std::thread::Builder::new()
            .name("up-ready".into())
            .spawn(move || await_ready(api, no_init, &stopping))
            .map_err(|e| format!("starting a thread: {e}"))?
    };

    supervise(&mut children, &mut signals);
    stopping.store(true, Ordering::SeqCst);
    eprintln!("shoal up: stopping");
    stop_all(&mut children, &mut signals);
    // The readiness thread is not joined: it may be waiting on an API that no longer answers.
    drop(ready);
    eprintln!("shoal up: stopped; state kept in {}", data_dir.display());
    Ok(())
}

/// Checks flags, the data dir, binaries, nats-server and ports; writes the
/// node ID and the NATS config. Each failure is one line saying what to do.
fn prepare(args: &UpArgs) -> Result<(Plan, Flock<File>), String> {
    let api = parse_api_addr(&args.api_addr)?;
    let data_dir = absolute(&args.data_dir);
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| {
        format!(
            "cannot use data dir {}: {e}; choose another with --data-dir (or SHOAL_DATA_DIR)",
            data_dir.display()
        )
    })?;
    let lock = lock_data_dir(&data_dir)?;
    stop_leftovers(&data_dir)?;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))?;
    let bin_dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let names = [
        "shoal-raft-store",
        "shoal-scheduler",
        "shoal-dispatcher",
        "shoal-api",
        "shoal-agent",
    ];
    let missing: Vec<&str> = names.iter().copied().filter(|n| !bin_dir.join(n).is_file()).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} not found next to {}; build them with `cargo build --release --bins` (ops/up does)",
            missing.join(", "),
            exe.display()
        ));
    }
    let nats = find_on_path("nats-server")
        .ok_or("nats-server not found on PATH; install it (`apt-get install nats-server`, or run ops/bootstrap)")?;

    port_free(api, "--api-addr")?;
    let nats_port = if args.nats_port == 0 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port for NATS: {e}"))?
    } else {
        port_free(SocketAddr::from(([127, 0, 0, 1], args.nats_port)), "--nats-port")?;
        args.nats_port
    };

    let executor = choose_executor(args.executor)?;
    let node_id = node_id(&data_dir)?;
    let nats_conf = data_dir.join("nats.conf");
    std::fs::write(
        &nats_conf,
        format!("listen: 127.0.0.1:{nats_port}\nmax_payload: 8MB\nping_interval: \"5s\"\nping_max: 3\n"),
    )
    .map_err(|e| format!("cannot write {}: {e}", nats_conf.display()))?;

    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let bin = |n: &str| bin_dir.join(n);
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    let path = |p: PathBuf| p.into_os_string();
    let hostname = hostname();
    let mut children = vec![Child::new("nats", &nats, vec!["-c".into(), path(nats_conf)], 2, &logs)];
    let mut store_args = os(&["--replica-id", "1", "--init", "--nats-url", &nats_url]);
    store_args.extend(["--data-dir".into(), path(data_dir.join("store"))]);
    children.push(Child::new("raft-store", &bin("shoal-raft-store"), store_args, 1, &logs));
    for name in ["scheduler", "dispatcher"] {
        let a = os(&["--store-replica", "1", "--node-id", &node_id, "--nats-url", &nats_url]);
        children.push(Child::new(name, &bin(&format!("shoal-{name}")), a, 0, &logs));
    }
    let mut api_args = os(&["--node-id", &node_id, "--nats-url", &nats_url]);
    api_args.extend([
        "--data-dir".into(),
        path(data_dir.clone()),
        "--socket".into(),
        path(data_dir.join("shoal.sock")),
        "--listen".into(),
        format!("tcp://{api}").into(),
    ]);
    children.push(Child::new("api", &bin("shoal-api"), api_args, 0, &logs));
    let mut agent_args = os(&["--node-id", &node_id, "--node-name", &hostname]);
    agent_args.extend(os(&["--executor", executor.flag(), "--nats-url", &nats_url]));
    agent_args.extend(["--data-dir".into(), path(data_dir.join("agent"))]);
    children.push(Child::new("agent", &bin("shoal-agent"), agent_args, 0, &logs));
    for i in 2..args.extra_agents.saturating_add(2) {
        // Its own node: a distinct name, and a node ID the agent keeps in its own data dir.
        let name = format!("{hostname}-{i}");
        let mut a = os(&[
            "--node-name",
            &name,
            "--executor",
            executor.flag(),
            "--nats-url",
            &nats_url,
        ]);
        a.extend(["--data-dir".into(), path(data_dir.join(format!("agent-{i}")))]);
        children.push(Child::new(&format!("agent-{i}"), &bin("shoal-agent"), a, 0, &logs));
    }
    let plan = Plan {
        data_dir,
        api,
        nats_port,
        node_id,
        children,
        no_init: args.no_init,
    };
    Ok((plan, lock))
}

fn parse_api_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .strip_prefix("tcp://")
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("--api-addr {s:?} is not tcp://IP:PORT (e.g. tcp://127.0.0.1:2375)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--api-addr {s}: shoal up serves plain HTTP on loopback only; use a 127.0.0.1 address"
        ));
    }
    Ok(addr)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// One `shoal up` per data dir: an exclusive lock on `<data-dir>/up.lock`
/// (released by the kernel however this process ends; children do not inherit it).
fn lock_data_dir(dir: &Path) -> Result<Flock<File>, String> {
    let path = dir.join("up.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot use data dir {}: {e}; choose another with --data-dir (or SHOAL_DATA_DIR)",
                dir.display()
            )
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let f: &mut File = &mut lock;
            let _ = f.set_len(0);
            let _ = f.seek(SeekFrom::Start(0));
            let _ = writeln!(f, "{}", std::process::id());
            Ok(lock)
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(format!(
                "another shoal up (pid {}) is running on {}; stop it first or choose another --data-dir",
                pid.trim(),
                dir.display()
            ))
        }
        Err((_, e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Processes of this data dir left by a `shoal up` that was killed (with
/// the lock held, no live `shoal up` owns them): SIGKILLed, awaited.
fn stop_leftovers(dir: &Path) -> Result<(), String> {
    let mut mark = OsString::from(format!("{OWNER_ENV}="));
    mark.push(dir.as_os_str());
    let mark = mark.as_encoded_bytes().to_vec();
    let me = std::process::id() as i32;
    let find = || -> Vec<Pid> {
        procfs::pids()
            .into_iter()
            .filter(|pid| *pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mark.as_slice()))
            })
            .map(Pid::from_raw)
            .collect()
    };
    let left = find();
    if left.is_empty() {
        return Ok(());
    }
    eprintln!(
        "shoal up: stopping {} process(es) left on {} by a shoal up that did not stop cleanly",
        left.len(),
        dir.display()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = find();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let pids: Vec<String> = left.iter().map(|p| p.to_string()).collect();
            return Err(format!(
                "processes {} of a previous shoal up on {} do not die; stop them and retry",
                pids.join(" "),
                dir.display()
            ));
        }
        for p in left {
            let _ = kill(p, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

/// Picks the executor and says which and why, in one line.
fn choose_executor(wanted: Option<Executor>) -> Result<Executor, String> {
    let engine = || {
        Client::new(Host::Unix(DOCKER_SOCKET.into()))
            .send("GET", "/_ping", None)
            .is_ok()
    };
    let (executor, why) = match wanted {
        Some(Executor::Docker) if !engine() => {
            return Err(format!(
                "--executor docker: no Docker Engine answers at {DOCKER_SOCKET}; start it or use --executor process"
            ))
        }
        Some(e) => (e, "as asked".to_string()),
        None => match engine() {
            true => (Executor::Docker, format!("a Docker Engine answers at {DOCKER_SOCKET}")),
            false => (
                Executor::Process,
                format!("no Docker Engine answers at {DOCKER_SOCKET}"),
            ),
        },
    };
    eprintln!("shoal up: executor: {} ({why})", executor.flag());
    Ok(executor)
}

fn port_free(addr: SocketAddr, flag: &str) -> Result<(), String> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "port {} on {} is taken; stop what uses it or choose another with {flag}",
            addr.port(),
            addr.ip()
        )),
        Err(e) => Err(format!("cannot listen on {addr} ({flag}): {e}")),
    }
}

/// This host's node ID from `<data-dir>/node-id`, created on first start.
fn node_id(dir: &Path) -> Result<String, String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if shoal_shared::id::is_id(s.trim()) => Ok(s.trim().to_string()),
        Ok(s) => Err(format!(
            "{} holds {:?}, not a node ID; remove it to get a new one",
            path.display(),
            s.trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = shoal_shared::id::new_id();
            std::fs::write(&path, format!("{id}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// SIGINT, SIGTERM and SIGHUP, counted by handlers (tokio's, on a small
/// thread of their own). Handlers, unlike a blocked mask, are not inherited
/// by the children.
struct StopSignals {
    count: Arc<AtomicU32>,
    seen: u32,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered before returning, so no signal between here and the loop is lost.
        let (mut int, mut term, mut hup) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })?;
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        std::thread::Builder::new()
            .name("up-signals".into())
            .spawn(move || loop {
                rt.block_on(async {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                });
                c.fetch_add(1, Ordering::SeqCst);
            })?;
        Ok(StopSignals { count, seen: 0 })
    }

    /// Whether a stop signal arrived since the last call.
    fn take(&mut self) -> bool {
        let now = self.count.load(Ordering::SeqCst);
        let new = now != self.seen;
        self.seen = now;
        new
    }

    /// Sleeps up to `timeout`, waking early for a new stop signal.
    fn wait(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.count.load(Ordering::SeqCst) == self.seen {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Reaps every exited child; returns the supervised ones that died, with how.
fn reap(children: &mut [Child]) -> Vec<(usize, String)> {
    let mut died = Vec::new();
    loop {
        let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exited with status {code}")),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, format!("was killed by {sig}")),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        };
        if let Some(i) = children.iter().position(|c| c.pid == Some(pid)) {
            children[i].pid = None;
            died.push((i, how));
        }
        // Anything else was an orphaned task reparented to us: reaped, nothing more.
    }
    died
}

/// The last non-empty line of a log file (its last 4 KiB), for restart messages.
fn last_line(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    Some(line.chars().take(200).collect())
}

/// Starts the children and keeps them running until a stop signal.
fn supervise(children: &mut [Child], signals: &mut StopSignals) {
    loop {
        if signals.take() {
            return;
        }
        let died = reap(children);
        if !died.is_empty() {
            // A Ctrl-C on the terminal reaches the children too: when they die of it,
            // the stop signal is about to be counted; do not report them as crashes.
            signals.wait(Duration::from_millis(200));
            if signals.take() {
                return;
            }
        }
        for (i, how) in died {
            let c = &mut children[i];
            c.schedule_restart();
            let wait = c
                .restart_at
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            let last = last_line(&c.log).map(|l| format!(": {l}")).unwrap_or_default();
            eprintln!(
                "shoal up: {} {how}; restarting in {:.1}s (log {}{last})",
                c.name,
                wait.as_secs_f64(),
                c.log.display()
            );
        }
        let now = Instant::now();
        let mut next = Duration::from_millis(100);
        for c in children.iter_mut() {
            match c.restart_at {
                Some(t) if t <= now => c.spawn(),
                Some(t) => next = next.min(t - now),
                None => {}
            }
        }
        signals.wait(next);
    }
}

/// Stops the children phase by phase, then any task process left behind.
fn stop_all(children: &mut [Child], signals: &mut StopSignals) {
    let mut hurry = false;
    for phase in 0..=2u8 {
        let procs: Vec<(Pid, String)> = children
            .iter()
            .filter(|c| c.stop_phase == phase)
            .filter_map(|c| Some((c.pid?, c.name.clone())))
            .collect();
        hurry = stop_procs(procs, &mut *signals, hurry, |left| {
            reap(children);
            left.retain(|(p, _)| children.iter().any(|c| c.pid == Some(*p)));
        });
    }
    // Tasks whose agent is gone were reparented to us (we are their subreaper).
    let leftovers: Vec<(Pid, String)> = own_children()
        .into_iter()
        .map(|p| (p, format!("task pid {p}")))
        .collect();
    if !leftovers.is_empty() {
        eprintln!("shoal up: stopping {} task process(es) left by agents", leftovers.len());
        stop_procs(leftovers, signals, hurry, |left| {
            reap(children);
            let alive = own_children();
            left.retain(|(p, _)| alive.contains(p));
        });
    }
    reap(children);
}

/// SIGTERMs `procs`, waits up to the grace period (none after a second stop
/// signal) for `refresh` to empty the list, then SIGKILLs what is left.
/// Returns whether a second stop signal arrived.
fn stop_procs(
    mut left: Vec<(Pid, String)>,
    signals: &mut StopSignals,
    mut hurry: bool,
    mut refresh: impl FnMut(&mut Vec<(Pid, String)>),
) -> bool {
    for (p, _) in &left {
        let _ = kill(*p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        refresh(&mut left);
        if left.is_empty() {
            return hurry;
        }
        if hurry || Instant::now() >= deadline {
            break;
        }
        signals.wait(Duration::from_millis(100));
        if signals.take() {
            eprintln!("shoal up: second stop signal: killing what is left");
            hurry = true;
        }
    }
    let names: Vec<&str> = left.iter().map(|(_, n)| n.as_str()).collect();
    if !hurry {
        eprintln!(
            "shoal up: {} did not stop within {}s of SIGTERM; killing",
            names.join(", "),
            STOP_GRACE.as_secs()
        );
    }
    for (p, _) in &left {
        let _ = kill(*p, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !left.is_empty() && Instant::now() < deadline {
        signals.wait(Duration::from_millis(50));
        refresh(&mut left);
    }
    hurry
}

/// Live processes whose parent is this process (from /proc).
fn own_children() -> Vec<Pid> {
    let me = std::process::id() as i32;
    procfs::pids()
        .into_iter()
        .filter(|&pid| procfs::Stat::read(pid).is_some_and(|s| s.ppid == me && !s.zombie()))
        .map(Pid::from_raw)
        .collect()
}

/// Waits for the API, initializes the swarm unless told not to or already
/// active, then prints `DOCKER_HOST`.
fn await_ready(api: SocketAddr, no_init: bool, stopping: &AtomicBool) {
    let client = Client::new(Host::Tcp(api.to_string()));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("the API did not answer");
    let pause = || std::thread::sleep(Duration::from_millis(200));
    while !stopping.load(Ordering::SeqCst) {
        if Instant::now() >= deadline {
            eprintln!(
                "shoal up: not ready after {}s ({last}); still trying to keep the processes up, see the logs",
                READY_TIMEOUT.as_secs()
            );
            return;
        }
        let info = match client.get("/info") {
            Ok(v) => v,
            Err(e) => {
                last = e.to_string();
                pause();
                continue;
            }
        };
        let state = info["Swarm"]["LocalNodeState"].as_str().unwrap_or("").to_string();
        match state.as_str() {
            "active" => {
                eprintln!(
                    "shoal up: swarm active; this node ({}) resumed",
                    info["Swarm"]["NodeID"].as_str().unwrap_or("?")
                );
            }
            "inactive" if no_init => {
                eprintln!("shoal up: no swarm yet (--no-init): run `docker swarm init` or `docker swarm join`");
            }
            "inactive" => {
                let body = json!({"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "", "Spec": {}});
                match client.post("/swarm/init", &body) {
                    Ok(id) => eprintln!(
                        "shoal up: swarm initialized: this node ({}) is now a manager",
                        id.as_str().unwrap_or("?")
                    ),
                    Err(ApiError::Daemon { message, .. }) if message.contains("already") => {
                        eprintln!("shoal up: swarm init: {message}");
                    }
                    Err(e) => {
                        last = format!("swarm init: {e}");
                        pause();
                        continue;
                    }
                }
            }
            _ => {
                last = format!(
                    "swarm state {state:?}: {}",
                    info["Swarm"]["Error"].as_str().unwrap_or_default()
                );
                pause();
                continue;
            }
        }
        println!("DOCKER_HOST=tcp://{api}");
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addr_must_be_loopback_tcp() {
        assert_eq!(
            parse_api_addr("tcp://127.0.0.1:2375").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 2375))
        );
        assert!(parse_api_addr("127.0.0.1:1").is_ok());
        assert!(parse_api_addr("tcp://0.0.0.0:2375").unwrap_err().contains("loopback"));
        assert!(parse_api_addr("unix:///x").unwrap_err().contains("tcp://IP:PORT"));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let mut c = Child::new("x", Path::new("/bin/true"), Vec::new(), 0, Path::new("/tmp"));
        let mut waits = Vec::new();
        for _ in 0..9 {
            c.schedule_restart();
            waits.push(c.restart_at.unwrap().saturating_duration_since(Instant::now()));
        }
        assert!(waits[0] <= BACKOFF_MIN && waits[0] > BACKOFF_MIN / 2, "{waits:?}");
        assert!(waits[1] > BACKOFF_MIN, "{waits:?}");
        assert!(waits[8] <= BACKOFF_MAX && waits[8] > BACKOFF_MAX / 2, "{waits:?}");
        c.started = Instant::now() - HEALTHY_RUN;
        c.schedule_restart();
        assert!(c.restart_at.unwrap().saturating_duration_since(Instant::now()) <= BACKOFF_MIN);
    }

    #[test]
    fn node_id_is_created_once_and_checked() {
        let dir = std::env::temp_dir().join(format!("shoal-up-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("node-id"));
        let id = node_id(&dir).unwrap();
        assert!(shoal_shared::id::is_id(&id));
        assert_eq!(node_id(&dir).unwrap(), id);
        std::fs::write(dir.join("node-id"), "bogus").unwrap();
        assert!(node_id(&dir).unwrap_err().contains("not a node ID"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
