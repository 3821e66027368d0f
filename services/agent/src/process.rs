//! The `process` executor: a task's `Command` + `Args` run as a child
//! process with the task's `Env`, `Dir` and `User`; stopping sends SIGTERM,
//! then SIGKILL after the stop grace period (default 10 s).
//!
//! Every task process carries `SHOAL_NODE_ID` and `SHOAL_TASK_ID` in its
//! environment, as task containers carry Swarm's labels: a restarted agent
//! finds its processes by them ([`Executor::find`]), even one whose PID it
//! had no time to write down.
//!
//! A task's stdout and stderr go to `<data-dir>/task-logs/<task-id>/`
//! (bounded by the agent, read by [`crate::logs`]), removed with the task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_shared::model::{Task, TaskSpec};
use shoal_shared::procfs;

use crate::exec::{ExecError, Executor, Exit, Found, Handle, ProcessId, Started};

/// The environment variable naming a task process's node.
pub const ENV_NODE_ID: &str = "SHOAL_NODE_ID";
/// The environment variable naming a task process's task.
pub const ENV_TASK_ID: &str = "SHOAL_TASK_ID";

/// Runs tasks as processes of this host.
pub struct ProcessExecutor {
    node_id: String,
    /// Where each task's output goes (`<dir>/<task-id>/{stdout,stderr}`);
    /// `None`: to `/dev/null`.
    log_dir: Option<PathBuf>,
}

impl ProcessExecutor {
    pub fn new(node_id: &str) -> ProcessExecutor {
        ProcessExecutor {
            node_id: node_id.to_string(),
            log_dir: None,
        }
    }

    /// Keeps each task's output in files under `dir` (read by [`crate::logs`]).
    pub fn with_logs(node_id: &str, dir: PathBuf) -> ProcessExecutor {
        ProcessExecutor {
            node_id: node_id.to_string(),
            log_dir: Some(dir),
        }
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn prepare(&self, task: &Task) -> BoxFuture<'static, Result<Option<Handle>, ExecError>> {
        let uses_files = task
            .spec
            .container_spec
            .as_ref()
            .is_some_and(|c| !c.secrets.is_empty() || !c.configs.is_empty());
        let r = if uses_files {
            Err(ExecError::Rejected(
                "secrets and configs need the docker executor (this node runs processes)".into(),
            ))
        } else if let Some(why) = crate::health::process_rejection(&task.spec) {
            Err(ExecError::Rejected(why))
        } else {
            command_line(&task.spec).map(|_| None).map_err(ExecError::Rejected)
        };
        async move { r }.boxed()
    }

    fn start(&self, task: &Task, _prepared: Option<Handle>) -> BoxFuture<'static, Result<Started, ExecError>> {
        let output = self.log_dir.as_ref().map(|d| d.join(&task.meta.id));
        let r = spawn(
            &task.spec,
            &[(ENV_NODE_ID, &self.node_id), (ENV_TASK_ID, &task.meta.id)],
            output.as_deref(),
        )
        .map(|(child, p)| Started {
            handle: Handle::Process(p),
            child: Some(child),
            ports: Vec::new(),
        })
        .map_err(ExecError::Failed);
        async move { r }.boxed()
    }

    fn wait(&self, handle: Handle, child: Option<tokio::process::Child>) -> BoxFuture<'static, Exit> {
        match (handle, child) {
            (Handle::Process(_), Some(c)) => wait_child(c).boxed(),
            (Handle::Process(p), None) => wait_adopted(p).boxed(),
            (Handle::Container { .. }, _) => {
                async { Exit::Lost("task: a container, but this agent runs processes".into()) }.boxed()
            }
        }
    }

    fn stop(&self, handle: Handle, grace: Duration) -> BoxFuture<'static, ()> {
        match handle {
            Handle::Process(p) => terminate(p, grace).boxed(),
            Handle::Container { .. } => async {}.boxed(),
        }
    }

    fn remove(&self, task: &Task) -> BoxFuture<'static, ()> {
        // The task is gone from the node: so is its output.
        if let Some(d) = &self.log_dir {
            let _ = std::fs::remove_dir_all(d.join(&task.meta.id));
        }
        async {}.boxed()
    }

    fn find(&self) -> BoxFuture<'static, Result<Vec<Found>, String>> {
        let found = find_processes(&self.node_id);
        async move { Ok(found) }.boxed()
    }

    fn discard(&self, found: Found) -> BoxFuture<'static, ()> {
        match found.handle {
            Handle::Process(p) => terminate(p, crate::exec::DEFAULT_STOP_GRACE).boxed(),
            Handle::Container { .. } => async {}.boxed(),
        }
    }

    fn lost_reason(&self) -> &'static str {
        "task: process ended while the agent was not running"
    }

    fn probe(&self, handle: &Handle, task_id: &str) -> Option<Found> {
        match handle {
            Handle::Process(p) if alive(p) => Some(Found {
                task_id: task_id.to_string(),
                handle: handle.clone(),
                running: true,
                started: true,
                exit_code: None,
            }),
            _ => None,
        }
    }
}

