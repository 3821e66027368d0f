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

/// This service's tasks that are wanted running and have reached `state`
/// (at least) on one of `nodes`.
pub async fn tasks_at(ctx: &Ctx, service: &str, nodes: Option<&HashSet<String>>, state: TaskState) -> Result<usize, String> {
    let tasks: Vec<Task> = ctx
        .store
        .list(ListFilter::default().field("service", service.to_string()))
        .await
        .map_err(|e| format!("listing tasks: {e}"))?;
    Ok(tasks
        .iter()
        .filter(|t| {
            t.desired_state <= TaskState::Running
                && t.status.state >= state
                && t.status.state <= TaskState::Running
                && !t.node_id.is_empty()
                && nodes.is_none_or(|n| n.contains(&t.node_id))
        })
        .count())
}

/// Polls until `want` tasks of `service` reached `state`, printing progress
/// every second; returns the seconds it took from `t0`.
pub async fn wait_tasks(
    ctx: &Ctx,
    what: &str,
    service: &str,
    nodes: Option<&HashSet<String>>,
    state: TaskState,
    want: u64,
    t0: Instant,
    limit: Duration,
) -> Result<f64, String> {
    let mut last_print = Instant::now();
    loop {
        let n = tasks_at(ctx, service, nodes, state).await? as u64;
        if n >= want {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > limit {
            return Err(format!("{what}: only {n} of {want} tasks {state} after {} s", limit.as_secs()));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            println!("{what}: {:.0} s: {n} of {want} tasks {state}", t0.elapsed().as_secs_f64());
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
    let secs = wait_tasks(ctx, "scheduler", &svc.meta.id, Some(&ids), TaskState::Assigned, tasks, t0, limit).await?;
    println!("scheduler: {tasks} tasks placed on {nodes} nodes and committed in {secs:.2} s");
    Ok(format!(
        "load scheduler nodes={nodes} tasks={tasks} seconds={secs:.2} tasks_per_s={:.0}",
        tasks as f64 / secs
    ))
}
