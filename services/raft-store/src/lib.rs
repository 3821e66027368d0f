//! `shoal-raft-store`: shoal's replicated object store.
//!
//! Every cluster object lives here. One process is one Raft replica
//! (openraft), with its log and vote in a write-ahead log (`<data-dir>/wal/`),
//! its state machine in memory and its last snapshot in `<data-dir>/snapshot`.
//! Everything else talks to it over NATS:
//!
//! - [`typ`]: what a log entry carries (a batch of transactions) and returns;
//! - [`codec`]: MessagePack for everything the replica stores or sends to its peers;
//! - [`wal`]: segment files, CRC-framed records, one flusher batching `fdatasync`s;
//! - [`log_store`]: the Raft log and vote in the WAL, durable before acknowledged;
//! - [`sm`]: the deterministic state machine (objects, names, change history, request ids);
//! - [`membership`]: voters, learners and their reachability; adding and
//!   removing replicas; `--force-new-cluster`;
//! - [`network`]: Raft RPCs as NATS request/reply;
//! - [`server`]: the replica: store API, leader forwarding, proposal batching,
//!   change-feed publishing;
//! - [`metrics`]: term, leadership, indexes, proposals, log flush and snapshot timings;
//! - [`actors`]: the actix actors that adapt NATS subscriptions to the replica.
#![forbid(unsafe_code)]
// openraft's storage traits return its large `StorageError`; the helpers that
// feed them return it too, since boxing it only to unbox at the trait boundary
// buys nothing on these cold error paths.
#![allow(clippy::result_large_err)]

pub mod actors;
pub mod codec;
pub mod config;
pub mod index;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod server;
pub mod sm;
pub mod typ;
pub mod wal;

use std::future::Future;

pub use config::Config;

/// Runs a replica until `shutdown` completes. Must be called inside an actix `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let nats = config
        .nats
        .connect(&format!("shoal-raft-store-{}", config.replica_id))
        .await?;
    let replica = server::Replica::start(&config, nats.clone()).await?;
    let _actors = actors::start(replica.clone(), &nats).await?;
    tracing::info!(replica = config.replica_id, data_dir = %config.data_dir.display(), "raft-store ready");
    shutdown.await;
    tracing::info!("raft-store stopping");
    replica.shutdown().await;
    Ok(())
}
