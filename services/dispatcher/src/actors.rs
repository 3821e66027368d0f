//! The dispatcher actor: agent requests from NATS, the store's change feed
//! and timers in; replies, assignment messages and batched fenced store writes out.

use std::collections::BTreeSet;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use shoal_shared::dispatch::{AgentRequest, AgentResponse, Assignments};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::model::{Cluster, Config as SwarmConfig, Network, Node, Secret, Service, Task};
use shoal_shared::netview::{NetViewRequest, NET_VIEW_MIN_INTERVAL};
use shoal_shared::secrets::{Payload, SecretKey};
use shoal_shared::store::mirror::{Acting, GetState, Mirror, Table};
use shoal_shared::store::{Kind, Op, Record, StoreClient, StoreObject, TxOutcome, TxRequest, WatchEvent};
use shoal_shared::{subjects, ErrorCode, ShoalError};
use tracing::Instrument;

use crate::config::Config;
use crate::logic::{Dispatcher, DEFAULT_HEARTBEAT};

/// What the dispatcher answers to [`GetState`].
#[derive(Debug, Clone, Default)]
pub struct DispatcherState {
    pub acting_term: Option<u64>,
    pub sessions: usize,
    pub nodes: usize,
    pub tasks: usize,
    pub heartbeats: u64,
    pub writes: u64,
    pub marked_down: u64,
}

/// The dispatcher's copy of the store: nodes, tasks (indexed by node) and
/// the cluster object, kept by the shared follower kit.
#[derive(Default)]
pub struct Follow {
    pub nodes: Table<Node>,
    pub tasks: Table<Task>,
    pub clusters: Table<Cluster>,
    /// Secrets (sealed) and configs, to send with the tasks that use them.
    pub secrets: Table<Secret>,
    pub configs: Table<SwarmConfig>,
    /// Networks and services, for the nodes' network views.
    pub networks: Table<Network>,
    pub services: Table<Service>,
    position: u64,
}

/// The kinds the dispatcher follows.
const KINDS: [Kind; 7] = [
    Kind::Cluster,
    Kind::Node,
    Kind::Task,
    Kind::Secret,
    Kind::Config,
    Kind::Network,
    Kind::Service,
];

/// Whether a change of this kind can change a node's network view.
fn shapes_views(kind: Kind) -> bool {
    matches!(kind, Kind::Node | Kind::Task | Kind::Network | Kind::Service)
}

impl Follow {
    fn new() -> Follow {
        Follow {
            tasks: Table::default().with_index("node", |t: &Task| Some(t.node_id.clone()).filter(|n| !n.is_empty())),
            ..Follow::default()
        }
    }
}

shoal_shared::mirror_tables!(Follow, position, KINDS, [
    Node => nodes,
    Task => tasks,
    Cluster => clusters,
    Secret => secrets,
    Config => configs,
    Network => networks,
    Service => services,
]);

/// Adds to an assignment message the data of the secrets and configs its
/// tasks use, for the tasks that are to run (a task being stopped needs
/// none). Secrets are opened with the managers' key here and nowhere else;
/// one that does not open (or no key) is left out, and the agent then
/// rejects the task that needs it.
/// The template driver's name of a secret or config, if it has one.
fn template_driver(t: Option<&shoal_shared::model::Driver>) -> Option<String> {
    t.map(|d| d.name.clone()).filter(|n| !n.is_empty())
}

