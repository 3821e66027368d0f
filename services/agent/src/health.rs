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
use std::time::Duration;

use bollard::models::HealthStatusEnum;
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use shoal_shared::model::TaskSpec;

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

/// Looks at the container's health until `done` accepts it, waking on the
/// engine's `health_status` events for it (or every [`FALLBACK_LOOK`]).
async fn watch(docker: &Docker, container: &str, done: impl Fn(Health) -> bool) -> Health {
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("container", vec![container]),
        ("event", vec!["health_status"]),
    ]);
    let mut events = Some(docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build())));
    loop {
        let h = health_of(docker, container).await;
        if done(h) {
            return h;
        }
        match events.as_mut() {
            Some(stream) => {
                tokio::select! {
                    ev = stream.next() => if !matches!(ev, Some(Ok(_))) {
                        // The stream broke: looking every second is enough.
                        events = None;
                    },
                    _ = tokio::time::sleep(FALLBACK_LOOK) => {}
                }
            }
            None => tokio::time::sleep(FALLBACK_LOOK).await,
        }
    }
}

/// After a start: waits until the container is healthy (or has no health
/// check, or no longer runs: its wait reports that); `false` when it was
/// found unhealthy first.
pub async fn until_healthy(docker: &Docker, container: &str) -> bool {
    watch(docker, container, |h| h != Health::Starting).await != Health::Unhealthy
}

/// While the container runs: resolves when it turns unhealthy; never
/// resolves for a container without a health check, or once it stopped
/// (its wait reports that).
pub async fn until_unhealthy(docker: &Docker, container: &str) {
    let h = watch(docker, container, |h| {
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
