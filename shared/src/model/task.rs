//! Tasks: one scheduled instance of a service (one container on one node).
//!
//! A task's `Status.State` only moves forward through SwarmKit's states
//! ([`TaskState`]); its `DesiredState` likewise. Both are refused a
//! backwards move by [`TaskStatus::advance`] and [`Task::advance_desired`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::network::Network;
use super::service::{host_mode_ports, Endpoint, PortConfig, TaskSpec};
use crate::error::ShoalError;
use crate::store::{zero_time, Meta, Version};

/// A task's state, in SwarmKit's order: a task only moves to a later state.
/// Also used for `DesiredState` (which is only ever `ready`, `running`,
/// `shutdown`, `remove` in practice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 14] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];

    /// The lowercase API spelling (`"running"`), also the `desired-state` filter value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Parses the lowercase spelling.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The capitalized name `docker service ps` prints (`"Running"`).
    pub fn as_docker_display(&self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }

    /// Whether a task in this state may move to `next` (staying put is allowed).
    pub fn can_transition_to(self, next: TaskState) -> bool {
        next >= self
    }

    /// Whether the task has stopped for good (any state after `running`).
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    /// As a desired state: the task should run (`running`, or `complete`
    /// for a job's task, which runs until it exits).
    pub fn wants_run(self) -> bool {
        self <= TaskState::Complete
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Status.ContainerStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(rename = "PID", skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(rename = "ExitCode", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// `Status.PortStatus`: host-mode ports actually published by the task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// A task's observed status, as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    #[serde(default = "zero_time", serialize_with = "crate::model::gotime::serialize")]
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_status: Option<PortStatus>,
}

impl Default for TaskStatus {
    fn default() -> TaskStatus {
        TaskStatus {
            timestamp: zero_time(),
            state: TaskState::New,
            message: String::new(),
            err: String::new(),
            container_status: None,
            port_status: None,
        }
    }
}

impl TaskStatus {
    /// Moves to `next`, refusing a backwards move with `InvalidArgument`.
    /// Only `State` changes; the caller sets `Timestamp`, `Message` and `Err`.
    pub fn advance(&mut self, next: TaskState) -> Result<(), ShoalError> {
        if !self.state.can_transition_to(next) {
            return Err(ShoalError::invalid(format!(
                "task state cannot go back from {} to {}",
                self.state, next
            )));
        }
        self.state = next;
        Ok(())
    }
}

/// One entry of `NetworksAttachments`: a network and the task's addresses on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    #[serde(rename = "Network")]
    pub network: Network,
    /// CIDR form, e.g. `10.255.0.10/16`.
    #[serde(rename = "Addresses", default)]
    pub addresses: Vec<String>,
}

/// A task in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Spec", default)]
    pub spec: TaskSpec,
    /// The service spec version this task was made from.
    #[serde(rename = "SpecVersion", default, skip_serializing_if = "Option::is_none")]
    pub spec_version: Option<Version>,
    #[serde(rename = "ServiceID", default, skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    /// 1-based replica slot; `None` for a global service's task.
    #[serde(rename = "Slot", default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// Empty until the scheduler assigns the task.
    #[serde(rename = "NodeID", default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    #[serde(rename = "Status", default)]
    pub status: TaskStatus,
    #[serde(rename = "DesiredState", default)]
    pub desired_state: TaskState,
    #[serde(rename = "NetworksAttachments", default, skip_serializing_if = "Vec::is_empty")]
    pub networks_attachments: Vec<NetworkAttachment>,
    /// The service's name and labels when the task was made (SwarmKit's
    /// `ServiceAnnotations`): agents name containers after it.
    #[serde(rename = "ServiceAnnotations", default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<Annotations>,
    /// The job iteration this task runs for (a job's tasks only).
    #[serde(rename = "JobIteration", default, skip_serializing_if = "Option::is_none")]
    pub job_iteration: Option<Version>,
    /// The service's endpoint when the task was made (SwarmKit's
    /// `Task.Endpoint`): the agent publishes the task's host-mode ports
    /// from it. Kept in the store; the API doesn't show it (Docker's task
    /// has no `Endpoint`).
    #[serde(rename = "Endpoint", default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

/// `Name` and `Labels` of an object, as SwarmKit's `Annotations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Annotations {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Task {
    /// A new task of `service_id` from `spec`, in state `new`, desired `running`.
    pub fn new(id: impl Into<String>, service_id: impl Into<String>, spec: TaskSpec) -> Task {
        Task {
            meta: Meta::new(id),
            labels: BTreeMap::new(),
            spec,
            spec_version: None,
            service_id: service_id.into(),
            slot: None,
            node_id: String::new(),
            status: TaskStatus::default(),
            desired_state: TaskState::Running,
            networks_attachments: Vec::new(),
            service_annotations: None,
            job_iteration: None,
            endpoint: None,
        }
    }

    /// The ports the task publishes on its own host (`mode=host`), as its
    /// service's endpoint had them when the task was made; a published
    /// port of 0 lets the engine pick one.
    pub fn host_ports(&self) -> Vec<PortConfig> {
        self.endpoint
            .as_ref()
            .map(|e| host_mode_ports(&e.ports))
            .unwrap_or_default()
    }

    /// Docker's task name: `<service>.<slot>` for a replicated task,
    /// `<service>.<node ID>` for a global one (the service name alone if
    /// the task has neither yet).
    pub fn name(&self, service_name: &str) -> String {
        match (self.slot, self.node_id.as_str()) {
            (Some(slot), _) => format!("{service_name}.{slot}"),
            (None, "") => service_name.to_string(),
            (None, node) => format!("{service_name}.{node}"),
        }
    }

    /// Moves the desired state forward, refusing a backwards move.
    pub fn advance_desired(&mut self, next: TaskState) -> Result<(), ShoalError> {
        if !self.desired_state.can_transition_to(next) {
            return Err(ShoalError::invalid(format!(
                "desired state cannot go back from {} to {}",
                self.desired_state, next
            )));
        }
        self.desired_state = next;
        Ok(())
    }
}

