//! `shoal load scheduler`: N simulated nodes (registered with the dispatcher
//! and heartbeating, so they stay ready) and one service of M replicas that
//! only they can take (`engine.labels.shoal.load==<run>`), written straight
//! to the store; measures the time until the scheduler has placed and
//! committed all M tasks. The nodes report nothing, so only placement is
//! measured.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_shared::model::{
    ContainerSpec, Placement, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, Task, TaskSpec,
    TaskState,
};
use shoal_shared::store::{Kind, ListFilter};

use super::sim::SimAgents;
use super::{Cleanup, Ctx, LABEL};

/// A service of `replicas` tasks running `sleep 3600` (busybox, or a host
/// process with the process executor), placed only on nodes with this run's
/// engine label; created in the store, as the API would after validation.
pub async fn create_service(ctx: &Ctx, suffix: &str, replicas: u64) -> Result<Service, String> {
    let spec = ServiceSpec {
        name: ctx.name(suffix),
        labels: ctx.labels(),
        task_template: TaskSpec {
            container_spec: Some(ContainerSpec {
                image: "busybox:latest".into(),
                command: vec!["sleep".into()],
                args: vec!["3600".into()],
                labels: ctx.labels(),
                ..ContainerSpec::default()
            }),
            restart_policy: Some(RestartPolicy {
                condition: Some(RestartCondition::None),
                ..RestartPolicy::default()
            }),
            placement: Some(Placement {
                constraints: vec![format!("engine.labels.{LABEL}=={}", ctx.run)],
                ..Placement::default()
            }),
            ..TaskSpec::default()
        },
        mode: ServiceMode::replicated(replicas),
        ..ServiceSpec::default()
    };
    let id = shoal_shared::id::new_id();
    ctx.created(Kind::Service, &id);
    ctx.store
        .create(&Service::new(id, spec))
        .await
        .map_err(|e| format!("creating the service: {e}"))
}

/// Which tasks a run waits for: `count` tasks of `service`, wanted running,
/// that reached `state` (at least) on one of `nodes`.
pub struct Want<'a> {
    pub service: &'a str,
    pub nodes: &'a HashSet<String>,
    pub state: TaskState,
    pub count: u64,
}

/// How many tasks are as `want` says.
pub async fn tasks_at(ctx: &Ctx, want: &Want<'_>) -> Result<usize, String> {
    let tasks: Vec<Task> = ctx
        .store
        .list(ListFilter::default().field("service", want.service.to_string()))
        .await
        .map_err(|e| format!("listing tasks: {e}"))?;
    Ok(tasks
        .iter()
        .filter(|t| {
            t.desired_state <= TaskState::Running
                && t.status.state >= want.state
                && t.status.state <= TaskState::Running
                && want.nodes.contains(&t.node_id)
        })
        .count())
}

/// Polls until the tasks are as `want` says, printing progress every
/// second; returns the seconds it took from `t0`, or an error after `limit`.
pub async fn wait_tasks(ctx: &Ctx, what: &str, want: &Want<'_>, t0: Instant, limit: Duration) -> Result<f64, String> {
    let (state, count) = (want.state, want.count);
    let mut last_print = Instant::now();
    loop {
        let n = tasks_at(ctx, want).await? as u64;
        if n >= count {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "{what}: only {n} of {count} tasks {state} after {} s",
                limit.as_secs()
            ));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            println!(
                "{what}: {:.0} s: {n} of {count} tasks {state}",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(ctx: &Arc<Ctx>, nodes: usize, tasks: u64, cleanup: &mut Cleanup) -> Result<String, String> {
    if nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let sims = SimAgents::start(ctx, nodes, false).await?;
    let ids: HashSet<String> = sims.nodes.iter().cloned().collect();
    cleanup.sims = Some(sims);
    let t0 = Instant::now();
    let svc = create_service(ctx, "svc", tasks).await?;
    let limit = Duration::from_secs_f64(ctx.seconds.max(60.0));
    let secs = wait_tasks(
        ctx,
        "scheduler",
        &Want {
            service: &svc.meta.id,
            nodes: &ids,
            state: TaskState::Assigned,
            count: tasks,
        },
        t0,
        limit,
    )
    .await?;
    println!("scheduler: {tasks} tasks placed on {nodes} nodes and committed in {secs:.2} s");
    Ok(format!(
        "load scheduler nodes={nodes} tasks={tasks} seconds={secs:.2} tasks_per_s={:.0}",
        tasks as f64 / secs
    ))
}
