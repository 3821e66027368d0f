//! `shoal load <component>` against a real `shoal up` cluster (process
//! executor): each mode runs briefly, prints progress and its summary line,
//! says it removed the objects it created, and leaves nothing behind in the
//! store (services, tasks, nodes, networks), nor any process it started.
//! Ctrl-C in the middle of a run still removes what it created.
//!
//! The load runs with `TMPDIR` in the test's home: the agent it starts keeps
//! its data there, and every process carrying that `TMPDIR` (the load tool,
//! its agent, the agent's task processes) is killed when the test ends, also
//! when it fails; `shoal up` is killed as a process group by its guard.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_shared::model::{Network, Node, Service, Task};
use shoal_shared::procfs;
use shoal_shared::store::{ListFilter, StoreClient};
use shoal_tests::up::{procs, temp_home, Up, CONVERGE};
use shoal_tests::{bin, eventually, free_port, Proc};

/// Kills every process started with `TMPDIR=<dir>` when dropped.
struct KillByTmpdir(PathBuf);

fn with_tmpdir(dir: &Path) -> Vec<i32> {
    let want = format!("TMPDIR={}", dir.display());
    procfs::pids()
        .into_iter()
        .filter(|p| *p != std::process::id() as i32)
        .filter(|p| procfs::environ(*p).contains(&want))
        .collect()
}

