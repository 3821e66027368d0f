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
//! - [`net`]: overlay networks on this host (bridges, VXLAN, task interfaces) from the node's network view;
//! - [`sandbox`]: docker tasks' network sandboxes;
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
pub mod net;
pub mod process;
pub mod sandbox;
pub mod session;
pub mod template;

use std::future::Future;

use shoal_shared::membership;

pub use config::Config;

/// Runs the agent until `shutdown` completes. Must be called inside an actix
/// `System`. Tasks keep running after the agent stops.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let name = format!("shoal-agent-{}", config.node_name);
    let Some(dir) = config.swarm_dir.clone() else {
        let nats = config.nats.connect(&name).await?;
        let _addr = agent::start(&config, nats).await?;
        shutdown.await;
        tracing::info!("agent stopping; tasks keep running");
        return Ok(());
    };
    // A joined host: node ID and NATS from the membership `swarm join` wrote.
    tokio::pin!(shutdown);
    let every = std::time::Duration::from_millis(200);
    let m = tokio::select! {
        m = membership::wait_joined(&dir, every) => m,
        _ = &mut shutdown => return Ok(()),
    };
    config.node_id = Some(m.node_id.clone());
    tracing::info!(node = %m.node_id, nats = %m.nats_url(), "this host is in a swarm");
    let nats = membership::connect(&dir, &m, &name).await?;
    let _addr = agent::start(&config, nats).await?;
    let left = async {
        while membership::Membership::read(&dir).is_some() {
            tokio::time::sleep(every).await;
        }
    };
    tokio::select! {
        _ = left => tracing::info!("this host left the swarm: agent stopping"),
        _ = &mut shutdown => tracing::info!("agent stopping; tasks keep running"),
    }
    Ok(())
}
