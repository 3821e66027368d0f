//! Every transition of a task's life, a restart in each phase, and the
//! failures, driven through [`super::step`].

use super::*;
use crate::exec::ProcessId;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn task(desired: TaskState) -> Task {
    let mut t = Task::new("t1", "s1", Default::default());
    t.desired_state = desired;
    t.status.state = TaskState::Assigned;
    t
}

fn proc_handle() -> Handle {
    Handle::Process(ProcessId {
        pid: 4242,
        start_time: 7,
    })
}

fn container() -> Handle {
    Handle::Container {
        container_id: "c1".into(),
    }
}

fn reported(fx: &[Effect]) -> Vec<TaskState> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Report(s) => Some(s.state),
            _ => None,
        })
        .collect()
}

fn without_reports(fx: &[Effect]) -> Vec<Effect> {
    fx.iter().filter(|e| !matches!(e, Effect::Report(_))).cloned().collect()
}

fn grace() -> Duration {
    crate::exec::DEFAULT_STOP_GRACE
}

/// Drives a task from its first assignment to running.
fn running(h: Handle) -> TaskCtl {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(None)), now());
    let (c, _) = step(c, Event::Started(Ok(h)), now());
    assert_eq!(c.phase(), Phase::Running);
    c
}

/// The same task, stopped by the managers (who saw every report).
fn assigned_shutdown(c: &TaskCtl) -> Event {
    let mut t = c.task.clone();
    t.status = c.status.clone();
    t.desired_state = TaskState::Shutdown;
    Event::Assigned(Box::new(t))
}

fn restart(c: &TaskCtl) -> TaskCtl {
    // What the database gives back after a restart.
    serde_json::from_slice(&serde_json::to_vec(c).unwrap()).unwrap()
}

fn adopted_ev(found: Option<Found>) -> Event {
    Event::Adopted {
        found,
        lost: "task: ended while the agent was not running".into(),
    }
}

fn found(h: Handle, running: bool, started: bool, code: Option<i64>) -> Found {
    Found {
        task_id: "t1".into(),
        handle: h,
        running,
        started,
        exit_code: code,
    }
}

#[test]
fn a_task_goes_from_assigned_to_running_reporting_every_state() {
    let (c, fx) = first_assignment(task(TaskState::Running), now());
    assert_eq!(reported(&fx), [TaskState::Accepted, TaskState::Preparing]);
    assert_eq!(without_reports(&fx), [Effect::Prepare]);
    assert_eq!(c.phase(), Phase::Preparing);
    let (c, fx) = step(c, Event::Prepared(Ok(Some(container()))), now());
    assert_eq!(reported(&fx), [TaskState::Ready, TaskState::Starting]);
    assert_eq!(without_reports(&fx), [Effect::Start(Some(container()))]);
    let (c, fx) = step(c, Event::Started(Ok(container())), now());
    assert_eq!(reported(&fx), [TaskState::Running]);
    assert_eq!(without_reports(&fx), [Effect::Wait(container())]);
    assert_eq!(
        c.status.container_status.as_ref().unwrap().container_id.as_deref(),
        Some("c1")
    );
}

#[test]
fn exits_end_complete_failed_or_lost() {
    for (exit, state, err) in [
        (Exit::Code(0), TaskState::Complete, ""),
        (Exit::Code(3), TaskState::Failed, "task: non-zero exit (3)"),
        (Exit::Lost("gone".into()), TaskState::Failed, "gone"),
    ] {
        let c = running(proc_handle());
        let (c, fx) = step(
            c,
            Event::Exited {
                handle: proc_handle(),
                exit,
            },
            now(),
        );
        assert_eq!(reported(&fx), [state]);
        assert_eq!(c.status.err, err);
        assert_eq!(c.phase(), Phase::Ended);
        assert!(c.handle.is_none());
        assert!(
            without_reports(&fx).is_empty(),
            "an ended task's container stays until unassigned"
        );
    }
}

#[test]
fn an_exit_of_other_work_is_ignored() {
    let c = running(proc_handle());
    let (c, fx) = step(
        c,
        Event::Exited {
            handle: container(),
            exit: Exit::Code(1),
        },
        now(),
    );
    assert!(fx.is_empty());
    assert_eq!(c.phase(), Phase::Running);
}

