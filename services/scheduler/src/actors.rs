//! The scheduler actor: follows the store with a watcher, checks whether
//! this node's store replica leads, and while it does runs reconcile passes
//! and commits their operations in batched, fenced transactions.
//!
//! A pass runs on a blocking thread over a shared copy of the snapshot
//! (`Arc`, copied on write only if the feed changes it meanwhile), so the
//! actor keeps following the feed and answering while a large pass runs.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use shoal_shared::store::mirror::{commit_fenced, Acting, GetState, Mirror};
use shoal_shared::store::{Kind, Op, StoreClient, TxOutcome, WatchEvent};
use shoal_shared::{ErrorCode, ShoalError};
use tracing::Instrument;

use crate::config::Config;
use crate::reconcile;
use crate::snapshot::{Snapshot, KINDS};

/// What the scheduler answers to [`GetState`].
#[derive(Debug, Clone, Default)]
pub struct SchedulerState {
    /// Whether this scheduler acts (its replica leads), and in which term.
    pub acting_term: Option<u64>,
    pub synced: bool,
    pub nodes: usize,
    pub services: usize,
    pub tasks: usize,
    pub passes: u64,
    pub ops_written: u64,
    pub last_error: Option<String>,
}

/// A change-feed event.
struct Feed(WatchEvent);

impl Message for Feed {
    type Result = ();
}

pub struct Scheduler {
    config: Config,
    client: StoreClient,
    snap: Arc<Snapshot>,
    synced: bool,
    acting: Acting,
    busy: bool,
    dirty: bool,
    scheduled: bool,
    wake_at: Option<chrono::DateTime<Utc>>,
    passes: u64,
    ops_written: u64,
    last_error: Option<String>,
    /// The traces of the changes the next pass acts on (see [`Traces`]).
    traces: Traces,
}

/// The traces (W3C `traceparent`s) of the writes a pass acts on: the pass is
/// a child of one and links the others, so one `docker service create`
/// reads as one trace through the scheduler. The parent is the first write
/// of a service's spec if there is one (a user's intent), else the first
/// change: every write is traced while export is on, and the agents' status
/// writes and the dispatcher's node updates that arrive in the same window
/// must not take a create's pass away from its trace. Bounded: a pass after
/// a burst of changes links the first few.
#[derive(Debug, Default)]
struct Traces(Vec<(bool, String)>);

impl Traces {
    const MAX: usize = 16;

    fn note(&mut self, ev: &WatchEvent) {
        if let WatchEvent::Batch(b) = ev {
            for c in &b.changes {
                let Some(tp) = c.trace.as_ref() else { continue };
                let intent = c.record.kind == Kind::Service;
                if let Some(seen) = self.0.iter_mut().find(|(_, t)| t == tp) {
                    seen.0 |= intent;
                } else if self.0.len() < Self::MAX {
                    self.0.push((intent, tp.clone()));
                } else if let Some(i) = self.0.iter().rposition(|(seen, _)| !seen).filter(|_| intent) {
                    // Full of status traces: an intent replaces the last one.
                    self.0[i] = (true, tp.clone());
                }
            }
        }
    }

    /// What was noted, intents first (each group in the order it came), forgotten.
    fn take(&mut self) -> Vec<String> {
        let mut traces = std::mem::take(&mut self.0);
        traces.sort_by_key(|(intent, _)| !intent);
        traces.into_iter().map(|(_, tp)| tp).collect()
    }

    /// The span of a pass over what was noted, which is then forgotten.
    /// A pass that no traced write caused (a timer, the safety pass) is a
    /// debug span, so that idle passes don't fill a trace backend.
    fn pass_span(&mut self, term: u64) -> tracing::Span {
        let span = if self.0.is_empty() {
            tracing::debug_span!("scheduler.pass", term, ops = tracing::field::Empty)
        } else {
            tracing::info_span!("scheduler.pass", term, ops = tracing::field::Empty)
        };
        let mut traces = self.take().into_iter();
        shoal_shared::envelope::continue_traceparent(&span, traces.next().as_deref());
        for tp in traces {
            shoal_shared::envelope::link_traceparent(&span, &tp);
        }
        span
    }
}

