//! The host side of overlay networks (issue 11 §1): the agent follows its
//! node's [`NetView`] and realizes it with netlink, the way libnetwork's
//! overlay driver does, and attaches its tasks to it.
//!
//! - [`plan`]: the devices and entries a view asks for, and the steps from
//!   what exists (pure);
//! - [`link`]: netlink (rtnetlink): observing, applying, veth attachment;
//! - [`netns`]: netlink work inside a namespace; the process executor's
//!   namespace files;
//! - [`vip`]: the VIP table a task's namespace should hold (pure), and
//!   [`nft`]: writing it there (nftables over netlink).
//!
//! [`NetHost::start`] follows the node's view with the hosts' shared
//! follower (`netview::follow`), keeps the newest view by `version`, and
//! reconciles the host's devices on every new view and every
//! [`REFRESH`]. Until the first view arrives nothing is touched, so a
//! restarted agent leaves running tasks' networks as they are; after it,
//! only what differs changes. Then each docker task's sandbox gets its VIP
//! table again where it changed.

pub mod link;
pub mod netns;
pub mod nft;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod vip;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_shared::model::Task;
use shoal_shared::netview::{NetView, OVERLAY_MTU};
use tokio::sync::{watch, Mutex};

use crate::exec::ExecError;
use link::{Attachment, Netlink};

/// How often the agent asks for its whole view and repairs its devices.
pub const REFRESH: Duration = Duration::from_secs(10);

/// How long preparing a task waits for its networks to exist on this host.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Brings the devices to what `view` asks for: `ovl` works in the overlay
/// namespace (the file `ovl_ns`), `host` in the host's. Returns the steps
/// it took; a failed step is logged and the others still run (the next
/// reconcile tries it again).
pub async fn realize(host: &Netlink, ovl: &Netlink, ovl_ns: &Path, view: &NetView) -> Result<Vec<plan::Op>, String> {
    let want = plan::desired(view);
    let mut have = ovl.observe().await?;
    have.host_links = host.observe().await?.host_links;
    let ops = plan::plan(&want, &have);
    if !ops.is_empty() {
        tracing::info!(
            version = view.version,
            steps = ops.len(),
            "agent: realizing the network view"
        );
    }
    let file = std::fs::File::open(ovl_ns).map_err(|e| format!("opening {}: {e}", ovl_ns.display()))?;
    for op in &ops {
        if let Err(e) = ovl.apply(host, &file, op).await {
            tracing::warn!(?op, error = %e, "agent: network step failed");
        }
    }
    Ok(ops)
}

/// Removes the overlay namespace (bridges and VXLAN devices go with it)
/// and the host's own links.
pub async fn teardown(host: &Netlink, ovl_ns: &Path) -> Result<(), String> {
    for name in host.observe().await?.host_links.keys() {
        host.del_link(name).await?;
    }
    netns::remove(ovl_ns);
    Ok(())
}

/// This host's overlay networks.
pub struct NetHost {
    node_id: String,
    /// In the agent's own namespace.
    nl: Netlink,
    /// The overlay namespace: every bridge and VXLAN device, task veths' host ends.
    ovl_ns: PathBuf,
    view: watch::Sender<Option<Arc<NetView>>>,
    /// Serializes reconciling and attaching (both read and change devices).
    busy: Mutex<()>,
    /// Docker tasks' network sandboxes on this host, by task ID.
    sandboxes: Mutex<HashMap<String, Sandbox>>,
}

/// A task's network namespace and the VIP table last written there.
struct Sandbox {
    ns: PathBuf,
    /// The task's networks, as its attachments name them (none for a task
    /// re-adopted after a restart: the view's endpoints name them).
    networks: Vec<String>,
    written: Option<vip::VipTable>,
}