#[test]
fn a_stop_of_a_running_task_signals_it_once_and_its_exit_is_shutdown() {
    let c = running(proc_handle());
    let ev = assigned_shutdown(&c);
    let (c, fx) = step(c, ev, now());
    assert_eq!(
        fx,
        [Effect::Stop {
            handle: proc_handle(),
            grace: grace()
        }]
    );
    assert_eq!(c.phase(), Phase::Stopping);
    // Asked again (another assignment): nothing more.
    let ev = assigned_shutdown(&c);
    let (c, fx) = step(c, ev, now());
    assert!(fx.is_empty());
    // An exit while stopping, even a non-zero one, is a shutdown.
    let (c, fx) = step(
        c,
        Event::Exited {
            handle: proc_handle(),
            exit: Exit::Code(143),
        },
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
    assert_eq!(c.status.container_status.as_ref().unwrap().exit_code, Some(143));
    assert_eq!(c.phase(), Phase::Ended);
}

/// D2: a stop that arrives while the start is in flight stops the work
/// as soon as it runs (it used to be marked and never signalled).
#[test]
fn a_stop_while_starting_stops_the_work_when_the_start_completes() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(None)), now());
    assert_eq!(c.phase(), Phase::Starting);
    let ev = assigned_shutdown(&c);
    let (c, fx) = step(c, ev, now());
    assert!(fx.is_empty(), "nothing to signal yet: {fx:?}");
    let (c, fx) = step(c, Event::Started(Ok(proc_handle())), now());
    assert_eq!(
        fx,
        [
            Effect::Wait(proc_handle()),
            Effect::Stop {
                handle: proc_handle(),
                grace: grace()
            }
        ]
    );
    assert_eq!(c.phase(), Phase::Stopping);
    let (c, fx) = step(
        c,
        Event::Exited {
            handle: proc_handle(),
            exit: Exit::Code(143),
        },
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
    assert_eq!(c.phase(), Phase::Ended);
}

/// D2 as it happened: unassigned (scaled down) while starting.
#[test]
fn an_unassign_while_starting_stops_then_forgets() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(None)), now());
    let (c, fx) = step(c, Event::Unassigned, now());
    assert!(fx.is_empty());
    let (c, fx) = step(c, Event::Started(Ok(proc_handle())), now());
    assert!(fx.contains(&Effect::Stop {
        handle: proc_handle(),
        grace: grace()
    }));
    let (_, fx) = step(
        c,
        Event::Exited {
            handle: proc_handle(),
            exit: Exit::Code(143),
        },
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
    assert_eq!(without_reports(&fx), [Effect::Remove, Effect::Forget]);
}

#[test]
fn an_unassign_while_preparing_removes_what_was_prepared_and_forgets() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, fx) = step(c, Event::Unassigned, now());
    assert!(fx.is_empty());
    assert_eq!(c.phase(), Phase::Preparing);
    let (_, fx) = step(c, Event::Prepared(Ok(Some(container()))), now());
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
    assert_eq!(without_reports(&fx), [Effect::Remove, Effect::Forget]);
}

#[test]
fn a_task_stopped_before_it_was_started_ends_shutdown() {
    let (c, fx) = first_assignment(task(TaskState::Shutdown), now());
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
    assert!(without_reports(&fx).is_empty());
    assert_eq!(c.phase(), Phase::Ended);
    let (_, fx) = step(c, Event::Unassigned, now());
    assert_eq!(fx, [Effect::Remove, Effect::Forget]);
}

#[test]
fn an_ended_task_is_forgotten_when_unassigned_and_its_container_removed() {
    let c = running(container());
    let (c, _) = step(
        c,
        Event::Exited {
            handle: container(),
            exit: Exit::Code(0),
        },
        now(),
    );
    let (_, fx) = step(c, Event::Unassigned, now());
    assert_eq!(fx, [Effect::Remove, Effect::Forget]);
}