impl Actor for Scheduler {
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
        ctx.run_interval(self.config.leadership.check_every(), |act, ctx| {
            act.check_leader(ctx);
            let due = act.wake_at.is_some_and(|w| Utc::now() >= w);
            if due || act.dirty {
                act.wake_at = None;
                act.trigger(ctx);
            }
        });
        // Passes run on changes and on the timers a pass asks for; a slow
        // safety pass catches anything else (its cost grows with the cluster).
        ctx.run_interval(Duration::from_secs(30), |act, ctx| act.trigger(ctx));
    }
}

impl StreamHandler<Feed> for Scheduler {
    fn handle(&mut self, Feed(ev): Feed, ctx: &mut Context<Self>) {
        self.traces.note(&ev);
        match ev {
            WatchEvent::Reset { index, records } => {
                let mut snap = Snapshot::default();
                snap.reset(index, &records);
                self.snap = Arc::new(snap);
                self.synced = true;
            }
            ev @ WatchEvent::Batch(_) => Arc::make_mut(&mut self.snap).apply_event(&ev),
        }
        self.schedule_soon(ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::error!("scheduler: store watcher ended");
    }
}

impl Handler<GetState<SchedulerState>> for Scheduler {
    type Result = MessageResult<GetState<SchedulerState>>;

    fn handle(&mut self, _: GetState<SchedulerState>, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(SchedulerState {
            acting_term: self.acting.term(),
            synced: self.synced,
            nodes: self.snap.nodes.len(),
            services: self.snap.services.len(),
            tasks: self.snap.tasks.len(),
            passes: self.passes,
            ops_written: self.ops_written,
            last_error: self.last_error.clone(),
        })
    }
}

impl Scheduler {
    fn schedule_soon(&mut self, ctx: &mut Context<Self>) {
        self.dirty = true;
        if self.scheduled {
            return;
        }
        self.scheduled = true;
        ctx.run_later(Duration::from_millis(20), |act, ctx| {
            act.scheduled = false;
            act.trigger(ctx);
        });
    }

    fn check_leader(&mut self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let replica = self.config.leadership.store_replica;
        async move { Acting::poll(&client, replica).await }
            .into_actor(self)
            .map(move |acting, act, ctx| {
                if act.acting.observe(acting) {
                    tracing::info!(?acting, "scheduler: leadership changed");
                    if acting.is_some() {
                        act.trigger(ctx);
                    } else {
                        // Only the acting scheduler reports the cluster's tasks.
                        crate::metrics::clear();
                    }
                }
            })
            .spawn(ctx);
    }

