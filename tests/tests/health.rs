//! Health-gated tasks through the real docker CLI with real busybox
//! containers: a task with a health check (from `--health-*` flags or the
//! image's `HEALTHCHECK`) stays `starting` until the engine finds its
//! container healthy; an unhealthy one fails with Docker's words and is
//! replaced; a rolling update counts an unhealthy new task as a failure.
//! The process executor refuses health checks in so many words.

use shoal_tests::free_port;
use shoal_tests::up::{engine, temp_home, until, Up};

/// An image made from busybox with a `HEALTHCHECK` (healthy once
/// `/tmp/ok` exists, looked at every second); removed when dropped.
struct HealthImage(&'static str);

impl HealthImage {
    fn make(name: &'static str) -> HealthImage {
        let base = format!("{}-base", name.replace([':', '/'], "-"));
        engine(&["create", "--name", &base, "busybox:latest", "true"]).ok();
        let r = engine(&[
            "commit",
            "--change",
            "HEALTHCHECK --interval=1s --retries=30 CMD test -e /tmp/ok",
            &base,
            name,
        ]);
        let _ = engine(&["rm", "-f", &base]);
        assert_eq!(r.code, 0, "commit: {r:?}");
        HealthImage(name)
    }
}

impl Drop for HealthImage {
    fn drop(&mut self) {
        let _ = engine(&["rmi", "--no-prune", self.0]);
    }
}

/// `<state word>|<error>` of each task of a service, newest first.
fn ps(up: &Up, service: &str) -> Result<Vec<String>, String> {
    let rows = up.lines(&[
        "service",
        "ps",
        service,
        "--no-trunc",
        "--format",
        "{{.CurrentState}}|{{.Error}}",
    ])?;
    Ok(rows
        .iter()
        .map(|r| {
            let (state, err) = r.split_once('|').unwrap_or((r, ""));
            // The CLI quotes the error with --no-trunc.
            let err = err.trim_matches('"');
            format!("{}|{err}", state.split_whitespace().next().unwrap_or(""))
        })
        .collect())
}

/// `(engine state, health)` of the containers of a service, e.g. `running healthy`.
fn engine_health(up: &Up, service: &str) -> Vec<String> {
    up.containers("{{.ID}} {{.Label \"com.docker.swarm.service.name\"}}")
        .iter()
        .filter_map(|l| {
            l.split_once(' ')
                .filter(|(_, s)| *s == service)
                .map(|(id, _)| id.to_string())
        })
        .map(|id| {
            let r = engine(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &id,
            ]);
            r.stdout.trim().to_string()
        })
        .collect()
}

/// Waits until a service's task runs, checking at every poll that it is
/// never reported running while its container is not healthy; returns
/// whether a poll saw the container running but the task still starting.
async fn runs_only_once_healthy(up: &Up, service: &str) -> bool {
    let mut gated = false;
    until(&format!("{service} running once healthy"), || {
        let states = ps(up, service)?;
        let health = engine_health(up, service);
        let task = states.first().cloned().unwrap_or_default();
        if task.starts_with("Starting|") && health.iter().any(|h| h == "running starting") {
            gated = true;
        }
        if task.starts_with("Running|") {
            assert!(
                health.iter().all(|h| h == "running healthy"),
                "{service} reported running while its container is {health:?}"
            );
            return Ok(());
        }
        Err(format!("tasks {states:?}, containers {health:?}"))
    })
    .await;
    gated
}

