//! Real containers: `shoal up` with the docker executor on the machine's
//! Docker Engine, driven by the real docker CLI, checked on the engine
//! itself (`docker ps`, `docker inspect`, `docker exec` without DOCKER_HOST).
//!
//! Every `shoal up` here removes its nodes' containers when dropped; volumes,
//! image tags and the registry a test makes are removed by its own guards.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use futures::StreamExt;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use shoal_shared::dispatch::{Assignments, ImageAnswer, ImageQuery};
use shoal_shared::{envelope, subjects, ErrorCode};
use shoal_tests::up::{engine, temp_home, until, Up, CONVERGE};
use shoal_tests::{eventually, free_port, which};

/// Starts `shoal up --executor docker` and waits for its `DOCKER_HOST` line.
async fn up_docker(home: &Path, name: &str, data: &Path, port: u16) -> Up {
    up_docker_with(home, name, data, port, &[]).await
}

async fn up_docker_with(home: &Path, name: &str, data: &Path, port: u16, extra: &[&str]) -> Up {
    let mut up = Up::start(home, name, data, port, "docker", extra);
    up.ready().await;
    assert!(up.output().contains("shoal up: executor: docker"), "{}", up.output());
    up
}

/// `<name> <replicas>` of every service.
fn services(up: &Up) -> Result<Vec<String>, String> {
    up.lines(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])
}

fn replicas_are(up: &Up, want: &[&str]) -> Result<(), String> {
    let got = services(up)?;
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    match got == want {
        true => Ok(()),
        false => Err(format!("services {got:?}, want {want:?}")),
    }
}

/// `docker service create -d --name <name> <args...>`, which must succeed.
fn create(up: &Up, name: &str, args: &[&str]) {
    let mut all = vec!["service", "create", "-d", "--name", name];
    all.extend_from_slice(args);
    up.docker(&all).ok();
}

/// One service's replicas column is `want`.
fn replicas_of(up: &Up, service: &str, want: &str) -> Result<(), String> {
    let all = services(up)?;
    match all.iter().any(|l| *l == format!("{service} {want}")) {
        true => Ok(()),
        false => Err(format!("services {all:?}, want {service} {want}")),
    }
}

/// Names of the running containers of a service on the engine.
fn running_containers(up: &Up, service: &str) -> Vec<String> {
    running(up, service, "{{.Names}}")
}

/// One field (`{{.Names}}`, `{{.ID}}`) of each running container of a service.
fn running(up: &Up, service: &str, field: &str) -> Vec<String> {
    up.containers(&format!(
        "{field} {{{{.State}}}} {{{{.Label \"com.docker.swarm.service.name\"}}}}"
    ))
    .into_iter()
    .filter_map(|l| {
        let mut p = l.split_whitespace();
        let (value, state, svc) = (p.next()?, p.next()?, p.next()?);
        (state == "running" && svc == service).then(|| value.to_string())
    })
    .collect()
}

/// Every container (any state) of a service on the engine.
fn all_containers(up: &Up, service: &str) -> Vec<String> {
    up.containers("{{.Names}} {{.Label \"com.docker.swarm.service.name\"}}")
        .into_iter()
        .filter_map(|l| {
            let (name, svc) = l.split_once(' ')?;
            (svc == service).then(|| name.to_string())
        })
        .collect()
}

fn count_is(up: &Up, service: &str, n: usize, running_only: bool) -> Result<(), String> {
    let got = match running_only {
        true => running_containers(up, service),
        false => all_containers(up, service),
    };
    match got.len() == n {
        true => Ok(()),
        false => Err(format!("{service}: containers {got:?}, want {n}")),
    }
}

/// Waits until a task of `service` is `Rejected` with `needle` in its error.
async fn rejected_with(up: &Up, service: &str, needle: &str) {
    until(&format!("{service} rejected with {needle:?}"), || {
        let rows = up.lines(&[
            "service",
            "ps",
            service,
            "--no-trunc",
            "--format",
            "{{.CurrentState}}|{{.Error}}",
        ])?;
        match rows.iter().any(|r| r.starts_with("Rejected") && r.contains(needle)) {
            true => Ok(()),
            false => Err(format!("{rows:?}")),
        }
    })
    .await;
}

/// Waits until none of this swarm's task containers is left on the engine.
async fn no_containers_left(up: &Up) {
    until("no task containers left", || {
        let left = up.containers("{{.Names}}");
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("{left:?}")),
        }
    })
    .await;
}

/// A tag of the local busybox image, removed when dropped.
struct Tag(String);

