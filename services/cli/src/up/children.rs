//! The supervised children of `shoal up`: each spawned with its log file
//! and [`OWNER_ENV`], restarted with backoff when it dies, and stopped phase
//! by phase (then any task process left behind by an agent).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use shoal_shared::procfs;

use super::signals::StopSignals;
use super::OWNER_ENV;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long gets its backoff reset when it dies.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long each stop phase waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Variables the children must not inherit: `shoal up` sets all of these per child.
const CHILD_ENV_DROP: &[&str] = &[
    "SHOAL_NODE_ID",
    "SHOAL_NODE_NAME",
    "SHOAL_DATA_DIR",
    "SHOAL_NATS_URL",
    "SHOAL_REPLICA_ID",
    "SHOAL_INIT",
    "SHOAL_PEERS",
    "SHOAL_LISTEN",
    "SHOAL_SOCKET",
    "SHOAL_EXECUTOR",
    "SHOAL_ROLE",
    "SHOAL_STORE_REPLICA",
    "SHOAL_HOST",
];

/// One supervised child.
pub(super) struct Child {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Stop order: lower first (shoal processes, then the store, then NATS).
    stop_phase: u8,
    log: PathBuf,
    /// The data dir, as [`OWNER_ENV`].
    owner: OsString,
    pid: Option<Pid>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Child {
    pub(super) fn new(name: &str, program: &Path, args: Vec<OsString>, stop_phase: u8, logs: &Path) -> Child {
        Child {
            owner: logs.parent().unwrap_or(logs).as_os_str().to_os_string(),
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            stop_phase,
            log: logs.join(format!("{name}.log")),
            pid: None,
            started: Instant::now(),
            backoff: BACKOFF_MIN,
            restart_at: Some(Instant::now()),
        }
    }

    fn spawn(&mut self) {
        self.restart_at = None;
        self.started = Instant::now();
        match self.try_spawn() {
            Ok(pid) => self.pid = Some(pid),
            Err(e) => {
                eprintln!("shoal up: cannot start {}: {e}", self.name);
                self.schedule_restart();
            }
        }
    }

    fn try_spawn(&self) -> std::io::Result<Pid> {
        let mut out = OpenOptions::new().create(true).append(true).open(&self.log)?;
        writeln!(
            out,
            "----- shoal up: starting {} at {} -----",
            self.name,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        for v in CHILD_ENV_DROP {
            cmd.env_remove(v);
        }
        // Inherited by the tasks too: how a later `shoal up` finds what a killed one left.
        cmd.env(OWNER_ENV, &self.owner);
        // The std::process::Child handle is dropped: the loop reaps with waitpid(-1).
        let child = cmd.spawn()?;
        Ok(Pid::from_raw(child.id() as i32))
    }

    fn schedule_restart(&mut self) {
        if self.started.elapsed() >= HEALTHY_RUN {
            self.backoff = BACKOFF_MIN;
        }
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// Reaps every exited child; returns the supervised ones that died, with how.
fn reap(children: &mut [Child]) -> Vec<(usize, String)> {
    let mut died = Vec::new();
    loop {
        let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exited with status {code}")),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, format!("was killed by {sig}")),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        };
        if let Some(i) = children.iter().position(|c| c.pid == Some(pid)) {
            children[i].pid = None;
            died.push((i, how));
        }
        // Anything else was an orphaned task reparented to us: reaped, nothing more.
    }
    died
}

/// The last non-empty line of a log file (its last 4 KiB), for restart messages.
fn last_line(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    Some(line.chars().take(200).collect())
}

/// Starts the children and keeps them running until a stop signal.
pub(super) fn supervise(children: &mut [Child], signals: &mut StopSignals) {
    loop {
        if signals.take() {
            return;
        }
        let died = reap(children);
        if !died.is_empty() {
            // A Ctrl-C on the terminal reaches the children too: when they die of it,
            // the stop signal is about to be counted; do not report them as crashes.
            signals.wait(Duration::from_millis(200));
            if signals.take() {
                return;
            }
        }
        for (i, how) in died {
            let c = &mut children[i];
            c.schedule_restart();
            let wait = c
                .restart_at
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            let last = last_line(&c.log).map(|l| format!(": {l}")).unwrap_or_default();
            eprintln!(
                "shoal up: {} {how}; restarting in {:.1}s (log {}{last})",
                c.name,
                wait.as_secs_f64(),
                c.log.display()
            );
        }
        let now = Instant::now();
        let mut next = Duration::from_millis(100);
        for c in children.iter_mut() {
            match c.restart_at {
                Some(t) if t <= now => c.spawn(),
                Some(t) => next = next.min(t - now),
                None => {}
            }
        }
        signals.wait(next);
    }
}

/// Stops the children phase by phase, then any task process left behind.
pub(super) fn stop_all(children: &mut [Child], signals: &mut StopSignals) {
    let mut hurry = false;
    for phase in 0..=2u8 {
        let procs: Vec<(Pid, String)> = children
            .iter()
            .filter(|c| c.stop_phase == phase)
            .filter_map(|c| Some((c.pid?, c.name.clone())))
            .collect();
        hurry = stop_procs(procs, &mut *signals, hurry, |left| {
            reap(children);
            left.retain(|(p, _)| children.iter().any(|c| c.pid == Some(*p)));
        });
    }
    // Tasks whose agent is gone were reparented to us (we are their subreaper).
    let leftovers: Vec<(Pid, String)> = own_children()
        .into_iter()
        .map(|p| (p, format!("task pid {p}")))
        .collect();
    if !leftovers.is_empty() {
        eprintln!("shoal up: stopping {} task process(es) left by agents", leftovers.len());
        stop_procs(leftovers, signals, hurry, |left| {
            reap(children);
            let alive = own_children();
            left.retain(|(p, _)| alive.contains(p));
        });
    }
    reap(children);
}

/// SIGTERMs `procs`, waits up to the grace period (none after a second stop
/// signal) for `refresh` to empty the list, then SIGKILLs what is left.
/// Returns whether a second stop signal arrived.
fn stop_procs(
    mut left: Vec<(Pid, String)>,
    signals: &mut StopSignals,
    mut hurry: bool,
    mut refresh: impl FnMut(&mut Vec<(Pid, String)>),
) -> bool {
    for (p, _) in &left {
        let _ = kill(*p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        refresh(&mut left);
        if left.is_empty() {
            return hurry;
        }
        if hurry || Instant::now() >= deadline {
            break;
        }
        signals.wait(Duration::from_millis(100));
        if signals.take() {
            eprintln!("shoal up: second stop signal: killing what is left");
            hurry = true;
        }
    }
    let names: Vec<&str> = left.iter().map(|(_, n)| n.as_str()).collect();
    if !hurry {
        eprintln!(
            "shoal up: {} did not stop within {}s of SIGTERM; killing",
            names.join(", "),
            STOP_GRACE.as_secs()
        );
    }
    for (p, _) in &left {
        let _ = kill(*p, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !left.is_empty() && Instant::now() < deadline {
        signals.wait(Duration::from_millis(50));
        refresh(&mut left);
    }
    hurry
}

/// Live processes whose parent is this process (from /proc).
fn own_children() -> Vec<Pid> {
    let me = std::process::id() as i32;
    procfs::pids()
        .into_iter()
        .filter(|&pid| procfs::Stat::read(pid).is_some_and(|s| s.ppid == me && !s.zombie()))
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let mut c = Child::new("x", Path::new("/bin/true"), Vec::new(), 0, Path::new("/tmp"));
        let mut waits = Vec::new();
        for _ in 0..9 {
            c.schedule_restart();
            waits.push(c.restart_at.unwrap().saturating_duration_since(Instant::now()));
        }
        assert!(waits[0] <= BACKOFF_MIN && waits[0] > BACKOFF_MIN / 2, "{waits:?}");
        assert!(waits[1] > BACKOFF_MIN, "{waits:?}");
        assert!(waits[8] <= BACKOFF_MAX && waits[8] > BACKOFF_MAX / 2, "{waits:?}");
        c.started = Instant::now() - HEALTHY_RUN;
        c.schedule_restart();
        assert!(c.restart_at.unwrap().saturating_duration_since(Instant::now()) <= BACKOFF_MIN);
    }
}
