//! `shoal-scheduler`: keeps every service's desired state true.
//!
//! One process plays SwarmKit's orchestrators (replicated and global),
//! restart supervisor, updater, task reaper, allocator (published ports,
//! overlay subnets, VIPs and task addresses) and scheduler. It runs on every manager; only the one on the store leader's
//! node acts, and each of its writes carries the leader's term as a fencing
//! token, so a deposed scheduler's write is refused.
//!
//! - [`snapshot`]: the store state it reads, fed by a watcher and by its own writes;
//! - [`reconcile`]: one pure pass, snapshot + clock in, store operations out;
//! - [`placement`]: the filter pipeline and spread;
//! - [`ipam`]: subnets from the address pools, addresses within a subnet;
//! - [`metrics`]: pass timings, tasks by state, pending tasks, operations written;
//! - [`actors`]: the actix actor that follows the store and commits the passes.
#![forbid(unsafe_code)]

pub mod actors;
pub mod config;
pub mod ipam;
pub mod metrics;
pub mod placement;
pub mod reconcile;
pub mod snapshot;

use std::future::Future;

pub use config::Config;

/// Runs the scheduler until `shutdown` completes. Must be called inside an actix `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let nats = config.nats.connect("shoal-scheduler").await?;
    let _addr = actors::start(config.clone(), nats);
    tracing::info!(replica = config.leadership.store_replica, "scheduler ready");
    shutdown.await;
    tracing::info!("scheduler stopping");
    Ok(())
}
