//! The reconcile pass: store snapshot + clock in, store operations out.
//!
//! One pass does what SwarmKit's orchestrators, allocator, restart
//! supervisor, updater, task reaper and scheduler do, in that order, on a
//! copy-on-write view of the snapshot:
//!
//! 1. tasks on nodes that are gone, `down` or drained are shut down (a global
//!    service's task also when its node no longer satisfies the constraints);
//! 2. stopped tasks are restarted in their slot per the restart policy
//!    (condition, delay, max attempts within window);
//! 3. a changed spec rolls out group by group (`UpdateConfig`), with
//!    `UpdateStatus` moving through updating / paused / completed /
//!    rollback_*; a failed rollout pauses, continues or rolls back;
//! 4. replicated services get one live task per slot `1..=N` (scale down
//!    removes tasks from the most loaded nodes first), global services one per
//!    eligible node;
//! 5. history beyond `TaskHistoryRetentionLimit` per slot is deleted;
//! 6. unassigned tasks are placed ([`crate::placement`]) or left pending
//!    with SwarmKit's explanation.
//!
//! It does no I/O and reads no clock: the same inputs give the same
//! operations, which is what the deterministic simulation relies on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_shared::model::{
    Availability, Endpoint, FailureAction, NodeState, PortConfig, PublishMode, RestartCondition, Service, Task,
    TaskSpec, TaskState, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
};
use shoal_shared::store::{Op, StoreObject};

use crate::placement::{self, Needs, NodeInfo};
use crate::snapshot::Snapshot;

/// First port of the range published ports are allocated from.
pub const PORT_RANGE_START: u32 = 30000;
/// Last port of that range.
pub const PORT_RANGE_END: u32 = 32767;

/// What one pass decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Store operations, to be committed together (or in a few chunks).
    pub ops: Vec<Op>,
    /// When the pass should run again even if nothing changes (restart
    /// delays, update delays and monitor periods).
    pub wake_at: Option<DateTime<Utc>>,
    /// Tasks created, placed and left pending (for logs and benchmarks).
    pub created: usize,
    pub placed: usize,
    pub pending: usize,
}

/// The group a task belongs to: its slot, or for a global service its node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Slot(u64),
    Node(String),
}

/// The group of a task.
pub fn group_of(t: &Task) -> Group {
    match t.slot {
        Some(s) => Group::Slot(s),
        None => Group::Node(t.node_id.clone()),
    }
}

/// Docker's default update (and rollback) config.
pub fn default_update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        delay: Some(Duration::ZERO),
        failure_action: Some(FailureAction::Pause),
        monitor: Some(Duration::from_secs(5)),
        max_failure_ratio: Some(0.0),
        order: Some(UpdateOrder::StopFirst),
    }
}

fn td(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

fn is_live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running
}

/// The copy-on-write working set of one pass.
struct Work<'a> {
    snap: &'a Snapshot,
    /// The snapshot's tasks by ID (hash lookups: a pass looks tasks up many times).
    index: HashMap<&'a str, &'a Task>,
    now: DateTime<Utc>,
    changed: BTreeMap<String, Task>,
    created: BTreeMap<String, Task>,
    deleted: BTreeMap<String, u64>,
    services: BTreeMap<String, Service>,
    wake: Option<DateTime<Utc>>,
}

impl<'a> Work<'a> {
    fn task(&self, id: &str) -> &Task {
        self.created
            .get(id)
            .or_else(|| self.changed.get(id))
            .or_else(|| self.index.get(id).copied())
            .expect("task in view")
    }

    fn task_mut(&mut self, id: &str) -> &mut Task {
        if self.created.contains_key(id) {
            return self.created.get_mut(id).expect("created");
        }
        if !self.changed.contains_key(id) {
            let t = self.snap.tasks[id].clone();
            self.changed.insert(id.to_string(), t);
        }
        self.changed.get_mut(id).expect("changed")
    }

    fn set_desired(&mut self, id: &str, desired: TaskState) {
        if self.task(id).desired_state < desired {
            let t = self.task_mut(id);
            t.desired_state = desired;
        }
    }