impl NetHost {
    /// Opens netlink in the agent's namespace and starts following the view.
    pub async fn start(nats: async_nats::Client, node_id: &str, data_dir: &Path) -> Result<Arc<NetHost>, String> {
        let host = Arc::new(NetHost {
            node_id: node_id.to_string(),
            nl: Netlink::connect()?,
            ovl_ns: netns::dir(data_dir).join("overlay"),
            view: watch::channel(None).0,
            busy: Mutex::new(()),
            sandboxes: Mutex::new(HashMap::new()),
        });
        // The hosts' shared follower: the whole view at once, pushed ones
        // after, asked again every few seconds (NATS may drop a push).
        let mut views = shoal_shared::netview::follow(nats, node_id.to_string());
        let me = host.clone();
        tokio::spawn(async move {
            while let Some(v) = views.recv().await {
                me.offer(v);
            }
        });
        let me = host.clone();
        tokio::spawn(async move {
            let mut rx = me.view.subscribe();
            loop {
                me.reconcile().await;
                me.sync_vips(None).await;
                let _ = tokio::time::timeout(REFRESH, rx.changed()).await;
            }
        });
        Ok(host)
    }

    /// Keeps `v` if it is newer than the view held.
    pub fn offer(&self, v: NetView) {
        if v.node_id != self.node_id {
            return;
        }
        self.view.send_if_modified(|held| {
            if held.as_ref().is_some_and(|h| h.version >= v.version) {
                return false;
            }
            *held = Some(Arc::new(v));
            true
        });
    }

    /// The view held, if one arrived.
    pub fn view(&self) -> Option<Arc<NetView>> {
        self.view.borrow().clone()
    }

