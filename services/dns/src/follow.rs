//! Follows this node's network view ([`shoal_shared::netview`]): the views
//! the acting dispatcher publishes on `shoal.net.node.<id>`, and the whole
//! view asked for on `shoal.net.req` at start (until answered), after every
//! NATS reconnect and every [`RESYNC`] (NATS delivers at most once, so a
//! published view can be missed). Only a view newer than the one held is
//! taken; each rebuilds the answer index and re-syncs the listeners.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_shared::envelope;
use shoal_shared::netview::{NetView, NetViewRequest};
use shoal_shared::subjects;
use tokio::sync::mpsc;

use crate::answer::Index;
use crate::listen::Listeners;
use crate::metrics::metrics;
use crate::server::Shared;

/// A held view is asked for again this often.
pub const RESYNC: Duration = Duration::from_secs(30);

/// How long a view request waits for the acting dispatcher.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks for the node's view: at once, then whenever NATS reconnected, every
/// [`RESYNC`], and every second while unanswered.
async fn ask_views(nats: async_nats::Client, node_id: String, tx: mpsc::Sender<NetView>) {
    let mut connects = nats.statistics().connects.load(Ordering::Relaxed);
    let mut next = Instant::now();
    loop {
        let now_connects = nats.statistics().connects.load(Ordering::Relaxed);
        if now_connects != connects {
            connects = now_connects;
            next = Instant::now();
        }
        if Instant::now() >= next {
            let req = NetViewRequest {
                node_id: node_id.clone(),
            };
            match envelope::request::<_, NetView>(&nats, subjects::net_requests(), &req, ASK_TIMEOUT).await {
                Ok(view) => {
                    next = Instant::now() + RESYNC;
                    if tx.send(view).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no network view yet");
                    next = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

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
    let mut published = nats.subscribe(subjects::net_view(&node_id)).await?;
    let (tx, mut asked) = mpsc::channel(4);
    let asker = tokio::spawn(ask_views(nats.clone(), node_id.clone(), tx));
    tokio::pin!(shutdown);
    let mut held: Option<u64> = None;
    let mut retry_binds = tokio::time::interval(Duration::from_secs(5));
    loop {
        let view = tokio::select! {
            msg = published.next() => match msg {
                Some(msg) => match envelope::decode::<NetView>(&msg.payload) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "a network view that does not decode");
                        continue;
                    }
                },
                None => break,
            },
            Some(v) = asked.recv() => v,
            _ = retry_binds.tick() => {
                // Binds that failed (say, a port another process held) are tried again.
                let wanted = own_listen_addrs(&shared.index(), port);
                if !wanted.is_subset(&listeners.addrs()) {
                    listeners.sync(&wanted).await;
                }
                continue;
            }
            _ = &mut shutdown => break,
        };
        if view.node_id != node_id || held.is_some_and(|h| view.version <= h) {
            continue;
        }
        held = Some(view.version);
        let index = Index::build(&view);
        let wanted = own_listen_addrs(&index, port);
        shared.set_index(index);
        let m = metrics();
        m.view_version.set(view.version as i64);
        m.views_applied.inc();
        tracing::debug!(version = view.version, "network view taken");
        listeners.sync(&wanted).await;
    }
    asker.abort();
    Ok(())
}
