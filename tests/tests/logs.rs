//! `docker service logs` through the real docker CLI against `shoal up`,
//! with real busybox containers (docker executor) and with task processes
//! (process executor): Docker's context prefix and options, and a follow
//! that sees every numbered line of every replica exactly once while the
//! service scales up under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use shoal_tests::eventually;
use shoal_tests::free_port;
use shoal_tests::up::{temp_home, Up, CONVERGE};

/// Lines each replica writes, as fast as its shell can.
const LINES: u64 = 1500;

/// Every replica writes one `<its id> start` to stderr, then `<its id> <n>`
/// for n in 0..LINES to stdout, then sleeps. The id is the task ID (process
/// executor) or the container's hostname (docker executor).
fn numbers_command() -> String {
    format!(
        "id=${{SHOAL_TASK_ID:-$HOSTNAME}}; echo \"$id start\" >&2; i=0; \
         while [ $i -lt {LINES} ]; do echo \"$id $i\"; i=$((i+1)); done; exec sleep 3600"
    )
}

/// `docker service logs ...` running in the background, its stdout and
/// stderr in files; killed when dropped.
struct Follow {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Follow {
    fn start(up: &Up, args: &[&str]) -> Follow {
        let cfg = up.home.join("docker-config");
        let _ = std::fs::create_dir_all(&cfg);
        let n = std::fs::read_dir(&up.home).map(|d| d.count()).unwrap_or(0);
        let out = up.home.join(format!("follow-{n}.out"));
        let err = up.home.join(format!("follow-{n}.err"));
        let child = Command::new("docker")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &up.home)
            .env("DOCKER_CONFIG", &cfg)
            .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", up.port))
            .env("DOCKER_CLI_HINTS", "false")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start docker service logs");
        Follow { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<prefix> | <id> <n>` lines: how often each number of each id arrived,
/// and the prefix each id came with.
#[derive(Default, Debug)]
struct Seen {
    counts: BTreeMap<String, BTreeMap<u64, usize>>,
    prefixes: BTreeMap<String, String>,
}

fn seen(text: &str) -> Seen {
    let mut s = Seen::default();
    for l in text.lines() {
        let Some((prefix, body)) = l.split_once(" | ") else {
            continue;
        };
        let Some((id, n)) = body.trim().split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        *s.counts.entry(id.to_string()).or_default().entry(n).or_default() += 1;
        s.prefixes.insert(id.to_string(), prefix.trim_end().to_string());
    }
    s
}

/// Every one of `ids` replicas' numbers arrived exactly once (and nothing was duplicated).
fn all_once(s: &Seen, ids: usize) -> Result<(), String> {
    for (id, nums) in &s.counts {
        if let Some((n, c)) = nums.iter().find(|(_, c)| **c > 1) {
            panic!("line {id} {n} arrived {c} times");
        }
    }
    let complete = s.counts.values().filter(|n| n.len() as u64 == LINES).count();
    match complete == ids && s.counts.len() == ids {
        true => Ok(()),
        false => Err(format!(
            "{complete} of {ids} replicas complete; lines per id: {:?}",
            s.counts.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        )),
    }
}

/// `<prefix> | <id> <rest>` lines of both streams: each id's `<rest>`s.
fn last_lines(stdout: &str, stderr: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in stdout.lines().chain(stderr.lines()) {
        let (_, body) = l.split_once(" | ").unwrap_or_else(|| panic!("no context: {l}"));
        let (id, rest) = body.trim().split_once(' ').unwrap_or_else(|| panic!("{l}"));
        by_id.entry(id.to_string()).or_default().push(rest.to_string());
    }
    by_id
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    eventually(CONVERGE, what, || {
        let r = check();
        async move {
            if r.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            r
        }
    })
    .await
}

async fn start(home: &Path, executor: &str) -> Up {
    let data = home.join("data");
    let mut up = Up::start(home, "logs", &data, free_port(), executor, &["--extra-agents", "1"]);
    up.ready().await;
    up
}

/// The IDs of a service's tasks with their slots.
fn task_ids(up: &Up, service: &str) -> Vec<(String, String)> {
    up.lines(&["service", "ps", service, "--no-trunc", "--format", "{{.ID}} {{.Name}}"])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect()
}

/// How `--tail N` counts: over a task's log of both streams in the order it
/// was logged (the engine's, as Docker's does), or from the end of each
/// stream (the process executor's files carry no shared order).
#[derive(Clone, Copy, PartialEq)]
enum Tail {
    Merged,
    PerStream,
}

async fn follow_sees_every_line_once_across_a_scale_up(up: &Up, tail: Tail) {
    let cmd = numbers_command();
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "numbers",
        "--replicas",
        "0",
        "busybox",
        "sh",
        "-c",
        &cmd,
    ])
    .ok();
    let follow = Follow::start(up, &["service", "logs", "-f", "numbers"]);
    up.docker(&["service", "scale", "-d", "numbers=2"]).ok();
    until("2 replicas' lines, each once", || all_once(&seen(&follow.stdout()), 2)).await;
    up.docker(&["service", "scale", "-d", "numbers=4"]).ok();
    until("4 replicas' lines, each once", || all_once(&seen(&follow.stdout()), 4)).await;
    until("every replica's stderr line", || {
        let err = follow.stderr();
        match err.matches(" start").count() {
            4 => Ok(()),
            n => Err(format!("{n} stderr lines: {err}")),
        }
    })
    .await;

    // The context prefix is Docker's: `<service>.<slot>.<task id, 12>@<node>`,
    // padded to the widest slot.
    let s = seen(&follow.stdout());
    let tasks = task_ids(up, "numbers");
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    for prefix in s.prefixes.values() {
        let (name, node) = prefix.split_once('@').unwrap_or_else(|| panic!("{prefix}"));
        let (svc_slot, tid) = name.rsplit_once('.').unwrap();
        assert!(tid.len() == 12, "{prefix}");
        let (id, task_name) = tasks
            .iter()
            .find(|(id, _)| id.starts_with(tid))
            .expect("a task of the service");
        assert_eq!(svc_slot, task_name, "{prefix} for {id}");
        assert!(!node.trim().is_empty(), "{prefix}");
    }
    drop(follow);

    // Without -f: everything there is, then the command ends.
    let r = up.docker(&["service", "logs", "numbers"]).ok();
    all_once(&seen(&r.stdout), 4).unwrap();
    // --tail counts per task. Merged (the engine's log, as Docker's does):
    // a task's last two lines are two of its `start` (stderr) and its last
    // numbers; which two depends on when the engine's stderr copier read
    // `start`, so both streams count. Per stream: the last two numbers and
    // the `start`. --no-task-ids drops the ID from the prefix.
    let per_task = |n: usize| match tail {
        Tail::Merged => n,
        Tail::PerStream => n + 1,
    };
    let r = up
        .docker(&["service", "logs", "--tail", "2", "--no-task-ids", "numbers"])
        .ok();
    let tails = last_lines(&r.stdout, &r.stderr);
    assert_eq!(tails.len(), 4, "{tails:?}");
    for (id, lines) in &tails {
        assert_eq!(lines.len(), per_task(2), "{id}: {lines:?}");
        for l in lines {
            assert!(
                l == "start" || l.parse::<u64>().is_ok_and(|n| n >= LINES - 2),
                "{id}: {l}"
            );
        }
    }
    for l in r.stdout.lines().chain(r.stderr.lines()) {
        let name = l.split('@').next().unwrap();
        assert!(name.starts_with("numbers.") && name.matches('.').count() == 1, "{l}");
    }
    // --raw: no context; --timestamps: RFC 3339 with nine digits first.
    let r = up
        .docker(&["service", "logs", "--raw", "--timestamps", "--tail", "1", "numbers"])
        .ok();
    let lines: Vec<&str> = r.stdout.lines().chain(r.stderr.lines()).collect();
    assert_eq!(lines.len(), 4 * per_task(1), "{}{}", r.stdout, r.stderr);
    for l in lines {
        let (ts, body) = l.split_once(' ').unwrap();
        let fixed = ts.len() == 30 && &ts[10..11] == "T" && &ts[19..20] == "." && ts.ends_with('Z');
        assert!(fixed, "{l}");
        assert!(
            body.ends_with(&format!(" {}", LINES - 1)) || body.ends_with(" start"),
            "{l}"
        );
    }
    // --details keeps the context out of the prefix and shows the rest (none here).
    let r = up
        .docker(&["service", "logs", "--details", "--tail", "1", "numbers"])
        .ok();
    let n = r.stdout.lines().count() + r.stderr.lines().count();
    assert_eq!(n, 4 * per_task(1), "{}{}", r.stdout, r.stderr);
    // One task by its ID.
    let (tid, tname) = tasks[0].clone();
    let r = up.docker(&["service", "logs", &tid]).ok();
    let one = seen(&r.stdout);
    assert_eq!(one.counts.len(), 1, "{}", r.stdout);
    assert!(
        one.prefixes.values().all(|p| p.starts_with(&format!("{tname}."))),
        "{:?}",
        one.prefixes
    );
    all_once(&one, 1).unwrap();
    // Neither a service nor a task: the CLI's words.
    up.docker(&["service", "logs", "nothing-here"])
        .fails_with("no such task or service: nothing-here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_executor_service_logs_follow_every_line_once() {
    let home = temp_home();
    let up = start(home.path(), "docker").await;
    follow_sees_every_line_once_across_a_scale_up(&up, Tail::Merged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_executor_service_logs_follow_every_line_once() {
    let home = temp_home();
    let up = start(home.path(), "process").await;
    follow_sees_every_line_once_across_a_scale_up(&up, Tail::PerStream).await;
    // The output lives in one directory per task, removed with the task.
    let task_dirs = || -> usize {
        let agents = std::fs::read_dir(&up.data).unwrap().flatten().map(|e| e.path());
        agents
            .filter(|p| p == &up.data.join("task-logs") || p.join("task-logs").is_dir())
            .map(|p| {
                if p.ends_with("task-logs") {
                    p
                } else {
                    p.join("task-logs")
                }
            })
            .map(|d| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0))
            .sum()
    };
    assert_eq!(task_dirs(), 4, "one output directory per task");
    up.docker(&["service", "rm", "numbers"]).ok();
    until("the task output to be removed with the tasks", || match task_dirs() {
        0 => Ok(()),
        n => Err(format!("{n} task dirs left")),
    })
    .await;
}
