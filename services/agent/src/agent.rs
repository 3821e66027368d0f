//! The agent actor: a thin shell around the task controller
//! ([`crate::controller`]) and the session logic ([`crate::session`]). It
//! feeds events in (assignments, executor outcomes, what adoption found),
//! performs the effects they return (executor calls, reports, timers), and
//! persists each task once after each step.
//!
//! Tasks keep running while the managers are unreachable: reports queue up
//! and are sent when a dispatcher answers again. A restarted agent first
//! asks its executor for the work of this node (containers by label,
//! processes by environment), gives every known task what was found of it,
//! ends the work of tasks it does not know, and only then opens a session.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use shoal_shared::dispatch::{AgentRequest, AgentResponse, Assignments, StatusUpdate};
use shoal_shared::envelope;
use shoal_shared::model::{NodeDescription, Task, TaskState};
use shoal_shared::{subjects, ShoalError};

use crate::config::ExecutorKind;
use crate::controller::{self, Effect, Event, Phase, TaskCtl};
use crate::db::TaskDb;
use crate::docker::{DockerExecutor, EngineFacts};
use crate::exec::{ExecError, Executor, Found};
use crate::files::Files;
use crate::process::ProcessExecutor;
use crate::session::{Apply, Due, Session};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Failpoint: with `FAILPOINTS=agent-before-running=return`, a started
/// task's outcome is held back for an hour, so a test can kill the agent
/// between the `starting` and `running` reports; `return(MS)` holds it
/// back MS milliseconds, so a test can stop tasks while their start is in flight.
pub const FAIL_BEFORE_RUNNING: &str = "agent-before-running";

/// Asks the agent for its state.
pub struct GetState;

/// What [`GetState`] returns.
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    pub node_id: String,
    pub session: Option<String>,
    /// Task id -> (observed state, desired state, local phase).
    pub tasks: BTreeMap<String, (TaskState, TaskState, Option<Phase>)>,
    pub queued_reports: usize,
}

impl Message for GetState {
    type Result = AgentState;
}

struct Assigned(Assignments);
impl Message for Assigned {
    type Result = ();
}

pub struct Agent {
    node_id: String,
    description: NodeDescription,
    nats: async_nats::Client,
    executor: Arc<dyn Executor>,
    db: Arc<TaskDb>,
    tasks: BTreeMap<String, TaskCtl>,
    /// Children of process tasks this agent started, until waited for.
    children: HashMap<String, tokio::process::Child>,
    /// Finding the executor's work again after a restart; no session until done.
    adopting: bool,
    session: Session,
    /// Task ID -> the `traceparent` its next step continues: the
    /// dispatcher's push of its change, then this agent's last step of it.
    traces: HashMap<String, String>,
    /// Secret and config data of this node's tasks (in memory), and their files.
    files: Arc<Files>,
    /// This host's underlay address, registered as `Node.Status.Addr`.
    addr: String,
}

impl Actor for Agent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.adopt(ctx);
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.tick(ctx));
        ctx.run_interval(Duration::from_millis(100), |act, ctx| act.flush_reports(ctx));
        ctx.run_interval(Duration::from_secs(1), |act, _| act.db.flush());
    }
}

impl Handler<GetState> for Agent {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(AgentState {
            node_id: self.node_id.clone(),
            session: self.session.id().map(str::to_string),
            tasks: self
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), (t.status.state, t.task.desired_state, t.phase)))
                .collect(),
            queued_reports: self.session.queued(),
        })
    }
}

impl StreamHandler<Assigned> for Agent {
    fn handle(&mut self, Assigned(a): Assigned, ctx: &mut Context<Self>) {
        self.assignments(ctx, a);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::error!("agent: assignment subscription ended");
    }
}

impl Agent {
    fn request(&self, req: AgentRequest) -> impl std::future::Future<Output = Result<AgentResponse, ShoalError>> {
        let nats = self.nats.clone();
        async move { envelope::request(&nats, subjects::dispatcher_requests(), &req, REQUEST_TIMEOUT).await }
    }

    // --- The task controller: events in, effects out. ---

    /// Feeds one event to a task's controller and performs what it returns.
    fn feed(&mut self, ctx: &mut Context<Self>, id: &str, event: Event) {
        let Some(ctl) = self.tasks.remove(id) else { return };
        let before = (ctl.handle.clone(), ctl.phase);
        let (ctl, effects) = controller::step(ctl, event, Utc::now());
        self.settle(ctx, ctl, effects, before);
    }