#[test]
fn an_image_pull_failure_rejects_and_a_start_failure_fails() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, fx) = step(
        c,
        Event::Prepared(Err(ExecError::Rejected("no such image".into()))),
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Rejected]);
    assert_eq!(
        (c.status.message.as_str(), c.status.err.as_str()),
        ("preparing", "no such image")
    );
    assert_eq!(c.phase(), Phase::Ended);

    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(Some(container()))), now());
    let (c, fx) = step(c, Event::Started(Err(ExecError::Failed("exec failed".into()))), now());
    assert_eq!(reported(&fx), [TaskState::Failed]);
    assert_eq!(
        (c.status.message.as_str(), c.status.err.as_str()),
        ("starting", "exec failed")
    );
    assert!(c.handle.is_none());
    assert_eq!(c.phase(), Phase::Ended);
}

#[test]
fn a_temporary_error_retries_the_prepare() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, fx) = step(
        c,
        Event::Prepared(Err(ExecError::Temporary("engine down".into()))),
        now(),
    );
    assert_eq!(fx, [Effect::RetryAfter(RETRY_DELAY)]);
    assert_eq!(c.phase(), Phase::Backoff);
    let (c, fx) = step(c, Event::RetryDue, now());
    assert_eq!(fx, [Effect::Prepare], "states already reported are not sent again");
    assert_eq!(c.phase(), Phase::Preparing);
    // A stop during the backoff ends it without preparing.
    let (c, _) = step(
        c,
        Event::Prepared(Err(ExecError::Temporary("engine down".into()))),
        now(),
    );
    let ev = assigned_shutdown(&c);
    let (c, fx) = step(c, ev, now());
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
    let (_, fx) = step(c, Event::RetryDue, now());
    assert!(fx.is_empty());
}

#[test]
fn a_task_the_store_thinks_started_here_but_this_agent_never_saw_is_lost() {
    let mut t = task(TaskState::Running);
    t.status.state = TaskState::Running;
    let (c, fx) = first_assignment(t, now());
    assert_eq!(reported(&fx), [TaskState::Failed]);
    assert_eq!(c.status.err, "task: not found on this node");
    assert!(without_reports(&fx).is_empty());
}

#[test]
fn a_report_the_managers_missed_is_sent_again() {
    let c = running(proc_handle());
    let t = c.task.clone(); // The store still says assigned.
    let (_, fx) = step(c, Event::Assigned(Box::new(t)), now());
    assert_eq!(reported(&fx), [TaskState::Running]);
}

#[test]
fn reports_never_go_backwards() {
    let c = running(proc_handle());
    let (c, _) = step(
        c,
        Event::Exited {
            handle: proc_handle(),
            exit: Exit::Code(0),
        },
        now(),
    );
    // A late start outcome, a late exit, a repeated assignment: nothing.
    let (c, fx) = step(c, Event::Started(Ok(proc_handle())), now());
    assert!(fx.is_empty());
    let mut t = c.task.clone();
    t.status = c.status.clone();
    let (c, fx) = step(c, Event::Assigned(Box::new(t)), now());
    assert!(fx.is_empty());
    assert_eq!(c.status.state, TaskState::Complete);
}

// --- An agent restart in each phase. ---

#[test]
fn restart_while_preparing_prepares_again() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, fx) = step(restart(&c), adopted_ev(None), now());
    assert_eq!(without_reports(&fx), [Effect::Prepare]);
    assert_eq!(c.phase(), Phase::Preparing);
}

#[test]
fn restart_after_a_container_was_created_but_not_started_removes_it_and_prepares_again() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(Some(container()))), now());
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(container(), false, false, None))),
        now(),
    );
    assert_eq!(without_reports(&fx), [Effect::Remove, Effect::Prepare]);
    assert_eq!(c.phase(), Phase::Preparing);
}

/// D3: killed between the `starting` and `running` reports; the
/// restarted agent finds the work running and reports it.
#[test]
fn restart_while_starting_adopts_running_work_and_reports_running() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(None)), now());
    assert_eq!(c.status.state, TaskState::Starting);
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(proc_handle(), true, true, None))),
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Running]);
    assert_eq!(without_reports(&fx), [Effect::Wait(proc_handle())]);
    assert_eq!(c.phase(), Phase::Running);
    assert_eq!(c.handle, Some(proc_handle()));
}