    /// Runs a pass and commits it, unless one is in flight or we do not act.
    fn trigger(&mut self, ctx: &mut Context<Self>) {
        let Some(term) = self.acting.term() else { return };
        if self.busy || !self.synced {
            self.dirty = true;
            return;
        }
        self.dirty = false;
        self.busy = true;
        self.passes += 1;
        let span = self.traces.pass_span(term);
        let snap = self.snap.clone();
        let now = Utc::now();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let plan = reconcile::reconcile(&snap, now, &mut shoal_shared::id::new_id);
            let m = crate::metrics::metrics();
            m.pass_seconds.observe(started.elapsed().as_secs_f64());
            m.passes.inc();
            crate::metrics::count_pending(&plan.pending_by_reason);
            crate::metrics::count_tasks(&snap);
            plan
        })
        .into_actor(self)
        .map(move |plan, act, ctx| match plan {
            Ok(plan) => act.commit(ctx, term, plan, span),
            Err(e) => {
                act.busy = false;
                act.dirty = true;
                tracing::error!(error = %e, "scheduler: a reconcile pass panicked");
                act.last_error = Some(format!("reconcile pass failed: {e}"));
            }
        })
        .spawn(ctx);
    }

    /// Commits a pass's operations, then runs the next pass (or waits for the feed on failure).
    fn commit(&mut self, ctx: &mut Context<Self>, term: u64, plan: reconcile::Plan, span: tracing::Span) {
        self.wake_at = plan.wake_at;
        span.record("ops", plan.ops.len());
        if plan.ops.is_empty() {
            self.busy = false;
            if self.dirty {
                self.trigger(ctx);
            }
            return;
        }
        tracing::debug!(
            ops = plan.ops.len(),
            created = plan.created,
            placed = plan.placed,
            pending = plan.pending,
            deferred = plan.deferred,
            intents = %plan.summary(),
            "scheduler: committing pass"
        );
        let (max_ops, in_flight) = (self.config.max_tx_ops, self.config.tx_in_flight);
        let client = self.client.clone();
        async move { commit_fenced(&client, plan.ops, term, max_ops, in_flight).await }
        .instrument(span)
        .into_actor(self)
        .map(
            |(done, err): (Vec<(Vec<Op>, TxOutcome)>, Option<ShoalError>), act, ctx| {
                act.busy = false;
                let snap = Arc::make_mut(&mut act.snap);
                for (ops, out) in &done {
                    act.ops_written += ops.len() as u64;
                    crate::metrics::metrics().ops_written.inc_by(ops.len() as u64);
                    snap.apply_outcome(ops, out);
                }
                match err {
                    None => act.trigger(ctx),
                    Some(e) => {
                        if e.code == ErrorCode::Fenced {
                            act.acting.fenced();
                        }
                        tracing::info!(error = %e, "scheduler: pass not committed; retrying when the feed catches up");
                        act.last_error = Some(e.to_string());
                        act.dirty = true;
                    }
                }
            },
        )
        .spawn(ctx);
    }
}

/// Starts the scheduler actor.
pub fn start(config: Config, nats: async_nats::Client) -> Addr<Scheduler> {
    let client = StoreClient::new(nats);
    Scheduler {
        config,
        client,
        snap: Arc::new(Snapshot::default()),
        synced: false,
        acting: Acting::default(),
        busy: false,
        dirty: true,
        scheduled: false,
        wake_at: None,
        passes: 0,
        ops_written: 0,
        last_error: None,
        traces: Traces::default(),
    }
    .start()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::store::{Action, Change, EventBatch, Record};

    fn change(kind: Kind, trace: &str) -> Change {
        let mut record = Record::blob("x", serde_json::json!({}));
        record.kind = kind;
        Change {
            action: Action::Update,
            record,
            trace: Some(trace.to_string()),
        }
    }

    fn batch(changes: Vec<Change>) -> WatchEvent {
        WatchEvent::Batch(EventBatch {
            index: 1,
            prev_index: 0,
            term: 1,
            at: Utc::now(),
            changes,
        })
    }

    #[test]
    fn a_services_write_leads_the_pass_over_status_writes_that_came_first() {
        let mut t = Traces::default();
        t.note(&batch(vec![change(Kind::Node, "node"), change(Kind::Task, "status")]));
        t.note(&batch(vec![
            change(Kind::Service, "create"),
            change(Kind::Task, "status"),
        ]));
        assert_eq!(t.take(), ["create", "node", "status"]);
        assert!(t.take().is_empty(), "a pass forgets what it took");
    }

    #[test]
    fn an_intent_still_gets_in_when_the_bound_is_reached() {
        let mut t = Traces::default();
        let noise: Vec<Change> = (0..Traces::MAX).map(|i| change(Kind::Task, &format!("s{i}"))).collect();
        t.note(&batch(noise));
        t.note(&batch(vec![change(Kind::Service, "create")]));
        let taken = t.take();
        assert_eq!(taken.len(), Traces::MAX);
        assert_eq!(taken[0], "create");
    }
}
