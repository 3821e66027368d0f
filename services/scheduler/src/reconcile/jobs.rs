//! Jobs (step 4 of a pass, for `ReplicatedJob` and `GlobalJob` services),
//! with SwarmKit's semantics (`manager/orchestrator/jobs`):
//!
//! - A job's tasks carry the service's `JobIteration` and are desired
//!   `complete`: they run until they exit. An exit 0 (`complete`) is never
//!   restarted, whatever the restart condition; a failure is restarted per
//!   the restart policy (step 2, on this iteration's tasks only).
//! - A replicated job keeps at most `MaxConcurrent` tasks unfinished and
//!   stops making tasks once `TotalCompletions` completed or are under way;
//!   its slots are `0..TotalCompletions`, lowest free first.
//! - A global job gives every eligible node one task per iteration.
//! - Each update of the service starts a new iteration (the API bumps it):
//!   tasks of older iterations that still run are removed; those that
//!   ended stay as history.

use std::collections::{BTreeMap, BTreeSet};

use shoal_shared::model::{Service, TaskState};

use super::plan::StopReason;
use super::work::Work;
use super::{group_of, restart, Group, MAX_NEW_TASKS_PER_SERVICE};

/// One job service through steps 2-4: older iterations stop, this
/// iteration's failures restart, new tasks fill the job.
pub(super) fn reconcile_job(w: &mut Work, svc: &Service, ids: &[String], new_id: &mut dyn FnMut() -> String) {
    let iteration = svc.job_iteration().unwrap_or(0);
    let mut groups: BTreeMap<Group, Vec<String>> = BTreeMap::new();
    for id in ids {
        let t = w.task(id);
        if t.job_iteration.map(|v| v.index) == Some(iteration) {
            groups.entry(group_of(t)).or_default().push(id.clone());
        } else if t.status.state <= TaskState::Running {
            w.set_desired(id, TaskState::Remove, StopReason::JobIteration);
        }
    }
    restart::apply_restart_policy(w, &groups);
    if svc.is_global() {
        fill_nodes(w, svc, &groups, new_id);
    } else {
        fill_slots(w, svc, &groups, new_id);
    }
}

/// A task of this iteration that holds its group: it completed, or it is
/// still wanted (running, or failed and waiting for its restart).
fn holds(w: &Work, id: &str) -> bool {
    let t = w.task(id);
    t.status.state == TaskState::Complete || t.desired_state.wants_run()
}

/// A replicated job: new tasks while fewer than `MaxConcurrent` are
/// unfinished and completed plus unfinished are fewer than `TotalCompletions`.
fn fill_slots(w: &mut Work, svc: &Service, groups: &BTreeMap<Group, Vec<String>>, new_id: &mut dyn FnMut() -> String) {
    let Some(job) = svc.spec.mode.replicated_job.as_ref() else {
        return;
    };
    let (mut complete, mut unfinished) = (0u64, 0u64);
    let mut taken: BTreeSet<u64> = BTreeSet::new();
    for (g, members) in groups {
        let Group::Slot(slot) = g else { continue };
        for id in members.iter().filter(|id| holds(w, id)) {
            taken.insert(*slot);
            if w.task(id).status.state == TaskState::Complete {
                complete += 1;
            } else {
                unfinished += 1;
            }
        }
    }
    let room = job.concurrency().saturating_sub(unfinished);
    let left = job.total().saturating_sub(complete + unfinished);
    let mut want = room.min(left);
    let mut budget = MAX_NEW_TASKS_PER_SERVICE;
    let mut slot = 0;
    while want > 0 && slot < job.total() {
        if !taken.contains(&slot) {
            if !w.may_create(&mut budget) {
                w.deferred += (want - 1) as usize;
                break;
            }
            w.new_task(new_id(), svc, &Group::Slot(slot));
            want -= 1;
        }
        slot += 1;
    }
}

