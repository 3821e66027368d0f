//! One task's life on this node, as a pure state machine: [`step`] takes the
//! task's local state and one event and returns the new state and the
//! effects the runtime must perform (executor calls, status reports,
//! persisting, forgetting). No I/O, no clock (the time stamps reports get is
//! an input), so every transition is unit-tested below.
//!
//! After SwarmKit's `agent/exec` controller (`Do`: one step from the current
//! state). The local [`Phase`] says what is in flight; the reported
//! [`TaskState`] only moves forward:
//!
//! ```text
//! New --assigned--> Preparing --prepared--> Starting --started--> Running --exited--> Ended
//!  |                    |                      |                     |
//!  |                    +-- stop asked: on completion the work is removed (prepared)
//!  |                    |   or stopped (started): Stopping --exited--> Ended (shutdown)
//!  +-- stop asked --> Ended (shutdown)                 Running --stop asked--> Stopping
//! ```
//!
//! A task that is no longer assigned is forgotten (its leftovers removed)
//! once nothing of it runs or is in flight. After an agent restart every
//! task gets [`Event::Adopted`] with what the executor found of it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_shared::model::{ContainerStatus, PortConfig, PortStatus, Task, TaskState, TaskStatus};

use crate::exec::{stop_grace, ExecError, Exit, Found, Handle};

/// How long a task waits after a temporary executor error before preparing again.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);

/// What the agent is doing with a task's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Nothing done yet (or to be done again after a temporary error or an
    /// agent restart during preparing).
    New,
    /// A prepare (image, container creation) is in flight.
    Preparing,
    /// A start is in flight.
    Starting,
    /// The work runs; a wait is in flight.
    Running,
    /// The work was asked to stop; the wait sees it end.
    Stopping,
    /// A temporary executor error: preparing again after [`RETRY_DELAY`].
    Backoff,
    /// Nothing runs any more (it ended, or never started).
    Ended,
}

impl Phase {
    /// Whether an executor operation whose outcome the controller awaits is in flight.
    pub fn busy(self) -> bool {
        matches!(self, Phase::Preparing | Phase::Starting)
    }
}

/// One task as the agent keeps it (and persists it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCtl {
    /// The latest assignment.
    pub task: Task,
    /// What the agent observed last (reported, or queued to report).
    pub status: TaskStatus,
    /// The process or container, from when it exists until it has ended.
    #[serde(default, alias = "process")]
    pub handle: Option<Handle>,
    /// What is in flight. Absent in records written before phases existed.
    #[serde(default)]
    pub phase: Option<Phase>,
    /// No longer assigned: forget it once nothing of it runs.
    #[serde(default)]
    pub unassigned: bool,
    /// A stop was sent while the start was in flight (waiting for health).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_sent: bool,
}

/// Something that happened to a task.
#[derive(Debug)]
pub enum Event {
    /// The dispatcher assigned it (again, possibly with a new desired state).
    Assigned(Box<Task>),
    /// It is no longer in this node's assignments.
    Unassigned,
    /// The prepare finished.
    Prepared(Result<Option<Handle>, ExecError>),
    /// The start published these host-mode ports (before its `Started`):
    /// the task's `Status.PortStatus` while it runs.
    Published(Vec<PortConfig>),
    /// The start finished.
    Started(Result<Handle, ExecError>),
    /// The work behind `handle` ended.
    Exited { handle: Handle, exit: Exit },
    /// After an agent restart: what the executor found of the task, and the
    /// reason to give if its work is gone.
    Adopted { found: Option<Found>, lost: String },
    /// The delay after a temporary error has passed.
    RetryDue,
}

/// What the runtime must do after a step, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Prepare the task's work; answer with [`Event::Prepared`].
    Prepare,
    /// Start the prepared work; answer with [`Event::Started`].
    Start(Option<Handle>),
    /// Wait for the work to end; answer with [`Event::Exited`].
    Wait(Handle),
    /// Ask the work to stop within `grace`.
    Stop { handle: Handle, grace: Duration },
    /// Remove what is left of the task (its container).
    Remove,
    /// Send this status to the dispatcher.
    Report(TaskStatus),
    /// Send [`Event::RetryDue`] after this long.
    RetryAfter(Duration),
    /// Drop the task from memory and the database (after [`Effect::Remove`]).
    Forget,
}