pub fn attach(follow: &Follow, key: Option<&SecretKey>, a: &mut Assignments) {
    use base64::Engine;
    let mut secrets = std::collections::BTreeMap::new();
    let mut configs = std::collections::BTreeMap::new();
    for t in a.tasks.iter().filter(|t| t.desired_state.wants_run()) {
        let Some(c) = t.spec.container_spec.as_ref() else {
            continue;
        };
        for r in &c.secrets {
            if secrets.contains_key(&r.secret_id) {
                continue;
            }
            let (Some(s), Some(key)) = (follow.secrets.get(&r.secret_id), key) else {
                tracing::warn!(task = %t.meta.id, secret = %r.secret_id, "dispatcher: a secret the task uses cannot be sent (unknown, or no secrets key)");
                continue;
            };
            match key.open(&s.meta.id, &s.sealed_data) {
                Ok(data) => {
                    secrets.insert(
                        r.secret_id.clone(),
                        Payload {
                            id: s.meta.id.clone(),
                            name: s.spec.name.clone(),
                            data,
                            templating: template_driver(s.spec.templating.as_ref()),
                        },
                    );
                }
                Err(e) => tracing::warn!(task = %t.meta.id, error = %e, "dispatcher: cannot open a secret"),
            }
        }
        for r in &c.configs {
            if configs.contains_key(&r.config_id) {
                continue;
            }
            let Some(cfg) = follow.configs.get(&r.config_id) else {
                tracing::warn!(task = %t.meta.id, config = %r.config_id, "dispatcher: a config the task uses is unknown");
                continue;
            };
            let data = base64::engine::general_purpose::STANDARD
                .decode(cfg.spec.data.as_deref().unwrap_or_default())
                .unwrap_or_default();
            configs.insert(
                r.config_id.clone(),
                Payload {
                    id: cfg.meta.id.clone(),
                    name: cfg.spec.name.clone(),
                    data,
                    templating: template_driver(cfg.spec.templating.as_ref()),
                },
            );
        }
    }
    a.secrets = secrets.into_values().collect();
    a.configs = configs.into_values().collect();
}

/// The nodes whose assignments the records change (tasks carry their node as a field).
fn nodes_of<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeSet<String> {
    records
        .filter(|r| r.kind == Kind::Task)
        .filter_map(|r| r.fields.get("node").cloned())
        .collect()
}

struct Feed(WatchEvent);
impl Message for Feed {
    type Result = ();
}

struct Incoming(async_nats::Message);
impl Message for Incoming {
    type Result = ();
}

/// A request for one node's network view.
struct ViewRequest(async_nats::Message);
impl Message for ViewRequest {
    type Result = ();
}

/// An ordered outbox: publishes (and replies) leave in the order they were queued.
#[derive(Clone)]
struct Outbox(tokio::sync::mpsc::UnboundedSender<(async_nats::Subject, Bytes)>);

impl Outbox {
    fn start(nats: async_nats::Client) -> Outbox {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(async_nats::Subject, Bytes)>();
        tokio::spawn(async move {
            while let Some((subject, payload)) = rx.recv().await {
                if let Err(e) = nats.publish(subject, payload).await {
                    tracing::warn!(error = %e, "dispatcher: publish failed");
                }
            }
        });
        Outbox(tx)
    }

    fn send(&self, subject: impl Into<async_nats::Subject>, payload: Bytes) {
        let _ = self.0.send((subject.into(), payload));
    }
}

pub struct DispatcherActor {
    config: Config,
    client: StoreClient,
    outbox: Outbox,
    follow: Follow,
    /// The managers' key for secret data (`--secrets-key`).
    key: Option<SecretKey>,
    synced: bool,
    acting: Acting,
    logic: Option<Dispatcher>,
    down: BTreeSet<String>,
    flushing: bool,
    heartbeats: u64,
    writes: u64,
    marked_down: u64,
    /// Task ID -> the trace of the write that last changed it, until its
    /// change is pushed to its node (bounded: see [`MAX_TRACES`]).
    task_traces: std::collections::HashMap<String, String>,
    /// The traces of the status reports the next write carries.
    status_traces: Vec<String>,
    /// A change since the network views were last computed.
    views_dirty: bool,
    /// What the network views are cut from, as of the last computation.
    view_index: Option<crate::netview::Index>,
    /// The network view last published to each node.
    views_sent: crate::netview::Sent,
}