    /// Brings the host's devices to what the view asks for.
    pub async fn reconcile(&self) {
        let Some(view) = self.view() else { return };
        let _busy = self.busy.lock().await;
        let res = if view.networks.is_empty() {
            teardown(&self.nl, &self.ovl_ns).await
        } else {
            match netns::create(&self.ovl_ns) {
                Ok(()) => {
                    let (ovl_ns, view) = (self.ovl_ns.clone(), view.clone());
                    netns::run_in_both(&self.ovl_ns, move |host, ovl| async move {
                        realize(&host, &ovl, &ovl_ns, &view).await
                    })
                    .await
                    .and_then(|r| r.map(|_| ()))
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "agent: cannot realize the network view");
        }
    }

    /// Waits until every network of the task exists on this host. `Ok(false)`:
    /// no view has ever arrived (no dispatcher publishes one), so the task
    /// runs without its overlay networks, as before they existed.
    pub async fn wait_ready(&self, task: &Task) -> Result<bool, ExecError> {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            let view = self.view();
            let mut missing = None;
            for a in &task.networks_attachments {
                let bridge = plan::bridge_name(&a.network.meta.id);
                let listed = view.as_ref().is_some_and(|v| v.network(&a.network.meta.id).is_some());
                if !listed || !self.has_bridge(&bridge).await {
                    missing = Some(a.network.spec.name.clone());
                    break;
                }
            }
            let Some(name) = missing else { return Ok(true) };
            if tokio::time::Instant::now() >= deadline {
                if view.is_none() {
                    tracing::warn!(task = %task.meta.id, "agent: no network view arrived; running the task without its overlay networks");
                    return Ok(false);
                }
                return Err(ExecError::Temporary(format!(
                    "network {name} is not ready on this node"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn has_bridge(&self, bridge: &str) -> bool {
        if !netns::is_mounted(&self.ovl_ns) {
            return false;
        }
        let b = bridge.to_string();
        matches!(
            netns::run_in(&self.ovl_ns, move |nl| async move { nl.index(&b).await.is_some() }).await,
            Ok(true)
        )
    }

    /// This host's own address on the task's first network: the resolver
    /// its containers use (`shoal-dns` listens there).
    pub fn dns_for(&self, task: &Task) -> Option<Ipv4Addr> {
        let first = task.networks_attachments.first()?;
        let view = self.view()?;
        let e = view.own_endpoint(&first.network.meta.id)?;
        e.ip()
    }

    /// The interfaces a task gets, one per attachment: `eth0`, `eth1`, ...
    pub fn attachments(&self, task: &Task) -> Result<Vec<Attachment>, ExecError> {
        let view = self.view();
        let mut out = Vec::new();
        for (i, a) in task.networks_attachments.iter().enumerate() {
            let cidr = a.addresses.first().ok_or_else(|| {
                ExecError::Rejected(format!("network {}: the task has no address", a.network.spec.name))
            })?;
            let (addr, prefix) = plan::parse_cidr(cidr)
                .ok_or_else(|| ExecError::Rejected(format!("network {}: bad address {cidr}", a.network.spec.name)))?;
            let mtu = view
                .as_ref()
                .and_then(|v| v.network(&a.network.meta.id))
                .map_or(OVERLAY_MTU, |n| if n.mtu == 0 { OVERLAY_MTU } else { n.mtu });
            out.push(Attachment {
                bridge: plan::bridge_name(&a.network.meta.id),
                host_end: plan::veth_name(&task.meta.id, i),
                ifname: format!("eth{i}"),
                addr,
                prefix,
                mac: plan::mac_of(addr),
                mtu,
            });
        }
        Ok(out)
    }

    /// Attaches the namespace at `netns` to each of the task's networks,
    /// and writes its VIP table there.
    pub async fn attach(&self, task: &Task, netns: &Path) -> Result<(), ExecError> {
        let atts = self.attachments(task)?;
        let busy = self.busy.lock().await;
        let task_ns = netns.to_path_buf();
        netns::run_in(&self.ovl_ns, move |nl| async move {
            for a in &atts {
                nl.attach(&task_ns, a).await?;
            }
            Ok::<(), String>(())
        })
        .await
        .and_then(|r| r)
        .map_err(|e| ExecError::Failed(format!("attaching to the network: {e}")))?;
        drop(busy);
        let networks = task
            .networks_attachments
            .iter()
            .map(|a| a.network.meta.id.clone())
            .collect();
        self.track(&task.meta.id, netns, networks).await;
        Ok(())
    }

    /// Takes over the sandbox of a task that kept running through an agent
    /// restart: its VIP table is written again (the one there may be stale).
    pub async fn adopt(&self, task_id: &str, netns: &Path) {
        self.track(task_id, netns, Vec::new()).await;
    }

    async fn track(&self, task_id: &str, netns: &Path, networks: Vec<String>) {
        let sb = Sandbox {
            ns: netns.to_path_buf(),
            networks,
            written: None,
        };
        self.sandboxes.lock().await.insert(task_id.to_string(), sb);
        self.sync_vips(Some(task_id)).await;
    }

    /// Writes each sandbox's VIP table (only `only`'s, when given) where it
    /// differs from the one last written. A sandbox whose namespace is gone
    /// (its container ended) is forgotten; the table went with it.
    pub async fn sync_vips(&self, only: Option<&str>) {
        let Some(view) = self.view() else { return };
        let mut sandboxes = self.sandboxes.lock().await;
        let mut gone = Vec::new();
        for (task_id, sb) in sandboxes.iter_mut() {
            if only.is_some_and(|o| o != task_id) {
                continue;
            }
            let want = vip::desired(&view, task_id, &sb.networks);
            if sb.written.as_ref() == Some(&want) {
                continue;
            }
            if !sb.ns.exists() {
                gone.push(task_id.clone());
                continue;
            }
            match nft::apply(&sb.ns, &want).await {
                Ok(()) => {
                    tracing::info!(task = %task_id, vips = want.rules.len(), version = view.version, "agent: wrote the task's VIP table");
                    sb.written = Some(want);
                }
                Err(e) => tracing::warn!(task = %task_id, error = %e, "agent: cannot write the task's VIP table"),
            }
        }
        for task_id in gone {
            sandboxes.remove(&task_id);
        }
    }

    /// Removes the host ends of a task's veth pairs (they go with the
    /// task's namespace; this catches one left by a failed attach).
    pub async fn detach(&self, task_id: &str) {
        self.sandboxes.lock().await.remove(task_id);
        if !netns::is_mounted(&self.ovl_ns) {
            return;
        }
        let id = task_id.to_string();
        let _ = netns::run_in(&self.ovl_ns, move |nl| async move {
            for name in nl.our_links().await.unwrap_or_default() {
                if (0..16).any(|i| name == plan::veth_name(&id, i)) {
                    let _ = nl.del_link(&name).await;
                }
            }
        })
        .await;
    }
}
