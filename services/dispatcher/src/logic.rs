//! The dispatcher's decisions, free of I/O: sessions, heartbeat expiry,
//! assignment sets and increments, and status intake merged into task
//! records without ever moving a state backwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_shared::dispatch::{AssignmentKind, Assignments, StatusUpdate};
use shoal_shared::model::{Node, NodeDescription, NodeRole, NodeState, Task, TaskState, TaskStatus, DEFAULTS};
use shoal_shared::store::{Op, StoreObject};

/// Default `Spec.Dispatcher.HeartbeatPeriod` (Docker's, from [`DEFAULTS`]).
// Read through a reference: `Defaults` owns a `Vec`, so the const itself cannot be taken apart.
pub const DEFAULT_HEARTBEAT: Duration = {
    const D: &shoal_shared::model::Defaults = &DEFAULTS;
    D.heartbeat_period
};
/// Heartbeat periods a node may miss before it is down.
pub const GRACE_PERIODS: u32 = 3;
/// The message of a node marked down for missing heartbeats.
pub const HEARTBEAT_FAILURE: &str = "heartbeat failure";

/// Whether a task belongs in its node's assignment set: it was placed there.
/// Ended tasks stay in the set until the scheduler deletes them (history
/// pruning, scale-down, service removal), as in SwarmKit: the agent keeps
/// their stopped containers until then (`docker ps -a`, `docker logs`).
pub fn assigned(t: &Task) -> bool {
    !t.node_id.is_empty() && t.status.state >= TaskState::Assigned
}

/// Merges a reported status into a task: `None` when it would move the
/// state backwards or changes nothing (so intake is idempotent).
pub fn merge_status(task: &Task, status: &TaskStatus) -> Option<Task> {
    if status.state < task.status.state {
        return None;
    }
    if status.state == task.status.state
        && status.message == task.status.message
        && status.err == task.status.err
        && status.container_status == task.status.container_status
    {
        return None;
    }
    let mut t = task.clone();
    t.status = status.clone();
    Some(t)
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub last_seen: DateTime<Utc>,
    pub sequence: u64,
    /// Task id -> version last sent.
    pub sent: HashMap<String, u64>,
}

/// What waits to be written.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Registrations: node id -> (description, address).
    pub registered: BTreeMap<String, (NodeDescription, String)>,
    /// Task id -> (reporting node, latest status).
    pub statuses: BTreeMap<String, (String, TaskStatus)>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.registered.is_empty() && self.statuses.is_empty()
    }

    /// Folds `other` (older) under what is queued now.
    pub fn restore(&mut self, other: Pending) {
        for (k, v) in other.registered {
            self.registered.entry(k).or_insert(v);
        }
        for (k, v) in other.statuses {
            match self.statuses.get(&k) {
                Some((_, cur)) if cur.state >= v.1.state => {}
                _ => {
                    self.statuses.insert(k, v);
                }
            }
        }
    }
}

/// The dispatcher's state machine.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub sessions: HashMap<String, Session>,
    pub pending: Pending,
    /// When this dispatcher started acting: nodes get a full grace period from then.
    pub active_since: DateTime<Utc>,
    pub period: Duration,
    next_session: u64,
    session_prefix: String,
}

impl Dispatcher {
    pub fn new(now: DateTime<Utc>, session_prefix: impl Into<String>) -> Dispatcher {
        Dispatcher {
            sessions: HashMap::new(),
            pending: Pending::default(),
            active_since: now,
            period: DEFAULT_HEARTBEAT,
            next_session: 0,
            session_prefix: session_prefix.into(),
        }
    }

    /// Opens (or reopens) a session for a node; the node is written ready at the next flush.
    pub fn register(
        &mut self,
        node_id: &str,
        description: NodeDescription,
        addr: String,
        now: DateTime<Utc>,
    ) -> String {
        self.next_session += 1;
        let id = format!("{}-{}", self.session_prefix, self.next_session);
        self.sessions.insert(
            node_id.to_string(),
            Session {
                id: id.clone(),
                last_seen: now,
                sequence: 0,
                sent: HashMap::new(),
            },
        );
        self.pending.registered.insert(node_id.to_string(), (description, addr));
        id
    }

    fn session(&mut self, node_id: &str, session_id: &str) -> Option<&mut Session> {
        self.sessions.get_mut(node_id).filter(|s| s.id == session_id)
    }