    /// Keeps (and persists) a task after a step, then performs its effects.
    fn settle(
        &mut self,
        ctx: &mut Context<Self>,
        ctl: TaskCtl,
        effects: Vec<Effect>,
        before: (Option<crate::exec::Handle>, Option<Phase>),
    ) {
        let id = ctl.id().to_string();
        let forget = effects.contains(&Effect::Forget);
        if !forget {
            self.db.put(&ctl);
            // What runs the task, its phase and any state about to be
            // reported survive a crash from here on: a report never runs
            // ahead of what a restarted agent would know.
            let reports = effects.iter().any(|e| matches!(e, Effect::Report(_)));
            if reports || (ctl.handle.clone(), ctl.phase) != before {
                self.db.flush();
            }
        }
        let task = ctl.task.clone();
        self.tasks.insert(id.clone(), ctl);
        for effect in effects {
            self.perform(ctx, &id, &task, effect);
        }
    }

    /// A span for one step of task `id`, in the task's trace when it has one;
    /// the task's later steps (and reports) continue from it.
    fn step_span(&mut self, id: &str, span: tracing::Span) -> tracing::Span {
        if let Some(tp) = self.traces.get(id) {
            envelope::continue_traceparent(&span, Some(tp));
            if let Some(mine) = envelope::traceparent(&span) {
                self.traces.insert(id.to_string(), mine);
            }
        }
        span
    }

    fn perform(&mut self, ctx: &mut Context<Self>, id: &str, task: &Task, effect: Effect) {
        use tracing::Instrument;
        let task_id = id.to_string();
        match effect {
            Effect::Prepare => {
                let image = task.spec.container_spec.as_ref().map_or("", |c| c.image.as_str());
                let span = self.step_span(id, tracing::info_span!("agent.prepare", task = %id, image = %image));
                // Swarm's placeholders ({{.Task.Slot}}, ...) are expanded here,
                // per task; a template that does not parse rejects the task.
                let work = match crate::template::expand_task(task, &self.description) {
                    Ok(t) => self.executor.prepare(&t),
                    Err(e) => futures::future::ready(Err(ExecError::Rejected(e))).boxed(),
                };
                work.instrument(span)
                    .into_actor(self)
                    .map(move |res, act, ctx| act.feed(ctx, &task_id, Event::Prepared(res)))
                    .spawn(ctx);
            }
            Effect::Start(prepared) => {
                let span = self.step_span(
                    id,
                    tracing::info_span!("agent.start", task = %id, container_id = tracing::field::Empty, pid = tracing::field::Empty),
                );
                let started_span = span.clone();
                let work = match crate::template::expand_task(task, &self.description) {
                    Ok(t) => self.executor.start(&t, prepared),
                    Err(e) => futures::future::ready(Err(ExecError::Failed(e))).boxed(),
                };
                work.instrument(span)
                    .into_actor(self)
                    .map(move |res, act, ctx| {
                        let mut ports = Vec::new();
                        let res = res.map(|started| {
                            ports = started.ports;
                            match &started.handle {
                                crate::exec::Handle::Container { container_id } => {
                                    started_span.record("container_id", container_id.as_str());
                                }
                                crate::exec::Handle::Process(p) => {
                                    started_span.record("pid", p.pid);
                                }
                            }
                            if let Some(child) = started.child {
                                act.children.insert(task_id.clone(), child);
                            }
                            started.handle
                        });
                        // The bound ports first, so the `running` report carries them.
                        if !ports.is_empty() {
                            act.feed(ctx, &task_id, Event::Published(ports));
                        }
                        let hold = fail::eval(FAIL_BEFORE_RUNNING, |arg| {
                            arg.and_then(|ms| ms.parse::<u64>().ok())
                                .map_or(Duration::from_secs(3600), Duration::from_millis)
                        });
                        if let Some(hold) = hold {
                            tracing::warn!(task = %task_id, ?hold, "agent: failpoint {FAIL_BEFORE_RUNNING}: holding the start back");
                            ctx.run_later(hold, move |act, ctx| {
                                act.feed(ctx, &task_id, Event::Started(res))
                            });
                            return;
                        }
                        act.feed(ctx, &task_id, Event::Started(res))
                    })
                    .spawn(ctx);
            }
            Effect::Wait(handle) => {
                let child = self.children.remove(id);
                let watched = handle.clone();
                self.executor
                    .wait(handle, child)
                    .into_actor(self)
                    .map(move |exit, act, ctx| act.feed(ctx, &task_id, Event::Exited { handle: watched, exit }))
                    .spawn(ctx);
            }
            Effect::Stop { handle, grace } => {
                let span = self.step_span(id, tracing::info_span!("agent.stop", task = %id));
                span.in_scope(|| tracing::info!(task = %id, ?handle, "agent: stopping task"));
                ctx.spawn(self.executor.stop(handle, grace).instrument(span).into_actor(self));
            }
            Effect::Remove => {
                let span = self.step_span(id, tracing::info_span!("agent.remove", task = %id));
                ctx.spawn(self.executor.remove(task).instrument(span).into_actor(self));
            }
            Effect::Report(status) => {
                let trace = self.traces.get(id).cloned();
                self.session.queue(StatusUpdate { task_id, status, trace })
            }
            Effect::RetryAfter(delay) => {
                ctx.run_later(delay, move |act, ctx| act.feed(ctx, &task_id, Event::RetryDue));
            }
            Effect::Forget => {
                self.traces.remove(id);
                self.tasks.remove(id);
                self.children.remove(id);
                self.db.remove(id);
            }
        }
    }

