//! Restarts (steps 1 and 2 of a pass): tasks on nodes that are gone, down
//! or drained are stopped so their group runs elsewhere (a global service's
//! task also when its node no longer satisfies the constraints), and ended
//! tasks are replaced in their group per the restart policy (condition,
//! delay, max attempts within a window), as SwarmKit's restart supervisor does.

use std::collections::BTreeMap;

use shoal_shared::model::{RestartCondition, TaskState, DEFAULTS};

use super::plan::StopReason;
use super::work::Work;
use super::{is_live, td, Group};
use crate::placement::{Needs, NodeInfo};

/// Step 1: tasks on lost (or, for a global service, ineligible) nodes stop.
pub(super) fn move_off_lost_nodes(w: &mut Work, sid: &str, ids: &[String], global: bool) {
    for id in ids {
        let t = w.task(id);
        if !is_live(t) || t.node_id.is_empty() {
            continue;
        }
        if t.job_iteration.is_some() && t.status.state.is_terminal() {
            // A job's task that ended stays where it ran (a completion is kept).
            continue;
        }
        let node = t.node_id.clone();
        if w.node_lost(&node) {
            w.set_desired(id, TaskState::Shutdown, StopReason::NodeLost);
        } else if global {
            let needs = Needs::of(&w.service(sid).spec.task_template, &[]);
            let info = NodeInfo::new(w.snap.nodes[&node].clone());
            if !info.passes_static_ignoring_ready(&needs) {
                w.set_desired(id, TaskState::Shutdown, StopReason::NodeIneligible);
            }
        }
    }
}

/// Step 2: ended tasks are replaced per the restart policy, or a wake-up is
/// asked for when their restart delay has not passed yet.
pub(super) fn apply_restart_policy(w: &mut Work, groups: &BTreeMap<Group, Vec<String>>) {
    for (_, members) in groups.iter() {
        for id in members {
            let t = w.task(id);
            if !is_live(t) || !t.status.state.is_terminal() {
                continue;
            }
            let rp = DEFAULTS.restart_policy_of(t.spec.restart_policy.as_ref());
            let cond = rp.condition.unwrap_or(RestartCondition::Any);
            let mut should = match cond {
                RestartCondition::None => false,
                RestartCondition::OnFailure => t.status.state != TaskState::Complete,
                // A job's task that completed is done, whatever the condition (SwarmKit's rule).
                RestartCondition::Any => !(t.job_iteration.is_some() && t.status.state == TaskState::Complete),
            };
            if let Some(max) = rp.max_attempts.filter(|m| *m > 0) {
                let window = rp.window.filter(|d| !d.is_zero()).map(td);
                let prior = members
                    .iter()
                    .filter(|o| *o != id)
                    .map(|o| w.task(o))
                    .filter(|o| !o.desired_state.wants_run() && o.status.state.is_terminal())
                    .filter(|o| window.is_none_or(|win| w.now - o.status.timestamp <= win))
                    .count() as u64;
                if prior >= max {
                    should = false;
                }
            }
            if !should {
                continue;
            }
            let at = t.status.timestamp + td(rp.delay.unwrap_or_default());
            if w.now >= at {
                w.restart(id);
            } else {
                w.wake(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_shared::model::{Availability, TaskState};

    use super::super::testkit::*;
    use super::super::{Intent, StopReason};

    #[test]
    fn tasks_on_a_drained_node_stop_and_run_elsewhere() {
        let mut k = Kit::new(&["n1", "n2"], vec![service("s", Some(2))]);
        k.pass();
        k.run_all();
        k.set_node("n1", |n| n.spec.availability = Availability::Drain);
        let plan = k.pass();
        let stopped: Vec<&Intent> = plan
            .intents
            .iter()
            .filter(|i| {
                matches!(
                    i,
                    Intent::Stop {
                        reason: StopReason::NodeLost,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(stopped.len(), 1);
        k.stop_all();
        k.pass();
        assert!(k.live("s").iter().all(|t| t.node_id == "n2"));
        assert_eq!(k.live("s").len(), 2);
    }

    #[test]
    fn a_failed_task_is_restarted_after_its_delay() {
        let mut k = Kit::new(&["n1"], vec![service("s", Some(1))]);
        k.pass();
        k.run_all();
        let id = k.live("s")[0].meta.id.clone();
        k.report(&id, TaskState::Failed);
        let plan = k.pass();
        assert!(!plan.intents.contains(&Intent::Restart { task: id.clone() }));
        assert_eq!(plan.wake_at, Some(k.now + chrono::TimeDelta::seconds(5)));
        k.advance(Duration::from_secs(5));
        let plan = k.pass();
        assert!(plan.intents.contains(&Intent::Restart { task: id.clone() }));
        let live = k.live("s");
        assert_eq!(live.len(), 1);
        assert_ne!(live[0].meta.id, id);
        assert_eq!(live[0].slot, Some(1));
    }

    #[test]
    fn restart_condition_none_leaves_an_ended_task_alone() {
        let mut svc = service("s", Some(1));
        svc.spec.task_template.restart_policy.as_mut().unwrap().condition =
            Some(shoal_shared::model::RestartCondition::None);
        let mut k = Kit::new(&["n1"], vec![svc]);
        k.pass();
        let id = k.live("s")[0].meta.id.clone();
        k.report(&id, TaskState::Complete);
        k.advance(Duration::from_secs(60));
        let plan = k.pass();
        assert!(plan.intents.is_empty(), "{:?}", plan.intents);
    }
}
