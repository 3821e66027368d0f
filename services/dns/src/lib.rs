//! `shoal-dns`: one per host. Answers the cluster's names (services, `tasks.`,
//! task names, network aliases) from this node's network view, scoped to the
//! networks the asking container shares with the target, as Docker's embedded
//! DNS server does; forwards every other name to the host's upstream
//! resolvers. See ARCHITECTURE.md, "Name resolution".

pub mod answer;
pub mod config;
pub mod follow;
pub mod forward;
pub mod listen;
pub mod metrics;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shoal_shared::membership;

pub use config::Config;

/// Runs shoal-dns until `shutdown` completes. Must be called inside a tokio runtime.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let upstreams = config.upstreams();
    if upstreams.is_empty() {
        tracing::warn!("no upstream resolvers: names outside the cluster get SERVFAIL");
    }
    let forwarder = forward::Forwarder::new(upstreams, Duration::from_millis(config.upstream_timeout_ms));
    tracing::info!(upstreams = ?forwarder.upstreams().collect::<Vec<_>>(), "upstream resolvers");
    let shared = Arc::new(server::Shared::new(forwarder));
    let mut listeners = listen::Listeners::new(shared.clone());
    for addr in config.listen_addrs() {
        listeners
            .serve_fixed(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    }

    let Some(dir) = config.swarm_dir.clone() else {
        let node_id = config.node_id.clone().unwrap_or_default();
        let nats = config.nats.connect(&format!("shoal-dns-{node_id}")).await?;
        return follow::follow(nats, node_id, shared, listeners, config.port, shutdown).await;
    };
    // A joined host: node ID and NATS from the membership `swarm join` wrote.
    tokio::pin!(shutdown);
    let every = Duration::from_millis(200);
    let m = tokio::select! {
        m = membership::wait_joined(&dir, every) => m,
        _ = &mut shutdown => return Ok(()),
    };
    tracing::info!(node = %m.node_id, nats = %m.nats_url(), "this host is in a swarm");
    let nats = membership::connect(&dir, &m, &format!("shoal-dns-{}", m.node_id)).await?;
    let left = async {
        while membership::Membership::read(&dir).is_some() {
            tokio::time::sleep(every).await;
        }
        tracing::info!("this host left the swarm: shoal-dns stopping");
    };
    let stop = async {
        tokio::select! {
            _ = left => {}
            _ = &mut shutdown => {}
        }
    };
    follow::follow(nats, m.node_id.clone(), shared, listeners, config.port, stop).await
}