impl Tag {
    fn new(name: &str) -> Tag {
        engine(&["tag", "busybox:latest", name]).ok();
        Tag(name.to_string())
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = engine(&["rmi", "--no-prune", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_walkthrough_runs_real_containers() {
    let home = temp_home();
    let data = home.path().join("data");
    let up = up_docker(home.path(), "walk", &data, free_port()).await;
    let v2 = Tag::new("busybox:shoal-walk-v2");
    let node_id = up.node_ids().pop().expect("node id");

    // The node describes the engine it runs tasks on.
    let facts = engine(&[
        "info",
        "--format",
        "{{.ServerVersion}} {{.NCPU}} {{.MemTotal}} {{.OSType}}",
    ])
    .ok();
    let facts: Vec<String> = facts.stdout.split_whitespace().map(str::to_string).collect();
    let cpus: i64 = facts[1].parse().unwrap();
    let want = format!("{} {} {} {} ", facts[0], cpus * 1_000_000_000, facts[2], facts[3]);
    until("the node to describe its engine", || {
        let described = up
            .lines(&[
                "node",
                "inspect",
                "self",
                "--format",
                "{{.Description.Engine.EngineVersion}} {{.Description.Resources.NanoCPUs}} \
                 {{.Description.Resources.MemoryBytes}} {{.Description.Platform.OS}} \
                 {{range .Description.Engine.Plugins}}{{.Type}}/{{.Name}},{{end}}",
            ])?
            .join(" ");
        let ok = described.starts_with(&want)
            && described.contains("Volume/local,")
            && described.contains("Network/bridge,");
        match ok {
            true => Ok(()),
            false => Err(format!("node {described:?}, engine {facts:?}")),
        }
    })
    .await;

    // Without -d the CLI follows progress and returns once converged.
    let r = up.docker(&[
        "service",
        "create",
        "--name",
        "ping_con",
        "busybox",
        "ping",
        "127.0.0.1",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    assert!(
        r.stdout.contains("converged"),
        "the progress display should end converged: {r:?}"
    );
    replicas_are(&up, &["ping_con 1/1"]).unwrap();
    // The digest came from the node's image store (no registry here).
    let image = up.lines(&[
        "service",
        "inspect",
        "ping_con",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ]);
    let image = image.unwrap().join("");
    assert!(image.starts_with("busybox:latest@sha256:"), "{image}");
    let svc_id = up
        .lines(&["service", "inspect", "ping_con", "--format", "{{.ID}}"])
        .unwrap()
        .join("");
    let task_id = up
        .lines(&["service", "ps", "ping_con", "--no-trunc", "--format", "{{.ID}}"])
        .unwrap()
        .join("");
    let labels = up.containers(
        "{{.Names}}|{{.Label \"com.docker.swarm.service.id\"}}|{{.Label \"com.docker.swarm.service.name\"}}|\
         {{.Label \"com.docker.swarm.task.id\"}}|{{.Label \"com.docker.swarm.task.name\"}}|\
         {{.Label \"com.docker.swarm.node.id\"}}|{{.State}}",
    );
    let name = format!("ping_con.1.{task_id}");
    assert_eq!(
        labels,
        vec![format!("{name}|{svc_id}|ping_con|{task_id}|{name}|{node_id}|running")],
        "one real container, named and labelled as Swarm does"
    );

    up.docker(&[
        "service",
        "create",
        "-d",
        "--replicas=7",
        "--name",
        "task5_con",
        "busybox",
        "ping",
        "127.0.0.1",
    ])
    .ok();
    up.docker(&[
        "service", "create", "-d", "--mode", "global", "--name", "glob", "busybox", "sleep", "3600",
    ])
    .ok();
    up.docker(&["service", "scale", "-d", "ping_con=3"]).ok();
    until("7 + 3 + 1 running containers", || {
        replicas_are(&up, &["glob 1/1", "ping_con 3/3", "task5_con 7/7"])?;
        count_is(&up, "task5_con", 7, true)?;
        count_is(&up, "ping_con", 3, true)?;
        count_is(&up, "glob", 1, true)
    })
    .await;

    // Down from 7: the surplus containers go away, not just stop.
    up.docker(&["service", "update", "-d", "--replicas=4", "task5_con"])
        .ok();
    until("task5_con down to 4 containers", || {
        replicas_are(&up, &["glob 1/1", "ping_con 3/3", "task5_con 4/4"])?;
        count_is(&up, "task5_con", 4, false)
    })
    .await;

    // A new image rolls through the slots; old tasks stay as Shutdown history.
    up.docker(&[
        "service",
        "update",
        "-d",
        "--stop-grace-period",
        "1s",
        "--image",
        "busybox:shoal-walk-v2",
        "ping_con",
    ])
    .ok();
    until("ping_con updated to v2", || {
        let state = up.lines(&["service", "inspect", "ping_con", "--format", "{{.UpdateStatus.State}}"])?;
        let running = up.lines(&[
            "service",
            "ps",
            "ping_con",
            "-f",
            "desired-state=running",
            "--format",
            "{{.Image}} {{.CurrentState}}",
        ])?;
        let ok = state == ["completed"]
            && running.len() == 3
            && running.iter().all(|r| r.starts_with("busybox:shoal-walk-v2 Running"));
        match ok && count_is(&up, "ping_con", 3, true).is_ok() {
            true => Ok(()),
            false => Err(format!("update {state:?}, running {running:?}")),
        }
    })
    .await;
    let old = up
        .lines(&[
            "service",
            "ps",
            "ping_con",
            "-f",
            "desired-state=shutdown",
            "--format",
            "{{.Image}} {{.DesiredState}} {{.CurrentState}}",
        ])
        .unwrap();
    assert!(old.len() >= 3, "{old:?}");
    assert!(
        old.iter()
            .all(|r| r.contains(" Shutdown ") && !r.starts_with("busybox:shoal-walk-v2")),
        "the replaced tasks are kept as Shutdown history: {old:?}"
    );
    let pretty = up.docker(&["service", "inspect", "--pretty", "ping_con"]).ok();
    for needle in ["Name:\t\tping_con", "Replicas:\t3", "busybox:shoal-walk-v2"] {
        assert!(
            pretty.stdout.contains(needle),
            "{needle:?} missing from\n{}",
            pretty.stdout
        );
    }
    let mine = up
        .docker(&["node", "ps", "self", "--format", "{{.Name}} {{.CurrentState}}"])
        .ok();
    assert!(
        mine.lines().iter().filter(|l| l.contains("Running")).count() >= 8,
        "node ps self: {}",
        mine.stdout
    );

    // Drain: nothing may run here, so tasks wait with SwarmKit's message and the containers stop.
    up.docker(&["node", "update", "--availability", "drain", "self"]).ok();
    until("drained: pending tasks, no running containers", || {
        let pending = up.lines(&[
            "service",
            "ps",
            "task5_con",
            "--no-trunc",
            "-f",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}|{{.Error}}",
        ])?;
        let all_pending = pending.len() == 4
            && pending
                .iter()
                .all(|p| p.starts_with("Pending") && p.contains("no suitable node"));
        let left: Vec<String> = ["ping_con", "task5_con", "glob"]
            .iter()
            .flat_map(|s| running_containers(&up, s))
            .collect();
        match all_pending && left.is_empty() {
            true => Ok(()),
            false => Err(format!("task5_con {pending:?}, still running {left:?}")),
        }
    })
    .await;
    up.docker(&["node", "update", "--availability", "active", "self"]).ok();
    until("active again: everything runs", || {
        replicas_are(&up, &["glob 1/1", "ping_con 3/3", "task5_con 4/4"])?;
        count_is(&up, "task5_con", 4, true)?;
        count_is(&up, "ping_con", 3, true)?;
        count_is(&up, "glob", 1, true)
    })
    .await;

    up.docker(&["service", "rm", "ping_con", "task5_con", "glob"]).ok();
    no_containers_left(&up).await;
    drop(v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_history_is_kept_to_five_per_slot() {
    let home = temp_home();
    let data = home.path().join("data");
    let up = up_docker(home.path(), "history", &data, free_port()).await;
    create(
        &up,
        "hist",
        &[
            "--stop-grace-period",
            "1s",
            "--update-monitor",
            "500ms",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    until("hist runs", || replicas_are(&up, &["hist 1/1"])).await;
    for round in 1..=6 {
        up.docker(&["service", "update", "-d", "--force", "hist"]).ok();
        until(&format!("forced update {round} done"), || {
            let rows = up.lines(&[
                "service",
                "ps",
                "hist",
                "--format",
                "{{.DesiredState}} {{.CurrentState}}",
            ])?;
            let running = rows.iter().filter(|r| r.starts_with("Running Running")).count();
            let done = rows.len() >= (round + 1).min(5) && running == 1 && rows.len() <= 5;
            let state = up.lines(&["service", "inspect", "hist", "--format", "{{.UpdateStatus.State}}"])?;
            match done && state == ["completed"] {
                true => Ok(()),
                false => Err(format!("round {round}: {rows:?} {state:?}")),
            }
        })
        .await;
    }
    let rows = up
        .lines(&["service", "ps", "hist", "--format", "{{.DesiredState}}"])
        .unwrap();
    assert_eq!(rows.len(), 5, "the slot keeps 5 tasks (1 running + 4 old): {rows:?}");
    // As in Swarm, the containers of the kept tasks stay (stopped) for
    // `docker logs`, and go with their tasks: 1 running + 4 exited.
    until("containers follow the kept tasks", || {
        count_is(&up, "hist", 5, false)?;
        count_is(&up, "hist", 1, true)
    })
    .await;
}

/// A named volume, removed when dropped.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = engine(&["volume", "rm", "-f", &self.0]);
    }
}

/// The one running container of a service.
fn the_container(up: &Up, service: &str) -> Result<String, String> {
    match running_containers(up, service).as_slice() {
        [one] => Ok(one.clone()),
        other => Err(format!("{service}: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_volume_and_tmpfs_mounts_and_limits_reach_the_container() {
    let home = temp_home();
    let data = home.path().join("data");
    // Declared before `up`, so dropped after it has removed the containers using it.
    let vol = Volume(format!("shoal-test-{}", free_port()));
    let optvol = Volume(format!("{}-opts", vol.0));
    let up = up_docker(home.path(), "mounts", &data, free_port()).await;
    let host_dir = home.path().join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    let host = host_dir.to_str().unwrap();

    // bind: the task writes, the host reads.
    create(
        &up,
        "binder",
        &[
            "--stop-grace-period",
            "1s",
            "--env",
            "SHOAL_X=42",
            "--workdir",
            "/data",
            "--user",
            "0:0",
            "--hostname",
            "binder-host",
            "--limit-memory",
            "64m",
            "--limit-cpu",
            "0.5",
            "--mount",
            &format!("type=bind,source={host},target=/data"),
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1048576",
            "busybox",
            "sh",
            "-c",
            "echo written-by-task > /data/out; exec sleep 3600",
        ],
    );
    // volume: one task writes, a second task on the node reads it.
    let vmount = format!("type=volume,source={},target=/v", vol.0);
    create(
        &up,
        "writer",
        &[
            "--stop-grace-period",
            "1s",
            "--mount",
            &vmount,
            "busybox",
            "sh",
            "-c",
            "echo from-writer > /v/note; exec sleep 3600",
        ],
    );
    create(
        &up,
        "reader",
        &[
            "--stop-grace-period",
            "1s",
            "--mount",
            &vmount,
            "busybox",
            "sleep",
            "3600",
        ],
    );
    // A volume created on the node with its driver and options, as the seed's NFS
    // example does (here the local driver mounts a tmpfs: no NFS server needed).
    let optmount = format!(
        "type=volume,source={},target=/o,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs,\
         volume-opt=o=size=2m",
        optvol.0
    );
    create(
        &up,
        "opts",
        &[
            "--stop-grace-period",
            "1s",
            "--mount",
            &optmount,
            "busybox",
            "sleep",
            "3600",
        ],
    );
    // readonly bind.
    create(
        &up,
        "ro",
        &[
            "--stop-grace-period",
            "1s",
            "--mount",
            &format!("type=bind,source={host},target=/ro,readonly"),
            "busybox",
            "sleep",
            "3600",
        ],
    );
    until("all five run", || {
        replicas_are(&up, &["binder 1/1", "opts 1/1", "reader 1/1", "ro 1/1", "writer 1/1"])
    })
    .await;
    let opts = engine(&[
        "volume",
        "inspect",
        "--format",
        "{{.Driver}} {{json .Options}}",
        &format!("{}-opts", vol.0),
    ])
    .ok();
    assert_eq!(
        opts.stdout.trim(),
        r#"local {"device":"tmpfs","o":"size=2m","type":"tmpfs"}"#,
        "the volume was created with the service's driver options"
    );
    let oc = until("opts container", || the_container(&up, "opts")).await;
    let m = engine(&["exec", &oc, "sh", "-c", "grep ' /o ' /proc/mounts"]).ok();
    assert!(
        m.stdout.starts_with("tmpfs /o tmpfs") && m.stdout.contains("size=2048k"),
        "{m:?}"
    );

    let written = until("the host sees the bind-mounted file", || {
        std::fs::read_to_string(host_dir.join("out")).map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(written.trim(), "written-by-task");
    let reader = until("reader container", || the_container(&up, "reader")).await;
    until("the second task reads the first one's volume file", || {
        let r = engine(&["exec", &reader, "cat", "/v/note"]);
        match r.stdout.trim() == "from-writer" {
            true => Ok(()),
            false => Err(format!("{r:?}")),
        }
    })
    .await;
    let ro = until("ro container", || the_container(&up, "ro")).await;
    let w = engine(&["exec", &ro, "touch", "/ro/forbidden"]);
    assert_ne!(w.code, 0, "a readonly bind must refuse writes: {w:?}");
    assert!(w.stderr.contains("Read-only file system"), "{w:?}");
    assert!(!host_dir.join("forbidden").exists());

    let binder = until("binder container", || the_container(&up, "binder")).await;
    let inspect = engine(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
        &binder,
    ])
    .ok();
    let line = inspect.stdout.trim();
    assert!(line.starts_with("67108864 500000000 "), "limits: {line}");
    assert!(line.contains("bind:/data"), "{line}");
    // The container spec: env, working dir, user, hostname, stop grace.
    let config = engine(&[
        "inspect",
        "--format",
        "{{.Config.User}}|{{.Config.WorkingDir}}|{{.Config.Hostname}}|{{.Config.StopTimeout}}|{{json .Config.Env}}",
        &binder,
    ])
    .ok();
    let config = config.stdout.trim();
    assert!(config.starts_with("0:0|/data|binder-host|1|"), "{config}");
    assert!(config.contains("\"SHOAL_X=42\""), "{config}");
    let pwd = engine(&["exec", &binder, "sh", "-c", "echo $SHOAL_X $(pwd) $(hostname)"]).ok();
    assert_eq!(pwd.stdout.trim(), "42 /data binder-host");
    let df = engine(&["exec", &binder, "sh", "-c", "grep ' /scratch ' /proc/mounts"]).ok();
    assert!(df.stdout.starts_with("tmpfs /scratch tmpfs"), "{df:?}");

    // A bind source that does not exist: the engine's words, in the task's error.
    let missing = home.path().join("no-such-dir");
    create(
        &up,
        "nobind",
        &[
            "--mount",
            &format!("type=bind,source={},target=/x", missing.display()),
            "busybox",
            "sleep",
            "3600",
        ],
    );
    rejected_with(&up, "nobind", "bind source path does not exist").await;
    assert!(!missing.exists(), "a bind source is never created");

    up.docker(&["service", "rm", "binder", "writer", "reader", "ro", "nobind", "opts"])
        .ok();
    no_containers_left(&up).await;
    let v = engine(&["volume", "inspect", "--format", "{{.Name}}", &vol.0]).ok();
    assert_eq!(
        v.stdout.trim(),
        vol.0,
        "named volumes outlive their tasks, as in Docker"
    );
}

/// One field of each task of a service whose desired state is running.
fn desired_running(up: &Up, service: &str, field: &str) -> Result<Vec<String>, String> {
    up.lines(&[
        "service",
        "ps",
        service,
        "-f",
        "desired-state=running",
        "--format",
        field,
    ])
}

/// IDs of the running containers of a service, sorted.
fn container_ids(up: &Up, service: &str) -> BTreeSet<String> {
    running(up, service, "{{.ID}}").into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_containers_are_replaced_and_restarted_agents_readopt_theirs() {
    let home = temp_home();
    let data = home.path().join("data");
    let port = free_port();
    let mut up = up_docker(home.path(), "adopt-1", &data, port).await;
    create(
        &up,
        "web",
        &[
            "--replicas",
            "3",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    // A task that ran to completion: its exited container and its state must survive restarts.
    create(&up, "once", &["--restart-condition", "none", "busybox", "true"]);
    let once_state = || {
        up.lines(&[
            "service",
            "ps",
            "once",
            "--format",
            "{{.DesiredState}} {{.CurrentState}}",
        ])
        .map(|r| r.join(","))
    };
    until("once completes", || {
        let st = once_state()?;
        match st.contains("Complete") && count_is(&up, "once", 1, false).is_ok() {
            true => Ok(()),
            false => Err(st),
        }
    })
    .await;
    // A forced update replaces it: the old completed task is now desired Shutdown.
    up.docker(&["service", "update", "-d", "--force", "once"]).ok();
    until("both runs of once complete", || {
        let st = once_state()?;
        match st.matches("Complete").count() == 2 && count_is(&up, "once", 2, false).is_ok() {
            true => Ok(()),
            false => Err(st),
        }
    })
    .await;
    let once_before = once_state().unwrap();
    let before = until("3 containers", || {
        replicas_of(&up, "web", "3/3")?;
        let ids = container_ids(&up, "web");
        match ids.len() == 3 {
            true => Ok(ids),
            false => Err(format!("{ids:?}")),
        }
    })
    .await;

    // docker kill behind shoal's back: the task fails and is replaced (restart policy any).
    let victim = before.iter().next().unwrap().clone();
    engine(&["kill", &victim]).ok();
    let after_kill = until("the killed container is replaced", || {
        let failed = up.lines(&[
            "service",
            "ps",
            "web",
            "--no-trunc",
            "--format",
            "{{.CurrentState}}|{{.Error}}",
        ])?;
        let ids = container_ids(&up, "web");
        let ok = failed
            .iter()
            .any(|r| r.starts_with("Failed") && r.contains("task: non-zero exit (137)"))
            && ids.len() == 3
            && !ids.contains(&victim);
        match ok && replicas_of(&up, "web", "3/3").is_ok() {
            true => Ok(ids),
            false => Err(format!("{failed:?} {ids:?}")),
        }
    })
    .await;
    // The killed task's container stays, exited, as history (`docker logs` works on it).
    let dead = engine(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", &victim]).ok();
    assert_eq!(dead.stdout.trim(), "exited 137");
    count_is(&up, "web", 4, false).unwrap();
    let tasks_before = desired_running(&up, "web", "{{.ID}}").unwrap();

    // SIGKILL the agent: shoal up restarts it and it re-adopts every container.
    let agent = up.pid_of("shoal-agent", None).expect("agent pid");
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    until("a new agent re-adopted the containers", || {
        let pid = up.pid_of("shoal-agent", None).ok_or("no agent yet")?;
        let log = std::fs::read_to_string(data.join("logs/agent.log")).unwrap_or_default();
        let adopted = log.matches("re-adopted running container").count();
        match pid != agent && adopted >= 3 {
            true => Ok(()),
            false => Err(format!("agent {pid}, adopted {adopted}")),
        }
    })
    .await;
    until("same containers, same tasks, after the agent restart", || {
        let ids = container_ids(&up, "web");
        let tasks = desired_running(&up, "web", "{{.ID}}")?;
        let st = desired_running(&up, "web", "{{.CurrentState}}")?;
        match ids == after_kill && tasks == tasks_before && st.iter().all(|s| s.starts_with("Running")) {
            true => Ok(()),
            false => Err(format!("containers {ids:?} tasks {tasks:?} {st:?}")),
        }
    })
    .await;
    count_is(&up, "web", 4, false).unwrap();
    let once_after = once_state().unwrap();
    assert_eq!(
        once_after.matches("Complete").count(),
        2,
        "completed tasks stay complete across an agent restart: {once_before} -> {once_after}"
    );
    count_is(&up, "once", 2, false).unwrap();

    // SIGKILL every shoal process at once, then shoal up again on the same data.
    let _ = killpg(Pid::from_raw(up.pgid), Signal::SIGKILL);
    let _ = up.child.wait();
    assert_eq!(container_ids(&up, "web"), after_kill, "containers outlive shoal");
    let again = up_docker(home.path(), "adopt-2", &data, port).await;
    until("everything back, no duplicates", || {
        replicas_of(&again, "web", "3/3")?;
        let ids = container_ids(&again, "web");
        let tasks = desired_running(&again, "web", "{{.ID}}")?;
        match ids == after_kill && tasks == tasks_before {
            true => Ok(()),
            false => Err(format!("containers {ids:?} tasks {tasks:?}")),
        }
    })
    .await;
    count_is(&again, "web", 4, false).unwrap();
    drop(up);
}

/// Every assignment and image lookup on a `shoal up`'s NATS, as the agents receive them.
struct CredentialWatch {
    nats: async_nats::Client,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CredentialWatch {
    async fn start(up: &Up) -> CredentialWatch {
        let out = up.output();
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("shoal up: NATS on "))
            .expect("NATS url line")
            .to_string();
        let nats = async_nats::connect(url).await.expect("connect to NATS");
        let mut subs = Vec::new();
        for subject in [
            subjects::agent_assignments("*"),
            subjects::agent_image_query(),
            subjects::agent_image_query_on("*"),
        ] {
            subs.push(nats.subscribe(subject).await.expect("subscribe"));
        }
        nats.flush().await.expect("flush");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let client = nats.clone();
        let task = tokio::spawn(async move {
            let _keep = nats;
            let mut all = futures::stream::select_all(subs);
            while let Some(msg) = all.next().await {
                let with_auth = match envelope::decode::<Assignments>(&msg.payload) {
                    Ok(a) => a.tasks.iter().any(|t| {
                        t.spec
                            .container_spec
                            .as_ref()
                            .and_then(|c| c.pull_options.as_ref())
                            .is_some_and(|p| !p.registry_auth.is_empty())
                    }),
                    Err(_) => envelope::decode::<ImageQuery>(&msg.payload)
                        .map(|q| q.registry_auth.is_some())
                        .unwrap_or(false),
                };
                sink.lock().unwrap().push((msg.subject.to_string(), with_auth));
            }
        });
        CredentialWatch {
            nats: client,
            seen,
            task,
        }
    }

    /// The subjects of the messages that carried registry credentials.
    fn carrying_credentials(&self) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty(), "no assignment or image lookup was seen at all");
        seen.iter().filter(|(_, auth)| *auth).map(|(s, _)| s.clone()).collect()
    }
}

impl Drop for CredentialWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Debian's docker-registry on loopback with htpasswd authentication; killed when dropped.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    async fn start(dir: &Path, user: &str, password: &str) -> Registry {
        let port = free_port();
        let htpasswd = Command::new(which("htpasswd"))
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(htpasswd.status.success());
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: \
             127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: shoal-test\n    path: {pw}\n",
            root = dir.join("storage").display(),
            pw = dir.join("htpasswd").display(),
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (ops/bootstrap installs it)");
        let reg = Registry { child, port };
        eventually(CONVERGE, "the registry to listen", || {
            let r = std::net::TcpStream::connect(("127.0.0.1", port));
            async move { r.map(|_| ()).map_err(|e| e.to_string()) }
        })
        .await;
        reg
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_registry_auth_pulls_from_a_private_registry_and_without_it_fails() {
    let home = temp_home();
    let reg_dir = home.path().join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg = Registry::start(&reg_dir, "shoaluser", "s3cret-pw").await;
    let image = format!("127.0.0.1:{}/busybox:latest", reg.port);
    // The docker CLI's own config (credentials) is shared by the engine-side
    // login and the shoal-side service commands, as on a user's machine.
    let cfg = home.path().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let pushed = Tag::new(&image);
    let login = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args(["--config", cfg_s, "login", "-u", "shoaluser", "--password-stdin"])
        .arg(format!("127.0.0.1:{}", reg.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret-pw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(login.status.success(), "{login:?}");
    engine(&["--config", cfg_s, "push", &image]).ok();
    // The node must pull: only the registry has this name now.
    drop(pushed);
    assert_ne!(engine(&["image", "inspect", &image]).code, 0);

    let data = home.path().join("data");
    // Two nodes, so that where the credentials travel can be seen.
    let up = up_docker_with(home.path(), "registry", &data, free_port(), &["--extra-agents", "1"]).await;
    let seen = CredentialWatch::start(&up).await;

    // Without credentials the node's pull is refused, in the registry's words.
    create(&up, "nocreds", &[&image, "sleep", "3600"]);
    rejected_with(&up, "nocreds", "no basic auth credentials").await;
    assert_eq!(count_is(&up, "nocreds", 0, false), Ok(()));
    up.docker(&["service", "rm", "nocreds"]).ok();
    let pulls = |outcome: &str| {
        up.metric_sum(
            "agent",
            &format!("shoal_agent_image_pull_seconds_count{{outcome=\"{outcome}\"}}"),
        )
    };
    assert!(
        pulls("failed").unwrap() >= 1.0,
        "the refused pull is in the agents' pull histogram"
    );
    assert_eq!(pulls("ok"), Ok(0.0), "nothing was pulled yet");

    // With --with-registry-auth the CLI sends the stored credentials and the node pulls.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--with-registry-auth",
        "--name",
        "creds",
        &image,
        "sleep",
        "3600",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    until("the private image runs", || {
        replicas_are(&up, &["creds 1/1"])?;
        count_is(&up, "creds", 1, true)
    })
    .await;
    // The credentials went to the node running the task (its assignments)
    // and to the API's own node (the digest lookup), and nowhere else.
    let running_on = up
        .lines(&[
            "service",
            "ps",
            "creds",
            "-f",
            "desired-state=running",
            "--format",
            "{{.Node}}",
        ])
        .unwrap()
        .join("");
    let nodes = up
        .lines(&["node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.Self}}"])
        .unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let node_of = |host: &str| {
        nodes
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(host))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{host} in {nodes:?}"))
            .to_string()
    };
    let task_node = node_of(&running_on);
    let api_node = nodes
        .iter()
        .find(|l| l.ends_with(" true"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let carried = seen.carrying_credentials();
    assert!(
        carried.contains(&subjects::agent_assignments(&task_node)),
        "the running node's assignments carry them: {carried:?}"
    );
    assert!(
        carried.contains(&subjects::agent_image_query_on(&api_node)),
        "the digest lookup went to the API's node: {carried:?}"
    );
    let allowed = [
        subjects::agent_assignments(&task_node),
        subjects::agent_image_query_on(&api_node),
    ];
    assert!(
        carried.iter().all(|s| allowed.contains(s)),
        "credentials reached {carried:?}; only {allowed:?} may see them"
    );

    // An agent that does not know an image says so (the API stops waiting once
    // every ready node has answered), and a known one answers with its digest.
    for node in [&task_node, &api_node] {
        let ask = |image: &str| ImageQuery {
            image: image.to_string(),
            registry_auth: None,
        };
        let subject = subjects::agent_image_query_on(node);
        let miss = envelope::request::<_, ImageAnswer>(&seen.nats, subject.clone(), &ask("shoal-no-such:1"), CONVERGE)
            .await
            .unwrap_err();
        assert_eq!(miss.code, ErrorCode::NotFound, "{miss}");
        let hit: ImageAnswer = envelope::request(&seen.nats, subject, &ask("busybox:latest"), CONVERGE)
            .await
            .unwrap();
        assert_eq!(&hit.node_id, node);
        assert!(
            hit.inspect["Descriptor"]["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{hit:?}"
        );
    }

    let spec = up.docker(&["service", "inspect", "creds"]).ok();
    assert!(
        !spec.stdout.contains("PullOptions") && !spec.stdout.contains("RegistryAuth"),
        "credentials never leave the managers: {}",
        spec.stdout
    );
    let pinned = format!("{image}@sha256:");
    assert!(
        spec.stdout.contains(&pinned),
        "the digest was resolved at the registry with the credentials: {}",
        spec.stdout
    );
    // The node pulled it: the engine now knows the registry's digest.
    assert!(pulls("ok").unwrap() >= 1.0, "the pull is in the agents' pull histogram");
    let digests = engine(&["image", "inspect", "busybox:latest", "--format", "{{.RepoDigests}}"]).ok();
    let repo = format!("127.0.0.1:{}/busybox@sha256:", reg.port);
    assert!(digests.stdout.contains(&repo), "{digests:?}");
    up.docker(&["service", "rm", "creds"]).ok();
    until("containers gone", || count_is(&up, "creds", 0, false)).await;
    for r in digests
        .stdout
        .trim_matches(|c| c == '[' || c == ']' || c == '\n')
        .split_whitespace()
    {
        if r.starts_with(&repo) {
            let _ = engine(&["rmi", "--no-prune", r]);
        }
    }
    let _ = engine(&["rmi", "--no-prune", &image]);
}

/// Issue 14, D2 with the docker executor: scale changes faster than
/// containers start used to leave running containers no task accounted for.
/// Counted on the engine by label: exactly one running container per running
/// task, also after the agent restarts. A failpoint holds every start's
/// outcome back 1.5 s, and the service is scaled down while tasks are
/// starting, so the stops do arrive while starts are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_scale_flips_leave_exactly_the_running_tasks_containers() {
    let home = temp_home();
    let data = home.path().join("data");
    let port = free_port();
    let env = [("FAILPOINTS", "agent-before-running=return(1500)")];
    let mut up = Up::start_with_env(home.path(), "flip-1", &data, port, "docker", &[], &env);
    up.ready().await;
    create(
        &up,
        "flip",
        &[
            "--replicas",
            "0",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    // Up, and down again as soon as a task is starting (its start held back).
    for n in [4, 3, 5] {
        up.docker(&["service", "scale", "-d", &format!("flip={n}")]).ok();
        until("a task starting", || {
            let st = desired_running(&up, "flip", "{{.CurrentState}}")?;
            match st.iter().any(|s| s.starts_with("Starting")) {
                true => Ok(()),
                false => Err(format!("{st:?}")),
            }
        })
        .await;
        up.docker(&["service", "scale", "-d", "flip=0"]).ok();
    }
    let matches = |want: usize| {
        let up = &up;
        move || {
            replicas_of(up, "flip", &format!("{want}/{want}"))?;
            let tasks: BTreeSet<String> = desired_running(up, "flip", "{{.ID}}")?.into_iter().collect();
            let running = running(up, "flip", "{{.Label \"com.docker.swarm.task.id\"}}");
            let short: BTreeSet<String> = running.iter().map(|id| id.chars().take(12).collect()).collect();
            match running.len() == want && short == tasks {
                true => Ok(running),
                false => Err(format!("tasks {tasks:?}, running containers of tasks {running:?}")),
            }
        }
    };
    until("no running container after the flips end at 0", matches(0)).await;
    up.docker(&["service", "scale", "-d", "flip=3"]).ok();
    let before = until("3 tasks, 3 containers", matches(3)).await;

    // The agent restarts (shoal up starts it again): same three, nothing more.
    let agent = up.pid_of("shoal-agent", None).expect("agent pid");
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    until("a new agent", || match up.pid_of("shoal-agent", None) {
        Some(p) if p != agent => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    for n in [6, 0, 4, 3] {
        up.docker(&["service", "scale", "-d", &format!("flip={n}")]).ok();
    }
    let after = until("3 tasks, 3 containers after the restart", matches(3)).await;
    assert_eq!(after.len(), before.len());
    up.docker(&["service", "rm", "flip"]).ok();
    no_containers_left(&up).await;
}

/// Swarm's placeholders in `--hostname`, `--env` and `--mount` are expanded
/// per task on the node (issue 15 §8), as SwarmKit's agent does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_env_and_mount_templates_are_expanded_per_task() {
    let home = temp_home();
    let data = home.path().join("data");
    let port = free_port();
    // Declared before `up`: dropped after it, once no container uses it.
    let volume = format!("tplvol-{}", std::process::id());
    let _volume = Volume(format!("{volume}-1"));
    let up = up_docker(home.path(), "tpl-1", &data, port).await;
    create(
        &up,
        "tpl",
        &[
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "--env",
            "WHERE={{.Node.Hostname}}/{{.Node.Platform.OS}}",
            "--env",
            "TASK={{.Task.Name}}",
            "--mount",
            &format!("type=volume,source={volume}-{{{{.Task.Slot}}}},target=/data"),
            "busybox",
            "sleep",
            "3600",
        ],
    );
    let node = up.lines(&["node", "ls", "--format", "{{.Hostname}}"]).unwrap()[0].clone();
    let container = until("the task's container", || the_container(&up, "tpl")).await;
    let inspect = engine(&[
        "inspect",
        "--format",
        "{{.Config.Hostname}}|{{json .Config.Env}}|{{range .Mounts}}{{.Name}}{{end}}",
        &container,
    ])
    .ok();
    let out = inspect.stdout.trim().to_string();
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(parts[0], "tpl-1", "{out}");
    assert!(parts[1].contains(&format!("WHERE={node}/linux")), "{out}");
    assert!(parts[1].contains("TASK=tpl.1."), "{out}");
    assert_eq!(parts[2], format!("{volume}-1"), "{out}");
    up.docker(&["service", "rm", "tpl"]).ok();
    no_containers_left(&up).await;
}
