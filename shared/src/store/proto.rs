//! Requests and replies of the store API (subject [`crate::subjects::store_requests`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::types::{Kind, Record};

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Creates an object; refused if the ID exists or (services, networks) the name is taken.
    Create { record: Record },
    /// Replaces an object; `record.version` must equal the stored version (the one read).
    Update { record: Record },
    /// Deletes an object; when `version` is given it must equal the stored version.
    Delete {
        kind: Kind,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// Writes nothing; refuses the transaction (`not-found`) unless the
    /// object exists: what the other ops refer to is checked in the same
    /// write, not by a read before it.
    Exists { kind: Kind, id: String },
    /// Writes nothing; refuses the transaction (`in-use`) when an object of
    /// `kind` matches `filter` (by its indexed fields or names): nothing may
    /// still refer to what the other ops remove. The transaction's own
    /// earlier ops count.
    NoneMatch { kind: Kind, filter: ListFilter },
}

impl Op {
    /// The object an op writes, if it writes one.
    pub fn target(&self) -> Option<(Kind, &str)> {
        match self {
            Op::Create { record } | Op::Update { record } => Some((record.kind, record.id.as_str())),
            Op::Delete { kind, id, .. } => Some((*kind, id.as_str())),
            Op::Exists { .. } | Op::NoneMatch { .. } => None,
        }
    }
}

/// A transactional batch write: all operations apply, or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxRequest {
    /// Identifies the request so a retry after an ambiguous failure is applied once.
    pub request_id: String,
    /// When set, refused with `fenced` if older than the term the write commits in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_term: Option<u64>,
    pub ops: Vec<Op>,
    /// The W3C `traceparent` of the leader's span for this request, set by
    /// the store when it accepts the write (clients leave it empty: their
    /// trace travels in the request's headers). It travels with the log
    /// entry, so each replica's apply and the change batch the write
    /// produces continue the writer's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl TxRequest {
    pub fn new(ops: Vec<Op>) -> TxRequest {
        TxRequest {
            request_id: crate::id::new_id(),
            fencing_term: None,
            ops,
            trace: None,
        }
    }

    pub fn fenced(mut self, term: u64) -> TxRequest {
        self.fencing_term = Some(term);
        self
    }
}

/// The result of a committed transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxOutcome {
    /// Raft log index the transaction committed at (every written record's version).
    pub index: u64,
    /// Raft term it committed in.
    pub term: u64,
    /// The records as written (for deletes: as they were), in the order of
    /// the ops that write (`Exists` and `NoneMatch` have none).
    pub records: Vec<Record>,
}

/// A label filter: `key` or `key=value`, as in `docker ... -f label=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelFilter {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Which records a list returns. Empty criteria match everything; several
/// values for one criterion match any of them (as Docker's filters do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelFilter>,
    /// Secondary fields (see `StoreObject::fields`): each key must match one of its values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Vec<String>>,
}

impl ListFilter {
    pub fn id_prefix(mut self, p: impl Into<String>) -> Self {
        self.id_prefixes.push(p.into());
        self
    }
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.names.push(n.into());
        self
    }
    pub fn label(mut self, key: impl Into<String>, value: Option<String>) -> Self {
        self.labels.push(LabelFilter { key: key.into(), value });
        self
    }
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.entry(key.into()).or_default().push(value.into());
        self
    }

    /// Whether `r` passes the filter.
    pub fn matches(&self, r: &Record) -> bool {
        (self.id_prefixes.is_empty() || self.id_prefixes.iter().any(|p| r.id.starts_with(p.as_str())))
            && (self.names.is_empty() || r.name.as_ref().is_some_and(|n| self.names.iter().any(|x| x == n)))
            && self.labels.iter().all(|l| match (&l.value, r.labels.get(&l.key)) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(want), Some(have)) => want == have,
            })
            && self
                .fields
                .iter()
                .all(|(k, vals)| r.fields.get(k).is_some_and(|have| vals.iter().any(|v| v == have)))
    }
}

/// What changed in one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    /// The record after the change (for a delete: the last state).
    pub record: Record,
    /// The `traceparent` of the write that made the change (see
    /// [`TxRequest::trace`]): a follower acting on it continues that trace.
    /// One log entry holds several writes, each with its own trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The changes of one applied log entry. `prev_index` is the index of the
/// previous entry that changed anything, so a consumer at position P that
/// receives a batch with `prev_index != P` knows it missed something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub index: u64,
    pub prev_index: u64,
    pub term: u64,
    pub at: DateTime<Utc>,
    pub changes: Vec<Change>,
}

/// A consistent list: the records, and the position of the change feed they reflect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// Index of the last applied entry that changed anything (the feed position).
    pub event_index: u64,
    pub records: Vec<Record>,
}

