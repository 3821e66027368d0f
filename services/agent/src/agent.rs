//! The agent actor: a session with the dispatcher (register, heartbeat,
//! assignments, status reports) and a controller per task driving it
//! through SwarmKit's states with the node's executor (process or docker).
//!
//! Tasks keep running while the managers are unreachable: reports queue up
//! and are sent when a dispatcher answers again. Every observed state is
//! written to the task database first, so a restarted agent re-adopts its
//! running processes (PID + start time) or containers (found by label),
//! reports what happened while it was away, and stops whatever it is no
//! longer assigned. Containers of tasks it does not know are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use futures::StreamExt;
use shoal_shared::dispatch::{AgentRequest, AgentResponse, AssignmentKind, Assignments, StatusUpdate};
use shoal_shared::envelope;
use shoal_shared::model::{ContainerStatus, NodeDescription, Task, TaskState, TaskStatus};
use shoal_shared::{subjects, ShoalError};

use crate::config::ExecutorKind;
use crate::db::{LocalTask, TaskDb};
use crate::docker::{DockerExecutor, EngineFacts, Found};
use crate::executor::{self, Executor, Exit, Handle};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the agent for its state.
pub struct GetState;

/// What [`GetState`] returns.
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    pub node_id: String,
    pub session: Option<String>,
    /// Task id -> (observed state, desired state, PID of a process task).
    pub tasks: BTreeMap<String, (TaskState, TaskState, Option<i32>)>,
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
    executor: Executor,
    db: Arc<TaskDb>,
    tasks: BTreeMap<String, LocalTask>,
    /// Tasks with a prepare or start in flight.
    busy: BTreeSet<String>,
    /// Finding the executor's work again after a restart; no session until done.
    adopting: bool,
    session: Option<String>,
    last_seq: Option<u64>,
    period: Duration,
    last_heartbeat: Option<Instant>,
    registering: bool,
    syncing: bool,
    outbox: Vec<StatusUpdate>,
    sending: bool,
}

impl Actor for Agent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.adopt(ctx);
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.tick(ctx));
        ctx.run_interval(Duration::from_millis(100), |act, ctx| act.flush_reports(ctx));
        ctx.run_interval(Duration::from_secs(1), |act, _| act.db.flush());
        self.tick(ctx);
    }
}

impl Handler<GetState> for Agent {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(AgentState {
            node_id: self.node_id.clone(),
            session: self.session.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|(id, t)| {
                    (
                        id.clone(),
                        (
                            t.status.state,
                            t.task.desired_state,
                            t.handle.as_ref().and_then(Handle::pid),
                        ),
                    )
                })
                .collect(),
            queued_reports: self.outbox.len(),
        })
    }
}

impl StreamHandler<Assigned> for Agent {
    fn handle(&mut self, Assigned(a): Assigned, ctx: &mut Context<Self>) {
        if self.session.as_deref() != Some(a.session_id.as_str()) {
            return;
        }
        match (a.kind, self.last_seq) {
            (AssignmentKind::Full, last) if last.is_none_or(|l| a.sequence > l) => self.apply_full(ctx, a),
            (AssignmentKind::Incremental, Some(l)) if a.sequence == l + 1 => {
                self.last_seq = Some(a.sequence);
                for t in a.tasks {
                    self.apply_task(ctx, t);
                }
                for id in a.removed {
                    self.unassign(ctx, &id);
                }
            }
            (AssignmentKind::Incremental, Some(l)) if a.sequence <= l => {}
            _ => {
                tracing::info!(seq = a.sequence, last = ?self.last_seq, "agent: assignment gap; asking for the full set");
                self.sync(ctx);
            }
        }
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

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.adopting {
            return;
        }
        match &self.session {
            None => self.register(ctx),
            Some(s) => {
                if self.last_heartbeat.is_none_or(|t| t.elapsed() >= self.period) {
                    self.last_heartbeat = Some(Instant::now());
                    let req = AgentRequest::Heartbeat {
                        node_id: self.node_id.clone(),
                        session_id: s.clone(),
                    };
                    let sent_for = s.clone();
                    self.request(req)
                        .into_actor(self)
                        .map(move |res, act, _ctx| match res {
                            Ok(AgentResponse::HeartbeatOk { heartbeat_period }) => act.period = heartbeat_period,
                            Ok(AgentResponse::UnknownSession) if act.session.as_deref() == Some(sent_for.as_str()) => {
                                tracing::info!("agent: session unknown to the dispatcher; registering again");
                                act.session = None;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "agent: heartbeat not answered"),
                        })
                        .spawn(ctx);
                }
            }
        }
    }