/// Each task whose change is still untraced-pushed goes out in a
/// `dispatcher.assign` span of its write's trace, and the agent continues
/// from that span. Both a push of increments and the full set a (re)registered
/// agent fetches carry them: a task placed before its node's session was up
/// reaches the agent in the full set, still in the trace that placed it.
fn trace_pushes(traces: &mut std::collections::HashMap<String, String>, node: &str, a: &mut Assignments) {
    for t in &a.tasks {
        if let Some(tp) = traces.remove(&t.meta.id) {
            let span = tracing::info_span!("dispatcher.assign", node = %node, task = %t.meta.id);
            envelope::continue_traceparent(&span, Some(&tp));
            if let Some(mine) = envelope::traceparent(&span) {
                a.traces.insert(t.meta.id.clone(), mine);
            }
        }
    }
}

/// How often a dispatcher without the secrets key asks this host's API for it.
const KEY_POLL: Duration = Duration::from_secs(1);

/// Traces remembered at most, of tasks and of status reports.
const MAX_TRACES: usize = 1024;

impl Actor for DispatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let watcher = self.client.watch(&KINDS);
        let stream = futures::stream::unfold(watcher, |mut w| async move {
            match w.next().await {
                Ok(ev) => Some((Feed(ev), w)),
                Err(_) => None,
            }
        });
        ctx.add_stream(stream);
        ctx.run_interval(self.config.leadership.check_every(), |act, ctx| act.check_leader(ctx));
        ctx.run_interval(KEY_POLL, |act, ctx| act.fetch_key(ctx));
        ctx.run_interval(Duration::from_millis(self.config.flush_ms), |act, ctx| {
            act.expire();
            act.flush(ctx);
        });
        ctx.run_interval(NET_VIEW_MIN_INTERVAL, |act, _ctx| act.publish_views());
    }
}

impl Handler<GetState<DispatcherState>> for DispatcherActor {
    type Result = MessageResult<GetState<DispatcherState>>;

    fn handle(&mut self, _: GetState<DispatcherState>, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(DispatcherState {
            acting_term: self.acting.term(),
            sessions: self.logic.as_ref().map_or(0, |l| l.sessions.len()),
            nodes: self.follow.nodes.len(),
            tasks: self.follow.tasks.len(),
            heartbeats: self.heartbeats,
            writes: self.writes,
            marked_down: self.marked_down,
        })
    }
}

impl StreamHandler<Feed> for DispatcherActor {
    fn handle(&mut self, Feed(ev): Feed, _ctx: &mut Context<Self>) {
        let touched = match &ev {
            WatchEvent::Reset { .. } => {
                self.views_dirty = true;
                BTreeSet::new()
            }
            WatchEvent::Batch(batch) => {
                if batch.changes.iter().any(|c| shapes_views(c.record.kind)) {
                    self.views_dirty = true;
                }
                for c in &batch.changes {
                    if let (Kind::Task, Some(tp)) = (c.record.kind, &c.trace) {
                        // Traces of changes never pushed (no session on
                        // their node) are dropped wholesale when full.
                        if self.task_traces.len() >= MAX_TRACES {
                            self.task_traces.clear();
                        }
                        self.task_traces.insert(c.record.id.clone(), tp.clone());
                    }
                }
                nodes_of(batch.changes.iter().map(|c| &c.record))
            }
        };
        self.follow.apply_event(&ev);
        let touched = match ev {
            WatchEvent::Reset { .. } => {
                self.synced = true;
                self.follow
                    .tasks
                    .values()
                    .map(|t| t.node_id.clone())
                    .filter(|n| !n.is_empty())
                    .collect()
            }
            WatchEvent::Batch(_) => touched,
        };
        self.push_increments(touched);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::error!("dispatcher: store watcher ended");
    }
}