/// Change-feed history since a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsResult {
    /// The history no longer reaches back to the requested position: list again.
    pub compacted: bool,
    pub batches: Vec<EventBatch>,
    /// Feed position after these batches.
    pub event_index: u64,
}

/// A replica's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub replica: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub state: String,
}

/// One member of the store's Raft membership, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub replica: u64,
    /// A voter (counts for quorum and may lead), else a learner (receives the log only).
    pub voter: bool,
    /// The leader itself, or a member that answered one of the leader's Raft
    /// RPCs (appends and heartbeats) within the last two election timeouts.
    pub reachable: bool,
    /// The last log index the leader knows this member holds.
    pub matched: Option<u64>,
}

/// The store's membership as its leader sees it (`StoreRequest::Membership`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMembership {
    pub leader: u64,
    pub term: u64,
    pub last_log_index: Option<u64>,
    /// Voters first, then learners, each by replica id.
    pub members: Vec<MemberStatus>,
}

impl StoreMembership {
    pub fn member(&self, replica: u64) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.replica == replica)
    }
}

/// A request to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreRequest {
    Tx {
        tx: TxRequest,
    },
    Get {
        kind: Kind,
        id: String,
    },
    List {
        kinds: Vec<Kind>,
        #[serde(default)]
        filter: ListFilter,
    },
    /// Change-feed batches with `index > after`, at most `limit`.
    Events {
        after: u64,
        limit: usize,
    },
    /// This replica's status (never forwarded).
    Status,
    /// A list from this replica's own state machine, without asking the leader
    /// (may be stale; used to check what each replica holds).
    LocalList {
        kinds: Vec<Kind>,
        #[serde(default)]
        filter: ListFilter,
    },
    /// The membership with each member's reachability, from the leader.
    Membership,
    /// Adds `replica` as a learner (answered once the learner is part of the
    /// membership). With `voter`, the leader promotes it to voter as soon as
    /// it has caught up with the log (at once when it already has); the
    /// intent is kept in the membership itself, so a new leader finishes it.
    AddReplica {
        replica: u64,
        voter: bool,
    },
    /// Removes `replica` from the voters and learners; a voter whose removal
    /// would leave fewer reachable voters than a quorum of the rest is
    /// refused (SwarmKit's `CanRemoveMember`).
    RemoveReplica {
        replica: u64,
    },
    /// `swarm init --force-new-cluster`: sent to one replica directly (never
    /// forwarded, no leader needed); it restarts Raft with itself as the
    /// only voter, keeping its log and state.
    ForceNewCluster,
}

impl StoreRequest {
    /// Whether this request must be served by the leader.
    pub fn needs_leader(&self) -> bool {
        !matches!(
            self,
            StoreRequest::Status | StoreRequest::LocalList { .. } | StoreRequest::ForceNewCluster
        )
    }
}

/// The reply to a [`StoreRequest`] (inside an [`crate::envelope::Reply`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreResponse {
    Tx { outcome: TxOutcome },
    Get { record: Option<Record> },
    List { result: ListResult },
    Events { result: EventsResult },
    Status { status: StoreStatus },
    Membership { membership: StoreMembership },
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: Option<&str>, labels: &[(&str, &str)], fields: &[(&str, &str)]) -> Record {
        let mut r = Record::blob(id, serde_json::json!({}));
        r.name = name.map(String::from);
        r.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r.fields = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r
    }

    #[test]
    fn filters_match_like_docker_filters() {
        let r = rec("abc123", Some("web"), &[("tier", "front")], &[("node", "n1")]);
        assert!(ListFilter::default().matches(&r));
        assert!(ListFilter::default().id_prefix("abc").matches(&r));
        assert!(!ListFilter::default().id_prefix("abd").matches(&r));
        assert!(ListFilter::default().id_prefix("zzz").id_prefix("ab").matches(&r));
        assert!(ListFilter::default().name("db").name("web").matches(&r));
        assert!(!ListFilter::default().name("db").matches(&r));
        assert!(ListFilter::default().label("tier", None).matches(&r));
        assert!(ListFilter::default().label("tier", Some("front".into())).matches(&r));
        assert!(!ListFilter::default().label("tier", Some("back".into())).matches(&r));
        assert!(!ListFilter::default().label("tier", None).label("x", None).matches(&r));
        assert!(ListFilter::default()
            .field("node", "n2")
            .field("node", "n1")
            .matches(&r));
        assert!(!ListFilter::default().field("node", "n2").matches(&r));
        assert!(!ListFilter::default().field("service", "s").matches(&r));
    }

    #[test]
    fn requests_have_a_stable_wire_form() {
        let req = StoreRequest::Get {
            kind: Kind::Service,
            id: "x".into(),
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json, serde_json::json!({"get": {"kind": "service", "id": "x"}}));
        assert!(!StoreRequest::Status.needs_leader());
        assert!(req.needs_leader());
    }
}
