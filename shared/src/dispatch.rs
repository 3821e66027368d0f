//! Messages between an agent and the dispatcher.
//!
//! An agent talks to the dispatcher with [`AgentRequest`]s on
//! [`crate::subjects::dispatcher_requests`] (request/reply; every manager's
//! dispatcher subscribes, only the one on the store leader's node answers),
//! and receives its assignments as [`Assignments`] on
//! [`crate::subjects::agent_assignments`]. The full set is sent after
//! registration and on request; later messages are increments, numbered by
//! `sequence` within a session, so an agent that sees a gap asks for the full
//! set again ([`AgentRequest::Sync`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{NodeDescription, Task, TaskStatus};

/// A request from an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum AgentRequest {
    /// Opens a session: creates or updates the node object, marks it ready.
    Register {
        node_id: String,
        description: Box<NodeDescription>,
        /// The node's address as it sees itself.
        #[serde(default)]
        addr: String,
    },
    /// Keeps the session alive.
    Heartbeat { node_id: String, session_id: String },
    /// Asks for the full set of assignments again (after a gap).
    Sync { node_id: String, session_id: String },
    /// Observed task state changes, oldest first.
    Status {
        node_id: String,
        session_id: String,
        updates: Vec<StatusUpdate>,
    },
}

impl AgentRequest {
    pub fn node_id(&self) -> &str {
        match self {
            AgentRequest::Register { node_id, .. }
            | AgentRequest::Heartbeat { node_id, .. }
            | AgentRequest::Sync { node_id, .. }
            | AgentRequest::Status { node_id, .. } => node_id,
        }
    }
}

/// One task's observed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub task_id: String,
    pub status: TaskStatus,
    /// The `traceparent` of the agent's span that observed this state: the
    /// dispatcher's write of it continues the task's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The dispatcher's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resp", rename_all = "snake_case")]
pub enum AgentResponse {
    /// The session is open; the full assignment set follows on the agent's subject.
    Registered {
        session_id: String,
        #[serde(with = "crate::model::duration::nanos")]
        heartbeat_period: Duration,
    },
    /// The heartbeat was accepted; send the next within `heartbeat_period`.
    /// `sequence` is the last assignment sequence sent in this session: an
    /// agent still behind it a heartbeat later lost a message (NATS delivers
    /// at most once) and asks for the full set.
    HeartbeatOk {
        #[serde(with = "crate::model::duration::nanos")]
        heartbeat_period: Duration,
        #[serde(default)]
        sequence: u64,
    },
    /// The full assignment set (answer to `Sync`).
    Full { assignments: Assignments },
    /// The status updates were recorded (or were already known).
    StatusOk,
    /// The session is unknown (the dispatcher restarted or changed): register again.
    UnknownSession,
}

/// Full set or increment of a node's assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentKind {
    /// `tasks` is everything assigned to the node; anything else must stop.
    Full,
    /// `tasks` were added or changed, `removed` are no longer assigned.
    Incremental,
}

/// The tasks a node must run (or stop: a task with a desired state past
/// `running` is sent so that the agent stops it and reports the final state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignments {
    pub session_id: String,
    /// 1 for the first message of a session, +1 for every later one.
    pub sequence: u64,
    pub kind: AssignmentKind,
    pub tasks: Vec<Task>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Task ID -> `traceparent` of the dispatcher's span that pushed that
    /// task's change (only for changes made by a traced write): the agent's
    /// work on the task continues that trace.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub traces: std::collections::BTreeMap<String, String>,
    /// The data of the secrets the running tasks in `tasks` use (opened by
    /// the dispatcher; only this node's subject carries them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secrets::Payload>,
    /// The data of the configs they use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<crate::secrets::Payload>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_have_a_tagged_wire_form() {
        let req = AgentRequest::Heartbeat {
            node_id: "n1".into(),
            session_id: "s1".into(),
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["req"], "heartbeat");
        assert_eq!(req.node_id(), "n1");
        let back: AgentRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
        let resp = AgentResponse::HeartbeatOk {
            heartbeat_period: Duration::from_secs(5),
            sequence: 7,
        };
        let v = serde_json::to_value(&resp).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"resp": "heartbeat_ok", "heartbeat_period": 5_000_000_000u64, "sequence": 7})
        );
    }
}

/// The API asks the agents for an image's digest and platforms (`GET /distribution`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageQuery {
    /// The image reference as the client gave it.
    pub image: String,
    /// The client's `X-Registry-Auth`, for an image the agent must look up at its registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<String>,
}

/// An agent's answer to an [`ImageQuery`]: Docker's `DistributionInspect`
/// (`Descriptor` and `Platforms`) as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAnswer {
    pub node_id: String,
    pub inspect: serde_json::Value,
}
