//! Nodes: a machine in the swarm, its user-set `Spec` (role, availability,
//! labels), what its agent reports (`Description`, `Status`) and, for
//! managers, `ManagerStatus`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::resources::{Platform, Resources};
use super::{is_false, non_empty};
use crate::store::Meta;

/// `Spec.Role`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    #[default]
    Worker,
    Manager,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
}

/// `Spec.Availability`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks are moved elsewhere.
    Drain,
}

/// Whether a node's join has been accepted (SwarmKit's `NodeSpec.Membership`;
/// Docker does not print it, the API layer leaves it out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    Pending,
    #[default]
    Accepted,
}

impl Membership {
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Pending => "pending",
            Membership::Accepted => "accepted",
        }
    }
}

/// `Status.State`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

/// `ManagerStatus.Reachability`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    #[default]
    Unknown,
    Unreachable,
    Reachable,
}

/// What the user controls about a node (`docker node update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub role: NodeRole,
    pub availability: Availability,
    /// Store-side only; `None` means accepted (see [`Node::membership`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
}

/// One plugin the engine reports (`{"Type": "Network", "Name": "overlay"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PluginDescription {
    #[serde(rename = "Type")]
    pub kind: String,
    pub name: String,
}

/// `Description.Engine`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EngineDescription {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub engine_version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginDescription>,
}

/// `TLSInfo`: the trust root and the issuer of a node's certificate.
/// The issuer fields are base64 text, as Go writes a `[]byte`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TlsInfo {
    /// PEM of the root CA certificate.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trust_root: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_issuer_subject: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_issuer_public_key: String,
}

/// What the node's agent reports about the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeDescription {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    pub platform: Platform,
    pub resources: Resources,
    pub engine: EngineDescription,
    #[serde(rename = "TLSInfo", skip_serializing_if = "Option::is_none")]
    pub tls_info: Option<TlsInfo>,
}

/// `Status`: liveness as the dispatcher sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeStatus {
    pub state: NodeState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The node's IP address as seen by the managers.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// `ManagerStatus`, present on managers only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ManagerStatus {
    /// Docker writes `"Leader": true` on the leader and omits it elsewhere.
    #[serde(skip_serializing_if = "is_false")]
    pub leader: bool,
    pub reachability: Reachability,
    /// The manager's Raft address, `ip:2377`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Store-only (shoal): the NATS URLs this manager's host serves, as other
    /// hosts dial them; given to joining hosts. The API does not show it.
    #[serde(rename = "NATSURLs", skip_serializing_if = "Vec::is_empty")]
    pub nats_urls: Vec<String>,
    /// Store-only (as SwarmKit's `RaftID`; the API does not show it): the
    /// id of this manager's raft-store replica, 0 when unknown. It maps the
    /// node to the store's membership for `Leader`/`Reachability`.
    #[serde(rename = "RaftID", skip_serializing_if = "is_zero")]
    pub raft_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A node in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Spec", default)]
    pub spec: NodeSpec,
    #[serde(rename = "Description", default)]
    pub description: NodeDescription,
    #[serde(rename = "Status", default)]
    pub status: NodeStatus,
    #[serde(rename = "ManagerStatus", default, skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatus>,
}

impl Node {
    /// A node that has just joined with `role`, not yet reporting.
    pub fn new(id: impl Into<String>, hostname: impl Into<String>, role: NodeRole) -> Node {
        Node {
            meta: Meta::new(id),
            spec: NodeSpec {
                role,
                ..NodeSpec::default()
            },
            description: NodeDescription {
                hostname: hostname.into(),
                ..NodeDescription::default()
            },
            status: NodeStatus::default(),
            manager_status: None,
        }
    }

    /// Whether the node's (desired) role is manager.
    pub fn is_manager(&self) -> bool {
        self.spec.role == NodeRole::Manager
    }

    /// Whether this node is the Raft leader, as last recorded.
    pub fn is_leader(&self) -> bool {
        self.manager_status.as_ref().is_some_and(|m| m.leader)
    }

    pub fn membership(&self) -> Membership {
        self.spec.membership.unwrap_or_default()
    }
}

store_object! {
    Node, Node,
    /// The name Docker finds a node by: `Spec.Name` when set, else the
    /// hostname. `None` while unset, so nameless objects never collide in
    /// the store's name index.
    fn name(&self) -> Option<String> {
        non_empty(&self.spec.name).or_else(|| non_empty(&self.description.hostname))
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.spec.labels.clone()
    }

    fn fields(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("role".to_string(), self.spec.role.as_str().to_string()),
            ("membership".to_string(), self.membership().as_str().to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::StoreObject;

    #[test]
    fn new_node_indexes_role_membership_and_hostname() {
        let mut n = Node::new("n1", "host-a", NodeRole::Worker);
        n.spec.labels.insert("zone".into(), "a".into());
        assert!(!n.is_manager());
        let f = n.fields();
        assert_eq!(f.get("role").map(String::as_str), Some("worker"));
        assert_eq!(f.get("membership").map(String::as_str), Some("accepted"));
        assert_eq!(n.name().as_deref(), Some("host-a"));
        n.spec.name = "named".into();
        assert_eq!(n.name().as_deref(), Some("named"), "a spec name comes first");
        n.spec.name.clear();
        assert_eq!(n.labels().get("zone").map(String::as_str), Some("a"));

        n.spec.role = NodeRole::Manager;
        n.spec.membership = Some(Membership::Pending);
        assert!(n.is_manager());
        let f = n.fields();
        assert_eq!(f.get("role").map(String::as_str), Some("manager"));
        assert_eq!(f.get("membership").map(String::as_str), Some("pending"));

        let back = Node::from_record(&n.to_record().unwrap()).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn leader_flag_is_written_only_when_true() {
        let mut ms = ManagerStatus {
            leader: false,
            reachability: Reachability::Reachable,
            addr: "10.0.0.2:2377".into(),
            nats_urls: Vec::new(),
            raft_id: 0,
        };
        assert_eq!(
            serde_json::to_value(&ms).unwrap(),
            json!({"Reachability": "reachable", "Addr": "10.0.0.2:2377"})
        );
        ms.leader = true;
        assert_eq!(serde_json::to_value(&ms).unwrap()["Leader"], json!(true));
    }

    #[test]
    fn spec_enums_use_dockers_spellings() {
        let spec = NodeSpec {
            role: NodeRole::Manager,
            availability: Availability::Drain,
            ..NodeSpec::default()
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"Role": "manager", "Availability": "drain"})
        );
        let st: NodeStatus = serde_json::from_value(json!({"State": "disconnected"})).unwrap();
        assert_eq!(st.state, NodeState::Disconnected);
        assert_eq!(serde_json::to_value(Availability::Pause).unwrap(), json!("pause"));
        assert_eq!(
            serde_json::to_value(Reachability::Unreachable).unwrap(),
            json!("unreachable")
        );
    }
}
