//! `shoal load dispatcher`: N simulated agents register, heartbeat for
//! `--seconds` and report the M tasks of one service (placed on them by the
//! cluster's scheduler) as running. Measures registration, the time until
//! the dispatcher has written all M running, heartbeat latency, and counts
//! the simulated nodes the dispatcher wrongly marked down; with
//! `--dispatcher-pid`, its CPU use.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_shared::model::{Node, NodeState, TaskState};
use shoal_shared::procfs;
use shoal_shared::store::ListFilter;

use super::scheduler::{create_service, wait_tasks, Want};
use super::sim::SimAgents;
use super::{Cleanup, Ctx};

/// utime + stime of a process, in seconds (clock ticks of 1/100 s).
fn cpu_seconds(pid: i32) -> Option<f64> {
    procfs::Stat::read(pid).map(|s| (s.utime + s.stime) as f64 / 100.0)
}

pub async fn run(
    ctx: &Arc<Ctx>,
    agents: usize,
    tasks: u64,
    pid: Option<i32>,
    cleanup: &mut Cleanup,
) -> Result<String, String> {
    if agents == 0 {
        return Err("--agents must be at least 1".into());
    }
    let t0 = Instant::now();
    let cpu0 = pid.and_then(cpu_seconds);
    let sims = SimAgents::start(ctx, agents, true).await?;
    let register_s = t0.elapsed().as_secs_f64();
    let ids: HashSet<String> = sims.nodes.iter().cloned().collect();
    let stats = sims.stats.clone();
    cleanup.sims = Some(sims);
    let mut running_s = 0.0;
    if tasks > 0 {
        let t1 = Instant::now();
        let svc = create_service(ctx, "svc", tasks).await?;
        let limit = Duration::from_secs(120);
        running_s = wait_tasks(
            ctx,
            "dispatcher",
            &Want {
                service: &svc.meta.id,
                nodes: &ids,
                state: TaskState::Running,
                count: tasks,
            },
            t1,
            limit,
        )
        .await?;
        println!("dispatcher: {tasks} tasks reported and written running in {running_s:.2} s");
    }
    // Heartbeat for the rest of --seconds: a node whose heartbeats the
    // dispatcher missed for three periods shows as marked down.
    let until = t0 + ctx.duration();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < until {
        tick.tick().await;
        println!(
            "dispatcher: {:.0} s: {} heartbeats ({} failed), {} reports, {} unknown-session",
            t0.elapsed().as_secs_f64(),
            stats.beats.count(),
            stats.beats.failures(),
            stats.reports.count(),
            stats.unknown.load(Ordering::Relaxed)
        );
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) / wall * 100.0),
        _ => "n/a".to_string(),
    };
    let nodes: Vec<Node> = ctx
        .store
        .list(ListFilter::default())
        .await
        .map_err(|e| format!("listing nodes: {e}"))?;
    let false_down = nodes
        .iter()
        .filter(|n| ids.contains(&n.meta.id) && n.status.state != NodeState::Ready)
        .count();
    let missing = ids.len() - nodes.iter().filter(|n| ids.contains(&n.meta.id)).count();
    println!(
        "dispatcher: {agents} agents over {wall:.1} s: {} heartbeats, {} failed, {} unknown-session; {false_down} nodes not ready, {missing} missing",
        stats.beats.count(),
        stats.beats.failures(),
        stats.unknown.load(Ordering::Relaxed)
    );
    Ok(format!(
        "load dispatcher agents={agents} tasks={tasks} register_s={register_s:.2} running_s={running_s:.2} heartbeats={} hb_p50_ms={:.1} hb_p99_ms={:.1} hb_failed={} unknown_session={} false_down={} cpu_pct={cpu}",
        stats.beats.count(),
        stats.beats.percentile_ms(50.0),
        stats.beats.percentile_ms(99.0),
        stats.beats.failures(),
        stats.unknown.load(Ordering::Relaxed),
        false_down + missing,
    ))
}
