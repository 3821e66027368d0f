//! The agent at its awkward moments, with real processes (the `process`
//! executor): scale flips faster than tasks start (a stop arriving while a
//! start is in flight must still stop the task), and an agent killed between
//! its `starting` and `running` reports (the restarted agent must find the
//! process and report it running). Task processes are counted on the host
//! the way the agent finds them: by `SHOAL_NODE_ID`/`SHOAL_TASK_ID` in their
//! environment.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_shared::model::*;
use shoal_tests::eventually;
use shoal_tests::orch::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HEARTBEAT: Duration = Duration::from_secs(1);

/// Waits until `service` has `want` tasks wanted and seen running, and the
/// nodes' task processes are exactly theirs: one process per running task,
/// none of any other task. Returns task ID -> PID.
async fn processes_match(o: &Orch, service: &str, nodes: &[String], want: usize) -> BTreeMap<String, i32> {
    let what = format!("{want} running tasks, each with one process, and no other task process");
    eventually(CONVERGE, &what, || async {
        let tasks = o.tasks(service).await?;
        assert_one_running_per_slot(&tasks);
        let running: BTreeSet<String> = tasks
            .iter()
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
            .map(|t| t.meta.id.clone())
            .collect();
        let mut procs: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for n in nodes {
            procs.extend(task_processes(n));
        }
        let ids: BTreeSet<String> = procs.keys().cloned().collect();
        if running.len() == want && ids == running && procs.values().all(|p| p.len() == 1) {
            Ok(procs.into_iter().map(|(t, p)| (t, p[0])).collect())
        } else {
            let stray: Vec<&String> = ids.difference(&running).collect();
            Err(format!(
                "{} running tasks, {} task processes, {} of tasks not running: {stray:?}",
                running.len(),
                procs.values().map(Vec::len).sum::<usize>(),
                stray.len()
            ))
        }
    })
    .await
}

/// Issue 14, D2: 21 back-to-back scale changes used to leave hundreds of
/// task processes that no task accounted for, also after an agent restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rapid_scale_flips_leave_exactly_one_process_per_running_task() {
    let _serial = SERIAL.lock().await;
    let mut o = Orch::start(1, 2, HEARTBEAT).await;
    let names = ["node-1", "node-2"];
    let nodes: Vec<String> = o.wait_ready(&names).await.into_values().collect();
    let mut spec = service_spec("flip", Some(0), &["sleep", "3600"]);
    spec.task_template.container_spec.as_mut().unwrap().stop_grace_period = Some(Duration::from_secs(1));
    let svc = o.create_service(spec).await;
    let flips = [40, 0, 25, 3, 31, 0, 12, 28, 1, 35, 0, 22, 9, 40, 2, 0, 30, 5, 26, 17, 0];
    for n in flips.iter().chain(flips.iter().rev()).chain([0].iter()) {
        o.update_service(&svc, |s| s.mode = ServiceMode::replicated(*n)).await;
    }
    processes_match(&o, &svc, &nodes, 0).await;
    o.update_service(&svc, |s| s.mode = ServiceMode::replicated(6)).await;
    let before = processes_match(&o, &svc, &nodes, 6).await;

    // Both agents restart: they re-adopt exactly those processes.
    for name in names {
        o.kill_agent(name);
        o.start_agent(name);
    }
    o.wait_ready(&names).await;
    let after = processes_match(&o, &svc, &nodes, 6).await;
    assert_eq!(after, before, "the same processes, re-adopted");

    // Flips right after the restart end the same way.
    for n in [20, 0, 15, 4] {
        o.update_service(&svc, |s| s.mode = ServiceMode::replicated(n)).await;
    }
    processes_match(&o, &svc, &nodes, 4).await;
}

/// Issue 14, D3: an agent SIGKILLed after reporting `starting` and before
/// reporting `running` left the task `starting` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_between_starting_and_running_reports_running_after_restart() {
    let _serial = SERIAL.lock().await;
    let mut o = Orch::start(1, 0, HEARTBEAT).await;
    // The failpoint holds a started task's outcome back: `starting` is
    // reported, the process runs, `running` never comes from this agent.
    o.start_agent_with("node-1", &[("FAILPOINTS", "agent-before-running=return")]);
    let node = o.wait_ready(&["node-1"]).await["node-1"].clone();
    let svc = o
        .create_service(service_spec("late", Some(1), &["sleep", "3600"]))
        .await;
    let (task, pid) = eventually(CONVERGE, "the task starting, its process running", || async {
        let tasks = o.tasks(&svc).await?;
        let t = tasks.first().ok_or("no task yet")?;
        let procs = task_processes(&node);
        match (t.status.state, procs.get(&t.meta.id)) {
            (TaskState::Starting, Some(p)) if p.len() == 1 => Ok((t.meta.id.clone(), p[0])),
            (st, p) => Err(format!("{st} {p:?}")),
        }
    })
    .await;
    o.kill_agent("node-1");
    assert_eq!(
        o.tasks(&svc).await.unwrap()[0].status.state,
        TaskState::Starting,
        "nothing else reports the task"
    );

    o.start_agent("node-1");
    eventually(CONVERGE, "the same task running, on the same process", || async {
        let tasks = o.tasks(&svc).await?;
        let live: Vec<&Task> = tasks.iter().filter(|t| t.desired_state == TaskState::Running).collect();
        let pid_seen = |t: &Task| t.status.container_status.as_ref().and_then(|c| c.pid);
        match live.as_slice() {
            [t] if t.meta.id == task && t.status.state == TaskState::Running && pid_seen(t) == Some(pid as i64) => {
                Ok(())
            }
            other => Err(format!(
                "{:?}",
                other
                    .iter()
                    .map(|t| (t.meta.id.clone(), t.status.state, pid_seen(t)))
                    .collect::<Vec<_>>()
            )),
        }
    })
    .await;
    let procs = task_processes(&node);
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(procs[&task], vec![pid]);
}