impl StreamHandler<Incoming> for DispatcherActor {
    fn handle(&mut self, Incoming(msg): Incoming, _ctx: &mut Context<Self>) {
        let Some(reply_to) = msg.reply.clone() else { return };
        if self.logic.is_none() || !self.synced {
            // Not acting: stay silent, the acting dispatcher answers.
            return;
        }
        if self.locked() {
            // A locked manager takes no part, as Docker's does: agents keep
            // their tasks and wait.
            return;
        }
        let resp: Result<AgentResponse, ShoalError> =
            envelope::decode::<AgentRequest>(&msg.payload).map(|req| self.answer(req));
        self.outbox.send(reply_to, envelope::encode(&Reply::from(resp)));
        self.note_sessions();
    }
}

impl StreamHandler<ViewRequest> for DispatcherActor {
    fn handle(&mut self, ViewRequest(msg): ViewRequest, _ctx: &mut Context<Self>) {
        let Some(reply_to) = msg.reply.clone() else { return };
        if self.logic.is_none() || !self.synced {
            return;
        }
        let resp = envelope::decode::<NetViewRequest>(&msg.payload).map(|req| {
            let position = self.follow.position();
            self.index().view(&req.node_id, position)
        });
        self.outbox.send(reply_to, envelope::encode(&Reply::from(resp)));
    }
}

impl DispatcherActor {
    /// The network views' index, rebuilt when the mirror changed since.
    fn index(&mut self) -> &crate::netview::Index {
        if self.views_dirty || self.view_index.is_none() {
            let f = &self.follow;
            self.view_index = Some(crate::netview::Index::build(
                f.nodes.values(),
                f.networks.values(),
                f.services.values(),
                f.tasks.values(),
            ));
            self.views_dirty = false;
        }
        self.view_index.as_ref().expect("just built")
    }

    /// Publishes every node's network view that changed (while acting).
    fn publish_views(&mut self) {
        if self.logic.is_none() || !self.synced || !(self.views_dirty || self.view_index.is_none()) {
            return;
        }
        let position = self.follow.position();
        self.index();
        let (Some(index), follow) = (self.view_index.as_ref(), &self.follow) else {
            return;
        };
        let nodes = follow.nodes.keys().map(|k| k.as_str());
        for view in self.views_sent.changed(index, nodes, position) {
            self.outbox
                .send(subjects::net_view(&view.node_id), envelope::encode(&view));
            crate::metrics::metrics().net_views_published.inc();
        }
    }

    /// Sets `shoal_dispatcher_sessions` from the acting logic (0 when not acting).
    fn note_sessions(&self) {
        let n = self.logic.as_ref().map_or(0, |l| l.sessions.len());
        crate::metrics::metrics().sessions.set(n as i64);
    }

