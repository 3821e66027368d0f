//! The orchestration core as real processes: nats-server, raft-store,
//! scheduler, dispatcher and agents with the `process` executor (tasks run
//! `sleep`), on one machine.
//!
//! The Docker API is not part of these tests: services and nodes are
//! created and changed through the store client exactly as the API does
//! (`docker service update` = new spec, old one kept as `PreviousSpec`,
//! `UpdateStatus` cleared; `docker node update` = a new node `Spec`).
//! Scenarios run one at a time (they share a 2-core machine).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_shared::model::*;
use shoal_tests::eventually;
use shoal_tests::orch::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HEARTBEAT: Duration = Duration::from_secs(1);

fn counts(per: &BTreeMap<String, usize>) -> Vec<usize> {
    let mut v: Vec<usize> = per.values().copied().collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Waits until `service` has exactly `want` running tasks whose per-node counts are `shape`
/// (sorted, largest first), checking at every poll that no slot has two running tasks.
async fn wait_running(o: &Orch, service: &str, shape: &[usize]) -> Vec<Task> {
    let what = format!("running tasks per node {shape:?}");
    eventually(CONVERGE, &what, || async {
        let tasks = o.tasks(service).await?;
        assert_one_running_per_slot(&tasks);
        let per = running_per_node(&tasks);
        let live = tasks.iter().filter(|t| t.desired_state <= TaskState::Running).count();
        if counts(&per) == shape && live == shape.iter().sum::<usize>() {
            Ok(tasks)
        } else {
            Err(format!("{:?} ({live} live)", counts(&per)))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_spread_scale_and_move_off_a_killed_agent() {
    let _serial = SERIAL.lock().await;
    let mut o = Orch::start(1, 5, HEARTBEAT).await;
    let names = ["node-1", "node-2", "node-3", "node-4", "node-5"];
    let ids = o.wait_ready(&names).await;
    let nodes = o.nodes().await.unwrap();
    let n1 = nodes.iter().find(|n| n.meta.id == ids["node-1"]).unwrap();
    assert_eq!(n1.description.hostname, "node-1");
    assert!(n1.description.resources.nano_cpus > 0);

    let web = o.create_service(service_spec("web", Some(7), &["sleep", "3600"])).await;
    let tasks = wait_running(&o, &web, &[2, 2, 1, 1, 1]).await;
    for t in tasks.iter().filter(|t| t.status.state == TaskState::Running) {
        assert_eq!(pid_alive(t), Some(true), "task {} runs a live process", t.meta.id);
    }

    o.update_service(&web, |s| s.mode = ServiceMode::replicated(3)).await;
    wait_running(&o, &web, &[1, 1, 1]).await;
    o.update_service(&web, |s| s.mode = ServiceMode::replicated(10)).await;
    let before = wait_running(&o, &web, &[2, 2, 2, 2, 2]).await;
    let slots: BTreeSet<u64> = before
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .filter_map(|t| t.slot)
        .collect();
    assert_eq!(slots, (1..=10).collect());

    // SIGKILL node-1's agent: its node goes down, its tasks run elsewhere.
    let victim = ids["node-1"].clone();
    let old: Vec<Task> = before
        .iter()
        .filter(|t| t.node_id == victim && t.desired_state == TaskState::Running)
        .cloned()
        .collect();
    assert_eq!(old.len(), 2);
    o.kill_agent("node-1");
    eventually(CONVERGE, "node-1 down with heartbeat failure", || async {
        let n = o
            .client
            .get::<Node>(&victim)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("gone")?;
        if n.status.state == NodeState::Down && n.status.message == "heartbeat failure" {
            Ok(())
        } else {
            Err(format!("{:?}", n.status))
        }
    })
    .await;
    let after = wait_running(&o, &web, &[3, 3, 2, 2]).await;
    assert!(running_per_node(&after).keys().all(|n| *n != victim));
    let others = o.wait_ready(&names[1..]).await;
    assert_eq!(others.len(), 4, "no other node went down");

    // Restart it: ready again, its old tasks are shut down, not duplicated.
    o.start_agent("node-1");
    o.wait_ready(&["node-1"]).await;
    eventually(CONVERGE, "old tasks of node-1 shut down", || async {
        let tasks = o.tasks(&web).await?;
        assert_one_running_per_slot(&tasks);
        let mut state = Vec::new();
        for t in &old {
            match tasks.iter().find(|x| x.meta.id == t.meta.id) {
                Some(x) if x.status.state == TaskState::Shutdown => {}
                None => {}
                Some(x) => state.push(format!("{} {}", x.meta.id, x.status.state)),
            }
            if pid_alive(t) == Some(true) {
                state.push(format!("{} process alive", t.meta.id));
            }
        }
        if state.is_empty() {
            Ok(())
        } else {
            Err(state.join(", "))
        }
    })
    .await;
    let tasks = o.tasks(&web).await.unwrap();
    assert_eq!(running_per_node(&tasks).values().sum::<usize>(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_service_follows_a_joining_agent_and_drain_and_pause() {
    let _serial = SERIAL.lock().await;
    let mut o = Orch::start(1, 5, HEARTBEAT).await;
    let names = ["node-1", "node-2", "node-3", "node-4", "node-5"];
    let ids = o.wait_ready(&names).await;
    let g = o.create_service(service_spec("mon", None, &["sleep", "3600"])).await;
    let r = o.create_service(service_spec("app", Some(5), &["sleep", "3600"])).await;
    wait_running(&o, &g, &[1, 1, 1, 1, 1]).await;
    wait_running(&o, &r, &[1, 1, 1, 1, 1]).await;

    o.start_agent("node-6");
    let six = o.wait_ready(&["node-6"]).await;
    let tasks = wait_running(&o, &g, &[1, 1, 1, 1, 1, 1]).await;
    assert!(running_per_node(&tasks).contains_key(&six["node-6"]));

    // Drain node-2: both services leave it.
    let drained = ids["node-2"].clone();
    o.update_node(&drained, |n| n.spec.availability = Availability::Drain)
        .await;
    let tasks = wait_running(&o, &g, &[1, 1, 1, 1, 1]).await;
    assert!(!running_per_node(&tasks).contains_key(&drained));
    let tasks = wait_running(&o, &r, &[1, 1, 1, 1, 1]).await;
    assert!(!running_per_node(&tasks).contains_key(&drained));

    // Pause node-3: its tasks stay, new ones go elsewhere.
    let paused = ids["node-3"].clone();
    o.update_node(&paused, |n| n.spec.availability = Availability::Pause)
        .await;
    o.update_service(&r, |s| s.mode = ServiceMode::replicated(9)).await;
    let tasks = wait_running(&o, &r, &[2, 2, 2, 2, 1]).await;
    assert_eq!(
        running_per_node(&tasks).get(&paused),
        Some(&1),
        "the paused node keeps its task"
    );
    let tasks = o.tasks(&g).await.unwrap();
    assert_eq!(running_per_node(&tasks).get(&paused), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_task_restarts_in_its_slot_and_history_is_pruned_to_five() {
    let _serial = SERIAL.lock().await;
    let o = Orch::start(1, 2, HEARTBEAT).await;
    o.wait_ready(&["node-1", "node-2"]).await;
    let mut spec = service_spec("crash", Some(1), &["sh", "-c", "sleep 0.2; exit 1"]);
    spec.task_template.restart_policy.as_mut().unwrap().delay = Some(Duration::from_millis(200));
    let id = o.create_service(spec).await;
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let tasks = eventually(CONVERGE, "8 restarts with 5 tasks kept", || {
        let seen = &seen;
        let o = &o;
        let id = &id;
        async move {
            let tasks = o.tasks(id).await?;
            assert!(tasks.len() <= 5, "{} tasks kept for one slot", tasks.len());
            let mut seen = seen.lock().unwrap();
            for t in &tasks {
                assert_eq!(t.slot, Some(1), "every task is in slot 1");
                seen.insert(t.meta.id.clone());
            }
            let failed = tasks.iter().filter(|t| t.status.state == TaskState::Failed).count();
            if seen.len() >= 8 && tasks.len() == 5 && failed >= 4 {
                Ok(tasks)
            } else {
                Err(format!("{} seen, {} kept, {failed} failed", seen.len(), tasks.len()))
            }
        }
    })
    .await;
    let failed = tasks.iter().find(|t| t.status.state == TaskState::Failed).unwrap();
    assert_eq!(failed.status.err, "task: non-zero exit (1)");
    assert_eq!(failed.status.container_status.as_ref().unwrap().exit_code, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_goes_one_at_a_time_then_pauses_then_rolls_back() {
    let _serial = SERIAL.lock().await;
    let o = Orch::start(1, 3, HEARTBEAT).await;
    o.wait_ready(&["node-1", "node-2", "node-3"]).await;
    let mut spec = service_spec("roll", Some(4), &["sleep", "3600"]);
    let u = spec.update_config.as_mut().unwrap();
    u.delay = Some(Duration::from_millis(500));
    u.monitor = Some(Duration::from_millis(500));
    spec.task_template.restart_policy.as_mut().unwrap().delay = Some(Duration::from_millis(200));
    let id = o.create_service(spec).await;
    wait_running(&o, &id, &[2, 1, 1]).await;

    // `docker service update --image busybox:2 --update-delay 500ms`.
    o.update_service(&id, |s| {
        s.task_template.container_spec.as_mut().unwrap().image = "busybox:2".into();
    })
    .await;
    let new_spec = o.service(&id).await.unwrap().spec.task_template;
    let most_in_flight = std::sync::Mutex::new(0usize);
    eventually(CONVERGE, "rolling update completed", || {
        let o = &o;
        let id = &id;
        let new_spec = &new_spec;
        let most = &most_in_flight;
        async move {
            let tasks = o.tasks(id).await?;
            assert_one_running_per_slot(&tasks);
            // Slots mid-update: no running task of the new spec, but not untouched either.
            let mut per_slot: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
            for t in &tasks {
                let e = per_slot.entry(t.slot.unwrap_or(0)).or_default();
                if t.desired_state == TaskState::Running && t.status.state == TaskState::Running {
                    if t.spec == *new_spec {
                        e.0 = true;
                    } else {
                        e.1 = true;
                    }
                }
            }
            let in_flight = per_slot.values().filter(|(new, old)| !new && !old).count();
            {
                let mut m = most.lock().unwrap();
                *m = (*m).max(in_flight);
            }
            assert!(in_flight <= 1, "{in_flight} slots updating at once with parallelism 1");
            let svc = o.service(id).await?;
            let state = svc.update_status.as_ref().and_then(|u| u.state);
            let done = per_slot.values().filter(|(new, old)| *new && !old).count();
            if state == Some(UpdateState::Completed) && done == 4 {
                Ok(())
            } else {
                Err(format!("{state:?}, {done} slots updated"))
            }
        }
    })
    .await;
    assert_eq!(*most_in_flight.lock().unwrap(), 1, "the update was seen in progress");

    // A spec that cannot run, failure action pause: the rollout stops, UpdateStatus paused.
    let good = o.service(&id).await.unwrap().spec.task_template;
    o.update_service(&id, |s| {
        s.task_template.container_spec.as_mut().unwrap().command = vec!["sh".into(), "-c".into(), "exit 1".into()];
    })
    .await;
    let svc = eventually(CONVERGE, "update paused", || async {
        let svc = o.service(&id).await?;
        match &svc.update_status {
            Some(u) if u.state == Some(UpdateState::Paused) => Ok(svc),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let us = svc.update_status.unwrap();
    assert!(
        us.message
            .starts_with("update paused due to failure or early termination of task"),
        "{}",
        us.message
    );
    let tasks = o.tasks(&id).await.unwrap();
    let still_good = tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running && t.spec == good)
        .count();
    assert!(
        still_good >= 2,
        "the rollout stopped early: {still_good} slots still run the good spec"
    );

    // The same bad spec with failure action rollback returns to the previous spec.
    o.update_service(&id, |s| {
        *s = ServiceSpec {
            task_template: good.clone(),
            ..s.clone()
        };
    })
    .await;
    eventually(CONVERGE, "back on the good spec", || async {
        let svc = o.service(&id).await?;
        let tasks = o.tasks(&id).await?;
        let ok = running_per_node(&tasks).values().sum::<usize>() == 4
            && tasks
                .iter()
                .filter(|t| t.desired_state == TaskState::Running)
                .all(|t| t.spec == good);
        match svc.update_status.as_ref().and_then(|u| u.state) {
            Some(UpdateState::Completed) if ok => Ok(()),
            other => Err(format!("{other:?}, converged={ok}")),
        }
    })
    .await;
    o.update_service(&id, |s| {
        s.task_template.container_spec.as_mut().unwrap().command = vec!["sh".into(), "-c".into(), "exit 1".into()];
        s.update_config.as_mut().unwrap().failure_action = Some(FailureAction::Rollback);
    })
    .await;
    let svc = eventually(CONVERGE, "rolled back", || async {
        let svc = o.service(&id).await?;
        let tasks = o.tasks(&id).await?;
        let ok = running_per_node(&tasks).values().sum::<usize>() == 4
            && tasks
                .iter()
                .filter(|t| t.desired_state == TaskState::Running)
                .all(|t| t.spec == good);
        match svc.update_status.as_ref().and_then(|u| u.state) {
            Some(UpdateState::RollbackCompleted) if ok => Ok(svc),
            other => Err(format!("{other:?}, converged={ok}")),
        }
    })
    .await;
    assert_eq!(svc.spec.task_template, good);
    assert!(svc.update_status.unwrap().message.contains("rollback completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_nodes_scheduler_acts_and_a_restart_keeps_slots_single() {
    let _serial = SERIAL.lock().await;
    let mut o = Orch::start(3, 3, HEARTBEAT).await;
    o.wait_ready(&["node-1", "node-2", "node-3"]).await;
    let id = o.create_service(service_spec("ha", Some(6), &["sleep", "3600"])).await;
    wait_running(&o, &id, &[2, 2, 2]).await;

    // Kill the leader node's scheduler: the followers' schedulers must not act.
    let leader = o.store.leader(&o.client, &[], CONVERGE).await;
    o.kill_scheduler(leader);
    o.update_service(&id, |s| s.mode = ServiceMode::replicated(9)).await;
    let spec_version = o.service(&id).await.unwrap().meta.version.index;
    // The followers' schedulers have seen the change once the feed moved past it;
    // a task created by them would carry this spec version.
    for _ in 0..20 {
        let tasks = o.tasks(&id).await.unwrap();
        assert!(
            tasks
                .iter()
                .all(|t| t.spec_version.is_none_or(|v| v.index < spec_version)),
            "a follower's scheduler created tasks"
        );
        assert_eq!(
            tasks.iter().filter(|t| t.desired_state == TaskState::Running).count(),
            6
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Single-manager style recovery: restart it on the leader's node.
    o.start_scheduler(leader);
    wait_running(&o, &id, &[3, 3, 3]).await;

    // Leadership moves (the leader replica dies): the new leader's node acts.
    o.store.kill(leader);
    let new_leader = o.store.leader(&o.client, &[leader], CONVERGE).await;
    assert_ne!(new_leader, leader);
    o.update_service(&id, |s| s.mode = ServiceMode::replicated(12)).await;
    wait_running(&o, &id, &[4, 4, 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_keep_running_while_the_managers_are_away() {
    let _serial = SERIAL.lock().await;
    let mut o = Orch::start(1, 3, HEARTBEAT).await;
    o.wait_ready(&["node-1", "node-2", "node-3"]).await;
    let id = o
        .create_service(service_spec("steady", Some(3), &["sleep", "3600"]))
        .await;
    let before = wait_running(&o, &id, &[1, 1, 1]).await;
    let running: BTreeSet<String> = before
        .iter()
        .filter(|t| t.status.state == TaskState::Running)
        .map(|t| t.meta.id.clone())
        .collect();

    // The dispatcher and scheduler die; the agents cannot report, their tasks run on.
    o.dispatchers.remove(&1);
    o.schedulers.remove(&1);
    for t in before.iter().filter(|t| running.contains(&t.meta.id)) {
        assert_eq!(pid_alive(t), Some(true));
    }
    // A manager comes back: the agents open new sessions, the nodes are ready,
    // and the same tasks are still the ones running (nothing restarted or duplicated).
    o.start_dispatcher(1);
    o.start_scheduler(1);
    o.wait_ready(&["node-1", "node-2", "node-3"]).await;
    let after = wait_running(&o, &id, &[1, 1, 1]).await;
    let now: BTreeSet<String> = after
        .iter()
        .filter(|t| t.status.state == TaskState::Running)
        .map(|t| t.meta.id.clone())
        .collect();
    assert_eq!(now, running);
    for t in &after {
        assert_eq!(
            pid_alive(t),
            Some(true),
            "task {} still runs its first process",
            t.meta.id
        );
    }
}
