//! Rolling updates and rollbacks (step 3 of a pass): a changed spec rolls
//! out group by group per `UpdateConfig` (parallelism, delay, order,
//! monitor), with `UpdateStatus` moving through updating / paused /
//! completed / rollback_*; failures beyond `MaxFailureRatio` pause,
//! continue or roll back (the rollback restores `PreviousSpec` and goes on
//! with `RollbackConfig`), as SwarmKit's updater does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_shared::model::{
    FailureAction, PortConfig, Task, TaskState, UpdateOrder, UpdateState, UpdateStatus, DEFAULTS,
};

use super::plan::{ServiceChange, StopReason};
use super::work::Work;
use super::{is_live, td, Group};
use crate::placement::{Needs, NodeInfo};

/// Whether a task publishes on its host the ports its service now
/// publishes in host mode (`wanted`, from [`Service::host_ports`]): a
/// changed host-mode port needs new tasks, as SwarmKit makes a task dirty
/// when its endpoint changed (the agent binds them when it makes the
/// container). Ingress ports don't count: the routing mesh reads them from
/// the service.
///
/// [`Service::host_ports`]: shoal_shared::model::Service::host_ports
pub(super) fn host_ports_as_wanted(t: &Task, wanted: &[PortConfig]) -> bool {
    t.host_ports() == wanted
}

