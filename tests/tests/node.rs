//! One shoal node as the dev cluster runs it: a container of the local node
//! image (`ops/build-node-image`: Debian, systemd as PID 1, nats-server) with
//! the built binaries and `k8s-free-deploy/` bind-mounted read-only, the
//! host's Docker socket mounted (the agent keeps the shipped docker executor),
//! host name `manager1`. Inside it, as an operator would:
//! - `k8s-free-deploy/install --role manager`, `systemctl start
//!   shoal-manager.target`, every unit of the set active;
//! - `shoal swarm init`, and `shoal node ls` shows `manager1` Ready Leader,
//!   with no unit restarted meanwhile (a unit that crashes on start under its
//!   sandbox would be restarted by systemd, and be seen here);
//! - a service's task runs as a container on this machine's engine (the
//!   docker executor under the agent's sandbox);
//! - a process killed with SIGKILL (the scheduler, then the agent) is
//!   restarted by systemd (a new MainPID, active again) and the node stays
//!   Ready; the task's container outlives the agent's death and is still
//!   the task's afterwards;
//! - removing the service removes its container;
//! - stopping `shoal-manager.target` stops its four units and leaves the
//!   worker set (agent, API) running; stopping `shoal-worker.target` stops
//!   those too.
//!
//! The node container is removed when the test ends, also when it fails (then
//! the units' journal is printed first), and so are its task containers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_tests::bin;

const MANAGER_UNITS: &[&str] = &[
    "shoal-nats.service",
    "shoal-raft-store.service",
    "shoal-scheduler.service",
    "shoal-dispatcher.service",
];
const WORKER_UNITS: &[&str] = &["shoal-api.service", "shoal-agent.service"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo dir")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The node image's tag: `ops/build-node-image` builds it once (ops/test
/// runs it first) and prints the tag as its last line. Also makes sure of
/// the task image (`ops/build-image`: the local busybox).
fn node_image() -> String {
    let out = Command::new(repo().join("ops/build-image"))
        .output()
        .expect("run ops/build-image");
    assert!(out.status.success(), "ops/build-image failed:\n{}", text(&out));
    let out = Command::new(repo().join("ops/build-node-image"))
        .output()
        .expect("run ops/build-node-image");
    assert!(out.status.success(), "ops/build-node-image failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("build-node-image prints its tag")
        .trim()
        .to_string()
}

/// A node container, removed (with its anonymous volumes) when dropped.
struct Node {
    name: String,
    /// Its node ID once installed: its task containers carry it as a label.
    id: Option<String>,
}

impl Node {
    fn boot(image: &str, hostname: &str) -> Node {
        let name = format!("shoal-test-node-{}-{hostname}", std::process::id());
        let bin_dir = bin("shoal").parent().expect("bin dir").to_path_buf();
        let deploy = repo().join("k8s-free-deploy");
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name, "--hostname", hostname])
            .args(["--label", "shoal-test=node", "--stop-signal", "SIGRTMIN+3"])
            // systemd as PID 1 without --privileged (refused here).
            .args(["--cap-add", "NET_ADMIN", "--cap-add", "SYS_ADMIN"])
            .args(["--tmpfs", "/run", "--tmpfs", "/run/lock"])
            .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"])
            .arg("-v")
            .arg(format!("{}:/opt/shoal/bin:ro", bin_dir.display()))
            .arg("-v")
            .arg(format!("{}:/opt/shoal/deploy:ro", deploy.display()))
            // The agent's docker executor uses this machine's engine.
            .args(["-v", "/var/run/docker.sock:/run/docker.sock"])
            .arg(image)
            .output()
            .expect("docker run");
        assert!(out.status.success(), "docker run {image}:\n{}", text(&out));
        Node { name, id: None }
    }

    fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("docker")
            .args(["exec", &self.name])
            .args(cmd)
            .output()
            .expect("docker exec")
    }

    /// Runs `cmd` in the node; panics with its output unless it succeeds.
    fn run(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        assert!(out.status.success(), "{cmd:?} in {}:\n{}", self.name, text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `systemctl show -p <prop> --value <unit>`.
    fn prop(&self, unit: &str, prop: &str) -> String {
        text(&self.exec(&["systemctl", "show", "-p", prop, "--value", unit]))
            .trim()
            .to_string()
    }

    /// Each unit's `is-active` state.
    fn states(&self, units: &[&str]) -> Vec<(String, String)> {
        let out = self.exec(&[&["systemctl", "is-active"][..], units].concat());
        let said = String::from_utf8_lossy(&out.stdout);
        units
            .iter()
            .map(|u| u.to_string())
            .zip(said.lines().map(str::to_string).chain(std::iter::repeat(String::new())))
            .collect()
    }

    fn all_in_state(&self, units: &[&str], want: &str) -> Result<(), String> {
        let states = self.states(units);
        // A failed unit stays failed: no use waiting (a stop must not fail it).
        if let Some((unit, _)) = states.iter().find(|(_, s)| s == "failed") {
            panic!("{unit} failed: {states:?}");
        }
        if states.iter().all(|(_, s)| s == want) {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    }

    /// `shoal node ls`: hostname, status and manager status of each node.
    fn nodes(&self) -> Result<String, String> {
        let out = self.exec(&[
            "shoal",
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
        ]);
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            false => Err(text(&out)),
        }
    }

    /// This node's task containers on the engine (IDs).
    fn task_containers(&self) -> Vec<String> {
        let Some(id) = &self.id else { return Vec::new() };
        let out = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label=com.docker.swarm.node.id={id}"))
            .output()
            .expect("docker ps");
        assert!(out.status.success(), "docker ps: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The current state (first word) of each task of `service`, as
    /// `shoal service ps` shows them (ID NAME IMAGE NODE DESIRED CURRENT ...).
    fn task_states(&self, service: &str) -> Vec<String> {
        let table = self.run(&["shoal", "service", "ps", service]);
        table
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().filter(|w| *w != "\\_").nth(5).map(str::to_string))
            .collect()
    }

    fn ready_leader(&self, hostname: &str) -> Result<(), String> {
        let nodes = self.nodes()?;
        match nodes == format!("{hostname} Ready Leader") {
            true => Ok(()),
            false => Err(nodes),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for cmd in [
                &["systemctl", "--no-pager", "--failed"][..],
                &["systemctl", "--no-pager", "status", "shoal-*"][..],
                &["journalctl", "--no-pager", "-n", "200", "-u", "shoal-*"][..],
            ] {
                eprintln!(
                    "----- {} in {} -----\n{}",
                    cmd.join(" "),
                    self.name,
                    text(&self.exec(cmd))
                );
            }
        }
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.name]).output();
        // Task containers are the engine's, not the node container's.
        let tasks = self.task_containers();
        if !tasks.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&tasks).output();
        }
    }
}

