//! Follows this node's network view with the hosts' shared follower
//! ([`shoal_shared::netview::follow`]: pushed views, the whole view asked at
//! start and every few seconds, only newer versions); each view rebuilds the
//! answer index and re-syncs the listeners on this host's own addresses.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_shared::netview;

use crate::answer::Index;
use crate::listen::Listeners;
use crate::metrics::metrics;
use crate::server::Shared;

/// This host's own addresses in `index`, on `port`.
pub fn own_listen_addrs(index: &Index, port: u16) -> BTreeSet<SocketAddr> {
    index
        .own_addrs()
        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
        .collect()
}

/// Follows the views until `shutdown`.
pub async fn follow(
    nats: async_nats::Client,
    node_id: String,
    shared: Arc<Shared>,
    mut listeners: Listeners,
    port: u16,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut views = netview::follow(nats, node_id.clone());
    tokio::pin!(shutdown);
    let mut retry_binds = tokio::time::interval(Duration::from_secs(5));
    loop {
        let view = tokio::select! {
            v = views.recv() => match v {
                Some(v) => v,
                None => anyhow::bail!("the network view follower stopped (NATS closed)"),
            },
            _ = retry_binds.tick() => {
                // Binds that failed (say, a port another process held) are tried again.
                let wanted = own_listen_addrs(&shared.index(), port);
                if !wanted.is_subset(&listeners.addrs()) {
                    listeners.sync(&wanted).await;
                }
                continue;
            }
            _ = &mut shutdown => return Ok(()),
        };
        if view.node_id != node_id {
            continue;
        }
        let index = Index::build(&view);
        let wanted = own_listen_addrs(&index, port);
        shared.set_index(index);
        let m = metrics();
        m.view_version.set(view.version as i64);
        m.views_applied.inc();
        tracing::debug!(version = view.version, "network view taken");
        listeners.sync(&wanted).await;
    }
}