    fn assign(&mut self, ctx: &mut Context<Self>, task: Task) {
        let id = task.meta.id.clone();
        if self.tasks.contains_key(&id) {
            self.feed(ctx, &id, Event::Assigned(Box::new(task)));
        } else {
            let (ctl, effects) = controller::first_assignment(task, Utc::now());
            self.settle(ctx, ctl, effects, (None, None));
        }
    }

    fn assignments(&mut self, ctx: &mut Context<Self>, mut a: Assignments) {
        // A task's work continues the trace it was assigned in, or of a new
        // intent (its desired state changed); a push that only echoes the
        // task's own reports back does not move it to another trace.
        for (id, tp) in std::mem::take(&mut a.traces) {
            let new_intent = match (self.tasks.get(&id), a.tasks.iter().find(|t| t.meta.id == id)) {
                (Some(ctl), Some(t)) => ctl.task.desired_state != t.desired_state,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if new_intent || !self.traces.contains_key(&id) {
                self.traces.insert(id, tp);
            }
        }
        // The data comes with the tasks that need it; kept in memory only.
        self.files
            .hold(std::mem::take(&mut a.secrets), std::mem::take(&mut a.configs));
        self.assignments_applied(ctx, a);
        self.files.retain(self.tasks.values().map(|c| &c.task));
    }

    fn assignments_applied(&mut self, ctx: &mut Context<Self>, a: Assignments) {
        match self.session.assignments(a) {
            Apply::Full(a) => {
                self.apply_full(ctx, a);
                if self.session.full_is_stale() {
                    tracing::info!("agent: newer increments came while the full set was fetched; asking again");
                    self.sync(ctx);
                }
            }
            Apply::Increment(a) => {
                for t in a.tasks {
                    self.assign(ctx, t);
                }
                for id in a.removed {
                    self.feed(ctx, &id, Event::Unassigned);
                }
            }
            Apply::Ignore => {}
            Apply::Resync => {
                tracing::info!("agent: assignment gap; asking for the full set");
                self.sync(ctx);
            }
        }
    }

    fn apply_full(&mut self, ctx: &mut Context<Self>, a: Assignments) {
        let ids: std::collections::BTreeSet<&str> = a.tasks.iter().map(|t| t.meta.id.as_str()).collect();
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.feed(ctx, &id, Event::Unassigned);
        }
        for t in a.tasks {
            self.assign(ctx, t);
        }
    }

    /// Finds what survived a restart and gives every known task what was
    /// found of it. Until done, the agent opens no session.
    fn adopt(&mut self, ctx: &mut Context<Self>) {
        self.adopting = true;
        self.executor
            .find()
            .into_actor(self)
            .map(|found, act, ctx| match found {
                Ok(found) => {
                    act.adopted(ctx, found);
                    act.adopting = false;
                    act.tick(ctx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent: cannot list this node's work; retrying");
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.adopt(ctx));
                }
            })
            .spawn(ctx);
    }