    fn register(&mut self, ctx: &mut Context<Self>) {
        if self.registering {
            return;
        }
        self.registering = true;
        let req = AgentRequest::Register {
            node_id: self.node_id.clone(),
            description: Box::new(self.description.clone()),
            addr: "127.0.0.1".into(),
        };
        self.request(req)
            .into_actor(self)
            .map(|res, act, ctx| {
                act.registering = false;
                match res {
                    Ok(AgentResponse::Registered {
                        session_id,
                        heartbeat_period,
                    }) => {
                        tracing::info!(session = %session_id, "agent: registered");
                        act.session = Some(session_id);
                        act.period = heartbeat_period;
                        act.last_seq = None;
                        act.last_heartbeat = Some(Instant::now());
                        act.sync(ctx);
                    }
                    Ok(other) => tracing::warn!(?other, "agent: unexpected answer to register"),
                    Err(e) => tracing::debug!(error = %e, "agent: no dispatcher answered; keeping tasks running"),
                }
            })
            .spawn(ctx);
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        let Some(session_id) = self.session.clone() else { return };
        if self.syncing {
            return;
        }
        self.syncing = true;
        let req = AgentRequest::Sync {
            node_id: self.node_id.clone(),
            session_id,
        };
        self.request(req)
            .into_actor(self)
            .map(|res, act, ctx| {
                act.syncing = false;
                match res {
                    Ok(AgentResponse::Full { assignments }) => {
                        if act.session.as_deref() == Some(assignments.session_id.as_str()) {
                            act.apply_full(ctx, assignments);
                        }
                    }
                    Ok(AgentResponse::UnknownSession) => act.session = None,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "agent: sync failed; retrying");
                        ctx.run_later(Duration::from_millis(500), |act, ctx| act.sync(ctx));
                    }
                }
            })
            .spawn(ctx);
    }

    fn apply_full(&mut self, ctx: &mut Context<Self>, a: Assignments) {
        self.last_seq = Some(a.sequence);
        let ids: BTreeSet<String> = a.tasks.iter().map(|t| t.meta.id.clone()).collect();
        let gone: Vec<String> = self.tasks.keys().filter(|id| !ids.contains(*id)).cloned().collect();
        for id in gone {
            self.unassign(ctx, &id);
        }
        for t in a.tasks {
            self.apply_task(ctx, t);
        }
    }

    fn report(&mut self, id: &str, state: TaskState, message: &str, err: String, exit_code: Option<i64>) {
        let Some(lt) = self.tasks.get_mut(id) else { return };
        if state < lt.status.state {
            return;
        }
        lt.status = TaskStatus {
            timestamp: Utc::now(),
            state,
            message: message.to_string(),
            err,
            container_status: Some(ContainerStatus {
                container_id: lt.handle.as_ref().and_then(Handle::container_id).map(str::to_string),
                pid: lt.handle.as_ref().and_then(Handle::pid).map(i64::from),
                exit_code,
            }),
            port_status: None,
        };
        self.db.put(lt);
        self.outbox.push(StatusUpdate {
            task_id: id.to_string(),
            status: lt.status.clone(),
        });
    }

    fn apply_task(&mut self, ctx: &mut Context<Self>, t: Task) {
        let id = t.meta.id.clone();
        let desired = t.desired_state;
        let store_state = t.status.state;
        match self.tasks.get_mut(&id) {
            Some(lt) => {
                lt.task = t;
                lt.unassigned = false;
                self.db.put(lt);
                if store_state < lt.status.state {
                    // The managers missed a report (e.g. while unreachable): send it again.
                    let status = lt.status.clone();
                    self.outbox.push(StatusUpdate {
                        task_id: id.clone(),
                        status,
                    });
                }
            }
            None => {
                let lt = LocalTask {
                    status: t.status.clone(),
                    task: t,
                    handle: None,
                    stopping: false,
                    unassigned: false,
                };
                self.db.put(&lt);
                self.tasks.insert(id.clone(), lt);
                // The store says it runs here, but this agent never saw it (its database was lost).
                let should_run = (TaskState::Starting..=TaskState::Running).contains(&store_state);
                if should_run && desired <= TaskState::Running {
                    self.report(
                        &id,
                        TaskState::Failed,
                        "lost",
                        "task: not found on this node".into(),
                        None,
                    );
                    return;
                }
            }
        }
        if desired > TaskState::Running {
            self.stop(ctx, &id);
        } else {
            self.start(ctx, &id);
        }
    }

    /// Finds what survived a restart: processes by PID + start time,
    /// containers by label. Until done, the agent opens no session.
    fn adopt(&mut self, ctx: &mut Context<Self>) {
        match self.executor.clone() {
            Executor::Process => {
                let loaded: Vec<(String, Option<Handle>)> = self
                    .tasks
                    .iter()
                    .map(|(id, t)| (id.clone(), t.handle.clone()))
                    .collect();
                for (id, handle) in loaded {
                    match handle {
                        Some(Handle::Process(p)) if executor::alive(&p) => {
                            tracing::info!(task = %id, pid = p.pid, "agent: re-adopted running task");
                            self.watch(ctx, id, Handle::Process(p), None);
                        }
                        Some(h) => self.exited(
                            ctx,
                            id,
                            h,
                            Exit::Lost("task: process ended while the agent was not running".into()),
                        ),
                        None => {}
                    }
                }
            }
            Executor::Docker(d) => {
                self.adopting = true;
                let engine = d.clone();
                async move { engine.own_containers().await }
                    .into_actor(self)
                    .map(move |found, act, ctx| match found {
                        Ok(found) => {
                            act.adopt_containers(ctx, &d, found);
                            act.adopting = false;
                            act.tick(ctx);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "agent: cannot list containers; retrying");
                            ctx.run_later(Duration::from_secs(1), |act, ctx| act.adopt(ctx));
                        }
                    })
                    .spawn(ctx);
            }
        }
    }

    fn adopt_containers(&mut self, ctx: &mut Context<Self>, d: &DockerExecutor, found: Vec<Found>) {
        let mut by_task: BTreeMap<String, Found> = BTreeMap::new();
        for f in found {
            if !self.tasks.contains_key(&f.task_id) || by_task.contains_key(&f.task_id) {
                tracing::info!(container = %f.container_id, task = %f.task_id, "agent: removing a container of no task of this node");
                let (d, id) = (d.clone(), f.container_id.clone());
                ctx.spawn(async move { d.remove(&id).await }.into_actor(self));
                continue;
            }
            by_task.insert(f.task_id.clone(), f);
        }
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let had = self.tasks[&id].handle.clone();
            match by_task.remove(&id) {
                Some(f) if !f.running && self.tasks[&id].status.state > TaskState::Running => {
                    // Its end was seen and reported already; the stopped
                    // container stays until the task goes.
                }
                Some(f) => {
                    let h = Handle::Container {
                        container_id: f.container_id.clone(),
                    };
                    let lt = self.tasks.get_mut(&id).expect("task");
                    lt.handle = Some(h.clone());
                    self.db.put(lt);
                    match (f.running, f.exit_code) {
                        (true, _) => {
                            tracing::info!(task = %id, container = %f.container_id, "agent: re-adopted running container");
                            self.report(&id, TaskState::Running, "started", String::new(), None);
                            self.watch(ctx, id, h, None);
                        }
                        (false, code) if f.started => {
                            self.exited(ctx, id, h, Exit::Code(code.unwrap_or(0)));
                        }
                        (false, _) => {
                            // Created but never started: prepared again when assigned.
                            let lt = self.tasks.get_mut(&id).expect("task");
                            lt.handle = None;
                            self.db.put(lt);
                            let d = d.clone();
                            ctx.spawn(async move { d.remove(&f.container_id).await }.into_actor(self));
                        }
                    }
                }
                None => {
                    if let Some(h) = had {
                        self.exited(
                            ctx,
                            id,
                            h,
                            Exit::Lost("task: container removed while the agent was not running".into()),
                        );
                    }
                }
            }
        }
    }

    /// Runs a task through accepted .. running, unless it is on its way or ran.
    fn start(&mut self, ctx: &mut Context<Self>, id: &str) {
        let Some(lt) = self.tasks.get(id) else { return };
        if self.busy.contains(id) || lt.handle.is_some() || lt.status.state >= TaskState::Running {
            return;
        }
        for st in [TaskState::Accepted, TaskState::Preparing] {
            self.report(id, st, st.as_str(), String::new(), None);
        }
        self.busy.insert(id.to_string());
        let task = self.tasks[id].task.clone();
        let id = id.to_string();
        self.executor
            .prepare(task)
            .into_actor(self)
            .map(move |res, act, ctx| act.prepared(ctx, id, res))
            .spawn(ctx);
    }

    /// Whether a task still wants to run (it may have been stopped while busy).
    fn wants_to_run(&self, id: &str) -> bool {
        self.tasks
            .get(id)
            .is_some_and(|lt| !lt.stopping && !lt.unassigned && lt.task.desired_state <= TaskState::Running)
    }

    fn prepared(&mut self, ctx: &mut Context<Self>, id: String, res: Result<Option<Handle>, String>) {
        let handle = match res {
            Ok(h) => h,
            Err(e) => {
                self.busy.remove(&id);
                // SwarmKit rejects a task that cannot be prepared (e.g. its image).
                self.report(&id, TaskState::Rejected, "preparing", e, None);
                self.forget_if_unassigned(ctx, &id);
                return;
            }
        };
        if !self.wants_to_run(&id) {
            self.busy.remove(&id);
            if self.tasks.contains_key(&id) {
                self.report(&id, TaskState::Shutdown, "shutdown", String::new(), None);
            }
            if let Some(task) = self.tasks.get(&id).map(|lt| lt.task.clone()) {
                ctx.spawn(self.executor.remove(&task).into_actor(self));
                self.forget_if_unassigned(ctx, &id);
            }
            return;
        }
        let lt = self.tasks.get_mut(&id).expect("task");
        lt.handle = handle.clone();
        self.db.put(lt);
        self.db.flush();
        for st in [TaskState::Ready, TaskState::Starting] {
            self.report(&id, st, st.as_str(), String::new(), None);
        }
        let task = self.tasks[&id].task.clone();
        self.executor
            .start(task, handle)
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.busy.remove(&id);
                match res {
                    Ok((h, child)) => {
                        if let Some(lt) = act.tasks.get_mut(&id) {
                            lt.handle = Some(h.clone());
                            act.db.put(lt);
                            act.db.flush();
                        }
                        if act.wants_to_run(&id) {
                            act.report(&id, TaskState::Running, "started", String::new(), None);
                            act.watch(ctx, id, h, child);
                        } else {
                            act.watch(ctx, id.clone(), h, child);
                            act.stop(ctx, &id);
                        }
                    }
                    Err(e) => {
                        act.report(&id, TaskState::Failed, "starting", e, None);
                        if let Some(lt) = act.tasks.get_mut(&id) {
                            lt.handle = None;
                            act.db.put(lt);
                        }
                        act.forget_if_unassigned(ctx, &id);
                    }
                }
            })
            .spawn(ctx);
    }

    fn watch(&mut self, ctx: &mut Context<Self>, id: String, h: Handle, child: Option<tokio::process::Child>) {
        let done = h.clone();
        self.executor
            .wait(h, child)
            .into_actor(self)
            .map(move |exit, act, ctx| act.exited(ctx, id, done, exit))
            .spawn(ctx);
    }

    fn exited(&mut self, ctx: &mut Context<Self>, id: String, h: Handle, exit: Exit) {
        let Some(lt) = self.tasks.get_mut(&id) else { return };
        if lt.handle.as_ref() != Some(&h) {
            return;
        }
        lt.handle = None;
        let code = match &exit {
            Exit::Code(c) => Some(*c),
            Exit::Lost(_) => None,
        };
        if lt.stopping || lt.task.desired_state > TaskState::Running {
            self.report(&id, TaskState::Shutdown, "shutdown", String::new(), code);
        } else {
            match exit {
                Exit::Code(0) => self.report(&id, TaskState::Complete, "finished", String::new(), code),
                Exit::Code(c) => self.report(
                    &id,
                    TaskState::Failed,
                    "started",
                    format!("task: non-zero exit ({c})"),
                    code,
                ),
                Exit::Lost(why) => self.report(&id, TaskState::Failed, "started", why, None),
            }
        }
        self.forget_if_unassigned(ctx, &id);
    }

    fn stop(&mut self, ctx: &mut Context<Self>, id: &str) {
        let busy = self.busy.contains(id);
        let Some(lt) = self.tasks.get_mut(id) else { return };
        match lt.handle.clone() {
            Some(h) if !busy => {
                if lt.stopping {
                    return;
                }
                lt.stopping = true;
                self.db.put(lt);
                let grace = executor::stop_grace(&lt.task.spec);
                tracing::info!(task = %id, ?h, "agent: stopping task");
                ctx.spawn(self.executor.stop(h, grace).into_actor(self));
            }
            _ => {
                // Nothing runs yet (a prepare or start in flight finds the task stopping).
                lt.stopping = true;
                self.db.put(lt);
                if lt.status.state <= TaskState::Running {
                    self.report(id, TaskState::Shutdown, "shutdown", String::new(), None);
                }
            }
        }
    }

    fn unassign(&mut self, ctx: &mut Context<Self>, id: &str) {
        let busy = self.busy.contains(id);
        let Some(lt) = self.tasks.get_mut(id) else { return };
        lt.unassigned = true;
        self.db.put(lt);
        if lt.handle.is_some() || busy {
            self.stop(ctx, id);
        } else {
            self.forget(ctx, id);
        }
    }

    fn forget_if_unassigned(&mut self, ctx: &mut Context<Self>, id: &str) {
        let idle = !self.busy.contains(id);
        if idle
            && self
                .tasks
                .get(id)
                .is_some_and(|lt| lt.unassigned && lt.handle.is_none())
        {
            self.forget(ctx, id);
        }
    }

    /// Drops a task that is no longer assigned and no longer runs, and what is left of it.
    fn forget(&mut self, ctx: &mut Context<Self>, id: &str) {
        if let Some(lt) = self.tasks.remove(id) {
            ctx.spawn(self.executor.remove(&lt.task).into_actor(self));
        }
        self.db.remove(id);
    }

    fn flush_reports(&mut self, ctx: &mut Context<Self>) {
        if self.sending || self.outbox.is_empty() {
            return;
        }
        let Some(session_id) = self.session.clone() else { return };
        self.sending = true;
        let updates = std::mem::take(&mut self.outbox);
        let req = AgentRequest::Status {
            node_id: self.node_id.clone(),
            session_id,
            updates: updates.clone(),
        };
        self.request(req)
            .into_actor(self)
            .map(move |res, act, _ctx| {
                act.sending = false;
                match res {
                    Ok(AgentResponse::StatusOk) => {}
                    other => {
                        if matches!(other, Ok(AgentResponse::UnknownSession)) {
                            act.session = None;
                        }
                        let mut later = std::mem::take(&mut act.outbox);
                        act.outbox = updates;
                        act.outbox.append(&mut later);
                    }
                }
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
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
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
    let tasks: BTreeMap<String, LocalTask> = db.load()?.into_iter().map(|t| (t.task.meta.id.clone(), t)).collect();
    let (executor, facts) = match config.executor {
        ExecutorKind::Process => (Executor::Process, None),
        ExecutorKind::Docker => {
            let d = DockerExecutor::connect(&node_id).await.map_err(anyhow::Error::msg)?;
            let facts = d.facts().await.map_err(anyhow::Error::msg)?;
            (Executor::Docker(d), Some(facts))
        }
    };
    let engine = match &executor {
        Executor::Docker(d) => Some(d.clone()),
        Executor::Process => None,
    };
    crate::image::serve(nats.clone(), node_id.clone(), engine).await?;
    let sub = nats.subscribe(subjects::agent_assignments(&node_id)).await?;
    nats.flush().await?;
    let description = describe(config, facts.as_ref());
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
            executor,
            db,
            tasks,
            busy: BTreeSet::new(),
            adopting: false,
            session: None,
            last_seq: None,
            period: Duration::from_secs(5),
            last_heartbeat: None,
            registering: false,
            syncing: false,
            outbox: Vec::new(),
            sending: false,
        }
    }))
}
