//! `shoal-ingress`: the routing mesh, one per host.
//!
//! Follows this host's network view ([`shoal_shared::netview::follow`]) and,
//! for every service port published in ingress mode, listens on the
//! published port (TCP or UDP, on `--publish-addr`) and forwards each
//! connection or UDP flow to a serving task of that service on the `ingress`
//! network, in user space (tokio; see ARCHITECTURE.md "Routing mesh").
//!
//! - [`routes`]: the view's published ports and their backends (pure);
//! - [`mesh`]: listeners opened and closed as the view changes;
//! - [`tcp`], [`udp`]: forwarding, PROXY protocol v2 when the service opts in;
//! - [`metrics`]: connections by outcome, active, bytes, connect latency.
#![forbid(unsafe_code)]

pub mod config;
pub mod mesh;
pub mod metrics;
pub mod routes;
pub mod tcp;
pub mod udp;

use std::future::Future;

use shoal_shared::membership;

pub use config::Config;

/// Runs the mesh until `shutdown` completes. Must be called inside an actix `System`.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let Some(dir) = config.swarm_dir.clone() else {
        let nats = config.nats.connect("shoal-ingress").await?;
        return serve(&config, nats, shutdown).await;
    };
    // A joined host: node ID and NATS from the membership `swarm join` wrote.
    tokio::pin!(shutdown);
    let every = std::time::Duration::from_millis(200);
    let m = tokio::select! {
        m = membership::wait_joined(&dir, every) => m,
        _ = &mut shutdown => return Ok(()),
    };
    config.node_id = m.node_id.clone();
    tracing::info!(node = %m.node_id, nats = %m.nats_url(), "this host is in a swarm");
    let nats = membership::connect(&dir, &m, "shoal-ingress").await?;
    let left = async {
        while membership::Membership::read(&dir).is_some() {
            tokio::time::sleep(every).await;
        }
        tracing::info!("this host left the swarm: closing published ports");
    };
    serve(&config, nats, async {
        tokio::select! {
            _ = left => {}
            _ = &mut shutdown => {}
        }
    })
    .await
}

/// Follows the view and keeps the listeners in step until `shutdown`.
async fn serve(config: &Config, nats: async_nats::Client, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut views = shoal_shared::netview::follow(nats, config.node_id.clone());
    let mut mesh = mesh::Mesh::new(mesh::Opts {
        publish_addr: config.publish_addr,
        connect_timeout: config.connect_timeout(),
        udp_idle: config.udp_idle(),
    });
    tracing::info!(node = %config.node_id, addr = %config.publish_addr, "ingress ready");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            view = views.recv() => match view {
                Some(view) => {
                    tracing::debug!(version = view.version, "network view");
                    mesh.apply(routes::routes(&view));
                }
                None => anyhow::bail!("the network view follower ended"),
            },
        }
    }
    tracing::info!("ingress stopping");
    mesh.close();
    Ok(())
}