/// A global job: one task for every eligible node that has none in this iteration.
fn fill_nodes(w: &mut Work, svc: &Service, groups: &BTreeMap<Group, Vec<String>>, new_id: &mut dyn FnMut() -> String) {
    let eligible = super::global::eligible_nodes(w, svc);
    for node in eligible {
        let g = Group::Node(node);
        let has = groups.get(&g).is_some_and(|m| m.iter().any(|id| holds(w, id)));
        if !has {
            w.new_task(new_id(), svc, &g);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_shared::model::{GlobalService, ReplicatedJob, RestartCondition, ServiceMode, TaskState};

    use super::super::testkit::*;

    fn job(id: &str, concurrent: u64, total: u64) -> shoal_shared::model::Service {
        let mut s = service(id, Some(1));
        s.spec.mode = ServiceMode {
            replicated_job: Some(ReplicatedJob {
                max_concurrent: Some(concurrent),
                total_completions: Some(total),
            }),
            ..ServiceMode::default()
        };
        s.spec.update_config = None;
        s.spec.rollback_config = None;
        s
    }

    fn unfinished(k: &Kit, sid: &str) -> usize {
        k.live(sid)
            .iter()
            .filter(|t| t.status.state != TaskState::Complete)
            .count()
    }

    fn complete(k: &Kit, sid: &str) -> usize {
        k.tasks(sid)
            .iter()
            .filter(|t| t.status.state == TaskState::Complete)
            .count()
    }

    #[test]
    fn a_replicated_job_runs_max_concurrent_at_a_time_until_total_completions() {
        let mut k = Kit::new(&["n1", "n2"], vec![job("j", 2, 5)]);
        k.pass();
        let live = k.live("j");
        assert_eq!(live.len(), 2);
        assert!(live.iter().all(|t| t.desired_state == TaskState::Complete));
        assert!(live.iter().all(|t| t.job_iteration.map(|v| v.index) == Some(0)));
        let mut slots: Vec<u64> = live.iter().filter_map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, [0, 1], "slots count from 0, as SwarmKit's");
        for round in 0..5 {
            let first = k.live("j").into_iter().find(|t| t.status.state != TaskState::Complete);
            let Some(t) = first else { break };
            k.report(&t.meta.id, TaskState::Complete);
            k.pass();
            assert!(unfinished(&k, "j") <= 2, "round {round}");
        }
        for t in k
            .live("j")
            .into_iter()
            .filter(|t| t.status.state != TaskState::Complete)
        {
            k.report(&t.meta.id, TaskState::Complete);
        }
        k.pass();
        assert_eq!(complete(&k, "j"), 5);
        assert_eq!(unfinished(&k, "j"), 0, "no task beyond the total");
        k.advance(Duration::from_secs(60));
        let plan = k.pass();
        assert_eq!(plan.created, 0, "a completed task is never restarted");
    }

    #[test]
    fn a_failed_job_task_is_restarted_in_its_slot_after_the_delay() {
        let mut k = Kit::new(&["n1"], vec![job("j", 1, 1)]);
        k.pass();
        let t = k.live("j")[0].clone();
        k.report(&t.meta.id, TaskState::Failed);
        let plan = k.pass();
        assert_eq!(
            plan.created, 0,
            "the failed task holds its slot until its restart delay passed"
        );
        k.advance(Duration::from_secs(5));
        k.pass();
        let live = k.live("j");
        assert_eq!(live.len(), 1);
        assert_ne!(live[0].meta.id, t.meta.id);
        assert_eq!(live[0].slot, Some(0));
    }

    #[test]
    fn restart_condition_none_leaves_a_failed_job_task_failed() {
        let mut s = job("j", 1, 1);
        s.spec.task_template.restart_policy.as_mut().unwrap().condition = Some(RestartCondition::None);
        let mut k = Kit::new(&["n1"], vec![s]);
        k.pass();
        let t = k.live("j")[0].clone();
        k.report(&t.meta.id, TaskState::Failed);
        k.advance(Duration::from_secs(60));
        let plan = k.pass();
        assert_eq!(plan.created, 0);
    }

    #[test]
    fn a_new_iteration_removes_running_tasks_of_the_old_one_and_runs_again() {
        let mut k = Kit::new(&["n1"], vec![job("j", 1, 2)]);
        k.pass();
        let first = k.live("j")[0].clone();
        k.report(&first.meta.id, TaskState::Complete);
        k.pass();
        let second = k
            .live("j")
            .into_iter()
            .find(|t| t.status.state != TaskState::Complete)
            .unwrap();
        k.report(&second.meta.id, TaskState::Running);
        k.set_service("j", |s| {
            s.job_status = Some(shoal_shared::model::JobStatus {
                job_iteration: shoal_shared::store::Version { index: 1 },
                last_execution: t0(),
            })
        });
        k.pass();
        let tasks = k.tasks("j");
        let old = tasks.iter().find(|t| t.meta.id == second.meta.id).unwrap();
        assert_eq!(old.desired_state, TaskState::Remove);
        let kept = tasks.iter().find(|t| t.meta.id == first.meta.id).unwrap();
        assert_eq!(
            kept.desired_state,
            TaskState::Complete,
            "a finished task stays as history"
        );
        let new: Vec<_> = tasks
            .iter()
            .filter(|t| t.job_iteration.map(|v| v.index) == Some(1))
            .collect();
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].slot, Some(0));
    }

    #[test]
    fn a_global_job_runs_once_on_every_eligible_node() {
        let mut s = job("g", 1, 1);
        s.spec.mode = ServiceMode {
            global_job: Some(GlobalService {}),
            ..ServiceMode::default()
        };
        let mut k = Kit::new(&["n1", "n2"], vec![s]);
        k.pass();
        let live = k.live("g");
        assert_eq!(live.len(), 2);
        assert!(live
            .iter()
            .all(|t| t.slot.is_none() && t.desired_state == TaskState::Complete));
        for t in &live {
            k.report(&t.meta.id, TaskState::Complete);
        }
        k.advance(Duration::from_secs(60));
        let plan = k.pass();
        assert_eq!(plan.created, 0);
        k.put(&node("n3"));
        let plan = k.pass();
        assert_eq!(plan.created, 1, "a node that joins runs the job too");
    }
}