impl TaskCtl {
    /// A task this agent has not seen before.
    pub fn new(task: Task) -> TaskCtl {
        TaskCtl {
            status: task.status.clone(),
            task,
            handle: None,
            phase: Some(Phase::New),
            unassigned: false,
            stop_sent: false,
        }
    }

    /// The phase, derived for a record written before phases were kept.
    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(match (&self.handle, self.status.state) {
            (Some(_), _) => Phase::Running,
            (None, s) if s > TaskState::Running => Phase::Ended,
            (None, _) => Phase::New,
        })
    }

    /// Whether the task should not run (stopped by the managers, or no longer assigned).
    pub fn stop_wanted(&self) -> bool {
        self.unassigned || !self.task.desired_state.wants_run()
    }

    pub fn id(&self) -> &str {
        &self.task.meta.id
    }
}

/// The first assignment of a task this agent has no record of. A task the
/// store believes started here, which this agent never saw (its database
/// was lost), is reported failed rather than started twice.
pub fn first_assignment(task: Task, now: DateTime<Utc>) -> (TaskCtl, Vec<Effect>) {
    let started_elsewhere =
        (TaskState::Starting..=TaskState::Running).contains(&task.status.state) && task.desired_state.wants_run();
    let mut ctl = TaskCtl::new(task.clone());
    if started_elsewhere {
        let mut fx = Vec::new();
        report(
            &mut ctl,
            &mut fx,
            now,
            TaskState::Failed,
            "lost",
            "task: not found on this node",
            None,
        );
        ctl.phase = Some(Phase::Ended);
        return (ctl, fx);
    }
    step(ctl, Event::Assigned(Box::new(task)), now)
}

/// One step of a task's life.
pub fn step(mut ctl: TaskCtl, event: Event, now: DateTime<Utc>) -> (TaskCtl, Vec<Effect>) {
    let mut fx = Vec::new();
    let phase = ctl.phase();
    ctl.phase = Some(phase);
    match event {
        Event::Assigned(task) => {
            let store_state = task.status.state;
            ctl.task = *task;
            ctl.unassigned = false;
            if store_state < ctl.status.state {
                // The managers missed a report (e.g. while unreachable): send it again.
                fx.push(Effect::Report(ctl.status.clone()));
            }
        }
        Event::Unassigned => ctl.unassigned = true,
        Event::Prepared(res) if phase == Phase::Preparing => match res {
            Err(e) => fail(&mut ctl, &mut fx, now, e, "preparing"),
            Ok(handle) => {
                ctl.handle = handle;
                if ctl.stop_wanted() {
                    // Stopped before it started: what was prepared goes.
                    report(&mut ctl, &mut fx, now, TaskState::Shutdown, "shutdown", "", None);
                    ctl.handle = None;
                    ctl.phase = Some(Phase::Ended);
                    fx.push(Effect::Remove);
                } else {
                    for st in [TaskState::Ready, TaskState::Starting] {
                        report(&mut ctl, &mut fx, now, st, st.as_str(), "", None);
                    }
                    ctl.phase = Some(Phase::Starting);
                    fx.push(Effect::Start(ctl.handle.clone()));
                }
            }
        },
        Event::Published(ports) if phase == Phase::Starting => {
            ctl.status.port_status = Some(PortStatus { ports });
        }
        Event::Started(res) if phase == Phase::Starting => match res {
            Err(e) => fail(&mut ctl, &mut fx, now, e, "starting"),
            Ok(handle) => {
                ctl.handle = Some(handle.clone());
                fx.push(Effect::Wait(handle.clone()));
                if ctl.stop_wanted() {
                    // A stop asked while the start was in flight: the work
                    // runs now, so it is stopped now.
                    ctl.phase = Some(Phase::Stopping);
                    fx.push(Effect::Stop {
                        handle,
                        grace: stop_grace(&ctl.task.spec),
                    });
                } else {
                    ctl.phase = Some(Phase::Running);
                    report(&mut ctl, &mut fx, now, TaskState::Running, "started", "", None);
                }
            }
        },
        Event::Exited { handle, exit } => {
            if matches!(phase, Phase::Running | Phase::Stopping) && ctl.handle.as_ref() == Some(&handle) {
                exited(&mut ctl, &mut fx, now, exit);
            }
        }
        Event::Adopted { found, lost } => adopted(&mut ctl, &mut fx, now, found, lost),
        Event::RetryDue if phase == Phase::Backoff => ctl.phase = Some(Phase::New),
        // An outcome for an operation that is no longer awaited.
        Event::Prepared(_) | Event::Published(_) | Event::Started(_) | Event::RetryDue => {}
    }
    drive(&mut ctl, &mut fx, now);
    (ctl, fx)
}

