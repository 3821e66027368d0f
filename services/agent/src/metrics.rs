//! The agent's Prometheus metrics (served when `--metrics-addr` is set).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use shoal_shared::metrics::{histogram_family, register, HistogramFamily, Labels, SLOW_SECONDS};
use shoal_shared::model::Task;

use crate::controller::{Phase, TaskCtl};
use crate::exec::{ExecError, Executor, Exit, Found, Handle, Started};

pub struct Metrics {
    /// Tasks by local controller phase.
    pub tasks: Family<Labels, Gauge>,
    /// Executor operations (prepare, start, stop, remove, find, discard) by op.
    pub executor_seconds: HistogramFamily,
    /// Task status reports the dispatcher accepted.
    pub reports_sent: Counter,
    /// Image pulls by outcome (`ok`, `failed`), in seconds.
    pub pull_seconds: HistogramFamily,
}

/// The agent's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        tasks: register(
            "shoal_agent_tasks",
            "Tasks this agent holds, by local phase.",
            Family::default(),
        ),
        executor_seconds: register(
            "shoal_agent_executor_operation_seconds",
            "Executor operations by op (prepare, start, stop, remove, find, discard), in seconds.",
            histogram_family(SLOW_SECONDS),
        ),
        reports_sent: register(
            "shoal_agent_reports_sent",
            "Task status reports the dispatcher accepted.",
            Counter::default(),
        ),
        pull_seconds: register(
            "shoal_agent_image_pull_seconds",
            "Image pulls from a registry by outcome (ok, failed), in seconds; an image the engine has is not pulled.",
            histogram_family(SLOW_SECONDS),
        ),
    })
}

const PHASES: [(Phase, &str); 7] = [
    (Phase::New, "new"),
    (Phase::Preparing, "preparing"),
    (Phase::Starting, "starting"),
    (Phase::Running, "running"),
    (Phase::Stopping, "stopping"),
    (Phase::Backoff, "backoff"),
    (Phase::Ended, "ended"),
];

/// Sets `shoal_agent_tasks{phase}` from the agent's tasks (every phase, 0 when none).
pub fn count_phases<'a>(tasks: impl Iterator<Item = &'a TaskCtl>) {
    let mut counts: BTreeMap<&str, i64> = PHASES.iter().map(|(_, n)| (*n, 0)).collect();
    for t in tasks {
        let phase = t.phase();
        if let Some((_, name)) = PHASES.iter().find(|(p, _)| *p == phase) {
            *counts.entry(name).or_default() += 1;
        }
    }
    for (name, n) in counts {
        metrics().tasks.get_or_create(&vec![("phase", name.to_string())]).set(n);
    }
}

fn timed<T: Send + 'static>(op: &'static str, f: impl Future<Output = T> + Send + 'static) -> BoxFuture<'static, T> {
    async move {
        let started = Instant::now();
        let out = f.await;
        metrics()
            .executor_seconds
            .get_or_create(&vec![("op", op.to_string())])
            .observe(started.elapsed().as_secs_f64());
        out
    }
    .boxed()
}

/// An executor that times every bounded operation of the one it wraps
/// (not `wait`, which lasts as long as the task runs).
pub struct Timed(pub Arc<dyn Executor>);

impl Executor for Timed {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn prepare(&self, task: &Task) -> BoxFuture<'static, Result<Option<Handle>, ExecError>> {
        timed("prepare", self.0.prepare(task))
    }
    fn start(&self, task: &Task, prepared: Option<Handle>) -> BoxFuture<'static, Result<Started, ExecError>> {
        timed("start", self.0.start(task, prepared))
    }
    fn wait(&self, handle: Handle, child: Option<tokio::process::Child>) -> BoxFuture<'static, Exit> {
        self.0.wait(handle, child)
    }
    fn stop(&self, handle: Handle, grace: Duration) -> BoxFuture<'static, ()> {
        timed("stop", self.0.stop(handle, grace))
    }
    fn remove(&self, task: &Task) -> BoxFuture<'static, ()> {
        timed("remove", self.0.remove(task))
    }
    fn find(&self) -> BoxFuture<'static, Result<Vec<Found>, String>> {
        timed("find", self.0.find())
    }
    fn discard(&self, found: Found) -> BoxFuture<'static, ()> {
        timed("discard", self.0.discard(found))
    }
    fn lost_reason(&self) -> &'static str {
        self.0.lost_reason()
    }
    fn probe(&self, handle: &Handle, task_id: &str) -> Option<Found> {
        self.0.probe(handle, task_id)
    }
}