    /// Records a heartbeat; `false` when the session is unknown.
    pub fn heartbeat(&mut self, node_id: &str, session_id: &str, now: DateTime<Utc>) -> bool {
        match self.session(node_id, session_id) {
            Some(s) => {
                s.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// The last assignment sequence sent to a node's session.
    pub fn sequence(&self, node_id: &str) -> u64 {
        self.sessions.get(node_id).map_or(0, |s| s.sequence)
    }

    /// Queues status updates from a node; `false` when the session is unknown.
    pub fn status(&mut self, node_id: &str, session_id: &str, updates: Vec<StatusUpdate>, now: DateTime<Utc>) -> bool {
        let Some(s) = self.session(node_id, session_id) else {
            return false;
        };
        s.last_seen = now;
        for u in updates {
            match self.pending.statuses.get(&u.task_id) {
                Some((_, cur)) if cur.state > u.status.state => {}
                _ => {
                    self.pending.statuses.insert(u.task_id, (node_id.to_string(), u.status));
                }
            }
        }
        true
    }

    fn grace(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.period * GRACE_PERIODS).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Nodes that are ready in the store but missed their heartbeats, and
    /// closes their sessions.
    pub fn expired<'a>(&mut self, nodes: impl Iterator<Item = &'a Node>, now: DateTime<Utc>) -> Vec<String> {
        let grace = self.grace();
        let mut out = Vec::new();
        for n in nodes {
            if n.status.state != NodeState::Ready || self.pending.registered.contains_key(&n.meta.id) {
                continue;
            }
            let last = self
                .sessions
                .get(&n.meta.id)
                .map_or(self.active_since, |s| s.last_seen.max(self.active_since));
            if now - last > grace {
                self.sessions.remove(&n.meta.id);
                out.push(n.meta.id.clone());
            }
        }
        out
    }

    /// Takes what is queued and turns it into store operations against the
    /// current nodes and tasks, plus nodes to mark down. Call
    /// [`Pending::restore`] on `self.pending` with the returned `Pending` if the write fails.
    pub fn build_ops(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        tasks: &BTreeMap<String, Task>,
        down: &[String],
        now: DateTime<Utc>,
    ) -> (Vec<Op>, Pending) {
        let pending = std::mem::take(&mut self.pending);
        let mut ops = Vec::new();
        for (id, (desc, addr)) in &pending.registered {
            let node = match nodes.get(id) {
                Some(n) => {
                    let mut n = n.clone();
                    n.description = NodeDescription {
                        tls_info: n.description.tls_info.take(),
                        ..desc.clone()
                    };
                    n
                }
                None => {
                    let mut n = Node::new(id.clone(), desc.hostname.clone(), NodeRole::Worker);
                    n.description = desc.clone();
                    n
                }
            };
            let mut n = node;
            n.status.state = NodeState::Ready;
            n.status.message = String::new();
            if !addr.is_empty() {
                n.status.addr = addr.clone();
            }
            if nodes.get(id) == Some(&n) {
                continue;
            }
            let Ok(record) = n.to_record() else { continue };
            ops.push(if nodes.contains_key(id) {
                Op::Update { record }
            } else {
                Op::Create { record }
            });
        }
        for id in down {
            // A node whose agent registered again since it expired is written ready instead.
            if pending.registered.contains_key(id) {
                continue;
            }
            let Some(n) = nodes.get(id) else { continue };
            let mut n = n.clone();
            n.status.state = NodeState::Down;
            n.status.message = HEARTBEAT_FAILURE.into();
            if let Ok(record) = n.to_record() {
                ops.push(Op::Update { record });
            }
        }
        for (task_id, (node_id, status)) in &pending.statuses {
            let Some(t) = tasks.get(task_id) else { continue };
            if t.node_id != *node_id {
                continue;
            }
            let mut status = status.clone();
            if status.timestamp < t.status.timestamp {
                status.timestamp = now;
            }
            if let Some(t) = merge_status(t, &status) {
                if let Ok(record) = t.to_record() {
                    ops.push(Op::Update { record });
                }
            }
        }
        (ops, pending)
    }

    /// The full assignment set of a node, starting a new sequence point.
    pub fn full<'a>(&mut self, node_id: &str, tasks: impl Iterator<Item = &'a Task>) -> Option<Assignments> {
        let s = self.sessions.get_mut(node_id)?;
        let set: Vec<Task> = tasks.filter(|t| t.node_id == node_id && assigned(t)).cloned().collect();
        s.sent = set.iter().map(|t| (t.meta.id.clone(), t.meta.version.index)).collect();
        s.sequence += 1;
        Some(Assignments {
            session_id: s.id.clone(),
            sequence: s.sequence,
            kind: AssignmentKind::Full,
            tasks: set,
            removed: Vec::new(),
            traces: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
        })
    }

    /// The increment for a node since what it was last sent, if anything changed.
    pub fn increment<'a>(&mut self, node_id: &str, tasks: impl Iterator<Item = &'a Task>) -> Option<Assignments> {
        let s = self.sessions.get_mut(node_id)?;
        let set: Vec<&Task> = tasks.filter(|t| t.node_id == node_id && assigned(t)).collect();
        let ids: BTreeSet<&str> = set.iter().map(|t| t.meta.id.as_str()).collect();
        let changed: Vec<Task> = set
            .iter()
            .filter(|t| s.sent.get(&t.meta.id) != Some(&t.meta.version.index))
            .map(|t| (*t).clone())
            .collect();
        let removed: Vec<String> = s.sent.keys().filter(|id| !ids.contains(id.as_str())).cloned().collect();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        for id in &removed {
            s.sent.remove(id);
        }
        for t in &changed {
            s.sent.insert(t.meta.id.clone(), t.meta.version.index);
        }
        s.sequence += 1;
        Some(Assignments {
            session_id: s.id.clone(),
            sequence: s.sequence,
            kind: AssignmentKind::Incremental,
            tasks: changed,
            removed,
            traces: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        let mut t = Task::new(id, "svc", Default::default());
        t.node_id = node.into();
        t.status.state = state;
        t.meta.version.index = 1;
        t
    }

    #[test]
    fn status_never_moves_backwards_and_is_idempotent() {
        let t = task("t1", "n1", TaskState::Running);
        let back = TaskStatus {
            state: TaskState::Starting,
            ..TaskStatus::default()
        };
        assert!(merge_status(&t, &back).is_none());
        assert!(merge_status(&t, &t.status).is_none());
        let fwd = TaskStatus {
            state: TaskState::Failed,
            err: "task: non-zero exit (1)".into(),
            ..TaskStatus::default()
        };
        assert_eq!(merge_status(&t, &fwd).unwrap().status.state, TaskState::Failed);
    }

    #[test]
    fn nodes_go_down_after_three_missed_periods_only() {
        let mut d = Dispatcher::new(t0(), "s");
        d.period = Duration::from_secs(1);
        let s = d.register("n1", NodeDescription::default(), String::new(), t0());
        let nodes = BTreeMap::new();
        let (ops, _) = d.build_ops(&nodes, &BTreeMap::new(), &[], t0());
        assert_eq!(ops.len(), 1, "the node is created on registration");
        let mut n = Node::new("n1", "h1", NodeRole::Worker);
        n.status.state = NodeState::Ready;
        let at = |s: i64| t0() + chrono::TimeDelta::seconds(s);
        assert!(d.expired([&n].into_iter(), at(3)).is_empty());
        assert!(d.heartbeat("n1", &s, at(3)));
        assert!(d.expired([&n].into_iter(), at(5)).is_empty());
        assert_eq!(d.expired([&n].into_iter(), at(7)), vec!["n1".to_string()]);
        assert!(!d.heartbeat("n1", &s, at(7)), "the session is closed");
    }

    #[test]
    fn a_node_that_registers_again_is_written_ready_not_down() {
        let mut d = Dispatcher::new(t0(), "s");
        let mut n = Node::new("n1", "h1", NodeRole::Worker);
        n.status.state = NodeState::Ready;
        let nodes = BTreeMap::from([("n1".to_string(), n)]);
        d.register("n1", NodeDescription::default(), String::new(), t0());
        let (ops, _) = d.build_ops(&nodes, &BTreeMap::new(), &["n1".to_string()], t0());
        assert_eq!(ops.len(), 1, "one write per node in a transaction");
        let Op::Update { record } = &ops[0] else {
            panic!("expected an update")
        };
        let written: Node = record.decode().unwrap();
        assert_eq!(written.status.state, NodeState::Ready);
    }

    #[test]
    fn increments_carry_changes_and_removals_in_sequence() {
        let mut d = Dispatcher::new(t0(), "s");
        d.register("n1", NodeDescription::default(), String::new(), t0());
        let a = task("a", "n1", TaskState::Assigned);
        let b = task("b", "n1", TaskState::Running);
        let other = task("c", "n2", TaskState::Running);
        let full = d.full("n1", [&a, &b, &other].into_iter()).unwrap();
        assert_eq!(
            (full.sequence, full.kind, full.tasks.len()),
            (1, AssignmentKind::Full, 2)
        );
        assert!(d.increment("n1", [&a, &b].into_iter()).is_none());
        let mut b2 = b.clone();
        b2.status.state = TaskState::Complete;
        b2.meta.version.index = 2;
        let mut a2 = a.clone();
        a2.desired_state = TaskState::Shutdown;
        a2.meta.version.index = 3;
        let inc = d.increment("n1", [&a2, &b2].into_iter()).unwrap();
        assert_eq!(inc.sequence, 2);
        assert!(inc.removed.is_empty(), "an ended task stays assigned until deleted");
        assert_eq!(inc.tasks.len(), 2);
        assert_eq!(inc.tasks[0].desired_state, TaskState::Shutdown);
        let inc = d.increment("n1", [&a2].into_iter()).unwrap();
        assert_eq!(inc.sequence, 3);
        assert_eq!(inc.removed, vec!["b".to_string()]);
        assert!(inc.tasks.is_empty());
    }
}
