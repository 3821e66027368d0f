//! The reconcile pass: store snapshot + clock in, a [`Plan`] out (intents,
//! and the store operations they lower to).
//!
//! One pass does what SwarmKit's allocator, orchestrators, restart
//! supervisor, updater, task reaper and scheduler do, one module per role,
//! in this order, on a copy-on-write view of the snapshot ([`work`]):
//!
//! 0. [`ports`]: ingress-published ports without a number get one;
//!    [`networks`]: networks without a subnet get one, services a VIP per
//!    network (endpoint mode vip);
//! 1. [`restart`]: tasks on nodes that are gone, `down` or drained are shut
//!    down (a global service's task also when its node no longer satisfies
//!    the constraints);
//! 2. [`restart`]: stopped tasks are replaced in their slot per the restart
//!    policy (condition, delay, max attempts within window);
//! 3. [`update`]: a changed spec rolls out group by group (`UpdateConfig`),
//!    with `UpdateStatus` moving through updating / paused / completed /
//!    rollback_*; a failed rollout pauses, continues or rolls back;
//! 4. [`replicated`] services get one live task per slot `1..=N` (scale
//!    down removes tasks from the most loaded nodes first), [`global`]
//!    services one per eligible node; [`jobs`] run to completion instead
//!    (steps 2-4 of their own, no rolling update);
//! 5. tasks of removed services are removed, then [`history`] beyond
//!    `TaskHistoryRetentionLimit` per slot is deleted;
//! 6. [`networks`]: tasks not yet placed get an address per network (or
//!    stay pending, saying which network is full); [`schedule`]: unassigned
//!    tasks with their addresses are placed ([`crate::placement`]) or
//!    left pending with SwarmKit's explanation.
//!
//! Services are visited fewest live tasks first, and a pass creates at most
//! [`MAX_NEW_TASKS_PER_PASS`] tasks ([`MAX_NEW_TASKS_PER_SERVICE`] per
//! service); what is left is made by the next passes, which the plan asks
//! for at once. So a pass is bounded in work and memory however large a
//! spec is, and a new service gets its first task in the next pass even
//! while a huge one is still growing.
//!
//! It does no I/O and reads no clock: the same inputs give the same plan,
//! which is what the deterministic simulation relies on.

mod global;
mod history;
mod jobs;
mod networks;
pub mod plan;
mod ports;
mod replicated;
mod restart;
mod schedule;
#[cfg(test)]
mod testkit;
mod update;
mod work;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shoal_shared::model::{Service, Task, TaskSpec, TaskState};
use shoal_shared::store::{Op, StoreObject};

pub use plan::{DeleteReason, Intent, Plan, ServiceChange, StopReason};
use work::Work;

use crate::snapshot::Snapshot;

/// First port of the range published ports are allocated from.
pub const PORT_RANGE_START: u32 = 30000;
/// Last port of that range.
pub const PORT_RANGE_END: u32 = 32767;

/// New tasks one pass creates at most, over all services.
pub const MAX_NEW_TASKS_PER_PASS: usize = 4000;
/// New tasks one pass creates at most for one service.
pub const MAX_NEW_TASKS_PER_SERVICE: usize = 1000;

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

fn td(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Whether a task is wanted (desired `running`, or `complete` for a job's task).
fn is_live(t: &Task) -> bool {
    t.desired_state.wants_run()
}

/// Runs one reconcile pass. `new_id` names new tasks.
pub fn reconcile(snap: &Snapshot, now: chrono::DateTime<chrono::Utc>, new_id: &mut dyn FnMut() -> String) -> Plan {
    let mut w = Work::new(snap, now);
    let mut by_service: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in snap.tasks.values() {
        by_service
            .entry(t.service_id.as_str())
            .or_default()
            .push(t.meta.id.as_str());
    }

    ports::allocate_ports(&mut w);
    let mut addresses = networks::allocate_networks(&mut w);
    networks::allocate_vips(&mut w, &mut addresses);

    // Fewest live tasks first: a new service is never behind a growing one.
    let mut order: Vec<(usize, &String)> = snap
        .services
        .keys()
        .map(|sid| {
            let live = by_service
                .get(sid.as_str())
                .map_or(0, |ids| ids.iter().filter(|id| is_live(&snap.tasks[**id])).count());
            (live, sid)
        })
        .collect();
    order.sort();
    for (_, sid) in order {
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
            w.set_desired(id, TaskState::Remove, StopReason::ServiceRemoved);
            if w.deletable(w.task(id)) {
                let version = w.task(id).meta.version.index;
                w.delete(id, version, DeleteReason::Removed);
            }
        }
    }

    history::prune_history(&mut w);
    networks::allocate_tasks(&mut w, &mut addresses);
    let (placed, mut pending) = schedule::schedule(&mut w);
    networks::allocate_node_addresses(&mut w, &mut addresses);
    if !w.unallocated.is_empty() {
        pending.insert("addresses", w.unallocated.len());
    }
    if w.deferred > 0 {
        // Work left for the next pass: run it as soon as this one is committed.
        w.wake(now);
    }
    lower(w, placed, pending)
}

/// One service through steps 1-4.
fn orchestrate(w: &mut Work, sid: &str, ids: Vec<String>, new_id: &mut dyn FnMut() -> String) {
    let global = w.service(sid).is_global();
    restart::move_off_lost_nodes(w, sid, &ids, global);
    if w.service(sid).spec.is_job() {
        let svc: Service = w.service(sid).clone();
        jobs::reconcile_job(w, &svc, &ids, new_id);
        return;
    }

    let mut groups: BTreeMap<Group, Vec<String>> = BTreeMap::new();
    for id in &ids {
        groups.entry(group_of(w.task(id))).or_default().push(id.clone());
    }
    restart::apply_restart_policy(w, &groups);
    update::update(w, sid, &groups, new_id);

    // Groups may have gained tasks in the update step.
    for id in w.created_for(sid) {
        groups.entry(group_of(w.task(&id))).or_default().push(id);
    }
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
    let svc: Service = w.service(sid).clone();
    if global {
        global::reconcile_nodes(w, &svc, &groups, live_of, deferred, new_id);
    } else {
        replicated::reconcile_slots(w, &svc, &groups, live_of, deferred, new_id);
    }
}

/// Lowers a pass's work to store operations: changed services, created
/// tasks, changed tasks, deleted tasks.
fn lower(w: Work, placed: usize, pending: std::collections::BTreeMap<&'static str, usize>) -> Plan {
    let mut plan = Plan {
        wake_at: w.wake,
        created: w.created.len(),
        placed,
        pending: pending.values().sum(),
        pending_by_reason: pending,
        deferred: w.deferred,
        ..Plan::default()
    };
    for n in w.networks.values() {
        if let Ok(record) = n.to_record() {
            plan.ops.push(Op::Update { record });
        }
    }
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
        if w.deleted.contains_key(id) || w.snap.tasks.get(id) == Some(t) {
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
    plan.intents = w.intents;
    plan
}

/// The spec a task of `svc` is made from (for tests).
pub fn template(svc: &Service) -> &TaskSpec {
    &svc.spec.task_template
}