store_object! {
    Task, Task,
    fn labels(&self) -> BTreeMap<String, String> {
        self.labels.clone()
    }

    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        if !self.service_id.is_empty() {
            f.insert("service".to_string(), self.service_id.clone());
        }
        if !self.node_id.is_empty() {
            f.insert("node".to_string(), self.node_id.clone());
        }
        f.insert("desired-state".to_string(), self.desired_state.as_str().to_string());
        if let Some(slot) = self.slot {
            f.insert("slot".to_string(), slot.to_string());
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;
    use crate::store::StoreObject;

    #[test]
    fn states_are_ordered_as_in_swarmkit() {
        let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "new",
                "pending",
                "assigned",
                "accepted",
                "preparing",
                "ready",
                "starting",
                "running",
                "complete",
                "shutdown",
                "failed",
                "rejected",
                "remove",
                "orphaned"
            ]
        );
        for w in TaskState::ALL.windows(2) {
            assert!(w[0] < w[1], "{} must come before {}", w[0], w[1]);
        }
        for s in TaskState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
            assert_eq!(serde_json::from_value::<TaskState>(json!(s.as_str())).unwrap(), s);
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::parse("Running"), None);
    }

    #[test]
    fn every_backwards_transition_is_refused_and_every_forward_one_allowed() {
        for (i, from) in TaskState::ALL.into_iter().enumerate() {
            for (j, to) in TaskState::ALL.into_iter().enumerate() {
                assert_eq!(from.can_transition_to(to), j >= i, "{from} -> {to}");
                let mut st = TaskStatus {
                    state: from,
                    ..TaskStatus::default()
                };
                let r = st.advance(to);
                if j >= i {
                    assert!(r.is_ok(), "{from} -> {to}");
                    assert_eq!(st.state, to);
                } else {
                    assert_eq!(r.unwrap_err().code, ErrorCode::InvalidArgument, "{from} -> {to}");
                    assert_eq!(st.state, from, "a refused move must not change the state");
                }
            }
        }
    }

    #[test]
    fn terminal_means_after_running_and_display_is_capitalized() {
        let terminal: Vec<TaskState> = TaskState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                TaskState::Complete,
                TaskState::Shutdown,
                TaskState::Failed,
                TaskState::Rejected,
                TaskState::Remove,
                TaskState::Orphaned
            ]
        );
        let shown: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_docker_display()).collect();
        assert_eq!(
            shown,
            [
                "New",
                "Pending",
                "Assigned",
                "Accepted",
                "Preparing",
                "Ready",
                "Starting",
                "Running",
                "Complete",
                "Shutdown",
                "Failed",
                "Rejected",
                "Remove",
                "Orphaned"
            ]
        );
    }

    #[test]
    fn desired_state_only_moves_forward() {
        let mut t = Task::new("t1", "s1", TaskSpec::default());
        assert_eq!(t.desired_state, TaskState::Running);
        t.advance_desired(TaskState::Shutdown).unwrap();
        let err = t.advance_desired(TaskState::Running).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(t.desired_state, TaskState::Shutdown);
    }

    #[test]
    fn names_follow_docker_for_replicated_and_global_tasks() {
        let mut t = Task::new("t1", "s1", TaskSpec::default());
        assert_eq!(t.name("web"), "web");
        t.node_id = "0n868kuog8z6vxo0uvmykwnyw".into();
        assert_eq!(t.name("web"), "web.0n868kuog8z6vxo0uvmykwnyw");
        t.slot = Some(3);
        assert_eq!(t.name("web"), "web.3");
    }

    #[test]
    fn index_fields_and_labels_for_the_store() {
        let mut t = Task::new("t1", "svc", TaskSpec::default());
        t.labels.insert("com.example".into(), "x".into());
        let f = t.fields();
        assert_eq!(f.get("service").map(String::as_str), Some("svc"));
        assert_eq!(f.get("desired-state").map(String::as_str), Some("running"));
        assert!(!f.contains_key("node"));
        assert!(!f.contains_key("slot"));

        t.node_id = "n1".into();
        t.slot = Some(12);
        t.desired_state = TaskState::Shutdown;
        let rec = t.to_record().unwrap();
        assert_eq!(rec.fields.get("node").map(String::as_str), Some("n1"));
        assert_eq!(rec.fields.get("slot").map(String::as_str), Some("12"));
        assert_eq!(rec.fields.get("desired-state").map(String::as_str), Some("shutdown"));
        assert_eq!(rec.labels.get("com.example").map(String::as_str), Some("x"));
        assert_eq!(rec.name, None);
        assert_eq!(Task::from_record(&rec).unwrap(), t);
    }
}