    fn wake(&mut self, at: DateTime<Utc>) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Whether a node takes new tasks of any kind.
    fn node_available(&self, node_id: &str) -> bool {
        self.snap.nodes.get(node_id).is_some_and(|n| {
            n.status.state == NodeState::Ready
                && n.spec.availability == Availability::Active
                && n.membership() == shoal_shared::model::Membership::Accepted
        })
    }

    /// Whether tasks on this node must be moved away: the node is gone, down or drained.
    fn node_lost(&self, node_id: &str) -> bool {
        match self.snap.nodes.get(node_id) {
            None => true,
            Some(n) => n.status.state == NodeState::Down || n.spec.availability == Availability::Drain,
        }
    }

    fn new_task(&mut self, id: String, svc: &Service, group: &Group) -> String {
        let mut t = Task::new(id.clone(), svc.meta.id.clone(), svc.spec.task_template.clone());
        t.spec_version = Some(svc.meta.version);
        t.service_annotations = Some(shoal_shared::model::Annotations {
            name: svc.spec.name.clone(),
            labels: svc.spec.labels.clone(),
        });
        match group {
            Group::Slot(s) => t.slot = Some(*s),
            Group::Node(n) => t.node_id = n.clone(),
        }
        t.status.timestamp = self.now;
        t.status.message = "created".into();
        t.meta.created_at = self.now;
        self.created.insert(id.clone(), t);
        id
    }
}

/// Runs one reconcile pass. `new_id` names new tasks.
pub fn reconcile(snap: &Snapshot, now: DateTime<Utc>, new_id: &mut dyn FnMut() -> String) -> Plan {
    let mut w = Work {
        snap,
        index: snap.tasks.iter().map(|(id, t)| (id.as_str(), t)).collect(),
        now,
        changed: BTreeMap::new(),
        created: BTreeMap::new(),
        deleted: BTreeMap::new(),
        services: BTreeMap::new(),
        wake: None,
    };
    let mut by_service: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in snap.tasks.values() {
        by_service
            .entry(t.service_id.as_str())
            .or_default()
            .push(t.meta.id.as_str());
    }

    allocate_ports(&mut w);

    for sid in snap.services.keys() {
        let ids: Vec<String> = by_service
            .get(sid.as_str())
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        orchestrate(&mut w, sid, ids, new_id);
    }

    // Tasks of removed services: stop, then delete once stopped.
    for (sid, ids) in &by_service {
        if snap.services.contains_key(*sid) {
            continue;
        }
        for id in ids {
            w.set_desired(id, TaskState::Remove);
            if deletable(&w, w.task(id)) {
                w.deleted.insert(id.to_string(), w.task(id).meta.version.index);
            }
        }
    }

    prune_history(&mut w);
    let (placed, pending) = schedule(&mut w);

    let mut plan = Plan {
        wake_at: w.wake,
        created: w.created.len(),
        placed,
        pending,
        ..Plan::default()
    };
    for s in w.services.values() {
        if let Ok(record) = s.to_record() {
            plan.ops.push(Op::Update { record });
        }
    }
    for (id, t) in &w.created {
        if w.deleted.contains_key(id) {
            continue;
        }
        if let Ok(record) = t.to_record() {
            plan.ops.push(Op::Create { record });
        }
    }
    for (id, t) in &w.changed {
        if w.deleted.contains_key(id) || snap.tasks.get(id) == Some(t) {
            continue;
        }
        if let Ok(record) = t.to_record() {
            plan.ops.push(Op::Update { record });
        }
    }
    for (id, version) in &w.deleted {
        if w.created.contains_key(id) {
            continue;
        }
        plan.ops.push(Op::Delete {
            kind: shoal_shared::store::Kind::Task,
            id: id.clone(),
            version: Some(*version),
        });
    }
    plan
}

/// Whether a task that is no longer wanted may be deleted: it has stopped,
/// never reached a node, or its node is gone.
fn deletable(w: &Work, t: &Task) -> bool {
    t.desired_state > TaskState::Running
        && (t.status.state.is_terminal()
            || t.status.state < TaskState::Assigned
            || t.node_id.is_empty()
            || !w.snap.nodes.contains_key(&t.node_id))
}