#[test]
fn restart_while_starting_with_nothing_found_starts_from_the_beginning() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(None)), now());
    let (c, fx) = step(restart(&c), adopted_ev(None), now());
    assert_eq!(without_reports(&fx), [Effect::Prepare]);
    let (c, _) = step(c, Event::Prepared(Ok(None)), now());
    let (_, fx) = step(c, Event::Started(Ok(proc_handle())), now());
    assert_eq!(reported(&fx), [TaskState::Running]);
}

#[test]
fn restart_while_running_re_adopts_without_reporting_again() {
    let c = running(proc_handle());
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(proc_handle(), true, true, None))),
        now(),
    );
    assert_eq!(fx, [Effect::Wait(proc_handle())]);
    assert_eq!(c.phase(), Phase::Running);
}

#[test]
fn restart_after_the_work_ended_reports_its_exit() {
    let c = running(container());
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(container(), false, true, Some(2)))),
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Failed]);
    assert_eq!(c.status.err, "task: non-zero exit (2)");
    let c = running(proc_handle());
    let (c, fx) = step(restart(&c), adopted_ev(None), now());
    assert_eq!(reported(&fx), [TaskState::Failed]);
    assert_eq!(c.status.err, "task: ended while the agent was not running");
}

#[test]
fn restart_while_stopping_stops_again_and_ends_shutdown() {
    let c = running(proc_handle());
    let ev = assigned_shutdown(&c);
    let (c, _) = step(c, ev, now());
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(proc_handle(), true, true, None))),
        now(),
    );
    assert_eq!(
        fx,
        [
            Effect::Wait(proc_handle()),
            Effect::Stop {
                handle: proc_handle(),
                grace: grace()
            }
        ]
    );
    let (_, fx) = step(restart(&c), adopted_ev(None), now());
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
}

#[test]
fn restart_after_the_end_was_reported_keeps_it() {
    let c = running(container());
    let (c, _) = step(
        c,
        Event::Exited {
            handle: container(),
            exit: Exit::Code(0),
        },
        now(),
    );
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(container(), false, true, Some(0)))),
        now(),
    );
    assert!(fx.is_empty());
    assert_eq!(c.status.state, TaskState::Complete);
}

#[test]
fn restart_finds_running_work_of_a_task_stopped_meanwhile_and_stops_it() {
    let c = running(proc_handle());
    let mut c = restart(&c);
    c.task.desired_state = TaskState::Shutdown;
    let (c, fx) = step(c, adopted_ev(Some(found(proc_handle(), true, true, None))), now());
    assert!(fx.contains(&Effect::Stop {
        handle: proc_handle(),
        grace: grace()
    }));
    assert_eq!(c.phase(), Phase::Stopping);
}

#[test]
fn found_work_of_unknown_tasks_and_duplicates_is_discarded() {
    let mut a_old = found(container(), false, true, Some(0));
    a_old.task_id = "a".into();
    let mut a_new = found(
        Handle::Container {
            container_id: "c2".into(),
        },
        true,
        true,
        None,
    );
    a_new.task_id = "a".into();
    let mut gone = found(proc_handle(), true, true, None);
    gone.task_id = "gone".into();
    let (mine, discard) = sort_found(|id| id == "a", vec![a_old.clone(), gone.clone(), a_new.clone()]);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine["a"], a_new, "the running one is kept");
    assert_eq!(discard, [gone, a_old]);
}

#[test]
fn a_record_from_before_phases_reads_with_a_derived_phase() {
    let c = running(proc_handle());
    let mut v = serde_json::to_value(&c).unwrap();
    v.as_object_mut().unwrap().remove("phase");
    v["stopping"] = serde_json::json!(false);
    let old: TaskCtl = serde_json::from_value(v).unwrap();
    assert_eq!(old.phase(), Phase::Running);
    let mut ended = old.clone();
    ended.handle = None;
    ended.status.state = TaskState::Complete;
    assert_eq!(ended.phase(), Phase::Ended);
}