/// Moves the task toward what is wanted of it, from a settled phase.
fn drive(ctl: &mut TaskCtl, fx: &mut Vec<Effect>, now: DateTime<Utc>) {
    let phase = ctl.phase();
    if ctl.stop_wanted() {
        match phase {
            Phase::New | Phase::Backoff => {
                if ctl.status.state <= TaskState::Running {
                    report(ctl, fx, now, TaskState::Shutdown, "shutdown", "", None);
                }
                ctl.phase = Some(Phase::Ended);
            }
            Phase::Running => {
                if let Some(handle) = ctl.handle.clone() {
                    ctl.phase = Some(Phase::Stopping);
                    fx.push(Effect::Stop {
                        handle,
                        grace: stop_grace(&ctl.task.spec),
                    });
                }
            }
            // A start waiting for health: stopped at once (the start then
            // completes, and its step stops what runs and waits for its end).
            Phase::Starting => {
                if let (Some(handle), false) = (ctl.handle.clone(), ctl.stop_sent) {
                    ctl.stop_sent = true;
                    fx.push(Effect::Stop {
                        handle,
                        grace: stop_grace(&ctl.task.spec),
                    });
                }
            }
            // In flight: the outcome's step stops it.
            Phase::Preparing | Phase::Stopping | Phase::Ended => {}
        }
        if ctl.unassigned && ctl.phase() == Phase::Ended && !fx.contains(&Effect::Forget) {
            if !fx.contains(&Effect::Remove) {
                fx.push(Effect::Remove);
            }
            fx.push(Effect::Forget);
        }
    } else if phase == Phase::New {
        if ctl.status.state < TaskState::Running {
            for st in [TaskState::Accepted, TaskState::Preparing] {
                report(ctl, fx, now, st, st.as_str(), "", None);
            }
            ctl.phase = Some(Phase::Preparing);
            fx.push(Effect::Prepare);
        } else {
            // It ran here before; restarting is the scheduler's decision.
            ctl.phase = Some(Phase::Ended);
        }
    }
}

/// A failed prepare or start.
fn fail(ctl: &mut TaskCtl, fx: &mut Vec<Effect>, now: DateTime<Utc>, e: ExecError, during: &str) {
    match e {
        ExecError::Temporary(msg) => {
            tracing::info!(task = %ctl.id(), error = %msg, during, "agent: executor not available; retrying");
            ctl.handle = None;
            ctl.phase = Some(Phase::Backoff);
            fx.push(Effect::RetryAfter(RETRY_DELAY));
        }
        ExecError::Rejected(msg) => {
            report(ctl, fx, now, TaskState::Rejected, during, &msg, None);
            ctl.handle = None;
            ctl.phase = Some(Phase::Ended);
        }
        ExecError::Failed(msg) => {
            report(ctl, fx, now, TaskState::Failed, during, &msg, None);
            ctl.handle = None;
            ctl.phase = Some(Phase::Ended);
        }
    }
}

/// The work ended: shutdown if it was asked to stop, else complete or failed.
fn exited(ctl: &mut TaskCtl, fx: &mut Vec<Effect>, now: DateTime<Utc>, exit: Exit) {
    let code = match &exit {
        Exit::Code(c) => Some(*c),
        Exit::Lost(_) => None,
    };
    if ctl.phase() == Phase::Stopping || ctl.stop_wanted() {
        report(ctl, fx, now, TaskState::Shutdown, "shutdown", "", code);
    } else {
        match exit {
            Exit::Code(0) => report(ctl, fx, now, TaskState::Complete, "finished", "", code),
            Exit::Code(c) => report(
                ctl,
                fx,
                now,
                TaskState::Failed,
                "started",
                &format!("task: non-zero exit ({c})"),
                code,
            ),
            Exit::Lost(why) => report(ctl, fx, now, TaskState::Failed, "started", &why, None),
        }
    }
    ctl.handle = None;
    ctl.phase = Some(Phase::Ended);
}