    fn adopted(&mut self, ctx: &mut Context<Self>, found: Vec<Found>) {
        let (mut mine, discard) = controller::sort_found(|id| self.tasks.contains_key(id), found);
        for f in discard {
            tracing::info!(task = %f.task_id, handle = ?f.handle, "agent: ending work of no task of this node");
            ctx.spawn(self.executor.discard(f).into_actor(self));
        }
        let lost = self.executor.lost_reason().to_string();
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let found = mine.remove(&id).or_else(|| {
                let handle = self.tasks[&id].handle.as_ref()?;
                self.executor.probe(handle, &id)
            });
            match &found {
                Some(f) if f.running => match f.handle.container_id() {
                    Some(c) => tracing::info!(task = %id, container = %c, "agent: re-adopted running container"),
                    None => tracing::info!(task = %id, handle = ?f.handle, "agent: re-adopted running task"),
                },
                Some(f) => tracing::info!(task = %id, handle = ?f.handle, "agent: found the ended work of a task"),
                None => {}
            }
            self.feed(
                ctx,
                &id,
                Event::Adopted {
                    found,
                    lost: lost.clone(),
                },
            );
        }
    }

    // --- The session with the dispatcher. ---

    fn tick(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::count_phases(self.tasks.values());
        if self.adopting {
            return;
        }
        match self.session.due(Instant::now()) {
            None => {}
            Some(Due::Register) => self.register(ctx),
            Some(Due::Heartbeat { session_id }) => {
                let req = AgentRequest::Heartbeat {
                    node_id: self.node_id.clone(),
                    session_id: session_id.clone(),
                };
                self.request(req)
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(AgentResponse::HeartbeatOk {
                            heartbeat_period,
                            sequence,
                        }) => {
                            if act.session.heartbeat_ok(heartbeat_period, sequence) {
                                tracing::info!(
                                    sequence,
                                    "agent: assignments still behind the dispatcher's; asking for the full set"
                                );
                                act.sync(ctx);
                            }
                        }
                        Ok(AgentResponse::UnknownSession) => {
                            tracing::info!("agent: session unknown to the dispatcher; registering again");
                            act.session.unknown(&session_id);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "agent: heartbeat not answered"),
                    })
                    .spawn(ctx);
            }
        }
    }

    fn register(&mut self, ctx: &mut Context<Self>) {
        let req = AgentRequest::Register {
            node_id: self.node_id.clone(),
            description: Box::new(self.description.clone()),
            addr: self.addr.clone(),
        };
        self.request(req)
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(AgentResponse::Registered {
                    session_id,
                    heartbeat_period,
                }) => {
                    tracing::info!(session = %session_id, "agent: registered");
                    act.session.registered(session_id, heartbeat_period, Instant::now());
                    act.sync(ctx);
                }
                Ok(other) => {
                    act.session.register_failed();
                    tracing::warn!(?other, "agent: unexpected answer to register");
                }
                Err(e) => {
                    act.session.register_failed();
                    tracing::debug!(error = %e, "agent: no dispatcher answered; keeping tasks running");
                }
            })
            .spawn(ctx);
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        let Some(session_id) = self.session.begin_sync() else {
            return;
        };
        let req = AgentRequest::Sync {
            node_id: self.node_id.clone(),
            session_id: session_id.clone(),
        };
        self.request(req)
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.session.sync_done();
                match res {
                    Ok(AgentResponse::Full { assignments }) => act.assignments(ctx, assignments),
                    Ok(AgentResponse::UnknownSession) => act.session.unknown(&session_id),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "agent: sync failed; retrying");
                        ctx.run_later(Duration::from_millis(500), |act, ctx| act.sync(ctx));
                    }
                }
            })
            .spawn(ctx);
    }

    fn flush_reports(&mut self, ctx: &mut Context<Self>) {
        let Some((session_id, updates)) = self.session.take_reports() else {
            return;
        };
        let req = AgentRequest::Status {
            node_id: self.node_id.clone(),
            session_id: session_id.clone(),
            updates: updates.clone(),
        };
        self.request(req)
            .into_actor(self)
            .map(move |res, act, _ctx| {
                if matches!(res, Ok(AgentResponse::UnknownSession)) {
                    act.session.unknown(&session_id);
                }
                let ok = matches!(res, Ok(AgentResponse::StatusOk));
                if ok {
                    crate::metrics::metrics().reports_sent.inc_by(updates.len() as u64);
                }
                act.session.reports_sent(ok, updates);
            })
            .spawn(ctx);
    }
}

