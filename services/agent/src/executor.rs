//! Executors: how a task's work runs on this node.
//!
//! [`Executor`] is what the agent's controller drives (prepare, start, wait,
//! stop, remove), whatever runs the task:
//! - `process`: the task's `Command` + `Args` run as a child process with
//!   the task's `Env`, `Dir` and `User`; stopping sends SIGTERM, then SIGKILL
//!   after the stop grace period (default 10 s);
//! - `docker`: a container on the node's engine ([`crate::docker`]).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use shoal_shared::model::{Task, TaskSpec};
use shoal_shared::procfs;

use crate::db::ProcessId;
use crate::docker::DockerExecutor;

/// Default `StopGracePeriod`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How a task's process or container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exit code (a signal death is 128 + signal, as a shell reports it).
    Code(i64),
    /// It ended out of sight (while the agent was away, or removed behind
    /// its back); the reason says how.
    Lost(String),
}

/// What runs a task, as the agent's database remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Handle {
    Process(ProcessId),
    Container { container_id: String },
}

impl Handle {
    pub fn pid(&self) -> Option<i32> {
        match self {
            Handle::Process(p) => Some(p.pid),
            Handle::Container { .. } => None,
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Handle::Process(_) => None,
            Handle::Container { container_id } => Some(container_id),
        }
    }
}

/// The executor of this agent.
#[derive(Clone)]
pub enum Executor {
    Process,
    Docker(DockerExecutor),
}

impl Executor {
    /// Preparing: for a container the image and the container itself; a
    /// process only needs a command line.
    pub fn prepare(&self, task: Task) -> BoxFuture<'static, Result<Option<Handle>, String>> {
        match self {
            Executor::Process => {
                let r = command_line(&task.spec).map(|_| None);
                async move { r }.boxed()
            }
            Executor::Docker(d) => {
                let d = d.clone();
                async move {
                    d.prepare(&task)
                        .await
                        .map(|container_id| Some(Handle::Container { container_id }))
                }
                .boxed()
            }
        }
    }

    /// Starting: the prepared work runs. A process comes back with its child.
    pub fn start(
        &self,
        task: Task,
        prepared: Option<Handle>,
    ) -> BoxFuture<'static, Result<(Handle, Option<tokio::process::Child>), String>> {
        match (self, prepared) {
            (Executor::Docker(d), Some(h @ Handle::Container { .. })) => {
                let d = d.clone();
                async move {
                    d.start(h.container_id().unwrap_or_default()).await?;
                    Ok((h, None))
                }
                .boxed()
            }
            (Executor::Docker(_), _) => async { Err("the container was not prepared".to_string()) }.boxed(),
            (Executor::Process, _) => {
                let r = spawn(&task.spec).map(|(child, p)| (Handle::Process(p), Some(child)));
                async move { r }.boxed()
            }
        }
    }

    /// Waits for the work to end: the child if we started it, else the
    /// adopted process or the container.
    pub fn wait(&self, h: Handle, child: Option<tokio::process::Child>) -> BoxFuture<'static, Exit> {
        match (self, h, child) {
            (_, Handle::Process(_), Some(c)) => wait_child(c).boxed(),
            (_, Handle::Process(p), None) => wait_adopted(p).boxed(),
            (Executor::Docker(d), Handle::Container { container_id }, _) => {
                let d = d.clone();
                async move { d.wait(&container_id).await }.boxed()
            }
            (Executor::Process, Handle::Container { .. }, _) => {
                async { Exit::Lost("task: a container, but this agent runs processes".into()) }.boxed()
            }
        }
    }

    /// Asks the work to stop: SIGTERM (or the container's stop signal), then
    /// SIGKILL after `grace`.
    pub fn stop(&self, h: Handle, grace: Duration) -> BoxFuture<'static, ()> {
        match (self, h) {
            (_, Handle::Process(p)) => async move {
                signal(&p, Signal::SIGTERM);
                let deadline = tokio::time::Instant::now() + grace;
                while alive(&p) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                signal(&p, Signal::SIGKILL);
            }
            .boxed(),
            (Executor::Docker(d), Handle::Container { container_id }) => {
                let d = d.clone();
                async move { d.stop(&container_id, grace).await }.boxed()
            }
            (Executor::Process, Handle::Container { .. }) => async {}.boxed(),
        }
    }

    /// Removes what is left of a task that is gone (its container).
    pub fn remove(&self, task: &Task) -> BoxFuture<'static, ()> {
        match self {
            Executor::Process => async {}.boxed(),
            Executor::Docker(d) => {
                let d = d.clone();
                let name = crate::docker::container_name(task);
                async move { d.remove(&name).await }.boxed()
            }
        }
    }
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

/// Starts a task's process. The child stays in the agent's process group.
pub fn spawn(spec: &TaskSpec) -> Result<(tokio::process::Child, ProcessId), String> {
    let argv = command_line(spec)?;
    let c = spec.container_spec.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(false);
    for (k, v) in c.env_map() {
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

/// The grace period of a task before SIGKILL.
pub fn stop_grace(spec: &TaskSpec) -> Duration {
    spec.container_spec
        .as_ref()
        .and_then(|c| c.stop_grace_period)
        .unwrap_or(DEFAULT_STOP_GRACE)
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
        let (child, _) = spawn(&spec(&["sh", "-c", "exit $X"])).unwrap();
        assert_eq!(wait_child(child).await, Exit::Code(42));
        let (child, p) = spawn(&spec(&["sleep", "30"])).unwrap();
        assert!(alive(&p));
        signal(&p, Signal::SIGTERM);
        assert_eq!(wait_child(child).await, Exit::Code(128 + 15));
        assert!(!alive(&p));
        assert!(spawn(&spec(&[])).is_err());
        assert!(spawn(&spec(&["/nonexistent/binary"]))
            .unwrap_err()
            .contains("starting process failed"));
    }
}