/// What the executor found of a task after an agent restart.
fn adopted(ctl: &mut TaskCtl, fx: &mut Vec<Effect>, now: DateTime<Utc>, found: Option<Found>, lost: String) {
    let phase = ctl.phase();
    match found {
        Some(f) if f.running => {
            // It runs: watch it, and say so if that was never reported.
            ctl.handle = Some(f.handle.clone());
            if ctl.stop_wanted() || phase == Phase::Stopping || ctl.status.state > TaskState::Running {
                fx.push(Effect::Wait(f.handle.clone()));
                ctl.phase = Some(Phase::Stopping);
                fx.push(Effect::Stop {
                    handle: f.handle,
                    grace: stop_grace(&ctl.task.spec),
                });
            } else if ctl.status.state < TaskState::Running
                && f.handle.container_id().is_some()
                && crate::health::has_health_check(&ctl.task.spec)
            {
                // Never reported running, and gated by health: the start
                // (of what runs already) waits for health again, so an
                // unhealthy one fails and a starting one keeps waiting.
                ctl.phase = Some(Phase::Starting);
                fx.push(Effect::Start(Some(f.handle)));
            } else {
                fx.push(Effect::Wait(f.handle.clone()));
                ctl.phase = Some(Phase::Running);
                report(ctl, fx, now, TaskState::Running, "started", "", None);
            }
        }
        Some(f) if f.started => {
            // It ran and ended while the agent was away; an end already
            // reported stays as it was (the container stays for `docker logs`).
            if phase != Phase::Ended {
                ctl.handle = Some(f.handle);
                if phase != Phase::Stopping {
                    ctl.phase = Some(Phase::Running);
                }
                exited(ctl, fx, now, Exit::Code(f.exit_code.unwrap_or(0)));
            }
        }
        Some(_) => {
            // Created, never started: removed, and prepared again if still wanted.
            fx.push(Effect::Remove);
            ctl.handle = None;
            if phase != Phase::Ended {
                ctl.phase = Some(Phase::New);
            }
        }
        None => match phase {
            Phase::Running | Phase::Stopping => {
                if ctl.handle.is_some() {
                    exited(ctl, fx, now, Exit::Lost(lost));
                } else {
                    ctl.phase = Some(Phase::New);
                }
            }
            // It was being prepared or started when the agent stopped, and
            // nothing of it runs: from the beginning.
            Phase::Preparing | Phase::Starting | Phase::Backoff => {
                ctl.handle = None;
                ctl.phase = Some(Phase::New);
            }
            Phase::New | Phase::Ended => {}
        },
    }
}

/// Sorts the work an executor found after a restart: per known task the
/// work found for it (a running one preferred), and the rest (work of tasks
/// this node does not know, or a second one of the same task) to discard.
pub fn sort_found(known: impl Fn(&str) -> bool, found: Vec<Found>) -> (BTreeMap<String, Found>, Vec<Found>) {
    let mut mine: BTreeMap<String, Found> = BTreeMap::new();
    let mut discard = Vec::new();
    for f in found {
        if !known(&f.task_id) {
            discard.push(f);
            continue;
        }
        match mine.remove(&f.task_id) {
            Some(had) if had.running || !f.running => {
                discard.push(f);
                mine.insert(had.task_id.clone(), had);
            }
            Some(had) => {
                discard.push(had);
                mine.insert(f.task_id.clone(), f);
            }
            None => {
                mine.insert(f.task_id.clone(), f);
            }
        }
    }
    (mine, discard)
}

/// Queues a report of `state`, unless the task is already there or beyond.
fn report(
    ctl: &mut TaskCtl,
    fx: &mut Vec<Effect>,
    now: DateTime<Utc>,
    state: TaskState,
    message: &str,
    err: &str,
    exit_code: Option<i64>,
) {
    if state <= ctl.status.state {
        return;
    }
    // Published ports are the running task's; they go when it ends.
    let port_status = ctl.status.port_status.take().filter(|_| state <= TaskState::Running);
    ctl.status = TaskStatus {
        timestamp: now,
        state,
        message: message.to_string(),
        err: err.to_string(),
        container_status: Some(ContainerStatus {
            container_id: ctl.handle.as_ref().and_then(Handle::container_id).map(str::to_string),
            pid: ctl.handle.as_ref().and_then(Handle::pid).map(i64::from),
            exit_code,
        }),
        port_status,
    };
    fx.push(Effect::Report(ctl.status.clone()));
}

#[cfg(test)]
mod tests;
