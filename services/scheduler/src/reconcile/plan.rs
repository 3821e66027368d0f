//! What a pass decided: its intent, in words a log or a test can read, and
//! the store operations it lowers to.

use chrono::{DateTime, Utc};
use shoal_shared::store::Op;

use super::Group;

/// Why a task is asked to stop (desired state `shutdown`) or to go (`remove`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StopReason {
    /// Its node is gone, down or drained: it runs elsewhere.
    NodeLost,
    /// Its node no longer satisfies a global service's constraints.
    NodeIneligible,
    /// A rolling update (or rollback) replaces it.
    Update,
    /// A start-first update started its replacement, which runs.
    Superseded,
    /// The service has fewer replicas now.
    ScaleDown,
    /// Its service was removed.
    ServiceRemoved,
    /// A newer iteration of its job runs instead.
    JobIteration,
}

/// Why a task is deleted from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeleteReason {
    /// Beyond `TaskHistoryRetentionLimit` in its slot.
    History,
    /// Removed (scale down, service removed) and stopped.
    Removed,
    /// Its node left the cluster.
    NodeGone,
}

/// What changed in a service's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceChange {
    /// Published ports were allocated (`Endpoint`).
    Endpoint,
    /// Virtual IPs were allocated or released (`Endpoint.VirtualIPs`).
    VirtualIps,
    /// `UpdateStatus` moved (started, paused, completed, rolled back).
    UpdateStatus,
}

/// One decision of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// A new task for a group (slot or node) of a service.
    Create {
        task: String,
        service: String,
        group: Group,
    },
    /// A task goes to a node.
    Place { task: String, node: String },
    /// A task cannot be placed now, and why (SwarmKit's words).
    Pending { task: String, reason: String },
    /// An ended task is replaced in its group, per the restart policy.
    Restart { task: String },
    /// A task is asked to stop.
    Stop { task: String, reason: StopReason },
    /// A task is asked to go for good.
    Remove { task: String, reason: StopReason },
    /// A task leaves the store.
    Delete { task: String, reason: DeleteReason },
    /// A service's status changes.
    ServiceStatus { service: String, change: ServiceChange },
    /// A network got its subnet, gateway and VXLAN ID.
    NetworkAllocated { network: String, subnet: String },
}

/// What one pass decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// What was decided and why, in the order it was decided.
    pub intents: Vec<Intent>,
    /// The same, as store operations, to be committed together (or in a few chunks).
    pub ops: Vec<Op>,
    /// When the pass should run again even if nothing changes (restart
    /// delays, update delays and monitor periods; now, when the pass left
    /// work for the next one).
    pub wake_at: Option<DateTime<Utc>>,
    /// Tasks created, placed and left pending (for logs and benchmarks).
    pub created: usize,
    pub placed: usize,
    pub pending: usize,
    /// The pending ones by reason (labels of `placement::PENDING_REASONS`).
    pub pending_by_reason: std::collections::BTreeMap<&'static str, usize>,
    /// Tasks some service still wants created beyond this pass's budget.
    pub deferred: usize,
}

impl Plan {
    /// How many intents of each kind (for logs).
    pub fn summary(&self) -> String {
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for i in &self.intents {
            let k = match i {
                Intent::Create { .. } => "create",
                Intent::Place { .. } => "place",
                Intent::Pending { .. } => "pending",
                Intent::Restart { .. } => "restart",
                Intent::Stop { .. } => "stop",
                Intent::Remove { .. } => "remove",
                Intent::Delete { .. } => "delete",
                Intent::ServiceStatus { .. } => "service-status",
                Intent::NetworkAllocated { .. } => "network",
            };
            *counts.entry(k).or_default() += 1;
        }
        counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
