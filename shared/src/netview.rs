//! What one host needs to know of the cluster's networks (issue 11).
//!
//! The acting dispatcher computes a [`NetView`] per node from its mirror of
//! the store and publishes it, whole, on [`crate::subjects::net_view`]
//! whenever it changes for that node (at most every
//! [`NET_VIEW_MIN_INTERVAL`]); a consumer that starts, or that suspects it
//! missed one, asks for it on [`crate::subjects::net_requests`] with a
//! [`NetViewRequest`]. Every consumer on a host (the agent, which realizes
//! bridges, VXLAN devices and task attachments; `shoal-dns`; `shoal-ingress`)
//! follows the same view and keeps only the newest by [`NetView::version`].
//!
//! A view holds only what the node is allowed to see: the networks its
//! tasks are attached to (plus `ingress`, which every host joins for the
//! routing mesh), the endpoints on those networks and the services with an
//! address or a task on them. It never holds secrets.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{EndpointMode, PortConfig};

/// The dispatcher coalesces changes to one node's view for at least this long.
pub const NET_VIEW_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The UDP port of VXLAN traffic between hosts (IANA's, as libnetwork uses).
pub const VXLAN_PORT: u16 = 4789;

/// MTU of an overlay network on a 1500-byte underlay (50 bytes of VXLAN).
pub const OVERLAY_MTU: u32 = 1450;

/// The label that opts a service into PROXY protocol v2 toward its tasks
/// for connections through the routing mesh (moby#25526).
pub const PROXY_PROTOCOL_LABEL: &str = "com.shoal.ingress.proxy-protocol";

/// Asks the acting dispatcher for one node's whole view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetViewRequest {
    pub node_id: String,
}

/// One node's view of the cluster's networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetView {
    /// The node this view was computed for.
    pub node_id: String,
    /// The store index the view reflects: it only grows (also across a
    /// change of dispatcher), so a consumer ignores a view older than the
    /// one it holds.
    pub version: u64,
    /// The networks this node takes part in, `ingress` included.
    pub networks: Vec<NetworkView>,
    /// Every endpoint (task or host address) on those networks, on any node.
    pub endpoints: Vec<EndpointView>,
    /// The services that have a VIP or a task on those networks.
    pub services: Vec<ServiceView>,
    /// The nodes that hold any of those endpoints, this one included.
    pub nodes: Vec<NodeView>,
}

/// One overlay network as a host realizes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    /// CIDR, e.g. `10.0.1.0/24`.
    pub subnet: String,
    /// The gateway address (no prefix), e.g. `10.0.1.1`.
    pub gateway: String,
    /// The VXLAN network identifier (from 4096).
    pub vni: u32,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    pub mtu: u32,
}

/// What an endpoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EndpointOwner {
    /// A task's address on the network.
    Task {
        task_id: String,
        service_id: String,
        service_name: String,
        /// `<service>.<slot>.<task-id>` (global: `<service>.<node-id>.<task-id>`).
        task_name: String,
        /// The replica slot (none for a global service's task).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<u64>,
        /// `--network-alias` names of the task's service on this network.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        aliases: Vec<String>,
        /// The task runs, is meant to keep running and its node is ready:
        /// DNS answers with it and the load balancers send to it.
        serving: bool,
    },
    /// A host's own address on the network (the address of its bridge),
    /// from which the host reaches tasks on other hosts (the routing mesh)
    /// and on which its `shoal-dns` listens.
    Node,
}

/// One address on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub network_id: String,
    /// CIDR form, e.g. `10.0.1.3/24`.
    pub addr: String,
    /// `02:42:` + the IPv4 bytes (`model::mac_for_ip`).
    pub mac: String,
    /// The node the endpoint lives on.
    pub node_id: String,
    pub owner: EndpointOwner,
}

impl EndpointView {
    /// The address without its prefix length.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.addr.split('/').next()?.parse().ok()
    }
}

/// A service as name resolution and load balancing see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub endpoint_mode: EndpointMode,
    /// `(network ID, CIDR address)` per network (endpoint mode vip only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<(String, String)>,
    /// The published ports (`Endpoint.Ports`, numbers assigned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    /// PROXY protocol v2 toward the tasks ([`PROXY_PROTOCOL_LABEL`]).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// A node that holds endpoints of the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    /// Its underlay address (`Node.Status.Addr`): VXLAN's remote end.
    pub addr: String,
    /// Ready (its session is up); a down node's tasks are not served.
    pub ready: bool,
}

