//! Health-gated tasks, as Docker's Swarm executor gates them: a container
//! with a health check (`--health-cmd` and friends, or its image's
//! `HEALTHCHECK`; `--no-healthcheck` turns it off) stays `starting` until the
//! engine finds it healthy, and only then is reported `running`; one found
//! unhealthy, while starting or later, is stopped and its task `failed`
//! with Docker's words (`dockerexec: unhealthy container`), so the
//! scheduler replaces it per the restart policy and a rolling update counts
//! it as a failure.
//!
//! The engine runs the checks; the agent reads their outcome from the
//! container's `State.Health` (`inspect`), woken by the engine's
//! `health_status` events for that container, with a 1 s look as a fallback
//! should the event stream break. The process executor has no engine to run
//! checks: it rejects a task with a health check ([`process_rejection`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bollard::models::HealthStatusEnum;
use bollard::query_parameters::{EventsOptionsBuilder, StopContainerOptions};
use bollard::Docker;
use futures::StreamExt;
use shoal_shared::model::TaskSpec;
use tokio::sync::Notify;

/// Docker's error for a task whose container turned unhealthy.
pub const UNHEALTHY: &str = "dockerexec: unhealthy container";

/// How often the container is looked at when no event arrives.
const FALLBACK_LOOK: Duration = Duration::from_secs(1);

/// What the engine says of a container's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No health check (none configured, or `NONE`).
    Unchecked,
    Starting,
    Healthy,
    Unhealthy,
    /// The container no longer runs (or is gone): its wait says how it ended.
    NotRunning,
}

/// The health of a container, from `inspect`.
pub async fn health_of(docker: &Docker, container: &str) -> Health {
    let Ok(c) = docker.inspect_container(container, None).await else {
        return Health::NotRunning;
    };
    let state = c.state.unwrap_or_default();
    if state.running != Some(true) {
        return Health::NotRunning;
    }
    match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::Unchecked,
    }
}

/// A stop asked of a container whose start waits for its health.
struct StopFlag {
    asked: AtomicBool,
    wake: Notify,
}

/// The containers whose start waits for health, by ID (IDs are unique, so
/// one map serves every executor of the process).
static STARTING: LazyLock<Mutex<HashMap<String, Arc<StopFlag>>>> = LazyLock::new(Default::default);

/// Held by a start from before it asks the engine to start the container
/// until its health is decided: a stop asked meanwhile ([`stop_asked`]),
/// even before the container runs, ends the wait at once.
pub struct StartGate {
    container: String,
    flag: Arc<StopFlag>,
}

impl StartGate {
    pub fn new(container: &str) -> StartGate {
        let flag = Arc::new(StopFlag {
            asked: AtomicBool::new(false),
            wake: Notify::new(),
        });
        STARTING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(container.to_string(), flag.clone());
        StartGate {
            container: container.to_string(),
            flag,
        }
    }

    /// Whether a stop was asked since the gate was made.
    pub fn stop_asked(&self) -> bool {
        self.flag.asked.load(Ordering::SeqCst)
    }

    /// Waits until the container is healthy (or has no health check, or no
    /// longer runs: its wait reports that, or a stop was asked: the task's
    /// controller stops it); `false` when it was found unhealthy first.
    pub async fn until_healthy(&self, docker: &Docker) -> bool {
        watch(docker, &self.container, Some(&self.flag), |h| h != Health::Starting).await != Health::Unhealthy
    }
}

impl Drop for StartGate {
    fn drop(&mut self) {
        let mut starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        if starting
            .get(&self.container)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flag))
        {
            starting.remove(&self.container);
        }
    }
}

/// A stop is asked of `container`: a start waiting for its health stops waiting.
pub fn stop_asked(container: &str) {
    if let Some(flag) = STARTING.lock().unwrap_or_else(|e| e.into_inner()).get(container) {
        flag.asked.store(true, Ordering::SeqCst);
        // Stores a permit should the watch not be waiting right now.
        flag.wake.notify_one();
    }
}

