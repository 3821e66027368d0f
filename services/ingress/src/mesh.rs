//! The listeners: one per published port, opened and closed as the view
//! changes, each reading its current [`Route`] from a watch channel so that
//! backends change without touching the socket.
//!
//! Connections and UDP flows run in tasks of their own, not the listener's:
//! closing a port (the service left the view) or dropping a backend only
//! stops new connections; those in flight finish on their own (drain).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::metrics;
use crate::routes::{Key, Proto, Route};

/// How often a published port that cannot be bound (another process holds
/// it) is tried again.
pub const BIND_RETRY: Duration = Duration::from_secs(2);

/// Settings every listener shares.
#[derive(Debug, Clone)]
pub struct Opts {
    pub publish_addr: IpAddr,
    pub connect_timeout: Duration,
    pub udp_idle: Duration,
}

/// What a listener reads for each new connection or flow.
pub struct Shared {
    pub route: watch::Receiver<Arc<Route>>,
    /// Round-robin position over the route's backends (kept across route changes).
    pub next: AtomicUsize,
    pub opts: Opts,
}

struct Listener {
    route: watch::Sender<Arc<Route>>,
    task: JoinHandle<()>,
}

/// Every listener of this host.
pub struct Mesh {
    opts: Opts,
    listeners: HashMap<Key, Listener>,
}

impl Mesh {
    pub fn new(opts: Opts) -> Mesh {
        Mesh {
            opts,
            listeners: HashMap::new(),
        }
    }

    /// Makes the listeners match `routes`: closes the ports no longer
    /// published, opens new ones, and hands changed routes to the others.
    pub fn apply(&mut self, routes: BTreeMap<Key, Route>) {
        self.listeners.retain(|key, l| {
            let keep = routes.contains_key(key);
            if !keep {
                tracing::info!(protocol = key.0.as_str(), port = key.1, "closing published port");
                l.task.abort();
            }
            keep
        });
        for (key, route) in routes {
            if let Some(l) = self.listeners.get(&key) {
                l.route.send_if_modified(|cur| {
                    if **cur == route {
                        return false;
                    }
                    tracing::info!(
                        protocol = key.0.as_str(),
                        port = key.1,
                        service = %route.service_name,
                        backends = ?route.backends,
                        "route changed"
                    );
                    *cur = Arc::new(route);
                    true
                });
                continue;
            }
            tracing::info!(
                protocol = key.0.as_str(),
                port = key.1,
                service = %route.service_name,
                backends = ?route.backends,
                proxy_protocol = route.proxy_protocol,
                "publishing port"
            );
            let (tx, rx) = watch::channel(Arc::new(route));
            let shared = Arc::new(Shared {
                route: rx,
                next: AtomicUsize::new(0),
                opts: self.opts.clone(),
            });
            let addr = SocketAddr::new(self.opts.publish_addr, key.1);
            let task = match key.0 {
                Proto::Tcp => tokio::spawn(crate::tcp::listen(addr, shared)),
                Proto::Udp => tokio::spawn(crate::udp::listen(addr, shared)),
            };
            self.listeners.insert(key, Listener { route: tx, task });
        }
        metrics().listeners.set(self.listeners.len() as i64);
    }

    /// Closes every published port.
    pub fn close(&mut self) {
        self.apply(BTreeMap::new());
    }
}

impl Shared {
    /// The current route and the backends to try for a new connection, in
    /// order: round robin over the route's backends, then the others.
    pub fn pick(&self) -> (Arc<Route>, Vec<SocketAddr>) {
        let route = self.route.borrow().clone();
        let n = route.backends.len();
        if n == 0 {
            return (route, Vec::new());
        }
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        let order = (0..n).map(|i| route.backends[(start + i) % n]).collect();
        (route, order)
    }
}

/// Binds with `bind` until it succeeds: a port another process holds is
/// logged (once, then quietly) and tried again every [`BIND_RETRY`].
pub async fn bind_retrying<T, F, Fut>(addr: SocketAddr, proto: Proto, mut bind: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut tries = 0u64;
    loop {
        match bind().await {
            Ok(s) => {
                if tries > 0 {
                    tracing::info!(%addr, protocol = proto.as_str(), "published port bound after all");
                }
                return s;
            }
            Err(e) => {
                if tries == 0 {
                    tracing::warn!(%addr, protocol = proto.as_str(), error = %e, "cannot listen on a published port; trying again every 2 s");
                } else {
                    tracing::debug!(%addr, protocol = proto.as_str(), error = %e, "published port still unavailable");
                }
                tries += 1;
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}
