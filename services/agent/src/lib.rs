//! `shoal-agent`: runs the tasks the dispatcher assigns to its node.
//!
//! One per node. It registers the node's description with the acting
//! dispatcher, heartbeats, receives its assignments (full set, then numbered
//! increments) and drives each task through SwarmKit's controller states
//! (assigned → accepted → preparing → ready → starting → running →
//! complete | failed | shutdown), reporting each.
//!
//! - [`config`]: flags and `SHOAL_*` variables;
//! - [`controller`]: one task's life as a pure state machine (events in, effects out);
//! - [`session`]: the session with the dispatcher, as pure decisions;
//! - [`exec`]: the executor interface and the values that cross it;
//! - [`process`]: the `process` executor;
//! - [`docker`]: the `docker` executor (bollard);
//! - [`files`]: secret and config files (from memory, on a tmpfs) bound into containers;
//! - [`db`]: the sled task database that lets a restarted agent re-adopt its work;
//! - [`template`]: Swarm's per-task placeholders in hostname, env and mounts;
//! - [`logs`]: answers the API's log reads (engine logs, or the process executor's files);
//! - [`image`]: answers the API's image lookups from the node's engine;
//! - [`metrics`]: tasks by phase, executor operation latency, reports sent;
//! - [`agent`]: the actix actor, a thin shell performing the controller's effects.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod controller;
pub mod db;
pub mod docker;
pub mod exec;
pub mod files;
pub mod health;
pub mod image;
pub mod logs;
pub mod metrics;
pub mod process;
pub mod session;
pub mod template;

use std::future::Future;

pub use config::Config;

/// Runs the agent until `shutdown` completes. Must be called inside an actix
/// `System`. Tasks keep running after the agent stops.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let nats = config
        .nats
        .connect(&format!("shoal-agent-{}", config.node_name))
        .await?;
    let _addr = agent::start(&config, nats).await?;
    shutdown.await;
    tracing::info!("agent stopping; tasks keep running");
    Ok(())
}