/// The rolling update of one service (step 3).
pub(super) fn update(
    w: &mut Work,
    sid: &str,
    groups: &BTreeMap<Group, Vec<String>>,
    new_id: &mut dyn FnMut() -> String,
) {
    let svc = w.service(sid).clone();
    let state = svc.update_status.as_ref().and_then(|u| u.state);
    let rolling_back = matches!(state, Some(UpdateState::RollbackStarted | UpdateState::RollbackPaused));
    let cfg = if rolling_back {
        DEFAULTS.rollback_config_of(svc.spec.rollback_config.as_ref())
    } else {
        DEFAULTS.update_config_of(svc.spec.update_config.as_ref())
    };
    let template = &svc.spec.task_template;
    let ingress = super::networks::wants_ingress(w, &svc);
    let host_ports = svc.host_ports();
    let current = |t: &Task| {
        t.spec == *template && super::networks::ingress_as_wanted(t, ingress) && host_ports_as_wanted(t, &host_ports)
    };

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
                    w.set_service(sid, ServiceChange::UpdateStatus, |s| {
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
                    // The rollback goes on from here with the restored spec.
                    return update(w, sid, groups, new_id);
                }
                _ => {
                    let (st, what) = if rolling_back {
                        (UpdateState::RollbackPaused, "rollback")
                    } else {
                        (UpdateState::Paused, "update")
                    };
                    w.set_service(sid, ServiceChange::UpdateStatus, |s| {
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
                    w.set_desired(id, TaskState::Shutdown, StopReason::Superseded);
                }
            }
        }
    }

    let mut dirty: Vec<Group> = Vec::new();
    // Groups this pass refills after stopping a task of an older spec (a
    // restart that came due as the spec changed): their new task is of the
    // new spec, so the rollout has begun there though nothing is dirty.
    let mut respecced = 0usize;
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
        if refill && latest.is_some_and(|t| !current(t)) {
            respecced += 1;
        }
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
        _ if dirty.is_empty() && respecced == 0 => return,
        _ => {
            w.set_service(sid, ServiceChange::UpdateStatus, |s| {
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
        w.set_service(sid, ServiceChange::UpdateStatus, |s| {
            if let Some(us) = s.update_status.as_mut() {
                us.started_at = Some(now);
            }
        });
    }

    if dirty.is_empty() && in_flight == 0 {
        let monitor = td(cfg.monitor.unwrap_or_default());
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
        w.set_service(sid, ServiceChange::UpdateStatus, |s| {
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
            let svc = w.service(sid).clone();
            let id = w.new_task(id, &svc, &g);
            // A global task stays on its node; a replica is placed afresh.
            if let Group::Node(n) = &g {
                w.task_mut(&id).node_id = n.clone();
            }
        } else {
            for id in members {
                if is_live(w.task(id)) {
                    w.set_desired(id, TaskState::Shutdown, StopReason::Update);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_shared::model::{TaskState, UpdateState};

    use super::super::testkit::*;
    use super::super::{Intent, StopReason};

    fn stopped_for_update(plan: &super::super::Plan) -> usize {
        plan.intents
            .iter()
            .filter(|i| {
                matches!(
                    i,
                    Intent::Stop {
                        reason: StopReason::Update,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn a_new_spec_rolls_out_one_task_at_a_time_then_completes() {
        let mut k = Kit::new(&["n1", "n2"], vec![service("s", Some(3))]);
        k.pass();
        k.run_all();
        k.set_service("s", |s| {
            s.previous_spec = Some(s.spec.clone());
            s.spec.task_template.container_spec.as_mut().unwrap().image = "busybox:2".into();
        });
        for _ in 0..3 {
            let plan = k.pass();
            assert_eq!(stopped_for_update(&plan), 1, "{:?}", plan.intents);
            let st = k.snap.services["s"].update_status.clone().unwrap();
            assert_eq!(st.state, Some(UpdateState::Updating));
            k.stop_all();
            k.pass();
            k.run_all();
        }
        // After the monitor period the update completes.
        k.advance(std::time::Duration::from_secs(5));
        k.pass();
        let st = k.snap.services["s"].update_status.clone().unwrap();
        assert_eq!(st.state, Some(UpdateState::Completed));
        assert!(k
            .live("s")
            .iter()
            .all(|t| t.spec.container_spec.as_ref().unwrap().image == "busybox:2"));
    }

    #[test]
    fn a_failing_update_pauses() {
        let mut k = Kit::new(&["n1"], vec![service("s", Some(2))]);
        k.pass();
        k.run_all();
        k.set_service("s", |s| {
            s.previous_spec = Some(s.spec.clone());
            s.spec.task_template.container_spec.as_mut().unwrap().image = "bad".into();
        });
        k.pass();
        k.stop_all();
        k.pass();
        let new = k
            .live("s")
            .into_iter()
            .find(|t| t.spec.container_spec.as_ref().unwrap().image == "bad")
            .unwrap();
        k.report(&new.meta.id, TaskState::Failed);
        k.pass();
        let st = k.snap.services["s"].update_status.clone().unwrap();
        assert_eq!(st.state, Some(UpdateState::Paused));
        assert!(st.message.contains("update paused due to failure"), "{}", st.message);
    }

    #[test]
    fn a_new_spec_over_a_paused_update_is_an_update_when_a_restart_comes_due_with_it() {
        let mut k = Kit::new(&["n1"], vec![service("s", Some(2))]);
        k.pass();
        k.run_all();
        let good = k.snap.services["s"].spec.clone();
        k.set_service("s", |s| {
            s.previous_spec = Some(s.spec.clone());
            s.spec.task_template.container_spec.as_mut().unwrap().image = "bad".into();
        });
        k.pass();
        k.stop_all();
        k.pass();
        let bad = |t: &shoal_shared::model::Task| t.spec.container_spec.as_ref().unwrap().image == "bad";
        let new = k.live("s").into_iter().find(bad).unwrap();
        k.report(&new.meta.id, TaskState::Failed);
        k.pass();
        assert_eq!(
            k.snap.services["s"].update_status.clone().unwrap().state,
            Some(UpdateState::Paused)
        );
        // The failed task's restart delay has passed when the good spec comes
        // back, so this pass replaces it with a task of the good spec.
        k.advance(std::time::Duration::from_secs(6));
        k.set_service("s", |s| {
            s.previous_spec = Some(s.spec.clone());
            s.spec = good.clone();
            s.update_status = None;
        });
        k.pass();
        let st = k.snap.services["s"].update_status.clone();
        assert_eq!(st.and_then(|u| u.state), Some(UpdateState::Updating));
        k.run_all();
        k.pass();
        k.advance(std::time::Duration::from_secs(6));
        k.pass();
        let st = k.snap.services["s"].update_status.clone().unwrap();
        assert_eq!(st.state, Some(UpdateState::Completed), "{st:?}");
        assert!(k.live("s").iter().all(|t| !bad(t)));
    }

    #[test]
    fn tasks_carry_their_host_mode_ports_and_a_changed_one_rolls_them() {
        use shoal_shared::model::{EndpointSpec, PortConfig, Service};
        let port = |mode: &str, published: u32| -> PortConfig {
            serde_json::from_value(serde_json::json!({
                "Protocol": "tcp", "TargetPort": 80, "PublishedPort": published, "PublishMode": mode
            }))
            .unwrap()
        };
        let publish = |s: &mut Service, ports: Vec<PortConfig>| {
            s.spec.endpoint_spec = Some(EndpointSpec {
                ports,
                ..EndpointSpec::default()
            });
        };
        let mut web = service("web", Some(2));
        publish(&mut web, vec![port("host", 8080), port("ingress", 30001)]);
        let mut k = Kit::new(&["n1", "n2"], vec![web]);
        k.pass();
        k.run_all();
        // Every task knows its host-mode ports, and only those.
        let ports = |k: &Kit| -> Vec<Vec<PortConfig>> { k.live("web").iter().map(|t| t.host_ports()).collect() };
        assert_eq!(ports(&k), vec![vec![port("host", 8080)]; 2]);
        let ids = |k: &Kit| -> Vec<String> { k.live("web").iter().map(|t| t.meta.id.clone()).collect() };
        let first = ids(&k);
        // Another ingress port number rolls nothing.
        k.set_service("web", |s| publish(s, vec![port("host", 8080), port("ingress", 30002)]));
        k.pass();
        k.pass();
        assert_eq!(ids(&k), first);
        // Another host-mode port: new tasks, one at a time, with the new port.
        k.set_service("web", |s| publish(s, vec![port("host", 0), port("ingress", 30002)]));
        let plan = k.pass();
        assert_eq!(stopped_for_update(&plan), 1, "{:?}", plan.intents);
        for _ in 0..2 {
            k.stop_all();
            k.pass();
            k.run_all();
            k.pass();
        }
        assert_eq!(ports(&k), vec![vec![port("host", 0)]; 2]);
        assert!(ids(&k).iter().all(|id| !first.contains(id)), "{:?} {first:?}", ids(&k));
    }
}