    fn period(&self) -> Duration {
        self.follow
            .clusters
            .values()
            .next()
            .and_then(|c| c.spec.dispatcher.heartbeat_period)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_HEARTBEAT)
    }

    fn answer(&mut self, req: AgentRequest) -> AgentResponse {
        let now = Utc::now();
        let period = self.period();
        let logic = self.logic.as_mut().expect("acting");
        logic.period = period;
        match req {
            AgentRequest::Register {
                node_id,
                description,
                addr,
            } => {
                let session_id = logic.register(&node_id, *description, addr, now);
                tracing::info!(node = %node_id, session = %session_id, "dispatcher: agent registered");
                AgentResponse::Registered {
                    session_id,
                    heartbeat_period: period,
                }
            }
            AgentRequest::Heartbeat { node_id, session_id } => {
                self.heartbeats += 1;
                let m = crate::metrics::metrics();
                m.heartbeats.inc();
                if let Some(s) = logic.sessions.get(&node_id).filter(|s| s.id == session_id) {
                    let since = (now - s.last_seen).to_std().unwrap_or_default();
                    m.heartbeat_lag_seconds
                        .observe(since.saturating_sub(period).as_secs_f64());
                }
                if logic.heartbeat(&node_id, &session_id, now) {
                    AgentResponse::HeartbeatOk {
                        heartbeat_period: period,
                        sequence: logic.sequence(&node_id),
                    }
                } else {
                    AgentResponse::UnknownSession
                }
            }
            AgentRequest::Sync { node_id, session_id } => {
                if !logic.heartbeat(&node_id, &session_id, now) {
                    return AgentResponse::UnknownSession;
                }
                match logic.full(&node_id, self.follow.tasks.by("node", &node_id)) {
                    Some(mut assignments) => {
                        trace_pushes(&mut self.task_traces, &node_id, &mut assignments);
                        attach(&self.follow, self.key.as_ref(), &mut assignments);
                        crate::metrics::metrics().assignments_pushed.inc();
                        AgentResponse::Full { assignments }
                    }
                    None => AgentResponse::UnknownSession,
                }
            }
            AgentRequest::Status {
                node_id,
                session_id,
                updates,
            } => {
                for tp in updates.iter().filter_map(|u| u.trace.as_ref()) {
                    if self.status_traces.len() < MAX_TRACES && !self.status_traces.contains(tp) {
                        self.status_traces.push(tp.clone());
                    }
                }
                if logic.status(&node_id, &session_id, updates, now) {
                    AgentResponse::StatusOk
                } else {
                    AgentResponse::UnknownSession
                }
            }
        }
    }

    fn push_increments(&mut self, touched: BTreeSet<String>) {
        let Some(logic) = self.logic.as_mut() else { return };
        for node in touched {
            if let Some(mut a) = logic.increment(&node, self.follow.tasks.by("node", &node)) {
                trace_pushes(&mut self.task_traces, &node, &mut a);
                attach(&self.follow, self.key.as_ref(), &mut a);
                self.outbox
                    .send(subjects::agent_assignments(&node), envelope::encode(&a));
                crate::metrics::metrics().assignments_pushed.inc();
            }
        }
    }

    fn check_leader(&mut self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let replica = self.config.leadership.store_replica;
        async move { Acting::poll(&client, replica).await }
            .into_actor(self)
            .map(move |acting, act, _ctx| {
                if act.acting.observe(acting) {
                    tracing::info!(?acting, "dispatcher: leadership changed");
                    act.logic = acting.map(|_| {
                        let prefix = format!("{}{}", act.config.node_id, shoal_shared::id::new_id());
                        Dispatcher::new(Utc::now(), prefix)
                    });
                    act.down.clear();
                    act.views_sent.clear();
                    act.views_dirty = true;
                    act.note_sessions();
                }
            })
            .spawn(ctx);
    }

    /// Autolock is on and this host's API has not handed over the key yet.
    fn locked(&self) -> bool {
        self.key.is_none()
            && self
                .follow
                .clusters
                .values()
                .any(|c| c.spec.encryption_config.auto_lock_managers)
    }

    /// Asks this host's API for the secrets key while this dispatcher has
    /// none (no readable `--secrets-key`, or one sealed by autolock); the API
    /// answers once it holds the key.
    fn fetch_key(&mut self, ctx: &mut Context<Self>) {
        if self.key.is_some() || self.config.node_id.is_empty() {
            return;
        }
        let nats = self.client.nats().clone();
        let subject = subjects::manager_key(&self.config.node_id);
        async move { envelope::request::<_, shoal_shared::secrets::KeyAnswer>(&nats, subject, &(), KEY_POLL).await }
            .into_actor(self)
            .map(|answer, act, _ctx| match answer {
                Ok(a) => match SecretKey::from_bytes(&a.key) {
                    Ok(k) if act.key.is_none() => {
                        tracing::info!("dispatcher: secrets key received from this host's API");
                        act.key = Some(k);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dispatcher: a bad secrets key from the API"),
                },
                Err(e) => tracing::debug!(error = %e, "dispatcher: no secrets key from this host's API yet"),
            })
            .spawn(ctx);
    }

    fn expire(&mut self) {
        if !self.synced || self.locked() {
            return;
        }
        let period = self.period();
        let Some(logic) = self.logic.as_mut() else { return };
        logic.period = period;
        let down = logic.expired(self.follow.nodes.values(), Utc::now());
        for id in down {
            tracing::info!(node = %id, "dispatcher: heartbeat failure, node down");
            self.down.insert(id);
        }
        self.note_sessions();
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || !self.synced {
            return;
        }
        let (Some(term), Some(logic)) = (self.acting.term(), self.logic.as_mut()) else {
            return;
        };
        if logic.pending.is_empty() && self.down.is_empty() {
            return;
        }
        let down: Vec<String> = self.down.iter().cloned().collect();
        let (ops, pending) = logic.build_ops(&self.follow.nodes, &self.follow.tasks, &down, Utc::now());
        if ops.is_empty() {
            self.down.clear();
            return;
        }
        self.flushing = true;
        let client = self.client.clone();
        let n_ops = ops.len();
        let n_statuses = pending.statuses.len() as u64;
        // The write is a child of the first report's trace and links the others.
        let span = tracing::info_span!("dispatcher.status", ops = n_ops, statuses = n_statuses);
        let mut traces = std::mem::take(&mut self.status_traces).into_iter();
        envelope::continue_traceparent(&span, traces.next().as_deref());
        for tp in traces {
            envelope::link_traceparent(&span, &tp);
        }
        async move {
            let res = client.tx(TxRequest::new(ops.clone()).fenced(term)).await;
            (ops, res)
        }
        .instrument(span)
        .into_actor(self)
        .map(move |(ops, res): (Vec<Op>, Result<TxOutcome, ShoalError>), act, _ctx| {
            act.flushing = false;
            match res {
                Ok(out) => {
                    act.writes += 1;
                    act.marked_down += down.len() as u64;
                    let m = crate::metrics::metrics();
                    m.nodes_marked_down.inc_by(down.len() as u64);
                    m.status_updates_written.inc_by(n_statuses);
                    for id in &down {
                        act.down.remove(id);
                    }
                    let touched = nodes_of(out.records.iter());
                    act.views_dirty = true;
                    act.follow.apply_outcome(&ops, &out);
                    act.push_increments(touched);
                    tracing::debug!(ops = n_ops, "dispatcher: flushed");
                }
                Err(e) => {
                    tracing::info!(error = %e, ops = ops.len(), "dispatcher: write failed; retrying");
                    if e.code == ErrorCode::Fenced {
                        act.acting.fenced();
                        act.logic = None;
                        return;
                    }
                    if let Some(l) = act.logic.as_mut() {
                        l.pending.restore(pending);
                    }
                }
            }
        })
        .spawn(ctx);
    }
}