fn health_checked(desired: TaskState) -> Task {
    let mut t = task(desired);
    t.spec.container_spec = Some(shoal_shared::model::ContainerSpec {
        healthcheck: Some(serde_json::json!({"Test": ["CMD-SHELL", "true"]})),
        ..Default::default()
    });
    t
}

/// A container start waiting for health is stopped at once (once), not when health is decided.
#[test]
fn a_stop_while_a_container_waits_for_health_stops_it_at_once() {
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(Some(container()))), now());
    assert_eq!(c.phase(), Phase::Starting);
    let ev = assigned_shutdown(&c);
    let (c, fx) = step(c, ev, now());
    let stop = Effect::Stop {
        handle: container(),
        grace: grace(),
    };
    assert_eq!(fx, std::slice::from_ref(&stop));
    // Assigned again (or unassigned): no second stop.
    let ev = assigned_shutdown(&c);
    let (c, fx) = step(c, ev, now());
    assert!(fx.is_empty(), "{fx:?}");
    let (c, fx) = step(c, Event::Unassigned, now());
    assert!(fx.is_empty(), "{fx:?}");
    // The start then completes (its wait cut short), and the end is a shutdown.
    let (c, fx) = step(c, Event::Started(Ok(container())), now());
    assert_eq!(fx, [Effect::Wait(container()), stop]);
    let (_, fx) = step(
        c,
        Event::Exited {
            handle: container(),
            exit: Exit::Code(137),
        },
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Shutdown]);
}

/// A restarted agent does not report a health-gated container running
/// before it looked at its health: the start waits for health again.
#[test]
fn restart_while_a_container_waits_for_health_waits_again() {
    let (c, _) = first_assignment(health_checked(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(Some(container()))), now());
    assert_eq!(c.status.state, TaskState::Starting);
    let (c, fx) = step(
        restart(&c),
        adopted_ev(Some(found(container(), true, true, None))),
        now(),
    );
    assert_eq!(fx, [Effect::Start(Some(container()))]);
    assert_eq!(c.phase(), Phase::Starting);
    // Healthy: running.
    let (ok, fx) = step(c.clone(), Event::Started(Ok(container())), now());
    assert_eq!(reported(&fx), [TaskState::Running]);
    assert_eq!(ok.phase(), Phase::Running);
    // Unhealthy: failed in Docker's words.
    let (bad, fx) = step(
        c,
        Event::Started(Err(ExecError::Failed(crate::health::UNHEALTHY.into()))),
        now(),
    );
    assert_eq!(reported(&fx), [TaskState::Failed]);
    assert_eq!(bad.status.err, crate::health::UNHEALTHY);
    // Already reported running: adopted as it is (its wait watches health).
    let r = running(container());
    let mut r = restart(&r);
    r.task = health_checked(TaskState::Running);
    let (_, fx) = step(r, adopted_ev(Some(found(container(), true, true, None))), now());
    assert_eq!(fx, [Effect::Wait(container())]);
}

#[test]
fn published_ports_are_reported_with_running_and_go_when_the_task_ends() {
    let port: shoal_shared::model::PortConfig = serde_json::from_value(serde_json::json!({
        "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30080, "PublishMode": "host"
    }))
    .unwrap();
    let (c, _) = first_assignment(task(TaskState::Running), now());
    let (c, _) = step(c, Event::Prepared(Ok(Some(container()))), now());
    let (c, fx) = step(c, Event::Published(vec![port.clone()]), now());
    assert!(fx.is_empty(), "{fx:?}");
    let (c, fx) = step(c, Event::Started(Ok(container())), now());
    let running: Vec<&TaskStatus> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Report(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].state, TaskState::Running);
    assert_eq!(
        running[0].port_status.as_ref().map(|p| p.ports.clone()),
        Some(vec![port])
    );
    let (c, _) = step(
        c,
        Event::Exited {
            handle: container(),
            exit: Exit::Code(0),
        },
        now(),
    );
    assert_eq!(c.status.state, TaskState::Complete);
    assert_eq!(c.status.port_status, None);
}