/// Polls `check` every 200 ms until it succeeds; panics after `deadline`
/// with the last state it reported.
fn poll<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if start.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last state: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Checks that every unit stays active with the same main process and no
/// restart for `window` (longer than the units' RestartSec=2s).
fn steady(node: &Node, units: &[&str], window: Duration) {
    let snapshot = || -> Vec<String> {
        units
            .iter()
            .map(|u| {
                let state = node.states(&[u]).remove(0).1;
                format!(
                    "{u} {state} pid={} restarts={}",
                    node.prop(u, "MainPID"),
                    node.prop(u, "NRestarts")
                )
            })
            .collect()
    };
    let first = snapshot();
    for line in &first {
        assert!(line.contains(" active ") && line.ends_with("restarts=0"), "{line}");
    }
    let start = Instant::now();
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(300));
        let now = snapshot();
        assert_eq!(now, first, "a unit did not stay up");
    }
}

/// SIGKILLs `unit`'s processes through systemd; waits until systemd has
/// started it again (a new MainPID, active).
fn kill_and_see_restarted(node: &Node, unit: &str) {
    let pid = node.prop(unit, "MainPID");
    let restarts = node.prop(unit, "NRestarts");
    assert!(pid != "0" && !pid.is_empty(), "{unit} has no MainPID");
    node.run(&["systemctl", "kill", "-s", "KILL", unit]);
    poll(Duration::from_secs(30), &format!("systemd to restart {unit}"), || {
        let (now, state) = (node.prop(unit, "MainPID"), node.states(&[unit]).remove(0).1);
        match now != pid && now != "0" && state == "active" {
            true => Ok(()),
            false => Err(format!("MainPID {now} (was {pid}), {state}")),
        }
    });
    let after: u32 = node.prop(unit, "NRestarts").parse().expect("NRestarts");
    let before: u32 = restarts.parse().expect("NRestarts");
    assert_eq!(after, before + 1, "{unit}: NRestarts");
}

