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

pub use config::Config;

/// Runs the mesh until `shutdown` completes. Must be called inside an actix `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    metrics::metrics();
    let nats = config.nats.connect("shoal-ingress").await?;
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