/// The running task processes of `node_id`, one per task: the process
/// whose parent is not a process of the same task (its own children inherit
/// the environment), the earliest started if several qualify.
pub fn find_processes(node_id: &str) -> Vec<Found> {
    let me = std::process::id() as i32;
    let mut by_task: BTreeMap<String, Vec<(i32, ProcessId)>> = BTreeMap::new();
    for pid in procfs::pids() {
        if pid == me || procfs::env_var(pid, ENV_NODE_ID).as_deref() != Some(node_id) {
            continue;
        }
        let (Some(task_id), Some(stat)) = (procfs::env_var(pid, ENV_TASK_ID), procfs::Stat::read(pid)) else {
            continue;
        };
        if stat.zombie() {
            continue;
        }
        let p = ProcessId {
            pid,
            start_time: stat.start_time,
        };
        by_task.entry(task_id).or_default().push((stat.ppid, p));
    }
    by_task
        .into_iter()
        .filter_map(|(task_id, procs)| {
            let pids: Vec<i32> = procs.iter().map(|(_, p)| p.pid).collect();
            let root = procs
                .iter()
                .filter(|(ppid, _)| !pids.contains(ppid))
                .map(|(_, p)| *p)
                .min_by_key(|p| (p.start_time, p.pid))?;
            Some(Found {
                task_id,
                handle: Handle::Process(root),
                running: true,
                started: true,
                exit_code: None,
            })
        })
        .collect()
}

/// SIGTERM, then SIGKILL once `grace` has passed.
async fn terminate(p: ProcessId, grace: Duration) {
    signal(&p, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while alive(&p) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&p, Signal::SIGKILL);
}

/// The command line of a task: `Command` then `Args`.
pub fn command_line(spec: &TaskSpec) -> Result<Vec<String>, String> {
    let c = spec
        .container_spec
        .as_ref()
        .ok_or_else(|| "task has no ContainerSpec".to_string())?;
    let argv: Vec<String> = c.command.iter().chain(c.args.iter()).cloned().collect();
    if argv.is_empty() {
        return Err("the process executor needs a Command (no image entrypoint to fall back to)".into());
    }
    Ok(argv)
}

/// Opens (appending) a task's output file in `dir`.
fn output_file(dir: &Path, stream: &str) -> Result<std::process::Stdio, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(stream))
        .map(std::process::Stdio::from)
        .map_err(|e| format!("opening the task's {stream} file in {}: {e}", dir.display()))
}

