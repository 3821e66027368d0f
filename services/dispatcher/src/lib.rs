//! `shoal-dispatcher`: the managers' side of the agents.
//!
//! Agents open sessions over NATS ([`shoal_shared::dispatch`]): registration
//! creates or updates their node object and marks it ready; heartbeats keep
//! it ready, and a node that misses [`logic::GRACE_PERIODS`] heartbeat
//! periods goes down with `heartbeat failure`. Each agent gets its full
//! assignment set, then numbered increments. Task status reports are merged
//! into the task objects in batched store writes, never moving a state
//! backwards. Runs on every manager; only the one on the store leader's node
//! acts, and its writes carry the leader's term as a fencing token.
//!
//! - [`logic`]: sessions, expiry, assignments and status merging (no I/O);
//! - [`netview`]: each node's view of the networks it takes part in
//!   (published whole on `shoal.net.node.<id>` when it changes, answered on
//!   `shoal.net.req`);
//! - [`metrics`]: sessions, heartbeats, assignments, status writes, nodes marked down;
//! - [`actors`]: the actix actor adapting NATS and the store watcher.
#![forbid(unsafe_code)]

pub mod actors;
pub mod config;
pub mod logic;
pub mod metrics;
pub mod netview;

use std::future::Future;

pub use config::Config;

/// Runs the dispatcher until `shutdown` completes. Must be called inside an actix `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let nats = config.nats.connect("shoal-dispatcher").await?;
    let _addr = actors::start(config.clone(), nats).await?;
    tracing::info!(replica = config.leadership.store_replica, "dispatcher ready");
    shutdown.await;
    tracing::info!("dispatcher stopping");
    Ok(())
}