/// The node description the agent registers: the engine's facts with the
/// docker executor (the host's otherwise), the flags overriding capacity and
/// adding labels.
pub fn describe(config: &crate::Config, engine: Option<&EngineFacts>) -> NodeDescription {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1);
    let mem = shoal_shared::procfs::mem_total_bytes();
    let flag_labels = config
        .labels
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let (platform, nano_cpus, memory_bytes, mut engine_desc) = match engine {
        Some(f) => (
            shoal_shared::model::Platform {
                architecture: f.architecture.clone(),
                os: f.os.clone(),
            },
            f.nano_cpus,
            f.memory_bytes,
            f.engine.clone(),
        ),
        None => (
            shoal_shared::model::Platform {
                architecture: std::env::consts::ARCH.to_string(),
                os: std::env::consts::OS.to_string(),
            },
            cpus * 1_000_000_000,
            mem,
            shoal_shared::model::EngineDescription {
                engine_version: format!("shoal-agent {}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            },
        ),
    };
    engine_desc.labels.extend(flag_labels);
    NodeDescription {
        hostname: config.node_name.clone(),
        platform,
        resources: shoal_shared::model::Resources {
            generic_resources: Vec::new(),
            nano_cpus: config.nano_cpus.unwrap_or(nano_cpus),
            memory_bytes: config.memory_bytes.unwrap_or(memory_bytes),
        },
        engine: engine_desc,
        tls_info: None,
    }
}

/// Opens the task database, subscribes to this node's assignments and starts the agent.
pub async fn start(config: &crate::Config, nats: async_nats::Client) -> anyhow::Result<Addr<Agent>> {
    let node_id = config.resolve_node_id()?;
    let db = Arc::new(TaskDb::open(&config.data_dir)?);
    let tasks: BTreeMap<String, TaskCtl> = db.load()?.into_iter().map(|t| (t.task.meta.id.clone(), t)).collect();
    let secrets_dir = config
        .secrets_dir
        .clone()
        .unwrap_or_else(|| Files::default_root(&node_id));
    if !crate::files::on_tmpfs(secrets_dir.parent().unwrap_or(&secrets_dir)) && !crate::files::on_tmpfs(&secrets_dir) {
        tracing::warn!(dir = %secrets_dir.display(), "agent: the secrets directory is not on a tmpfs; tasks that use secrets will be rejected");
    }
    let files = Arc::new(Files::new(secrets_dir));
    let net = match config.overlay {
        true => match crate::net::NetHost::start(nats.clone(), &node_id, &config.data_dir).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "agent: overlay networks unavailable on this host");
                None
            }
        },
        false => None,
    };
    // The underlay address other hosts reach this one at: the flag, else
    // the address the NATS server sees this connection come from.
    let addr = config.advertise_ip().map(|a| a.to_string()).unwrap_or_else(|| {
        Some(nats.server_info().client_ip)
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into())
    });
    if config.advertise_ip().is_none() && addr.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback()) {
        tracing::info!(%addr, "agent: a loopback underlay address (NATS is local): fine on one host; with several, set --advertise-addr / SHOAL_ADVERTISE_ADDR or other hosts' overlay traffic cannot reach this one");
    }
    let (executor, engine, facts): (Arc<dyn Executor>, _, _) = match config.executor {
        ExecutorKind::Process => (
            Arc::new(ProcessExecutor::with_logs(
                &node_id,
                crate::logs::files_dir(&config.data_dir),
            )),
            None,
            None,
        ),
        ExecutorKind::Docker => {
            let mut d = DockerExecutor::connect(&node_id, files.clone())
                .await
                .map_err(anyhow::Error::msg)?;
            if let Some(net) = &net {
                d = d.with_networks(net.clone(), config.sandbox_image.clone());
            }
            let facts = d.facts().await.map_err(anyhow::Error::msg)?;
            (Arc::new(d.clone()), Some(d), Some(facts))
        }
    };
    let logs = match &engine {
        Some(d) => crate::logs::LogSource::Engine(d.clone()),
        None => crate::logs::LogSource::Files {
            dir: crate::logs::files_dir(&config.data_dir),
            db: db.clone(),
        },
    };
    crate::logs::serve(nats.clone(), &node_id, logs).await?;
    crate::image::serve(nats.clone(), node_id.clone(), engine).await?;
    let sub = nats.subscribe(subjects::agent_assignments(&node_id)).await?;
    nats.flush().await?;
    let description = describe(config, facts.as_ref());
    files.set_node(description.clone());
    tracing::info!(node = %node_id, tasks = tasks.len(), executor = ?config.executor, "agent starting");
    Ok(Agent::create(move |ctx| {
        ctx.add_stream(sub.filter_map(|m| async move {
            match envelope::decode::<Assignments>(&m.payload) {
                Ok(a) => Some(Assigned(a)),
                Err(e) => {
                    tracing::warn!(error = %e, "agent: bad assignment message");
                    None
                }
            }
        }));
        Agent {
            node_id,
            description,
            nats,
            executor: Arc::new(crate::metrics::Timed(executor)),
            db,
            tasks,
            children: HashMap::new(),
            adopting: true,
            session: Session::default(),
            traces: HashMap::new(),
            files,
            addr,
        }
    }))
}