/// Gives every ingress-published port without a number one from
/// [`PORT_RANGE_START`]..=[`PORT_RANGE_END`], unique in the cluster.
fn allocate_ports(w: &mut Work) {
    let mut used: BTreeSet<u32> = BTreeSet::new();
    for s in w.snap.services.values() {
        for p in s.endpoint.iter().flat_map(|e| e.ports.iter()) {
            used.insert(p.published_port);
        }
        for p in s.spec.endpoint_spec.iter().flat_map(|e| e.ports.iter()) {
            used.insert(p.published_port);
        }
    }
    for s in w.snap.services.values() {
        let spec = s.spec.endpoint_spec.clone().unwrap_or_default();
        if s.endpoint.as_ref().is_some_and(|e| e.spec == spec) || (s.endpoint.is_none() && spec.ports.is_empty()) {
            continue;
        }
        let old: Vec<PortConfig> = s.endpoint.as_ref().map(|e| e.ports.clone()).unwrap_or_default();
        let mut ports = Vec::new();
        for p in &spec.ports {
            let mut p = p.clone();
            if p.published_port == 0 && p.publish_mode != Some(PublishMode::Host) {
                let reuse = old
                    .iter()
                    .find(|o| o.target_port == p.target_port && o.protocol == p.protocol && o.published_port != 0)
                    .map(|o| o.published_port);
                let port = reuse.or_else(|| (PORT_RANGE_START..=PORT_RANGE_END).find(|n| !used.contains(n)));
                if let Some(port) = port {
                    used.insert(port);
                    p.published_port = port;
                }
            }
            ports.push(p);
        }
        let mut svc = s.clone();
        svc.endpoint = Some(Endpoint {
            spec,
            ports,
            virtual_ips: s.endpoint.as_ref().map(|e| e.virtual_ips.clone()).unwrap_or_default(),
        });
        w.services.insert(s.meta.id.clone(), svc);
    }
}

fn service<'w>(w: &'w Work, sid: &str) -> &'w Service {
    w.services.get(sid).unwrap_or_else(|| &w.snap.services[sid])
}

fn set_update_status(w: &mut Work, sid: &str, f: impl FnOnce(&mut Service)) {
    let mut svc = service(w, sid).clone();
    f(&mut svc);
    w.services.insert(sid.to_string(), svc);
}

