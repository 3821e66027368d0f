//! `shoal up`: a whole manager node on this machine, in the foreground.
//!
//! Starts `nats-server` and every shoal process of a manager node
//! (raft-store, scheduler, dispatcher, api, agent, dns, ingress, plus `--extra-agents`
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
//!
//! - [`children`]: spawning, supervising and stopping the children;
//! - [`signals`]: counting stop signals;
//! - [`leftovers`]: the data dir's lock and what a killed `shoal up` left.

mod children;
mod leftovers;
mod signals;

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use self::children::{stop_all, supervise, Child};
use self::signals::StopSignals;
use crate::client::{ApiError, Client, Host};
use crate::commands::swarm;

/// Where a local Docker Engine answers, if one runs.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// How long to wait for the API and the swarm before saying so.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Set on every child (and so on their tasks) to the data dir they belong to.
pub(crate) const OWNER_ENV: &str = "SHOAL_UP_DATA_DIR";

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

/// Everything checked before any child starts.
struct Plan {
    data_dir: PathBuf,
    api: SocketAddr,
    nats_port: u16,
    node_id: String,
    children: Vec<Child>,
    /// Each shoal process and where it serves Prometheus metrics.
    metrics: Vec<(String, SocketAddr)>,
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
        metrics,
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
    for (name, addr) in &metrics {
        println!("metrics {name} http://{addr}/metrics");
    }

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
fn prepare(args: &UpArgs) -> Result<(Plan, leftovers::Lock), String> {
    let api = parse_api_addr(&args.api_addr)?;
    let data_dir = absolute(&args.data_dir);
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| {
        format!(
            "cannot use data dir {}: {e}; choose another with --data-dir (or SHOAL_DATA_DIR)",
            data_dir.display()
        )
    })?;
    let lock = leftovers::lock_data_dir(&data_dir)?;
    leftovers::stop_leftovers(&data_dir)?;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))?;
    let bin_dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let names = [
        "shoal-raft-store",
        "shoal-scheduler",
        "shoal-dispatcher",
        "shoal-api",
        "shoal-agent",
        "shoal-dns",
        "shoal-ingress",
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
    // Every port chosen here is probed with a listener that stays open until
    // all of them are chosen: a probe dropped early let a metrics port come
    // out equal to NATS's, and the API then could never start.
    let mut probes = Vec::new();
    let nats_port = if args.nats_port == 0 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port for NATS: {e}"))?;
        let port = l
            .local_addr()
            .map_err(|e| format!("no free port for NATS: {e}"))?
            .port();
        probes.push(l);
        port
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
    let hostname = shoal_shared::procfs::hostname();
    // Every shoal process serves metrics on a free loopback port (probed as
    // NATS's was, so no two are the same).
    let mut metrics = Vec::new();
    let mut metrics_arg = |name: &str| -> Result<Vec<OsString>, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port for metrics: {e}"))?;
        let addr = l.local_addr().map_err(|e| format!("no free port for metrics: {e}"))?;
        probes.push(l);
        metrics.push((name.to_string(), addr));
        Ok(vec!["--metrics-addr".into(), addr.to_string().into()])
    };
    let mut children = vec![Child::new("nats", &nats, vec!["-c".into(), path(nats_conf)], 2, &logs)];
    let mut store_args = os(&["--replica-id", "1", "--init", "--nats-url", &nats_url]);
    store_args.extend(["--data-dir".into(), path(data_dir.join("store"))]);
    store_args.extend(metrics_arg("raft-store")?);
    children.push(Child::new("raft-store", &bin("shoal-raft-store"), store_args, 1, &logs));
    for name in ["scheduler", "dispatcher"] {
        let mut a = os(&["--store-replica", "1", "--node-id", &node_id, "--nats-url", &nats_url]);
        if name == "dispatcher" {
            // The managers' key for secret data, shared with the API (which keeps it in its data dir).
            a.extend([
                "--secrets-key".into(),
                path(data_dir.join(shoal_shared::secrets::KEY_FILE)),
            ]);
        }
        a.extend(metrics_arg(name)?);
        children.push(Child::new(name, &bin(&format!("shoal-{name}")), a, 0, &logs));
    }
    // Its node is replica 1's: `docker node ls` shows the store's real leader.
    let mut api_args = os(&["--node-id", &node_id, "--nats-url", &nats_url, "--store-replica", "1"]);
    api_args.extend([
        "--data-dir".into(),
        path(data_dir.clone()),
        "--socket".into(),
        path(data_dir.join("shoal.sock")),
        "--listen".into(),
        format!("tcp://{api}").into(),
    ]);
    api_args.extend(metrics_arg("api")?);
    children.push(Child::new("api", &bin("shoal-api"), api_args, 0, &logs));
    let mut agent_args = os(&["--node-id", &node_id, "--node-name", &hostname]);
    agent_args.extend(os(&["--executor", executor.flag(), "--nats-url", &nats_url]));
    agent_args.extend(["--data-dir".into(), path(data_dir.join("agent"))]);
    agent_args.extend(metrics_arg("agent")?);
    children.push(Child::new("agent", &bin("shoal-agent"), agent_args, 0, &logs));
    // The node's DNS: port 53 on its overlay addresses (needs root or
    // CAP_NET_BIND_SERVICE; without, those binds are logged and retried).
    let mut dns_args = os(&["--node-id", &node_id, "--nats-url", &nats_url]);
    dns_args.extend(metrics_arg("dns")?);
    children.push(Child::new("dns", &bin("shoal-dns"), dns_args, 0, &logs));
    // The routing mesh: the host's published ports on every address, as Docker's.
    let mut ingress_args = os(&["--node-id", &node_id, "--nats-url", &nats_url]);
    ingress_args.extend(metrics_arg("ingress")?);
    children.push(Child::new("ingress", &bin("shoal-ingress"), ingress_args, 0, &logs));
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
        a.extend(metrics_arg(&format!("agent-{i}"))?);
        children.push(Child::new(&format!("agent-{i}"), &bin("shoal-agent"), a, 0, &logs));
    }
    let plan = Plan {
        data_dir,
        api,
        nats_port,
        node_id,
        children,
        metrics,
        no_init: args.no_init,
    };
    drop(probes);
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
            .raw("GET", "/_ping", &[], None)
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
        let info = match swarm::swarm_info(&client) {
            Ok(i) => i,
            Err(e) => {
                last = e.to_string();
                pause();
                continue;
            }
        };
        let or_unknown = |s: &str| if s.is_empty() { "?".to_string() } else { s.to_string() };
        match info.local_node_state.as_str() {
            "active" => {
                eprintln!(
                    "shoal up: swarm active; this node ({}) resumed",
                    or_unknown(&info.node_id)
                );
            }
            "inactive" if no_init => {
                eprintln!("shoal up: no swarm yet (--no-init): run `docker swarm init` or `docker swarm join`");
            }
            "inactive" => match swarm::init(&client, "0.0.0.0:2377", "") {
                Ok(id) => eprintln!(
                    "shoal up: swarm initialized: this node ({}) is now a manager",
                    or_unknown(&id)
                ),
                Err(ApiError::Daemon { message, .. }) if message.contains("already") => {
                    eprintln!("shoal up: swarm init: {message}");
                }
                Err(e) => {
                    last = format!("swarm init: {e}");
                    pause();
                    continue;
                }
            },
            _ => {
                last = format!("swarm state {:?}: {}", info.local_node_state, info.error);
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