#[test]
fn manager_node_under_systemd_survives_sigkill_and_stops_with_its_target() {
    let image = node_image();
    let mut node = Node::boot(&image, "manager1");

    poll(Duration::from_secs(60), "systemd to finish booting", || {
        let state = text(&node.exec(&["systemctl", "is-system-running"]));
        match state.trim() {
            "running" | "degraded" => Ok(()),
            other => Err(other.to_string()),
        }
    });

    let said = node.run(&[
        "/opt/shoal/deploy/install",
        "--role",
        "manager",
        "--bin-dir",
        "/opt/shoal/bin",
    ]);
    assert!(said.contains("systemctl daemon-reload: done"), "{said}");
    let env = node.run(&["cat", "/etc/shoal/shoal.env"]);
    node.id = Some(
        env.lines()
            .find_map(|l| l.strip_prefix("SHOAL_NODE_ID="))
            .expect("SHOAL_NODE_ID in shoal.env")
            .to_string(),
    );
    node.run(&["systemctl", "start", "shoal-manager.target"]);
    let all: Vec<&str> = MANAGER_UNITS.iter().chain(WORKER_UNITS).copied().collect();
    poll(Duration::from_secs(30), "every unit of the manager set active", || {
        node.all_in_state(&all, "active")
    });

    // The API answers once the store has a leader: retry until the init
    // lands (a retry after a late success finds the swarm already there).
    poll(Duration::from_secs(60), "shoal swarm init", || {
        let out = node.exec(&["shoal", "swarm", "init"]);
        let said = text(&out);
        match out.status.success() || said.contains("already part of a swarm") {
            true => Ok(()),
            false => Err(said),
        }
    });
    poll(Duration::from_secs(60), "manager1 Ready Leader", || {
        node.ready_leader("manager1")
    });
    // Nothing crashes and is quietly restarted: a unit whose process exits
    // at once is "active" for an instant, then restarted after RestartSec=2s.
    steady(&node, &all, Duration::from_secs(3));

    // A task: a container on this machine's engine (the local busybox
    // image, ops/build-image), started by the sandboxed agent.
    node.run(&[
        "shoal",
        "service",
        "create",
        "--name",
        "nap",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    let task = poll(Duration::from_secs(60), "the nap task's container running", || {
        let containers = node.task_containers();
        let state = node.task_states("nap");
        match (containers.as_slice(), state == ["Running"]) {
            ([one], true) => Ok(one.clone()),
            _ => Err(format!("containers {containers:?}, task {state:?}")),
        }
    });

    // §5: a process SIGKILLed inside a node comes back, the node stays Ready.
    for unit in ["shoal-scheduler.service", "shoal-agent.service"] {
        kill_and_see_restarted(&node, unit);
        poll(
            Duration::from_secs(30),
            &format!("manager1 Ready Leader after killing {unit}"),
            || node.ready_leader("manager1"),
        );
    }
    // The task kept its container through the agent's death.
    poll(Duration::from_secs(30), "the nap task running in its container", || {
        let containers = node.task_containers();
        let state = node.task_states("nap");
        match containers == [task.clone()] && state == ["Running"] {
            true => Ok(()),
            false => Err(format!("containers {containers:?} (was {task}), tasks {state:?}")),
        }
    });
    node.run(&["shoal", "service", "rm", "nap"]);
    poll(Duration::from_secs(30), "the nap container removed", || {
        match node.task_containers() {
            none if none.is_empty() => Ok(()),
            left => Err(format!("{left:?}")),
        }
    });

    // Stopping the manager target stops its units and leaves the worker set.
    node.run(&["systemctl", "stop", "shoal-manager.target"]);
    poll(Duration::from_secs(30), "the manager units stopped", || {
        node.all_in_state(MANAGER_UNITS, "inactive")
    });
    node.all_in_state(WORKER_UNITS, "active")
        .unwrap_or_else(|s| panic!("stopping shoal-manager.target stopped the worker set: {s}"));
    node.run(&["systemctl", "stop", "shoal-worker.target"]);
    poll(Duration::from_secs(30), "every unit stopped", || {
        node.all_in_state(&all, "inactive")
    });
    assert_eq!(node.task_containers(), Vec::<String>::new(), "task containers left");
}