impl NetView {
    /// The network of that ID.
    pub fn network(&self, id: &str) -> Option<&NetworkView> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// This host's own endpoint on a network.
    pub fn own_endpoint(&self, network_id: &str) -> Option<&EndpointView> {
        self.endpoints
            .iter()
            .find(|e| e.network_id == network_id && e.node_id == self.node_id && matches!(e.owner, EndpointOwner::Node))
    }
}

/// How often a follower asks for its whole view although views are pushed:
/// NATS delivers at most once, so a lost push is healed this long after.
pub const NET_VIEW_RESYNC: Duration = Duration::from_secs(5);

/// Follows one node's view: asks for it at once (again every second until
/// a dispatcher answers), then yields every pushed view newer than the last
/// one yielded, and asks again every [`NET_VIEW_RESYNC`]. The stream ends
/// only when the NATS client is closed. Every network consumer on a host
/// (the agent, `shoal-dns`, `shoal-ingress`) follows its view with this.
pub fn follow(nats: async_nats::Client, node_id: String) -> tokio::sync::mpsc::Receiver<NetView> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut pushed = match nats.subscribe(crate::subjects::net_view(&node_id)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "netview: cannot subscribe to the node's view");
                return;
            }
        };
        let mut version = None::<u64>;
        let mut ask = tokio::time::interval(Duration::from_secs(1));
        let mut answered = false;
        let mut last_ask = tokio::time::Instant::now();
        loop {
            let view = tokio::select! {
                msg = pushed.next() => match msg {
                    Some(m) => match crate::envelope::decode::<NetView>(&m.payload) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            tracing::warn!(error = %e, "netview: undecodable view");
                            None
                        }
                    },
                    None => return,
                },
                _ = ask.tick() => {
                    if answered && last_ask.elapsed() < NET_VIEW_RESYNC {
                        continue;
                    }
                    last_ask = tokio::time::Instant::now();
                    let req = NetViewRequest { node_id: node_id.clone() };
                    match crate::envelope::request::<_, NetView>(&nats, crate::subjects::net_requests(), &req, Duration::from_secs(2)).await {
                        Ok(v) => {
                            answered = true;
                            Some(v)
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "netview: no view yet");
                            None
                        }
                    }
                }
            };
            let Some(view) = view else { continue };
            if version.is_some_and(|v| view.version <= v) {
                continue;
            }
            version = Some(view.version);
            if tx.send(view).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_has_a_stable_wire_form_and_finds_the_hosts_own_address() {
        let view = NetView {
            node_id: "n1".into(),
            version: 7,
            networks: vec![NetworkView {
                id: "net1".into(),
                name: "web".into(),
                subnet: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                vni: 4097,
                ingress: false,
                internal: false,
                attachable: false,
                mtu: OVERLAY_MTU,
            }],
            endpoints: vec![
                EndpointView {
                    network_id: "net1".into(),
                    addr: "10.0.1.3/24".into(),
                    mac: "02:42:0a:00:01:03".into(),
                    node_id: "n2".into(),
                    owner: EndpointOwner::Task {
                        task_id: "t1".into(),
                        service_id: "s1".into(),
                        service_name: "web".into(),
                        task_name: "web.1.t1".into(),
                        slot: Some(1),
                        aliases: vec![],
                        serving: true,
                    },
                },
                EndpointView {
                    network_id: "net1".into(),
                    addr: "10.0.1.4/24".into(),
                    mac: "02:42:0a:00:01:04".into(),
                    node_id: "n1".into(),
                    owner: EndpointOwner::Node,
                },
            ],
            services: vec![],
            nodes: vec![],
        };
        let v = serde_json::to_value(&view).unwrap();
        assert_eq!(v["endpoints"][0]["owner"]["kind"], "task");
        assert_eq!(v["endpoints"][1]["owner"]["kind"], "node");
        let back: NetView = serde_json::from_value(v).unwrap();
        assert_eq!(back, view);
        assert_eq!(
            view.own_endpoint("net1").unwrap().ip(),
            Some(Ipv4Addr::new(10, 0, 1, 4))
        );
        assert!(view.own_endpoint("other").is_none());
        assert_eq!(view.network("net1").unwrap().vni, 4097);
    }
}