fn orchestrate(w: &mut Work, sid: &str, ids: Vec<String>, new_id: &mut dyn FnMut() -> String) {
    let global = service(w, sid).is_global();

    // 1. Tasks on lost nodes (and, for global services, nodes that no longer qualify).
    for id in &ids {
        let t = w.task(id);
        if !is_live(t) || t.node_id.is_empty() {
            continue;
        }
        let node = t.node_id.clone();
        let mut stop = w.node_lost(&node);
        if global && !stop {
            let needs = Needs::of(&service(w, sid).spec.task_template, &[]);
            let info = NodeInfo::new(w.snap.nodes[&node].clone());
            stop = !info.passes_static_ignoring_ready(&needs);
        }
        if stop {
            w.set_desired(id, TaskState::Shutdown);
        }
    }

    // 2. Restart policy.
    let mut groups: BTreeMap<Group, Vec<String>> = BTreeMap::new();
    for id in &ids {
        groups.entry(group_of(w.task(id))).or_default().push(id.clone());
    }
    for (_, members) in groups.iter() {
        for id in members {
            let t = w.task(id);
            if !is_live(t) || !t.status.state.is_terminal() {
                continue;
            }
            let rp = t.spec.restart_policy.clone().unwrap_or_default();
            let cond = rp.condition.unwrap_or(RestartCondition::Any);
            let mut should = match cond {
                RestartCondition::None => false,
                RestartCondition::OnFailure => t.status.state != TaskState::Complete,
                RestartCondition::Any => true,
            };
            if let Some(max) = rp.max_attempts.filter(|m| *m > 0) {
                let window = rp.window.filter(|d| !d.is_zero()).map(td);
                let prior = members
                    .iter()
                    .filter(|o| *o != id)
                    .map(|o| w.task(o))
                    .filter(|o| o.desired_state > TaskState::Running && o.status.state.is_terminal())
                    .filter(|o| window.is_none_or(|win| w.now - o.status.timestamp <= win))
                    .count() as u64;
                if prior >= max {
                    should = false;
                }
            }
            if !should {
                continue;
            }
            let at = t.status.timestamp + td(rp.delay.unwrap_or(Duration::from_secs(5)));
            if w.now >= at {
                w.set_desired(id, TaskState::Shutdown);
            } else {
                w.wake(at);
            }
        }
    }

    // 3. Rolling update.
    update(w, sid, &groups, new_id);

    // 4. Desired count.
    let svc = service(w, sid).clone();
    let deferred = |w: &Work, members: &[String]| {
        members.iter().any(|id| {
            let t = w.task(id);
            t.desired_state == TaskState::Shutdown
                && t.status.state >= TaskState::Assigned
                && t.status.state <= TaskState::Running
                && w.node_available(&t.node_id)
        })
    };
    let live_of = |w: &Work, members: &[String]| -> Vec<String> {
        members.iter().filter(|id| is_live(w.task(id))).cloned().collect()
    };
    // Groups may have gained tasks in the update step.
    let mut groups: BTreeMap<Group, Vec<String>> = BTreeMap::new();
    for id in ids
        .iter()
        .chain(w.created.iter().filter(|(_, t)| t.service_id == sid).map(|(id, _)| id))
    {
        groups.entry(group_of(w.task(id))).or_default().push(id.clone());
    }
    if global {
        let needs = Needs::of(&svc.spec.task_template, &[]);
        let eligible: Vec<String> = w
            .snap
            .nodes
            .values()
            .filter(|n| {
                let info = NodeInfo::new((*n).clone());
                info.available() && info.passes_static(&needs)
            })
            .map(|n| n.meta.id.clone())
            .collect();
        for node in eligible {
            let g = Group::Node(node);
            let members = groups.get(&g).cloned().unwrap_or_default();
            if live_of(w, &members).is_empty() && !deferred(w, &members) {
                let id = new_id();
                w.new_task(id, &svc, &g);
            }
        }
    } else {
        let want = svc.replicas().unwrap_or(1);
        let mut occupied: BTreeSet<u64> = BTreeSet::new();
        let mut live_slots: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (g, members) in &groups {
            let Group::Slot(s) = g else { continue };
            let live = live_of(w, members);
            if !live.is_empty() {
                occupied.insert(*s);
                live_slots.insert(*s, live);
            } else if deferred(w, members) {
                occupied.insert(*s);
            }
        }
        let have = occupied.len() as u64;
        if have < want {
            let mut need = want - have;
            let mut slot = 1;
            while need > 0 {
                if !occupied.contains(&slot) {
                    let id = new_id();
                    w.new_task(id, &svc, &Group::Slot(slot));
                    need -= 1;
                }
                slot += 1;
            }
        } else if have > want {
            scale_down(w, sid, live_slots, (have - want) as usize);
        }
    }
}

/// Removes `n` slots, taking from the nodes with most tasks of the service
/// first, and tasks that are not running before running ones.
fn scale_down(w: &mut Work, sid: &str, mut live_slots: BTreeMap<u64, Vec<String>>, n: usize) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for ids in live_slots.values() {
        for id in ids {
            *per_node.entry(w.task(id).node_id.clone()).or_default() += 1;
        }
    }
    for _ in 0..n {
        let best = live_slots
            .iter()
            .max_by_key(|(slot, ids)| {
                let t = w.task(&ids[0]);
                let unplaced = t.node_id.is_empty();
                let running = t.status.state == TaskState::Running;
                let load = per_node.get(&t.node_id).copied().unwrap_or(0);
                (unplaced, !running, load, **slot)
            })
            .map(|(s, _)| *s);
        let Some(slot) = best else { break };
        let ids = live_slots.remove(&slot).unwrap_or_default();
        for id in ids {
            if let Some(c) = per_node.get_mut(&w.task(&id).node_id) {
                *c = c.saturating_sub(1);
            }
            w.set_desired(&id, TaskState::Remove);
        }
    }
    let _ = sid;
}

