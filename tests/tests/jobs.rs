//! Jobs (`--mode replicated-job` / `global-job`) through the real docker
//! CLI: real busybox containers with the docker executor, host processes
//! with the process executor. Tasks run to completion, failures retry per
//! the restart policy, `--max-concurrent` holds at every poll, `service ls`
//! and `service ps` print what Docker prints, and an update runs the job again.

use shoal_tests::free_port;
use shoal_tests::up::{temp_home, until, Up};

/// `service ls` row of one service: `<mode>|<replicas>`.
fn ls_row(up: &Up, service: &str) -> Result<String, String> {
    let rows = up.lines(&["service", "ls", "--format", "{{.Name}}|{{.Mode}}|{{.Replicas}}"])?;
    rows.iter()
        .find_map(|r| r.strip_prefix(&format!("{service}|")).map(str::to_string))
        .ok_or_else(|| format!("no {service} in {rows:?}"))
}

/// `<desired> <current state word>` of each task of a service.
fn ps_states(up: &Up, service: &str) -> Result<Vec<String>, String> {
    let rows = up.lines(&[
        "service",
        "ps",
        service,
        "--format",
        "{{.DesiredState}} {{.CurrentState}}",
    ])?;
    Ok(rows
        .iter()
        .map(|r| r.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect())
}

fn count(rows: &[String], want: &str) -> usize {
    rows.iter().filter(|r| *r == want).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_job_completes_with_retries_never_above_max_concurrent_and_reruns_on_update() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "jobs", &data, free_port(), "docker", &[]);
    up.ready().await;
    // The first two runs fail (they find fewer than two marks in the shared
    // directory), every later one completes.
    let marks = tempfile::tempdir().expect("marks dir");
    let mount = format!("type=bind,src={},dst=/marks", marks.path().display());
    let script = "n=$(ls /marks | wc -l); touch /marks/$(hostname)-$$; sleep 1; [ \"$n\" -ge 2 ]";
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "jb",
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
        "--restart-delay",
        "0s",
        "--mount",
        &mount,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    let spec = up
        .lines(&[
            "service",
            "inspect",
            "jb",
            "--format",
            "{{json .Spec.Mode}} {{.JobStatus.JobIteration.Index}}",
        ])
        .expect("inspect");
    assert_eq!(
        spec,
        [r#"{"ReplicatedJob":{"MaxConcurrent":2,"TotalCompletions":5}} 0"#]
    );

    // Five completions, failures retried; never more than two containers running.
    let mut most = 0;
    until("five completions of jb", || {
        let running = up
            .containers("{{.State}} {{.Label \"com.docker.swarm.service.name\"}}")
            .iter()
            .filter(|l| *l == "running jb")
            .count();
        most = most.max(running);
        assert!(
            running <= 2,
            "{running} containers of jb running at once, max-concurrent is 2"
        );
        let states = ps_states(&up, "jb")?;
        match count(&states, "Complete Complete") {
            5 => Ok(states),
            _ => Err(format!("{states:?}")),
        }
    })
    .await;
    assert!(most >= 1, "the job was seen running");
    let states = ps_states(&up, "jb").expect("ps");
    assert!(
        states.iter().filter(|s| s.ends_with(" Failed")).count() >= 2,
        "the two failed runs are kept as history: {states:?}"
    );
    assert_eq!(
        ls_row(&up, "jb").expect("ls"),
        "replicated job|0/2 (5/5 completed)",
        "as docker/cli prints a job"
    );
    until("no container of jb left running", || {
        let rows = up.containers("{{.State}} {{.Label \"com.docker.swarm.service.name\"}}");
        match rows.iter().any(|l| l == "running jb") {
            false => Ok(()),
            true => Err(format!("{rows:?}")),
        }
    })
    .await;
    // Nothing more runs once the job completed.
    let tasks = up.lines(&["service", "ps", "-q", "jb"]).expect("ps").len();

    // An update runs the job again: a new iteration, five more completions.
    let r = up.docker(&["service", "update", "-d", "--env-add", "AGAIN=1", "jb"]);
    assert_eq!(r.code, 0, "update: {r:?}");
    let iteration = up
        .lines(&[
            "service",
            "inspect",
            "jb",
            "--format",
            "{{.JobStatus.JobIteration.Index}}",
        ])
        .expect("inspect");
    assert_eq!(iteration, ["1"]);
    until("the second iteration to complete", || {
        let row = ls_row(&up, "jb")?;
        match row == "replicated job|0/2 (5/5 completed)" {
            true => Ok(()),
            false => Err(row),
        }
    })
    .await;
    let after = up.lines(&["service", "ps", "-q", "jb"]).expect("ps").len();
    assert!(after >= tasks + 5, "five new tasks ran: {tasks} before, {after} after");
    let r = up.docker(&["service", "rm", "jb"]);
    assert_eq!(r.code, 0, "rm: {r:?}");
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_job_completes_once_per_node_and_failures_stop_at_max_attempts_with_processes() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(
        home.path(),
        "gjobs",
        &data,
        free_port(),
        "process",
        &["--extra-agents", "2"],
    );
    up.ready().await;
    until("three ready nodes", || {
        let rows = up.lines(&["node", "ls", "--format", "{{.Status}}"])?;
        match count(&rows, "Ready") {
            3 => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
    // Restart condition `any` (the default) with no delay: a completed job
    // task must still never run again.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "gj",
        "--mode",
        "global-job",
        "--restart-delay",
        "0s",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    until("a completion on each of the three nodes", || {
        let row = ls_row(&up, "gj")?;
        let states = ps_states(&up, "gj")?;
        match (row.as_str(), count(&states, "Complete Complete")) {
            ("global job|0/0 (3/3 completed)", 3) if states.len() == 3 => Ok(()),
            _ => Err(format!("{row} {states:?}")),
        }
    })
    .await;

    // A failing job: restarted once per node (max attempts 1), then left failed.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "gf",
        "--mode",
        "global-job",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "1",
        "--restart-delay",
        "0s",
        "busybox",
        "false",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    until("two failed runs on each node", || {
        let states = ps_states(&up, "gf")?;
        match states.iter().filter(|s| s.ends_with(" Failed")).count() {
            6 => Ok(()),
            _ => Err(format!("{states:?}")),
        }
    })
    .await;
    let rows = ls_row(&up, "gf").expect("ls");
    assert!(rows.starts_with("global job|0/"), "{rows}");
    // The scheduler has made many passes since gj completed: it ran nowhere again.
    assert_eq!(
        ps_states(&up, "gj").expect("ps"),
        ["Complete Complete", "Complete Complete", "Complete Complete"]
    );
    drop(up);
}