/// Stops an unhealthy container with its own stop timeout: the task's stop
/// grace period, which the container was created with.
pub async fn stop_unhealthy(docker: &Docker, container: &str) {
    let options = StopContainerOptions { t: None, signal: None };
    if let Err(e) = docker.stop_container(container, Some(options)).await {
        tracing::debug!(container, error = %e, "stopping an unhealthy container failed");
    }
}

/// Looks at the container's health until `done` accepts it (or a stop is
/// asked through `stop`: then [`Health::NotRunning`]), waking on the engine's
/// `health_status` and `die` events for it (or every [`FALLBACK_LOOK`]).
async fn watch(docker: &Docker, container: &str, stop: Option<&StopFlag>, done: impl Fn(Health) -> bool) -> Health {
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("container", vec![container]),
        ("event", vec!["health_status", "die"]),
    ]);
    let mut events = Some(docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build())));
    let stop_asked = || stop.is_some_and(|f| f.asked.load(Ordering::SeqCst));
    let stop_wake = async {
        match stop {
            Some(f) => f.wake.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_wake);
    loop {
        if stop_asked() {
            return Health::NotRunning;
        }
        let h = health_of(docker, container).await;
        if done(h) {
            return h;
        }
        let next_event = async {
            match events.as_mut() {
                Some(stream) => stream.next().await.map(|ev| ev.is_ok()),
                None => std::future::pending().await,
            }
        };
        let broke = tokio::select! {
            ev = next_event => ev != Some(true),
            // The loop's first look sees the stop.
            () = &mut stop_wake => false,
            _ = tokio::time::sleep(FALLBACK_LOOK) => false,
        };
        if broke {
            // The stream broke: looking every second is enough.
            events = None;
        }
    }
}

/// While the container runs: resolves when it turns unhealthy; never
/// resolves for a container without a health check, or once it stopped
/// (its wait reports that).
pub async fn until_unhealthy(docker: &Docker, container: &str) {
    let h = watch(docker, container, None, |h| {
        matches!(h, Health::Unhealthy | Health::Unchecked | Health::NotRunning)
    })
    .await;
    if h != Health::Unhealthy {
        std::future::pending::<()>().await;
    }
}

/// Whether a task asks for a health check of its own (`--no-healthcheck`,
/// `{"Test": ["NONE"]}`, is none).
pub fn has_health_check(spec: &TaskSpec) -> bool {
    let Some(h) = spec.container_spec.as_ref().and_then(|c| c.healthcheck.as_ref()) else {
        return false;
    };
    let test: Vec<&str> = h
        .get("Test")
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    !matches!(test.first(), None | Some(&"NONE"))
}

/// Why the process executor cannot run a task, when it has a health check.
pub fn process_rejection(spec: &TaskSpec) -> Option<String> {
    has_health_check(spec).then(|| {
        "health checks need the docker executor (this node runs processes): remove the health check or \
         use --no-healthcheck"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shoal_shared::model::ContainerSpec;

    use super::*;

    fn spec(health: Option<serde_json::Value>) -> TaskSpec {
        TaskSpec {
            container_spec: Some(ContainerSpec {
                healthcheck: health,
                ..ContainerSpec::default()
            }),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn a_health_check_is_a_test_other_than_none() {
        assert!(!has_health_check(&spec(None)));
        assert!(!has_health_check(&spec(Some(json!({"Test": ["NONE"]})))));
        assert!(!has_health_check(&spec(Some(json!({"Interval": 1_000_000_000})))));
        assert!(has_health_check(&spec(Some(json!({"Test": ["CMD-SHELL", "true"]})))));
        assert!(process_rejection(&spec(Some(json!({"Test": ["CMD", "true"]})))).is_some());
        assert!(process_rejection(&spec(Some(json!({"Test": ["NONE"]})))).is_none());
    }
}
