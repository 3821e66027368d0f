//! Dispatcher benchmark: N simulated agents (default 10,000; first argument)
//! register with a real `shoal-dispatcher` over NATS and heartbeat at the
//! default period (5 s), spread evenly. Measures the dispatcher's CPU over
//! six periods and counts nodes wrongly marked down. Prints figures; asserts
//! nothing. Run by `ops/bench/dispatcher`.
//! Last line: `bench dispatcher nodes=<n> cpu_pct=<x> false_down=<k>`.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_shared::dispatch::{AgentRequest, AgentResponse};
use shoal_shared::model::{Node, NodeDescription, NodeState, Resources};
use shoal_shared::store::ListFilter;
use shoal_shared::{envelope, procfs, subjects};
use shoal_tests::{bin, Proc, StoreCluster};

const PERIOD: Duration = Duration::from_secs(5);
const MEASURE_PERIODS: u32 = 6;

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let ticks = procfs::Stat::read(pid).map_or(0, |s| s.utime + s.stime);
    ticks as f64 / 100.0
}

async fn call(nats: &async_nats::Client, req: &AgentRequest) -> Option<AgentResponse> {
    envelope::request(nats, subjects::dispatcher_requests(), req, Duration::from_secs(5))
        .await
        .ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let c = StoreCluster::start(1, &[]);
    let client = c.client().await.with_deadline(Duration::from_secs(30));
    c.leader(&client, &[], Duration::from_secs(30)).await;
    let mut cmd = Command::new(bin("shoal-dispatcher"));
    cmd.env("SHOAL_LOG", "warn")
        .args(["--nats-url", &c.nats.url(), "--store-replica", "1"]);
    let disp = Proc::spawn("dispatcher", cmd, &c.dir.path().join("dispatcher.log"));
    let pid = disp.pid().as_raw();
    let nats = c.nats.client().await;

    // Register every agent (the dispatcher answers once it sees it leads).
    let started = Instant::now();
    let sessions: Vec<(String, String)> = futures::stream::iter((0..n).map(|i| {
        let nats = nats.clone();
        async move {
            let node_id = shoal_shared::id::new_id();
            let req = AgentRequest::Register {
                node_id: node_id.clone(),
                description: Box::new(NodeDescription {
                    hostname: format!("sim-{i:05}"),
                    resources: Resources {
                        generic_resources: Vec::new(),
                        nano_cpus: 4_000_000_000,
                        memory_bytes: 8 << 30,
                    },
                    ..NodeDescription::default()
                }),
                addr: "127.0.0.1".into(),
            };
            loop {
                if let Some(AgentResponse::Registered { session_id, .. }) = call(&nats, &req).await {
                    return (node_id, session_id);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }))
    .buffer_unordered(256)
    .collect()
    .await;
    println!("{n} agents registered in {:.1} s", started.elapsed().as_secs_f64());
    loop {
        let nodes = client.list::<Node>(ListFilter::default()).await.unwrap_or_default();
        let ready = nodes.iter().filter(|x| x.status.state == NodeState::Ready).count();
        if ready == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{n} nodes ready in the store after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Heartbeats: agent i beats at offset i * PERIOD / n within every period.
    let unknown = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(sessions);
    let beats = {
        let (nats, unknown, failed, sessions) = (nats.clone(), unknown.clone(), failed.clone(), sessions.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut next = 0usize;
            let mut round = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let elapsed = t0.elapsed();
                while round < u32::MAX {
                    let due = PERIOD * round + PERIOD.mul_f64(next as f64 / n as f64);
                    if due > elapsed {
                        break;
                    }
                    let (node_id, session_id) = sessions[next].clone();
                    let (nats, unknown, failed) = (nats.clone(), unknown.clone(), failed.clone());
                    tokio::spawn(async move {
                        match call(&nats, &AgentRequest::Heartbeat { node_id, session_id }).await {
                            Some(AgentResponse::HeartbeatOk { .. }) => {}
                            Some(_) => {
                                unknown.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                    next += 1;
                    if next == n {
                        next = 0;
                        round += 1;
                    }
                }
            }
        })
    };
    // Let one period pass, then measure.
    tokio::time::sleep(PERIOD).await;
    let (cpu0, wall0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(PERIOD * MEASURE_PERIODS).await;
    let (cpu1, wall) = (cpu_seconds(pid), wall0.elapsed().as_secs_f64());
    beats.abort();
    let nodes = client.list::<Node>(ListFilter::default()).await.unwrap_or_default();
    let down = nodes.iter().filter(|x| x.status.state != NodeState::Ready).count();
    let cpu_pct = (cpu1 - cpu0) / wall * 100.0;
    println!(
        "over {wall:.1} s: dispatcher CPU {:.2} s = {cpu_pct:.1}% of one core ({:.2}% per 1,000 nodes); {} heartbeats/s",
        cpu1 - cpu0,
        cpu_pct / (n as f64 / 1000.0),
        n as f64 / PERIOD.as_secs_f64()
    );
    println!(
        "heartbeats answered unknown-session: {}, unanswered: {}; nodes not ready: {down}",
        unknown.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    drop(disp);
    println!("bench dispatcher nodes={n} cpu_pct={cpu_pct:.1} false_down={down}");
}