/// Subscribes to agent requests and starts the dispatcher actor.
pub async fn start(config: Config, nats: async_nats::Client) -> anyhow::Result<Addr<DispatcherActor>> {
    let sub = nats.subscribe(subjects::dispatcher_requests()).await?;
    let views = nats.subscribe(subjects::net_requests()).await?;
    let client = StoreClient::new(nats.clone());
    let outbox = Outbox::start(nats);
    // The key file when it is readable and in the clear; otherwise (no
    // --secrets-key, a file this process may not read, or one sealed by
    // autolock) the key comes from this host's API (`fetch_key`).
    let key = match &config.secrets_key {
        Some(path) => match SecretKey::load_or_create(path) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::info!(error = %e, "dispatcher: secrets key not read from its file; asking this host's API");
                None
            }
        },
        None => None,
    };
    Ok(DispatcherActor::create(move |ctx| {
        ctx.add_stream(sub.map(Incoming));
        ctx.add_stream(views.map(ViewRequest));
        DispatcherActor {
            config,
            client,
            outbox,
            follow: Follow::new(),
            key,
            synced: false,
            acting: Acting::default(),
            logic: None,
            down: BTreeSet::new(),
            flushing: false,
            heartbeats: 0,
            writes: 0,
            marked_down: 0,
            task_traces: Default::default(),
            status_traces: Vec::new(),
            views_dirty: true,
            view_index: None,
            views_sent: Default::default(),
        }
    }))
}

/// Encodes a record's object for tests.
pub fn decode_node(r: &Record) -> Option<Node> {
    Node::from_record(r).ok()
}