impl Drop for KillByTmpdir {
    fn drop(&mut self) {
        for p in with_tmpdir(&self.0) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

fn nats_url(up: &Up) -> String {
    up.output()
        .lines()
        .find_map(|l| l.strip_prefix("shoal up: NATS on ").map(str::to_string))
        .expect("shoal up prints its NATS URL")
}

fn load_cmd(up: &Up, tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("shoal"));
    cmd.env("TMPDIR", tmp)
        .env("SHOAL_LOG", "warn")
        .args([
            "-H",
            &format!("tcp://127.0.0.1:{}", up.port),
            "load",
            "--nats-url",
            &nats_url(up),
        ])
        .args(args);
    cmd
}

/// Runs `shoal load ARGS` to its end (at most 5 minutes); returns (exit code, output).
async fn load(up: &Up, tmp: &Path, args: &[&str]) -> (Option<i32>, String) {
    let log = tmp.join(format!("load-{}.log", args[0]));
    let mut p = Proc::spawn("shoal load", load_cmd(up, tmp, args), &log);
    eventually(Duration::from_secs(300), "shoal load to end", || {
        let done = p.exited();
        async move { done.then_some(()).ok_or_else(|| "running".to_string()) }
    })
    .await;
    let code = p.wait_code();
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// The `removed N objects` figure of a run's output.
fn removed(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix("removed ")?.strip_suffix(" objects")?.parse().ok())
        .unwrap_or_else(|| panic!("no `removed N objects` line in:\n{out}"))
}

/// The `key=value` figure of a summary line.
fn figure(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// What is left in the store that a load run could have created, as a printable state.
async fn left_in_store(store: &StoreClient) -> Result<(), String> {
    let services: Vec<Service> = store.list(ListFilter::default()).await.map_err(|e| e.to_string())?;
    let tasks: Vec<Task> = store.list(ListFilter::default()).await.map_err(|e| e.to_string())?;
    let networks: Vec<Network> = store.list(ListFilter::default()).await.map_err(|e| e.to_string())?;
    let nodes: Vec<Node> = store.list(ListFilter::default()).await.map_err(|e| e.to_string())?;
    let networks: Vec<_> = networks
        .iter()
        .filter(|n| n.spec.name.starts_with("shoal-load-"))
        .collect();
    let nodes: Vec<_> = nodes
        .iter()
        .filter(|n| n.description.hostname.starts_with("shoal-load-"))
        .collect();
    if services.is_empty() && tasks.is_empty() && networks.is_empty() && nodes.is_empty() {
        return Ok(());
    }
    Err(format!(
        "left: {} services, {} tasks, {} load networks, {} load nodes",
        services.len(),
        tasks.len(),
        networks.len(),
        nodes.len()
    ))
}

/// Processes the load tool started that are still alive (the agent and its tasks).
fn load_processes(tmp: &Path) -> Vec<String> {
    let alive = with_tmpdir(tmp);
    procs()
        .into_iter()
        .filter(|p| alive.contains(&p.pid))
        .map(|p| format!("{} {:?}", p.pid, p.args))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_load_mode_creates_and_removes_its_objects() {
    let home = temp_home();
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let _kill = KillByTmpdir(tmp.clone());
    let mut up = Up::start(
        home.path(),
        "up",
        &home.path().join("data"),
        free_port(),
        "process",
        &[],
    );
    up.ready().await;
    let nats = async_nats::connect(nats_url(&up)).await.expect("nats");
    let store = StoreClient::new(nats);
    eventually(CONVERGE, "an empty store to start from", || left_in_store(&store)).await;

    let runs: &[(&str, &[&str], usize)] = &[
        // (mode, flags, the least number of objects the tool itself must
        // remove: tasks the cluster stopped are deleted by its scheduler)
        ("store", &["--seconds", "2", "--clients", "4"], 4),
        ("scheduler", &["--nodes", "5", "--tasks", "40"], 1 + 40 + 5),
        (
            "dispatcher",
            &["--seconds", "3", "--agents", "10", "--tasks", "20"],
            1 + 10,
        ),
        ("agent", &["--tasks", "5"], 1),
        ("api", &["--seconds", "1", "--concurrency", "2"], 1),
        // Their own shoal-dns / shoal-ingress, nothing in the store.
        (
            "dns",
            &[
                "--seconds",
                "1",
                "--services",
                "20",
                "--tasks",
                "2",
                "--concurrency",
                "2",
            ],
            0,
        ),
        (
            "ingress",
            &["--seconds", "1", "--connections", "2", "--backends", "2"],
            0,
        ),
    ];
    for (mode, flags, least) in runs {
        let mut args = vec![*mode];
        args.extend_from_slice(flags);
        let (code, out) = load(&up, &tmp, &args).await;
        assert_eq!(code, Some(0), "shoal load {mode} failed:\n{out}");
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("load {mode} ")),
            "shoal load {mode}: no summary line last:\n{out}"
        );
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{mode}: "))),
            "shoal load {mode}: no figures printed:\n{out}"
        );
        if let Some(failed) = figure(last, "failed") {
            assert_eq!(failed, 0.0, "shoal load {mode}: requests failed:\n{out}");
        }
        for key in ["qps", "rps", "direct_rps"] {
            if let Some(rate) = figure(last, key) {
                assert!(rate > 0.0, "shoal load {mode}: {key} is 0:\n{out}");
            }
        }
        let n = removed(&out);
        assert!(
            n >= *least,
            "shoal load {mode} removed {n} objects, want at least {least}:\n{out}"
        );
        eventually(
            CONVERGE,
            &format!("nothing of `shoal load {mode}` left in the store"),
            || left_in_store(&store),
        )
        .await;
        let procs = load_processes(&tmp);
        assert!(procs.is_empty(), "shoal load {mode} left processes: {procs:?}");
    }
    up.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_load_removes_what_it_created() {
    let home = temp_home();
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let _kill = KillByTmpdir(tmp.clone());
    let mut up = Up::start(
        home.path(),
        "up",
        &home.path().join("data"),
        free_port(),
        "process",
        &[],
    );
    up.ready().await;
    let nats = async_nats::connect(nats_url(&up)).await.expect("nats");
    let store = StoreClient::new(nats);

    let log = tmp.join("load.log");
    let args = ["dispatcher", "--seconds", "600", "--agents", "10", "--tasks", "10"];
    let mut p = Proc::spawn("shoal load", load_cmd(&up, &tmp, &args), &log);
    // Interrupt it while it heartbeats, once its objects exist.
    eventually(CONVERGE, "the load's tasks to run", || {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            match out.contains("tasks reported and written running") {
                true => Ok(()),
                false => Err(out),
            }
        }
    })
    .await;
    let nodes: Vec<Node> = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n.description.hostname.starts_with("shoal-load-"))
            .count(),
        10
    );
    p.signal(Signal::SIGINT);
    eventually(CONVERGE, "shoal load to end after Ctrl-C", || {
        let done = p.exited();
        async move { done.then_some(()).ok_or_else(|| "running".to_string()) }
    })
    .await;
    let code = p.wait_code();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(1), "an interrupted load exits 1:\n{out}");
    assert!(out.contains("interrupted; cleaning up"), "{out}");
    let n = removed(&out);
    assert!(n >= 11, "the service and 10 nodes, removed {n}: {out}");
    eventually(CONVERGE, "nothing of the interrupted load left in the store", || {
        left_in_store(&store)
    })
    .await;
    up.terminate().await;
}
