//! Simulated agents: each registers with the cluster's dispatcher as a node
//! of its own (engine label `shoal.load=<run>`), heartbeats at the period
//! the dispatcher gives, spread evenly over it, and, when asked to, reports
//! every task it is assigned as running (and as shut down once its desired
//! state is past running), as a real agent whose tasks start at once would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_shared::dispatch::{AgentRequest, AgentResponse, Assignments, StatusUpdate};
use shoal_shared::model::{NodeDescription, Resources, TaskState, TaskStatus};
use shoal_shared::store::Kind;
use shoal_shared::{envelope, subjects};

use super::{Ctx, Stats, LABEL};

/// What the simulated agents saw.
#[derive(Default)]
pub struct SimStats {
    /// Heartbeats answered OK, with their latency.
    pub beats: Stats,
    /// Status reports answered OK, with their latency.
    pub reports: Stats,
    /// Answers `unknown session` (the agent registered again).
    pub unknown: AtomicU64,
    /// Task states reported.
    pub reported: AtomicU64,
}

pub struct SimAgents {
    pub nodes: Vec<String>,
    pub stats: Arc<SimStats>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

async fn call(nats: &async_nats::Client, req: &AgentRequest) -> Option<AgentResponse> {
    envelope::request(nats, subjects::dispatcher_requests(), req, Duration::from_secs(5))
        .await
        .ok()
}

fn description(ctx: &Ctx, i: usize) -> Box<NodeDescription> {
    let mut d = NodeDescription {
        hostname: ctx.name(format!("node-{i}")),
        resources: Resources {
            nano_cpus: 4_000_000_000,
            memory_bytes: 8 << 30,
            ..Resources::default()
        },
        ..NodeDescription::default()
    };
    d.engine.labels.insert(LABEL.into(), ctx.run.clone());
    Box::new(d)
}

/// Registers until the dispatcher answers; returns the session and heartbeat period.
async fn register(nats: &async_nats::Client, req: &AgentRequest) -> Result<(String, Duration), String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(AgentResponse::Registered {
            session_id,
            heartbeat_period,
        }) = call(nats, req).await
        {
            return Ok((session_id, heartbeat_period));
        }
        if Instant::now() >= until {
            return Err("no dispatcher answered a registration for 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl SimAgents {
    /// Registers `n` agents (64 at a time) and starts their loops.
    pub async fn start(ctx: &Arc<Ctx>, n: usize, report: bool) -> Result<SimAgents, String> {
        let stats = Arc::new(SimStats::default());
        let started = Instant::now();
        let registered: Vec<Result<_, String>> = futures::stream::iter((0..n).map(|i| {
            let ctx = ctx.clone();
            async move {
                let node_id = shoal_shared::id::new_id();
                ctx.created(Kind::Node, &node_id);
                // Subscribe first: the full set follows the registration at once.
                let sub = if report {
                    Some(
                        ctx.nats
                            .subscribe(subjects::agent_assignments(&node_id))
                            .await
                            .map_err(|e| format!("subscribing: {e}"))?,
                    )
                } else {
                    None
                };
                let req = AgentRequest::Register {
                    node_id: node_id.clone(),
                    description: description(&ctx, i),
                    addr: "127.0.0.1".into(),
                };
                let (session, period) = register(&ctx.nats, &req).await?;
                Ok((i, node_id, req, session, period, sub))
            }
        }))
        .buffer_unordered(64)
        .collect()
        .await;
        let mut handles = Vec::new();
        let mut nodes = Vec::new();
        for r in registered {
            let (i, node_id, req, session, period, sub) = r?;
            nodes.push(node_id.clone());
            let offset = period.mul_f64(i as f64 / n.max(1) as f64);
            handles.push(tokio::spawn(agent_loop(
                ctx.nats.clone(),
                stats.clone(),
                req,
                session,
                period,
                offset,
                sub,
            )));
        }
        println!(
            "{n} simulated agents registered in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(SimAgents { nodes, stats, handles })
    }

    /// Ends every simulated agent (their nodes are left to the cleanup).
    pub fn stop(self) {
        for h in self.handles {
            h.abort();
        }
    }
}

async fn agent_loop(
    nats: async_nats::Client,
    stats: Arc<SimStats>,
    register_req: AgentRequest,
    mut session: String,
    mut period: Duration,
    offset: Duration,
    mut sub: Option<async_nats::Subscriber>,
) {
    let node_id = register_req.node_id().to_string();
    // The last state reported per task.
    let mut reported: HashMap<String, TaskState> = HashMap::new();
    let mut next_beat = tokio::time::Instant::now() + offset;
    loop {
        let assignment = async {
            match sub.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat += period;
                let t = Instant::now();
                let req = AgentRequest::Heartbeat { node_id: node_id.clone(), session_id: session.clone() };
                match call(&nats, &req).await {
                    Some(AgentResponse::HeartbeatOk { heartbeat_period, .. }) => {
                        stats.beats.ok(t.elapsed());
                        period = heartbeat_period;
                    }
                    Some(AgentResponse::UnknownSession) => {
                        stats.unknown.fetch_add(1, Ordering::Relaxed);
                        if let Ok((s, p)) = register(&nats, &register_req).await {
                            session = s;
                            period = p;
                            reported.clear();
                        }
                    }
                    _ => stats.beats.failed(),
                }
            }
            msg = assignment => {
                let Some(msg) = msg else { return };
                let Ok(a) = envelope::decode::<Assignments>(&msg.payload) else { continue };
                let mut updates = Vec::new();
                for t in &a.tasks {
                    let want = if t.desired_state <= TaskState::Running { TaskState::Running } else { TaskState::Shutdown };
                    let seen = reported.get(&t.meta.id).copied().unwrap_or(t.status.state);
                    if seen < want {
                        reported.insert(t.meta.id.clone(), want);
                        updates.push(StatusUpdate {
                            task_id: t.meta.id.clone(),
                            status: TaskStatus {
                                timestamp: chrono::Utc::now(),
                                state: want,
                                message: if want == TaskState::Running { "started".into() } else { "shutdown".into() },
                                ..TaskStatus::default()
                            },
                            trace: None,
                        });
                    }
                }
                for id in &a.removed {
                    reported.remove(id);
                }
                if updates.is_empty() {
                    continue;
                }
                let n = updates.len() as u64;
                let t = Instant::now();
                let req = AgentRequest::Status { node_id: node_id.clone(), session_id: session.clone(), updates };
                match call(&nats, &req).await {
                    Some(AgentResponse::StatusOk) => {
                        stats.reports.ok(t.elapsed());
                        stats.reported.fetch_add(n, Ordering::Relaxed);
                    }
                    _ => stats.reports.failed(),
                }
            }
        }
    }
}
