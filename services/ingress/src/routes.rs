//! What to listen on and where to forward, from one node's network view
//! (pure: no I/O).
//!
//! Every service port published in ingress mode (the default) becomes a
//! [`Route`] keyed by protocol and published port. Its backends are the
//! service's task endpoints on the `ingress` network that serve (the task
//! runs, is meant to keep running, and its node is ready; the dispatcher
//! decides, and a node the view says is not ready is skipped here too),
//! as `address:TargetPort`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use shoal_shared::model::{PortProtocol, PublishMode};
use shoal_shared::netview::{EndpointOwner, NetView};

/// The transport of a published port the mesh handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A listener's identity: one published port of one protocol.
pub type Key = (Proto, u16);

/// Where one published port's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service_id: String,
    pub service_name: String,
    /// The serving tasks' addresses on `ingress`, with the target port, in a stable order.
    pub backends: Vec<SocketAddr>,
    /// Send a PROXY protocol v2 header to the task first.
    pub proxy_protocol: bool,
}

/// Every route of the view. SCTP ports are skipped (logged by the caller),
/// as are host-mode ports (the task's own host publishes those) and ports
/// with no number yet.
pub fn routes(view: &NetView) -> BTreeMap<Key, Route> {
    let ingress = view.networks.iter().find(|n| n.ingress).map(|n| n.id.as_str());
    let down: BTreeSet<&str> = view.nodes.iter().filter(|n| !n.ready).map(|n| n.id.as_str()).collect();
    let mut out = BTreeMap::new();
    for svc in &view.services {
        let mut addrs: Vec<Ipv4Addr> = view
            .endpoints
            .iter()
            .filter(|e| Some(e.network_id.as_str()) == ingress && !down.contains(e.node_id.as_str()))
            .filter(
                |e| matches!(&e.owner, EndpointOwner::Task { service_id, serving: true, .. } if *service_id == svc.id),
            )
            .filter_map(|e| e.ip())
            .collect();
        addrs.sort();
        addrs.dedup();
        for port in &svc.ports {
            if port.publish_mode.unwrap_or_default() != PublishMode::Ingress {
                continue;
            }
            let proto = match port.protocol.unwrap_or_default() {
                PortProtocol::Tcp => Proto::Tcp,
                PortProtocol::Udp => Proto::Udp,
                PortProtocol::Sctp => continue,
            };
            let (Ok(published), Ok(target)) = (u16::try_from(port.published_port), u16::try_from(port.target_port))
            else {
                continue;
            };
            if published == 0 || target == 0 {
                continue;
            }
            out.entry((proto, published)).or_insert_with(|| Route {
                service_id: svc.id.clone(),
                service_name: svc.name.clone(),
                backends: addrs.iter().map(|a| SocketAddr::from((*a, target))).collect(),
                proxy_protocol: svc.proxy_protocol,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::{EndpointMode, PortConfig};
    use shoal_shared::netview::{EndpointView, NetworkView, NodeView, ServiceView, OVERLAY_MTU};

    fn task(addr: &str, node: &str, service: &str, serving: bool) -> EndpointView {
        EndpointView {
            network_id: "ing".into(),
            addr: format!("{addr}/24"),
            mac: String::new(),
            node_id: node.into(),
            owner: EndpointOwner::Task {
                task_id: format!("t-{addr}"),
                service_id: service.into(),
                service_name: service.into(),
                task_name: format!("{service}.1.t"),
                slot: Some(1),
                aliases: vec![],
                serving,
            },
        }
    }

    fn port(published: u32, target: u32, protocol: PortProtocol, mode: Option<PublishMode>) -> PortConfig {
        PortConfig {
            name: String::new(),
            protocol: Some(protocol),
            target_port: target,
            published_port: published,
            publish_mode: mode,
        }
    }

    fn view() -> NetView {
        NetView {
            node_id: "n1".into(),
            version: 1,
            networks: vec![NetworkView {
                id: "ing".into(),
                name: "ingress".into(),
                subnet: "10.0.0.0/24".into(),
                gateway: "10.0.0.1".into(),
                vni: 4096,
                ingress: true,
                internal: false,
                attachable: false,
                mtu: OVERLAY_MTU,
            }],
            endpoints: vec![
                task("10.0.0.3", "n1", "web", true),
                task("10.0.0.2", "n2", "web", true),
                task("10.0.0.4", "n2", "web", false),
                task("10.0.0.5", "n3", "web", true),
                task("10.0.0.6", "n1", "other", true),
            ],
            services: vec![ServiceView {
                id: "web".into(),
                name: "web".into(),
                endpoint_mode: EndpointMode::Vip,
                vips: vec![],
                ports: vec![
                    port(8080, 80, PortProtocol::Tcp, None),
                    port(8053, 53, PortProtocol::Udp, Some(PublishMode::Ingress)),
                    port(9000, 90, PortProtocol::Tcp, Some(PublishMode::Host)),
                    port(9001, 91, PortProtocol::Sctp, None),
                ],
                proxy_protocol: true,
            }],
            nodes: vec![
                NodeView {
                    id: "n1".into(),
                    addr: "192.0.2.1".into(),
                    ready: true,
                },
                NodeView {
                    id: "n2".into(),
                    addr: "192.0.2.2".into(),
                    ready: true,
                },
                NodeView {
                    id: "n3".into(),
                    addr: "192.0.2.3".into(),
                    ready: false,
                },
            ],
        }
    }

    #[test]
    fn ingress_ports_route_to_serving_tasks_on_ready_nodes() {
        let r = routes(&view());
        assert_eq!(
            r.keys().copied().collect::<Vec<_>>(),
            vec![(Proto::Tcp, 8080), (Proto::Udp, 8053)]
        );
        let web = &r[&(Proto::Tcp, 8080)];
        assert_eq!(
            web.backends,
            vec![
                "10.0.0.2:80".parse::<SocketAddr>().unwrap(),
                "10.0.0.3:80".parse().unwrap()
            ]
        );
        assert!(web.proxy_protocol);
        assert_eq!(r[&(Proto::Udp, 8053)].backends[0], "10.0.0.2:53".parse().unwrap());
    }

    #[test]
    fn no_ingress_network_means_no_backends_but_the_port_is_still_published() {
        let mut v = view();
        v.networks[0].ingress = false;
        let r = routes(&v);
        assert!(r[&(Proto::Tcp, 8080)].backends.is_empty());
    }
}