/// Waits until a service has `n` tasks failed as unhealthy, and a newer one.
async fn replaced_as_unhealthy(up: &Up, service: &str, n: usize) {
    until(&format!("{service} failed unhealthy {n} times and replaced"), || {
        let states = ps(up, service)?;
        let failed = states
            .iter()
            .filter(|s| *s == "Failed|dockerexec: unhealthy container")
            .count();
        match failed >= n && states.len() > failed {
            true => Ok(()),
            false => Err(format!("{states:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_gate_running_and_unhealthy_tasks_are_replaced() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "health", &data, free_port(), "docker", &[]);
    up.ready().await;
    let image = HealthImage::make("jobs-health-hc:1");

    // The image's HEALTHCHECK gates the task: healthy six seconds in.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "img",
        image.0,
        "sh",
        "-c",
        "sleep 6; touch /tmp/ok; exec sleep 3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    assert!(
        runs_only_once_healthy(&up, "img").await,
        "img was seen starting while its container ran"
    );
    // --health-cmd does the same.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "flag",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "30",
        "busybox",
        "sh",
        "-c",
        "sleep 6; touch /tmp/ok; exec sleep 3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    assert!(
        runs_only_once_healthy(&up, "flag").await,
        "flag was seen starting while its container ran"
    );
    // --no-healthcheck turns the image's check off: it runs at once, never healthy.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "nohc",
        "--no-healthcheck",
        image.0,
        "sleep",
        "3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    until("nohc running", || {
        let states = ps(&up, "nohc")?;
        match states.first().map(String::as_str) {
            Some("Running|") => Ok(()),
            _ => Err(format!("{states:?}")),
        }
    })
    .await;
    assert_eq!(
        engine_health(&up, "nohc"),
        ["running"],
        "no health check in the container"
    );

    // Never healthy: failed in Docker's words, and replaced (restart policy any).
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "sick",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--restart-delay",
        "0s",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sleep",
        "3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    // Healthy first, unhealthy later: failed while running, and replaced.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "later",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--restart-delay",
        "0s",
        "--stop-grace-period",
        "1s",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ok; sleep 4; rm /tmp/ok; exec sleep 3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    replaced_as_unhealthy(&up, "sick", 2).await;
    let r = up.docker(&["service", "rm", "sick"]);
    assert_eq!(r.code, 0, "rm: {r:?}");
    replaced_as_unhealthy(&up, "later", 1).await;
    let r = up.docker(&["service", "rm", "later"]);
    assert_eq!(r.code, 0, "rm: {r:?}");

    // A rolling update to a spec whose tasks never get healthy fails and
    // pauses; with start-first the old, healthy task keeps running.
    let r = up.docker(&[
        "service",
        "update",
        "-d",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--update-order",
        "start-first",
        "--update-failure-action",
        "pause",
        "--update-monitor",
        "5s",
        "flag",
    ]);
    assert_eq!(r.code, 0, "update: {r:?}");
    until("the update of flag to pause", || {
        let state = up.lines(&["service", "inspect", "flag", "--format", "{{.UpdateStatus.State}}"])?;
        let states = ps(&up, "flag")?;
        match state.first().map(String::as_str) {
            Some("paused") => Ok(states),
            _ => Err(format!("update {state:?}, tasks {states:?}")),
        }
    })
    .await;
    let states = ps(&up, "flag").expect("ps");
    assert!(
        states.iter().any(|s| s == "Failed|dockerexec: unhealthy container"),
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| s.starts_with("Running|")).count(),
        1,
        "the old task still runs: {states:?}"
    );
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_executor_refuses_health_checks_in_words() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "health-proc", &data, free_port(), "process", &[]);
    up.ready().await;
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "true",
        "busybox",
        "sleep",
        "3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    until("hc rejected for its health check", || {
        let states = ps(&up, "hc")?;
        let want = "Rejected|health checks need the docker executor (this node runs processes): remove the \
                    health check or use --no-healthcheck";
        match states.iter().any(|s| s == want) {
            true => Ok(()),
            false => Err(format!("{states:?}")),
        }
    })
    .await;
    // --no-healthcheck runs.
    let r = up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "nohc",
        "--no-healthcheck",
        "busybox",
        "sleep",
        "3600",
    ]);
    assert_eq!(r.code, 0, "create: {r:?}");
    until("nohc running", || {
        let states = ps(&up, "nohc")?;
        match states.first().map(String::as_str) {
            Some("Running|") => Ok(()),
            _ => Err(format!("{states:?}")),
        }
    })
    .await;
    drop(up);
}

