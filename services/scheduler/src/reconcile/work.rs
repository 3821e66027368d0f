//! The copy-on-write working set of one pass: the snapshot it reads, the
//! tasks and services it changed, created and deleted, and its intents.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use shoal_shared::model::{Availability, Network, NodeState, Service, Task, TaskState};

use super::plan::{DeleteReason, Intent, ServiceChange, StopReason};
use super::{Group, MAX_NEW_TASKS_PER_PASS};
use crate::snapshot::Snapshot;

/// The copy-on-write working set of one pass.
pub(super) struct Work<'a> {
    pub snap: &'a Snapshot,
    /// The snapshot's tasks by ID (hash lookups: a pass looks tasks up many times).
    pub index: HashMap<&'a str, &'a Task>,
    pub now: DateTime<Utc>,
    pub changed: BTreeMap<String, Task>,
    pub created: BTreeMap<String, Task>,
    pub deleted: BTreeMap<String, u64>,
    pub services: BTreeMap<String, Service>,
    /// Networks the allocator gave a subnet this pass.
    pub networks: BTreeMap<String, Network>,
    /// Tasks the allocator could not give their addresses: left pending, not placed.
    pub unallocated: HashSet<String>,
    pub wake: Option<DateTime<Utc>>,
    /// Decisions so far, in order.
    pub intents: Vec<Intent>,
    /// New tasks this pass may still create ([`MAX_NEW_TASKS_PER_PASS`] at first).
    pub budget: usize,
    /// New tasks wanted beyond the budget (made in later passes).
    pub deferred: usize,
    /// IDs of the tasks created per service.
    created_by_service: HashMap<String, Vec<String>>,
}

impl<'a> Work<'a> {
    pub fn new(snap: &'a Snapshot, now: DateTime<Utc>) -> Work<'a> {
        Work {
            snap,
            index: snap.tasks.iter().map(|(id, t)| (id.as_str(), t)).collect(),
            now,
            changed: BTreeMap::new(),
            created: BTreeMap::new(),
            deleted: BTreeMap::new(),
            services: BTreeMap::new(),
            networks: BTreeMap::new(),
            unallocated: HashSet::new(),
            wake: None,
            intents: Vec::new(),
            budget: MAX_NEW_TASKS_PER_PASS,
            deferred: 0,
            created_by_service: HashMap::new(),
        }
    }

    pub fn task(&self, id: &str) -> &Task {
        self.created
            .get(id)
            .or_else(|| self.changed.get(id))
            .or_else(|| self.index.get(id).copied())
            .expect("task in view")
    }

    /// Every task as this pass sees it: the snapshot's (changed ones as
    /// changed, deleted ones left out), then the ones it created.
    pub fn view(&self) -> impl Iterator<Item = &Task> + '_ {
        self.snap
            .tasks
            .iter()
            .filter(|(id, _)| !self.deleted.contains_key(*id))
            .map(|(id, t)| self.changed.get(id).unwrap_or(t))
            .chain(self.created.values())
    }

    /// Leaves a task pending, saying why (written only when the reason changed).
    pub fn set_pending(&mut self, id: &str, reason: String) {
        let t = self.task(id);
        if t.status.state == TaskState::Pending && t.status.err == reason {
            return;
        }
        self.intents.push(Intent::Pending {
            task: id.to_string(),
            reason: reason.clone(),
        });
        let now = self.now;
        let t = self.task_mut(id);
        t.status.state = TaskState::Pending;
        t.status.timestamp = now;
        t.status.message = "pending task scheduling".into();
        t.status.err = reason;
    }

    pub fn task_mut(&mut self, id: &str) -> &mut Task {
        if self.created.contains_key(id) {
            return self.created.get_mut(id).expect("created");
        }
        if !self.changed.contains_key(id) {
            let t = self.snap.tasks[id].clone();
            self.changed.insert(id.to_string(), t);
        }
        self.changed.get_mut(id).expect("changed")
    }

    /// Asks a task to stop (`shutdown`) or to go (`remove`), saying why.
    pub fn set_desired(&mut self, id: &str, desired: TaskState, reason: StopReason) {
        if self.task(id).desired_state < desired {
            let t = self.task_mut(id);
            t.desired_state = desired;
            let task = id.to_string();
            self.intents.push(if desired >= TaskState::Remove {
                Intent::Remove { task, reason }
            } else {
                Intent::Stop { task, reason }
            });
        }
    }