/// Starts a task's process with `extra` added to its environment, its
/// stdout and stderr appended to `output/stdout` and `output/stderr` (the
/// process writes them itself, so its output outlives the agent), or
/// discarded without `output`. The child stays in the agent's process group.
pub fn spawn(
    spec: &TaskSpec,
    extra: &[(&str, &str)],
    output: Option<&Path>,
) -> Result<(tokio::process::Child, ProcessId), String> {
    let argv = command_line(spec)?;
    let c = spec.container_spec.clone().unwrap_or_default();
    let (stdout, stderr) = match output {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            (output_file(dir, "stdout")?, output_file(dir, "stderr")?)
        }
        None => (std::process::Stdio::null(), std::process::Stdio::null()),
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    for (k, v) in c.env_map() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    if !c.dir.is_empty() {
        cmd.current_dir(&c.dir);
    }
    if !c.user.is_empty() {
        let (user, group) = match c.user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (c.user.clone(), None),
        };
        let (uid, mut gid) = match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => match nix::unistd::User::from_name(&user) {
                Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
                _ => return Err(format!("unable to find user {user}")),
            },
        };
        if let Some(g) = group {
            gid = Some(g.parse::<u32>().map_err(|_| format!("invalid group {g}"))?);
        }
        cmd.uid(uid);
        if let Some(g) = gid {
            cmd.gid(g);
        }
    }
    let child = cmd.spawn().map_err(|e| format!("starting process failed: {e}"))?;
    let pid = child.id().ok_or_else(|| "process exited at once".to_string())? as i32;
    let start_time = start_time(pid).unwrap_or(0);
    Ok((child, ProcessId { pid, start_time }))
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`), `None` if it is gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    procfs::Stat::read(pid).filter(|s| !s.zombie()).map(|s| s.start_time)
}

/// Whether the process identified by `p` still runs (same PID, same start time).
pub fn alive(p: &ProcessId) -> bool {
    start_time(p.pid).is_some_and(|st| p.start_time == 0 || st == p.start_time)
}

/// Sends a signal to the process if it is still the same process.
pub fn signal(p: &ProcessId, sig: Signal) {
    if alive(p) {
        let _ = kill(Pid::from_raw(p.pid), sig);
    }
}

/// Waits for a re-adopted (not our child) process to end.
pub async fn wait_adopted(p: ProcessId) -> Exit {
    while alive(&p) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Exit::Lost("task: process ended while the agent was not running".into())
}

/// Waits for a child process to end.
pub async fn wait_child(mut child: tokio::process::Child) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match child.wait().await {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => Exit::Code(c as i64),
            (None, Some(s)) => Exit::Code(128 + s as i64),
            _ => Exit::Lost("task: process ended without a status".into()),
        },
        Err(e) => Exit::Lost(format!("task: waiting for the process failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::ContainerSpec;

    fn spec(cmd: &[&str]) -> TaskSpec {
        TaskSpec {
            container_spec: Some(ContainerSpec {
                command: cmd.iter().map(|s| s.to_string()).collect(),
                env: vec!["X=42".into()],
                ..ContainerSpec::default()
            }),
            ..TaskSpec::default()
        }
    }

    #[tokio::test]
    async fn exit_codes_env_and_stop_by_signal() {
        let (child, _) = spawn(&spec(&["sh", "-c", "exit $X"]), &[], None).unwrap();
        assert_eq!(wait_child(child).await, Exit::Code(42));
        let (child, p) = spawn(&spec(&["sleep", "30"]), &[], None).unwrap();
        assert!(alive(&p));
        signal(&p, Signal::SIGTERM);
        assert_eq!(wait_child(child).await, Exit::Code(128 + 15));
        assert!(!alive(&p));
        assert!(spawn(&spec(&[]), &[], None).is_err());
        assert!(spawn(&spec(&["/nonexistent/binary"]), &[], None)
            .unwrap_err()
            .contains("starting process failed"));
    }

    #[tokio::test]
    async fn task_processes_are_found_by_their_environment_and_the_root_wins() {
        let node = format!("n{}", std::process::id());
        let ex = ProcessExecutor::new(&node);
        let task = Task::new("tfind1", "s1", spec(&["sh", "-c", "sleep 30 & sleep 31 & wait"]));
        let started = ex.start(&task, None).await.unwrap();
        let Handle::Process(root) = started.handle.clone() else {
            panic!("a process")
        };
        // Another node's process with the same task id is not this node's.
        let (mut other, _) = spawn(
            &spec(&["sleep", "30"]),
            &[(ENV_NODE_ID, "elsewhere"), (ENV_TASK_ID, "tfind1")],
            None,
        )
        .unwrap();
        let found = find_processes(&node);
        assert_eq!(found.len(), 1, "{found:?}");
        // The remembered handle alone tells the same (for processes whose
        // environment cannot be read).
        assert_eq!(ex.probe(&started.handle, "tfind1"), Some(found[0].clone()));
        assert_eq!(found[0].task_id, "tfind1");
        assert_eq!(found[0].handle, Handle::Process(root), "the shell, not its children");
        assert!(found[0].running);
        // Discarding ends it; the children it left are found next, and end too.
        let mut child = started.child.unwrap();
        ex.discard(found[0].clone()).await;
        let _ = child.wait().await;
        assert!(!alive(&root));
        for _ in 0..3 {
            for f in find_processes(&node) {
                ex.discard(f).await;
            }
        }
        assert!(find_processes(&node).is_empty());
        let _ = other.kill().await;
    }
}