/// The service's tasks' states, newest first, once `want` accepts them.
async fn states_until(up: &Up, service: &str, what: &str, want: impl Fn(&[String]) -> bool) -> Vec<String> {
    until(&format!("{service}: {what}"), || {
        let states = ps(up, service)?;
        match want(&states) {
            true => Ok(states),
            false => Err(format!("{states:?}")),
        }
    })
    .await
}

fn create(up: &Up, args: &[&str]) {
    let mut all = vec!["service", "create", "-d"];
    all.extend_from_slice(args);
    let r = up.docker(&all);
    assert_eq!(r.code, 0, "create: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_while_starting_adoption_and_grace_follow_health() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};

    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "health-gaps", &data, free_port(), "docker", &[]);
    up.ready().await;
    let hc = [
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--stop-grace-period",
        "1s",
    ];

    // A stop asked while the start waits for health (30 s before it is
    // decided) takes effect at once.
    let mut args = vec!["--name", "slow", "--health-retries", "30"];
    args.extend_from_slice(&hc);
    args.extend_from_slice(&["busybox", "sleep", "3600"]);
    create(&up, &args);
    until("slow's container runs, health starting", || {
        let h = engine_health(&up, "slow");
        match h.iter().any(|h| h == "running starting") {
            true => Ok(()),
            false => Err(format!("{h:?}")),
        }
    })
    .await;
    let asked = Instant::now();
    let r = up.docker(&["service", "rm", "slow"]);
    assert_eq!(r.code, 0, "rm: {r:?}");
    until("slow's container stopped", || {
        let h = engine_health(&up, "slow");
        match h.iter().any(|h| h.starts_with("running")) {
            false => Ok(()),
            true => Err(format!("{h:?}")),
        }
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the stop waited for health: {:?}",
        asked.elapsed()
    );

    // An unhealthy container is stopped with the task's grace period (1 s;
    // busybox's sleep as PID 1 ignores SIGTERM, so the grace is waited out).
    let mut args = vec!["--name", "later", "--health-retries", "1", "--restart-delay", "0s"];
    args.extend_from_slice(&hc);
    args.extend_from_slice(&[
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ok; sleep 4; rm /tmp/ok; exec sleep 3600",
    ]);
    create(&up, &args);
    states_until(&up, "later", "running", |s| s.first().is_some_and(|s| s == "Running|")).await;
    let ran = Instant::now();
    states_until(&up, "later", "failed unhealthy", |s| {
        s.iter().any(|s| s == "Failed|dockerexec: unhealthy container")
    })
    .await;
    // About 4 s to turn unhealthy, 1 to be seen, 1 of grace; Docker's default 10 s would make it 15.
    assert!(
        ran.elapsed() < Duration::from_secs(11),
        "the unhealthy stop did not use the 1 s grace: {:?}",
        ran.elapsed()
    );
    let r = up.docker(&["service", "rm", "later"]);
    assert_eq!(r.code, 0, "rm: {r:?}");

    // An agent restarted while a task waits for health looks at its health
    // again: not running until healthy.
    let mut args = vec!["--name", "adopt", "--health-retries", "60"];
    args.extend_from_slice(&hc);
    args.extend_from_slice(&["busybox", "sh", "-c", "sleep 15; touch /tmp/ok; exec sleep 3600"]);
    create(&up, &args);
    until("adopt's container runs, health starting", || {
        let h = engine_health(&up, "adopt");
        match h.iter().any(|h| h == "running starting") {
            true => Ok(()),
            false => Err(format!("{h:?}")),
        }
    })
    .await;
    let agent = up.pid_of("shoal-agent", None).expect("agent pid");
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    until("a new agent re-adopted adopt's container", || {
        let pid = up.pid_of("shoal-agent", None).ok_or("no agent yet")?;
        let log = std::fs::read_to_string(data.join("logs/agent.log")).unwrap_or_default();
        match pid != agent && log.contains("re-adopted running container") {
            true => Ok(()),
            false => Err(format!("agent {pid}")),
        }
    })
    .await;
    assert!(
        runs_only_once_healthy(&up, "adopt").await,
        "adopt was not seen starting after the agent restart"
    );
    drop(up);
}
