//! The `process` executor: a task's `Command` + `Args` run as a child
//! process with the task's `Env`, `Dir` and `User`. Stopping sends SIGTERM,
//! then SIGKILL after the stop grace period (default 10 s).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_shared::model::TaskSpec;

use crate::db::ProcessId;

/// Default `StopGracePeriod`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code (a signal death is 128 + signal, as a shell reports it).
    Code(i64),
    /// A re-adopted process ended; its status is unknown.
    Unknown,
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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
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
    Exit::Unknown
}

/// Waits for a child process to end.
pub async fn wait_child(mut child: tokio::process::Child) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match child.wait().await {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => Exit::Code(c as i64),
            (None, Some(s)) => Exit::Code(128 + s as i64),
            _ => Exit::Unknown,
        },
        Err(_) => Exit::Unknown,
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