/// The rolling update of one service (step 3).
fn update(w: &mut Work, sid: &str, groups: &BTreeMap<Group, Vec<String>>, new_id: &mut dyn FnMut() -> String) {
    let svc = service(w, sid).clone();
    let state = svc.update_status.as_ref().and_then(|u| u.state);
    let rolling_back = matches!(state, Some(UpdateState::RollbackStarted | UpdateState::RollbackPaused));
    let cfg = if rolling_back {
        svc.spec.rollback_config.clone()
    } else {
        svc.spec.update_config.clone()
    }
    .unwrap_or_else(default_update_config);
    let template = &svc.spec.task_template;
    let current = |t: &Task| t.spec == *template;

    // Failures of the new spec since the update started.
    let started = svc.update_status.as_ref().and_then(|u| u.started_at);
    if matches!(state, Some(UpdateState::Updating | UpdateState::RollbackStarted)) {
        let failed: Vec<&Task> = groups
            .values()
            .flatten()
            .map(|id| w.task(id))
            .filter(|t| current(t) && matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
            .filter(|t| started.is_none_or(|s| t.meta.created_at >= s))
            .collect();
        let total = if svc.is_global() {
            groups.len().max(1)
        } else {
            svc.replicas().unwrap_or(1).max(1) as usize
        };
        let ratio = cfg.max_failure_ratio.unwrap_or(0.0);
        if !failed.is_empty() && failed.len() as f64 > ratio * total as f64 {
            let culprit = failed.iter().map(|t| t.meta.id.clone()).max().unwrap_or_default();
            let now = w.now;
            match cfg.failure_action.unwrap_or(FailureAction::Pause) {
                FailureAction::Continue => {}
                FailureAction::Rollback if !rolling_back && svc.previous_spec.is_some() => {
                    set_update_status(w, sid, |s| {
                        if let Some(prev) = s.previous_spec.take() {
                            s.spec = prev;
                        }
                        s.update_status = Some(UpdateStatus {
                            state: Some(UpdateState::RollbackStarted),
                            started_at: Some(now),
                            completed_at: None,
                            message: format!(
                                "update rolled back due to failure or early termination of task {culprit}"
                            ),
                        });
                    });
                    // Continue with the restored spec.
                    return update(w, sid, groups, new_id);
                }
                _ => {
                    let (st, what) = if rolling_back {
                        (UpdateState::RollbackPaused, "rollback")
                    } else {
                        (UpdateState::Paused, "update")
                    };
                    set_update_status(w, sid, |s| {
                        let us = s.update_status.get_or_insert_with(UpdateStatus::default);
                        us.state = Some(st);
                        us.message = format!("{what} paused due to failure or early termination of task {culprit}");
                    });
                    return;
                }
            }
        }
    }

    // Start-first leftovers: once a current task runs, the others in its group stop.
    for members in groups.values() {
        let live: Vec<&String> = members.iter().filter(|id| is_live(w.task(id))).collect();
        if live.len() < 2 {
            continue;
        }
        let keep = live
            .iter()
            .filter(|id| current(w.task(id)) && w.task(id).status.state == TaskState::Running)
            .max_by_key(|id| (w.task(id).meta.created_at, (**id).clone()))
            .map(|id| (*id).clone());
        if let Some(keep) = keep {
            for id in live {
                if *id != keep {
                    w.set_desired(id, TaskState::Shutdown);
                }
            }
        }
    }

    let mut dirty: Vec<Group> = Vec::new();
    let mut in_flight = 0usize;
    let mut last_running: Option<DateTime<Utc>> = None;
    for (g, members) in groups {
        let live: Vec<&Task> = members.iter().map(|id| w.task(id)).filter(|t| is_live(t)).collect();
        let cur: Vec<&&Task> = live.iter().filter(|t| current(t)).collect();
        let stopping = members.iter().map(|id| w.task(id)).any(|t| {
            t.desired_state == TaskState::Shutdown
                && t.status.state >= TaskState::Assigned
                && t.status.state <= TaskState::Running
                && w.node_available(&t.node_id)
        });
        for t in &cur {
            if t.status.state == TaskState::Running && started.is_none_or(|s| t.meta.created_at >= s) {
                last_running = Some(last_running.map_or(t.status.timestamp, |l| l.max(t.status.timestamp)));
            }
        }
        // A group without a live task that this pass refills (its latest task
        // was stopped, not removed, and the group is still wanted) is mid-update too.
        let latest = members
            .iter()
            .map(|id| w.task(id))
            .max_by_key(|t| (t.meta.created_at, t.meta.version.index));
        let refill = live.is_empty()
            && latest.is_some_and(|t| t.desired_state == TaskState::Shutdown)
            && match g {
                Group::Slot(s) => *s <= svc.replicas().unwrap_or(0),
                Group::Node(n) => {
                    w.node_available(n)
                        && NodeInfo::new(w.snap.nodes[n].clone())
                            .passes_static_ignoring_ready(&Needs::of(template, &[]))
                }
            };
        if !live.is_empty() && cur.is_empty() {
            dirty.push(g.clone());
        } else if cur.iter().any(|t| t.status.state < TaskState::Running)
            || (live.is_empty() && stopping)
            || refill
            || (!cur.is_empty() && cur.len() < live.len())
        {
            in_flight += 1;
        }
    }

    let now = w.now;
    match state {
        Some(UpdateState::Paused | UpdateState::RollbackPaused) => return,
        Some(UpdateState::Updating | UpdateState::RollbackStarted) => {}
        _ if dirty.is_empty() => return,
        _ => {
            set_update_status(w, sid, |s| {
                s.update_status = Some(UpdateStatus {
                    state: Some(UpdateState::Updating),
                    started_at: Some(now),
                    completed_at: None,
                    message: "update in progress".into(),
                });
            });
        }
    }
    if state == Some(UpdateState::RollbackStarted) && started.is_none() {
        set_update_status(w, sid, |s| {
            if let Some(us) = s.update_status.as_mut() {
                us.started_at = Some(now);
            }
        });
    }

    if dirty.is_empty() && in_flight == 0 {
        let monitor = td(cfg.monitor.unwrap_or(Duration::from_secs(5)));
        let done_at = last_running.map_or(now, |l| l + monitor);
        if now < done_at {
            w.wake(done_at);
            return;
        }
        let (st, msg) = if rolling_back {
            (UpdateState::RollbackCompleted, "rollback completed")
        } else {
            (UpdateState::Completed, "update completed")
        };
        set_update_status(w, sid, |s| {
            let us = s.update_status.get_or_insert_with(UpdateStatus::default);
            us.state = Some(st);
            us.completed_at = Some(now);
            us.message = msg.into();
        });
        return;
    }

    let parallelism = if cfg.parallelism == 0 {
        usize::MAX
    } else {
        cfg.parallelism as usize
    };
    let mut allowed = parallelism.saturating_sub(in_flight);
    if in_flight == 0 {
        if let (Some(last), Some(delay)) = (last_running, cfg.delay.filter(|d| !d.is_zero())) {
            let at = last + td(delay);
            if now < at {
                w.wake(at);
                allowed = 0;
            }
        }
    }
    let start_first = cfg.order == Some(UpdateOrder::StartFirst);
    for g in dirty.into_iter().take(allowed) {
        let members = &groups[&g];
        if start_first {
            let id = new_id();
            let svc = service(w, sid).clone();
            let id = w.new_task(id, &svc, &g);
            // A global task stays on its node; a replica is placed afresh.
            if let Group::Node(n) = &g {
                w.task_mut(&id).node_id = n.clone();
            }
        } else {
            for id in members {
                if is_live(w.task(id)) {
                    w.set_desired(id, TaskState::Shutdown);
                }
            }
        }
    }
}

/// Deletes the oldest stopped tasks of each slot beyond the retention
/// limit, and every removed task that has stopped.
fn prune_history(w: &mut Work) {
    let limit = w.snap.history_limit();
    let mut groups: BTreeMap<(String, Group), Vec<String>> = BTreeMap::new();
    for (id, t) in w.snap.tasks.iter().chain(w.created.iter()) {
        groups
            .entry((t.service_id.clone(), group_of(w.task(id))))
            .or_default()
            .push(id.clone());
    }
    for members in groups.values() {
        let mut total = members.len() as i64;
        let mut dead: Vec<(DateTime<Utc>, u64, String)> = Vec::new();
        for id in members {
            let t = w.task(id);
            if w.created.contains_key(id) || !deletable(w, t) {
                continue;
            }
            let node_gone = !t.node_id.is_empty() && !w.snap.nodes.contains_key(&t.node_id);
            if t.desired_state >= TaskState::Remove || node_gone {
                w.deleted.insert(id.clone(), t.meta.version.index);
                total -= 1;
            } else {
                dead.push((t.meta.created_at, t.meta.version.index, id.clone()));
            }
        }
        if limit < 0 {
            continue;
        }
        dead.sort();
        for (_, version, id) in dead {
            if total <= limit {
                break;
            }
            w.deleted.insert(id, version);
            total -= 1;
        }
    }
}

/// Places every task that wants to run and has no node yet (step 6).
/// Returns (placed, left pending).
fn schedule(w: &mut Work) -> (usize, usize) {
    let deleted = &w.deleted;
    let view: Vec<&Task> = w
        .snap
        .tasks
        .iter()
        .filter(|(id, _)| !deleted.contains_key(*id))
        .map(|(id, t)| w.changed.get(id).unwrap_or(t))
        .chain(w.created.values())
        .collect();
    let ports_of = |sid: &str| -> Vec<PortConfig> {
        w.services
            .get(sid)
            .or_else(|| w.snap.services.get(sid))
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.clone())
            .unwrap_or_default()
    };
    let mut infos = placement::node_infos(w.snap.nodes.values(), view.iter().copied(), ports_of);
    let mut todo: Vec<(String, String, Option<u64>, String)> = view
        .iter()
        .filter(|t| is_live(t) && t.status.state <= TaskState::Pending)
        .map(|t| (t.service_id.clone(), t.node_id.clone(), t.slot, t.meta.id.clone()))
        .collect();
    todo.sort();
    let ports: HashMap<String, Vec<PortConfig>> = todo.iter().map(|(sid, ..)| (sid.clone(), ports_of(sid))).collect();
    drop(view);

    let now = w.now;
    let (mut placed, mut pending) = (0, 0);
    // Candidate sets per (service, placement): spread keys of nodes passing the static filters.
    let mut sets: HashMap<(String, String), BTreeSet<placement::SpreadKey>> = HashMap::new();
    for (sid, preset, _, id) in todo {
        let needs = Needs::of(&w.task(&id).spec, &ports[&sid]);
        let chosen = if !preset.is_empty() {
            infos
                .get(&preset)
                .filter(|i| i.check(&needs).is_none())
                .map(|_| preset.clone())
        } else {
            let key = (sid.clone(), format!("{:?}", (&needs.constraints, &needs.platforms)));
            let set = sets.entry(key).or_insert_with(|| {
                infos
                    .values()
                    .filter(|i| i.passes_static(&needs))
                    .map(|i| i.key(&sid, now))
                    .collect()
            });
            set.iter()
                .find(|k| infos.get(&k.3).is_some_and(|i| i.fits(&needs)))
                .map(|k| k.3.clone())
        };
        match chosen {
            Some(node) => {
                let info = infos.get_mut(&node).expect("chosen node");
                let oldkey = info.key(&sid, now);
                info.add(&sid, &needs);
                let newkey = info.key(&sid, now);
                // Other services' candidate sets keep stale totals for the rest
                // of this pass, which keeps spread good enough within one pass.
                for ((s, _), set) in sets.iter_mut() {
                    if *s == sid && set.remove(&oldkey) {
                        set.insert(newkey.clone());
                    }
                }
                let t = w.task_mut(&id);
                t.node_id = node;
                t.status.state = TaskState::Assigned;
                t.status.timestamp = now;
                t.status.message = "scheduler assigned task to node".into();
                t.status.err = String::new();
                placed += 1;
            }
            None => {
                let msg = if preset.is_empty() {
                    placement::explain(infos.values(), &needs)
                } else {
                    placement::explain(infos.get(&preset).into_iter(), &needs)
                };
                pending += 1;
                let t = w.task(&id);
                if t.status.state != TaskState::Pending || t.status.err != msg {
                    let t = w.task_mut(&id);
                    t.status.state = TaskState::Pending;
                    t.status.timestamp = now;
                    t.status.message = "pending task scheduling".into();
                    t.status.err = msg;
                }
            }
        }
    }
    (placed, pending)
}

/// The spec a task of `svc` is made from (for tests).
pub fn template(svc: &Service) -> &TaskSpec {
    &svc.spec.task_template
}
