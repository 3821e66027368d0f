//! `shoal up` as a user runs it: one command brings up nats-server and every
//! shoal process of a manager node, the real docker CLI drives the result,
//! dead children come back, SIGTERM stops everything and a second run
//! resumes the same swarm; setup mistakes get one line saying what to do.
//!
//! Each `shoal up` runs in its own process group (its children stay in it),
//! and dropping the guard SIGKILLs the whole group, so nothing outlives a
//! test, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use shoal_tests::up::{leftovers, procs, temp_home, Up, CONVERGE};
use shoal_tests::{bin, eventually, free_port};

/// Service `t` at 1/1 with its task running, and its process alive in the group.
async fn service_t_runs(up: &Up) -> Result<(), String> {
    let svc = up.lines(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])?;
    let tasks = up.lines(&[
        "service",
        "ps",
        "t",
        "-f",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}",
    ])?;
    let sleeping = procs().iter().any(|p| p.pgid == up.pgid && p.args == ["sleep", "3600"]);
    match (svc.as_slice(), tasks.as_slice(), sleeping) {
        ([s], [t], true) if s == "t 1/1" && t.starts_with("Running") => Ok(()),
        _ => Err(format!(
            "services {svc:?}, tasks {tasks:?}, task process running: {sleeping}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_swarm_that_stops_cleanly_and_resumes() {
    let home = temp_home();
    let data = home.path().join("data");
    let port = free_port();
    let mut up = Up::start(home.path(), "up-1", &data, port, "process", &[]);
    up.ready().await;
    let out = up.output();
    assert!(out.contains("shoal up: executor: process"), "{out}");
    assert!(out.contains("swarm initialized"), "{out}");
    let node_id = std::fs::read_to_string(data.join("node-id"))
        .expect("node-id")
        .trim()
        .to_string();

    // The one node: Ready, Active, Leader; it is this data dir's node.
    eventually(CONVERGE, "the node ready, active and leader", || async {
        let rows = up.lines(&[
            "node",
            "ls",
            "--format",
            "{{.ID}} {{.Status}} {{.Availability}} {{.ManagerStatus}}",
        ])?;
        match rows.as_slice() {
            [row] if *row == format!("{node_id} Ready Active Leader") => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
    let cluster = up
        .docker(&["info", "--format", "{{.Swarm.Cluster.ID}}"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(!cluster.is_empty());

    // A service runs through the process executor (Args ["sleep", "3600"]).
    up.docker(&["service", "create", "-d", "--name", "t", "busybox", "sleep", "3600"])
        .ok();
    eventually(CONVERGE, "service t at 1/1 running", || service_t_runs(&up)).await;

    // SIGTERM stops every child and the task; nothing of this data dir is left.
    assert_eq!(up.terminate().await, Some(0), "{}", up.output());
    let left = leftovers(up.pgid, &data);
    assert!(left.is_empty(), "left running after shoal up stopped: {left:?}");
    assert!(up.output().contains("shoal up: stopped"), "{}", up.output());
    drop(up);

    // A second run resumes the same swarm: no second init, the service runs again.
    let mut up = Up::start(home.path(), "up-2", &data, port, "process", &[]);
    up.ready().await;
    let out = up.output();
    assert!(out.contains("resumed"), "{out}");
    assert!(!out.contains("swarm initialized"), "initialized a second time:\n{out}");
    let again = up
        .docker(&["info", "--format", "{{.Swarm.Cluster.ID}} {{.Swarm.NodeID}}"])
        .ok();
    assert_eq!(again.stdout.trim(), format!("{cluster} {node_id}"));
    eventually(CONVERGE, "service t running again after the restart", || {
        service_t_runs(&up)
    })
    .await;
    let rows = up.lines(&["node", "ls", "-q"]).expect("node ls");
    assert_eq!(rows, vec![node_id.clone()]);

    // Ctrl-C on a terminal (SIGINT to the whole group) stops it as cleanly.
    assert_eq!(up.interrupt_group().await, Some(0), "{}", up.output());
    let left = leftovers(up.pgid, &data);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:?}");
    assert!(!up.output().contains("restarting"), "{}", up.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_extra_agents_restarts_children_and_replaces_a_killed_up() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(
        home.path(),
        "up",
        &data,
        free_port(),
        "process",
        &["--extra-agents", "2"],
    );
    up.ready().await;

    let three_ready = || async {
        let rows = up.lines(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])?;
        let ready = rows.iter().filter(|r| r.ends_with(" Ready")).count();
        let names: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r.split(' ').next()).collect();
        match (rows.len(), ready, names.len()) {
            (3, 3, 3) => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    };
    eventually(CONVERGE, "three nodes with distinct names, all ready", three_ready).await;
    // This host's node ID for the main agent; the extra agents keep their own in their data dirs.
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut want: Vec<String> = [
        data.join("node-id"),
        data.join("agent-2/node-id"),
        data.join("agent-3/node-id"),
    ]
    .into_iter()
    .map(|p| read(p).trim().to_string())
    .collect();
    want.sort();
    let mut ids = up.lines(&["node", "ls", "-q"]).expect("node ls");
    ids.sort();
    assert_eq!(ids, want);
    assert!(want[0] != want[1] && want[1] != want[2], "{want:?}");

    // SIGKILL the api, the main agent and the store, one after the other: each comes back.
    let victims: [(&str, Option<PathBuf>, &str); 3] = [
        ("shoal-api", None, "api was killed by SIGKILL"),
        ("shoal-agent", Some(data.join("agent")), "agent was killed by SIGKILL"),
        ("shoal-raft-store", None, "raft-store was killed by SIGKILL"),
    ];
    for (program, arg, said) in victims {
        let old = up
            .pid_of(program, arg.as_deref())
            .unwrap_or_else(|| panic!("no {program} in the group"));
        kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill");
        eventually(CONVERGE, &format!("{program} restarted"), || async {
            match up.pid_of(program, arg.as_deref()) {
                Some(new) if new != old => Ok(()),
                other => Err(format!("{program} pid {other:?} (was {old})")),
            }
        })
        .await;
        assert!(up.output().contains(said), "{}", up.output());
        eventually(CONVERGE, "the cluster answering with three ready nodes", three_ready).await;
    }

    // shoal up itself SIGKILLed: its children live on; the next shoal up on the
    // data dir stops them (they would hold the ports) and takes over.
    let port = up.port;
    kill(Pid::from_raw(up.pgid), Signal::SIGKILL).expect("kill shoal up");
    let _ = up.child.wait();
    assert!(
        up.pid_of("shoal-api", None).is_some(),
        "the children outlive a SIGKILLed shoal up"
    );
    let mut next = Up::start(home.path(), "up-next", &data, port, "process", &["--extra-agents", "2"]);
    next.ready().await;
    assert!(next.output().contains("did not stop cleanly"), "{}", next.output());
    let left: Vec<String> = procs()
        .into_iter()
        .filter(|p| p.pgid == up.pgid)
        .map(|p| format!("{} {:?}", p.pid, p.args))
        .collect();
    assert!(left.is_empty(), "the killed shoal up's children still run: {left:?}");
    eventually(CONVERGE, "three ready nodes under the next shoal up", || async {
        let rows = next.lines(&["node", "ls", "--format", "{{.Status}}"])?;
        match rows.iter().filter(|r| *r == "Ready").count() {
            3 => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
    assert_eq!(next.terminate().await, Some(0), "{}", next.output());
    let left = leftovers(next.pgid, &data);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// Runs `shoal up` that must fail at once; returns (exit code, stderr+stdout).
async fn up_fails(home: &Path, path_env: &str, args: &[&str]) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let child = Command::new(bin("shoal"))
        .env_clear()
        .env("PATH", path_env)
        .env("HOME", home)
        .arg("up")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start shoal up");
    // Should it start a cluster after all, the guard kills it.
    struct Group(Option<Child>);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(c) = &mut self.0 {
                let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
                let _ = c.wait();
            }
        }
    }
    let mut g = Group(Some(child));
    eventually(Duration::from_secs(20), "shoal up to give up", || {
        let done = g.0.as_mut().map(|c| matches!(c.try_wait(), Ok(Some(_))));
        async move {
            match done {
                Some(true) => Ok(()),
                _ => Err("still running".to_string()),
            }
        }
    })
    .await;
    let out = g.0.take().expect("child").wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code(), text)
}

/// Exactly one line, containing every needle.
fn one_line_with(text: &str, needles: &[&str]) {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {text:?}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from {:?}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_explains_setup_mistakes_in_one_line() {
    let home = temp_home();
    let path = std::env::var("PATH").unwrap_or_default();
    let api = format!("tcp://127.0.0.1:{}", free_port());

    // A data dir that cannot be created (under a regular file).
    let file = home.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("data");
    let (code, text) = up_fails(
        home.path(),
        &path,
        &[
            "--executor",
            "process",
            "--api-addr",
            &api,
            "--data-dir",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{text}");
    one_line_with(
        &text,
        &["shoal up: cannot use data dir", bad.to_str().unwrap(), "--data-dir"],
    );

    // No nats-server on PATH.
    let empty = home.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let data = home.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (code, text) = up_fails(
        home.path(),
        empty.to_str().unwrap(),
        &["--executor", "process", "--api-addr", &api, "--data-dir", data_arg],
    )
    .await;
    assert_eq!(code, Some(1), "{text}");
    one_line_with(&text, &["shoal up: nats-server not found on PATH", "ops/bootstrap"]);

    // The API port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let (code, text) = up_fails(
        home.path(),
        &path,
        &[
            "--executor",
            "process",
            "--api-addr",
            &format!("tcp://127.0.0.1:{taken_port}"),
            "--data-dir",
            data_arg,
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{text}");
    one_line_with(
        &text,
        &[&format!("port {taken_port} on 127.0.0.1 is taken"), "--api-addr"],
    );
}

/// `docker service ps r` rows of one desired state, as `<image> <current state>`.
fn ps_rows(up: &Up, desired: &str) -> Result<Vec<String>, String> {
    up.lines(&[
        "service",
        "ps",
        "r",
        "-f",
        &format!("desired-state={desired}"),
        "--format",
        "{{.Image}} {{.CurrentState}}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_service_update_rolls_out_and_rollback_returns_to_the_previous_spec() {
    let home = temp_home();
    let data = home.path().join("data");
    let port = free_port();
    let mut up = Up::start(home.path(), "up-roll", &data, port, "process", &["--extra-agents", "2"]);
    up.ready().await;
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "r",
        "--replicas",
        "3",
        "--update-delay",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    eventually(CONVERGE, "3 tasks of r running", || async {
        let rows = ps_rows(&up, "running")?;
        match rows
            .iter()
            .filter(|r| r.starts_with("busybox:latest ") && r.contains("Running"))
            .count()
        {
            3 => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;

    // A changed image rolls through every slot: old tasks shut down, kept as history.
    up.docker(&["service", "update", "-d", "--image", "busybox:v2", "r"])
        .ok();
    eventually(CONVERGE, "the update to complete", || async {
        let running = ps_rows(&up, "running")?;
        let shutdown = ps_rows(&up, "shutdown")?;
        let state = up.lines(&["service", "inspect", "--format", "{{.UpdateStatus.State}}", "r"])?;
        let new = running
            .iter()
            .filter(|r| r.starts_with("busybox:v2 ") && r.contains("Running"))
            .count();
        let old = shutdown.iter().filter(|r| r.starts_with("busybox:latest ")).count();
        match (new, old, state.as_slice()) {
            (3, 3, [s]) if s == "completed" => Ok(()),
            _ => Err(format!(
                "running {running:?}; shutdown {shutdown:?}; update state {state:?}"
            )),
        }
    })
    .await;

    // A requested rollback returns to the previous spec, through the same rollout.
    up.docker(&["service", "update", "-d", "--rollback", "r"]).ok();
    eventually(CONVERGE, "the rollback to complete", || async {
        let running = ps_rows(&up, "running")?;
        let state = up.lines(&["service", "inspect", "--format", "{{.UpdateStatus.State}}", "r"])?;
        let image = up.lines(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            "r",
        ])?;
        let old = running
            .iter()
            .filter(|r| r.starts_with("busybox:latest ") && r.contains("Running"))
            .count();
        match (old, state.as_slice(), image.as_slice()) {
            (3, [s], [i]) if s == "rollback_completed" && i == "busybox:latest" => Ok(()),
            _ => Err(format!("running {running:?}; update state {state:?}; image {image:?}")),
        }
    })
    .await;
    assert_eq!(up.terminate().await, Some(0), "{}", up.output());
}