    /// An ended task is replaced in its group (its desired state becomes `shutdown`).
    pub fn restart(&mut self, id: &str) {
        if self.task(id).desired_state < TaskState::Shutdown {
            self.task_mut(id).desired_state = TaskState::Shutdown;
            self.intents.push(Intent::Restart { task: id.to_string() });
        }
    }

    /// Deletes a task from the store, saying why.
    pub fn delete(&mut self, id: &str, version: u64, reason: DeleteReason) {
        if self.deleted.insert(id.to_string(), version).is_none() {
            self.intents.push(Intent::Delete {
                task: id.to_string(),
                reason,
            });
        }
    }

    /// Takes one new task from the pass's budget; `false` (and counted as
    /// deferred) once it is spent, so a huge service never makes a pass
    /// unbounded and the services after it still get their turn.
    pub fn may_create(&mut self, per_service_left: &mut usize) -> bool {
        if self.budget == 0 || *per_service_left == 0 {
            self.deferred += 1;
            return false;
        }
        self.budget -= 1;
        *per_service_left -= 1;
        true
    }

    /// The tasks this pass created for a service.
    pub fn created_for(&self, sid: &str) -> Vec<String> {
        self.created_by_service.get(sid).cloned().unwrap_or_default()
    }

    pub fn service(&self, sid: &str) -> &Service {
        self.services.get(sid).unwrap_or_else(|| &self.snap.services[sid])
    }

    /// A network as this pass sees it.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id).or_else(|| self.snap.networks.get(id))
    }

    /// Changes a service's status (`UpdateStatus`, `Endpoint`, or its spec on a rollback).
    pub fn set_service(&mut self, sid: &str, change: ServiceChange, f: impl FnOnce(&mut Service)) {
        let mut svc = self.service(sid).clone();
        f(&mut svc);
        svc.keep_spec_version(&self.snap.services[sid]);
        self.services.insert(sid.to_string(), svc);
        self.intents.push(Intent::ServiceStatus {
            service: sid.to_string(),
            change,
        });
    }

    /// Whether a task that is no longer wanted may be deleted: it has stopped,
    /// never reached a node, or its node is gone.
    pub fn deletable(&self, t: &Task) -> bool {
        !t.desired_state.wants_run()
            && (t.status.state.is_terminal()
                || t.status.state < TaskState::Assigned
                || t.node_id.is_empty()
                || !self.snap.nodes.contains_key(&t.node_id))
    }

    pub fn wake(&mut self, at: DateTime<Utc>) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Whether a node takes new tasks of any kind.
    pub fn node_available(&self, node_id: &str) -> bool {
        self.snap.nodes.get(node_id).is_some_and(|n| {
            n.status.state == NodeState::Ready
                && n.spec.availability == Availability::Active
                && n.membership() == shoal_shared::model::Membership::Accepted
        })
    }

    /// Whether tasks on this node must be moved away: the node is gone, down or drained.
    pub fn node_lost(&self, node_id: &str) -> bool {
        match self.snap.nodes.get(node_id) {
            None => true,
            Some(n) => n.status.state == NodeState::Down || n.spec.availability == Availability::Drain,
        }
    }

    pub fn new_task(&mut self, id: String, svc: &Service, group: &Group) -> String {
        let mut t = Task::new(id.clone(), svc.meta.id.clone(), svc.spec.task_template.clone());
        t.spec_version = Some(svc.meta.version);
        // SwarmKit copies the service's endpoint into every task it makes:
        // the agent publishes the host-mode ports from it.
        t.endpoint = svc.endpoint.clone();
        t.service_annotations = Some(shoal_shared::model::Annotations {
            name: svc.spec.name.clone(),
            labels: svc.spec.labels.clone(),
        });
        match group {
            Group::Slot(s) => t.slot = Some(*s),
            Group::Node(n) => t.node_id = n.clone(),
        }
        if let Some(iteration) = svc.job_iteration() {
            t.desired_state = TaskState::Complete;
            t.job_iteration = Some(shoal_shared::store::Version { index: iteration });
        }
        t.status.timestamp = self.now;
        t.status.message = "created".into();
        t.meta.created_at = self.now;
        self.created.insert(id.clone(), t);
        self.created_by_service
            .entry(svc.meta.id.clone())
            .or_default()
            .push(id.clone());
        self.intents.push(Intent::Create {
            task: id.clone(),
            service: svc.meta.id.clone(),
            group: group.clone(),
        });
        id
    }
}
