//! `shoal-agent`: runs the tasks the dispatcher assigns to its node.
//!
//! One per node. It registers the node's description with the acting
//! dispatcher, heartbeats, receives its assignments (full set, then numbered
//! increments) and drives each task through SwarmKit's controller states
//! (assigned → accepted → preparing → ready → starting → running →
//! complete | failed | shutdown), reporting each.
//!
//! - [`config`]: flags and `SHOAL_*` variables;
//! - [`db`]: the sled task database that lets a restarted agent re-adopt its work;
//! - [`executor`]: what the controller drives, and the `process` executor;
//! - [`docker`]: the `docker` executor (bollard);
//! - [`image`]: answers the API's image lookups from the node's engine;
//! - [`agent`]: the actix actor.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod db;
pub mod docker;
pub mod executor;
pub mod image;

use std::future::Future;

pub use config::Config;

/// Runs the agent until `shutdown` completes. Must be called inside an actix
/// `System`. Tasks keep running after the agent stops.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let nats = config
        .nats
        .connect(&format!("shoal-agent-{}", config.node_name))
        .await?;
    let _addr = agent::start(&config, nats).await?;
    shutdown.await;
    tracing::info!("agent stopping; tasks keep running");
    Ok(())
}
