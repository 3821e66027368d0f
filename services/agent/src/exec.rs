//! What an executor is: the interface the agent's runtime drives for every
//! task (prepare, start, wait, stop, remove, and finding its work again after
//! a restart), and the values that cross it. The process executor
//! ([`crate::process`]) and the Docker executor ([`crate::docker`]) implement
//! it; the task controller ([`crate::controller`]) only sees these types.
//!
//! After SwarmKit's `agent/exec` (`Controller`, its errors and `Do`).

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shoal_shared::model::{Task, TaskSpec, DEFAULTS};

/// Default `StopGracePeriod` (Docker's, from [`DEFAULTS`]).
// Read through a reference: `Defaults` owns a `Vec`, so the const itself cannot be taken apart.
pub const DEFAULT_STOP_GRACE: Duration = {
    const D: &shoal_shared::model::Defaults = &DEFAULTS;
    D.stop_grace_period
};

/// A process identity: PID and start time (clock ticks since boot), so a
/// restarted agent never mistakes a recycled PID for its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
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

/// How a task's process or container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exit code (a signal death is 128 + signal, as a shell reports it).
    Code(i64),
    /// It ended out of sight (while the agent was away, or removed behind
    /// its back); the reason says how.
    Lost(String),
}

/// Why an executor operation failed, and so what becomes of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The task can never run here as specified (image, mount, command):
    /// it ends `rejected`.
    Rejected(String),
    /// The task's work failed to start: it ends `failed`, and the scheduler
    /// may restart it.
    Failed(String),
    /// The executor could not do it now (engine unreachable): try again.
    Temporary(String),
}

impl ExecError {
    pub fn message(&self) -> &str {
        match self {
            ExecError::Rejected(m) | ExecError::Failed(m) | ExecError::Temporary(m) => m,
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Work of this node found by an executor: a task's container (by label) or
/// process (by its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub task_id: String,
    pub handle: Handle,
    pub running: bool,
    /// Whether it ever ran (a container only created has not).
    pub started: bool,
    pub exit_code: Option<i64>,
}

/// A started task: its handle, and for a process the child to wait on.
pub struct Started {
    pub handle: Handle,
    pub child: Option<tokio::process::Child>,
    /// The host-mode ports the task got (its `Status.PortStatus`).
    pub ports: Vec<shoal_shared::model::PortConfig>,
}

impl fmt::Debug for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started").field("handle", &self.handle).finish()
    }
}

/// What runs tasks on this node. Every operation returns a `'static`
/// future, so the runtime can spawn it and feed its outcome back to the
/// task's controller as an event.
pub trait Executor: Send + Sync {
    /// Short name for logs (`process`, `docker`).
    fn name(&self) -> &'static str;

    /// Preparing: for a container the image and the container itself (its
    /// handle is returned); a process only needs a valid command line.
    fn prepare(&self, task: &Task) -> BoxFuture<'static, Result<Option<Handle>, ExecError>>;

    /// Starting: the prepared work runs.
    fn start(&self, task: &Task, prepared: Option<Handle>) -> BoxFuture<'static, Result<Started, ExecError>>;

    /// Waits for the work to end: the child if this agent started it, else
    /// the adopted process or the container.
    fn wait(&self, handle: Handle, child: Option<tokio::process::Child>) -> BoxFuture<'static, Exit>;

    /// Asks the work to stop: SIGTERM (or the container's stop signal), then
    /// SIGKILL after `grace`. Its end is seen by [`Executor::wait`].
    fn stop(&self, handle: Handle, grace: Duration) -> BoxFuture<'static, ()>;

    /// Removes what is left of a task that is gone (its container).
    fn remove(&self, task: &Task) -> BoxFuture<'static, ()>;

    /// Every piece of this node's work the executor can find, running or
    /// not (after a restart of the agent).
    fn find(&self) -> BoxFuture<'static, Result<Vec<Found>, String>>;

    /// Ends and removes found work that belongs to no task of this node.
    fn discard(&self, found: Found) -> BoxFuture<'static, ()>;

    /// Looks at one piece of work the agent remembers but [`Executor::find`]
    /// did not return (e.g. a process whose environment this agent may not
    /// read, or one started before tasks carried their IDs): what it is now,
    /// if the executor can tell from the handle alone.
    fn probe(&self, handle: &Handle, task_id: &str) -> Option<Found>;

    /// The reason given when a task's work is gone after an agent restart.
    fn lost_reason(&self) -> &'static str;
}

/// The grace period of a task before SIGKILL.
pub fn stop_grace(spec: &TaskSpec) -> Duration {
    spec.container_spec
        .as_ref()
        .and_then(|c| c.stop_grace_period)
        .unwrap_or(DEFAULT_STOP_GRACE)
}
