//! What the host's overlay devices should be, from a [`NetView`], and the
//! steps from what exists to that: pure functions, no I/O.
//!
//! Bridges and VXLAN devices live in the host's overlay namespace (as
//! libnetwork keeps them in a namespace of their own), so bridged traffic
//! never meets the host's firewall (the engine's `FORWARD` policy drop with
//! `bridge-nf-call-iptables`). Per network the view lists for this node: a
//! bridge `shlb-<id>`; a VXLAN device `shlv-<id>` (the network's VNI, UDP
//! 4789, local = this node's underlay address, learning off, ARP proxy on),
//! made in the host's namespace so its UDP socket stays on the underlay,
//! then moved to the overlay namespace and enslaved to the bridge; and the
//! host's own endpoint, a veth `shlh-<id>` in the host's namespace with the
//! host's address and MAC (`02:42:` + the IPv4 bytes) whose peer `shlq-<id>`
//! is on the bridge. For every endpoint of another node: a static FDB entry
//! (its MAC -> its node's underlay address) and a permanent neighbour entry
//! (its IP -> its MAC) on the VXLAN device, as libnetwork's overlay driver
//! programs them. Nothing floods and nothing is learned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_shared::netview::NetView;

/// Every device the agent makes starts with this, and nothing else does.
pub const PREFIX: &str = "shl";
const BRIDGE: &str = "shlb-";
const VXLAN: &str = "shlv-";
const HOST: &str = "shlh-";
const HOST_PEER: &str = "shlq-";
/// Host ends of task veth pairs.
pub const VETH: &str = "shlt";

/// A MAC address.
pub type Mac = [u8; 6];

/// The bridge's name for a network (<= 15 characters).
pub fn bridge_name(network_id: &str) -> String {
    format!("{BRIDGE}{}", short(network_id, 10))
}

/// The VXLAN device's name for a network.
pub fn vxlan_name(network_id: &str) -> String {
    format!("{VXLAN}{}", short(network_id, 10))
}

/// The host's own end of a network (in the host's namespace).
pub fn host_link_name(network_id: &str) -> String {
    format!("{HOST}{}", short(network_id, 10))
}

/// Its peer on the bridge.
pub fn host_peer_name(network_id: &str) -> String {
    format!("{HOST_PEER}{}", short(network_id, 10))
}

pub fn is_host_link(name: &str) -> bool {
    name.starts_with(HOST)
}

/// The host end of a task's veth on its `index`-th network.
pub fn veth_name(task_id: &str, index: usize) -> String {
    format!("{VETH}{}{:x}", short(task_id, 10), index % 16)
}

/// Whether a device name is a bridge of ours; the part after the prefix.
pub fn is_bridge(name: &str) -> bool {
    name.starts_with(BRIDGE)
}

pub fn is_vxlan(name: &str) -> bool {
    name.starts_with(VXLAN)
}

fn short(id: &str, n: usize) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(n)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `02:42:0a:00:01:03` -> bytes.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC libnetwork gives an IPv4 address.
pub fn mac_of(ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// `10.0.1.3/24` -> address and prefix length.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some(())?;
    Some((ip.parse().ok()?, len))
}

/// One remote endpoint as the VXLAN device knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// The underlay address of its node.
    pub vtep: Ipv4Addr,
}

/// One network as this host should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    pub id: String,
    pub bridge: String,
    pub vxlan: String,
    pub host_link: String,
    pub host_peer: String,
    pub vni: u32,
    pub mtu: u32,
    /// The host's own endpoint (address, prefix length), when allocated.
    pub addr: Option<(Ipv4Addr, u8)>,
    /// VXLAN's local address: this node's underlay address.
    pub local: Option<Ipv4Addr>,
    pub remotes: BTreeSet<Remote>,
}

/// The networks this host should have, by bridge name.
pub fn desired(view: &NetView) -> BTreeMap<String, NetSpec> {
    let node_addr = |id: &str| {
        view.nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.addr.split(':').next()?.parse::<Ipv4Addr>().ok())
    };
    let local = node_addr(&view.node_id);
    let mut out = BTreeMap::new();
    for n in &view.networks {
        let addr = view.own_endpoint(&n.id).and_then(|e| parse_cidr(&e.addr));
        let remotes = view
            .endpoints
            .iter()
            .filter(|e| e.network_id == n.id && e.node_id != view.node_id)
            .filter_map(|e| {
                let (ip, _) = parse_cidr(&e.addr)?;
                let mac = parse_mac(&e.mac).unwrap_or_else(|| mac_of(ip));
                let vtep = node_addr(&e.node_id)?;
                // A remote that shares our underlay address would loop back.
                (Some(vtep) != local).then_some(Remote { ip, mac, vtep })
            })
            .collect();
        let spec = NetSpec {
            id: n.id.clone(),
            bridge: bridge_name(&n.id),
            vxlan: vxlan_name(&n.id),
            host_link: host_link_name(&n.id),
            host_peer: host_peer_name(&n.id),
            vni: n.vni,
            mtu: if n.mtu == 0 {
                shoal_shared::netview::OVERLAY_MTU
            } else {
                n.mtu
            },
            addr,
            local,
            remotes,
        };
        out.insert(spec.bridge.clone(), spec);
    }
    out
}

/// A VXLAN device as it exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanState {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    /// The bridge it is enslaved to.
    pub master: Option<String>,
    /// Permanent FDB entries: MAC -> remote.
    pub fdb: BTreeSet<(Mac, Ipv4Addr)>,
    /// Permanent neighbour entries: IP -> MAC.
    pub neigh: BTreeSet<(Ipv4Addr, Mac)>,
}

/// What of ours exists (devices named with [`PREFIX`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Bridges in the overlay namespace.
    pub bridges: BTreeSet<String>,
    /// VXLAN devices in the overlay namespace.
    pub vxlans: BTreeMap<String, VxlanState>,
    /// The host's own ends in its namespace -> their IPv4 addresses.
    pub host_links: BTreeMap<String, BTreeSet<(Ipv4Addr, u8)>>,
}

/// One change to the host's devices. Bridges, VXLAN devices and their
/// entries are in the overlay namespace; host links and addresses in the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddBridge {
        name: String,
        mtu: u32,
    },
    AddHostLink {
        name: String,
        peer: String,
        bridge: String,
        mtu: u32,
        mac: Mac,
    },
    AddAddr {
        dev: String,
        addr: Ipv4Addr,
        prefix: u8,
    },
    AddVxlan {
        name: String,
        vni: u32,
        local: Option<Ipv4Addr>,
        mtu: u32,
        master: String,
    },
    /// Deletes a device of the overlay namespace.
    DelLink {
        name: String,
    },
    /// Deletes a host link (its peer goes with it).
    DelHostLink {
        name: String,
    },
    AddFdb {
        dev: String,
        mac: Mac,
        vtep: Ipv4Addr,
    },
    DelFdb {
        dev: String,
        mac: Mac,
        vtep: Ipv4Addr,
    },
    AddNeigh {
        dev: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
    DelNeigh {
        dev: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
}

/// The steps from `have` to `want`, in an order that works: devices that go
/// first, then devices that are made, then addresses and entries. What
/// already matches is left alone (an agent restart cuts no connection).
pub fn plan(want: &BTreeMap<String, NetSpec>, have: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    let wanted_vxlans: BTreeSet<&str> = want.values().map(|s| s.vxlan.as_str()).collect();
    for name in have.vxlans.keys() {
        if !wanted_vxlans.contains(name.as_str()) {
            ops.push(Op::DelLink { name: name.clone() });
        }
    }
    let wanted_hosts: BTreeSet<&str> = want
        .values()
        .filter(|s| s.addr.is_some())
        .map(|s| s.host_link.as_str())
        .collect();
    for name in have.host_links.keys() {
        if !wanted_hosts.contains(name.as_str()) {
            ops.push(Op::DelHostLink { name: name.clone() });
        }
    }
    for name in &have.bridges {
        if !want.contains_key(name) {
            ops.push(Op::DelLink { name: name.clone() });
        }
    }
    for spec in want.values() {
        if !have.bridges.contains(&spec.bridge) {
            ops.push(Op::AddBridge {
                name: spec.bridge.clone(),
                mtu: spec.mtu,
            });
        }
        if let Some((addr, prefix)) = spec.addr {
            let host = spec.host_link.clone();
            let addrs = match have.host_links.get(&host) {
                // A new bridge lost the old peer, a new address needs a new
                // MAC: the pair is made again.
                Some(addrs) if have.bridges.contains(&spec.bridge) && addrs.iter().all(|&a| a == (addr, prefix)) => {
                    addrs.clone()
                }
                had => {
                    if had.is_some() {
                        ops.push(Op::DelHostLink { name: host.clone() });
                    }
                    ops.push(Op::AddHostLink {
                        name: host.clone(),
                        peer: spec.host_peer.clone(),
                        bridge: spec.bridge.clone(),
                        mtu: spec.mtu,
                        mac: mac_of(addr),
                    });
                    BTreeSet::new()
                }
            };
            if !addrs.contains(&(addr, prefix)) {
                ops.push(Op::AddAddr {
                    dev: host,
                    addr,
                    prefix,
                });
            }
        }
        let empty = VxlanState::default();
        let existing = have.vxlans.get(&spec.vxlan);
        let matches = existing.is_some_and(|v| {
            v.vni == spec.vni
                && v.local == spec.local
                && v.port == shoal_shared::netview::VXLAN_PORT
                && v.master.as_deref() == Some(spec.bridge.as_str())
                && have.bridges.contains(&spec.bridge)
        });
        let current = if matches {
            existing.unwrap_or(&empty)
        } else {
            if existing.is_some() {
                ops.push(Op::DelLink {
                    name: spec.vxlan.clone(),
                });
            }
            ops.push(Op::AddVxlan {
                name: spec.vxlan.clone(),
                vni: spec.vni,
                local: spec.local,
                mtu: spec.mtu,
                master: spec.bridge.clone(),
            });
            &empty
        };
        let fdb: BTreeSet<(Mac, Ipv4Addr)> = spec.remotes.iter().map(|r| (r.mac, r.vtep)).collect();
        let neigh: BTreeSet<(Ipv4Addr, Mac)> = spec.remotes.iter().map(|r| (r.ip, r.mac)).collect();
        let dev = || spec.vxlan.clone();
        for &(mac, vtep) in current.fdb.difference(&fdb) {
            ops.push(Op::DelFdb { dev: dev(), mac, vtep });
        }
        for &(ip, mac) in current.neigh.difference(&neigh) {
            ops.push(Op::DelNeigh { dev: dev(), ip, mac });
        }
        for &(mac, vtep) in fdb.difference(&current.fdb) {
            ops.push(Op::AddFdb { dev: dev(), mac, vtep });
        }
        for &(ip, mac) in neigh.difference(&current.neigh) {
            ops.push(Op::AddNeigh { dev: dev(), ip, mac });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::netview::{EndpointOwner, EndpointView, NetworkView, NodeView, OVERLAY_MTU};

    fn net(id: &str, vni: u32) -> NetworkView {
        NetworkView {
            id: id.into(),
            name: id.into(),
            subnet: "10.0.1.0/24".into(),
            gateway: "10.0.1.1".into(),
            vni,
            ingress: false,
            internal: false,
            attachable: false,
            mtu: OVERLAY_MTU,
        }
    }

    fn ep(net: &str, addr: &str, node: &str, task: Option<&str>) -> EndpointView {
        let ip = parse_cidr(addr).unwrap().0;
        EndpointView {
            network_id: net.into(),
            addr: addr.into(),
            mac: shoal_shared::model::mac_for_ip(ip),
            node_id: node.into(),
            owner: match task {
                Some(t) => EndpointOwner::Task {
                    task_id: t.into(),
                    service_id: "s".into(),
                    service_name: "web".into(),
                    task_name: format!("web.1.{t}"),
                    slot: Some(1),
                    aliases: vec![],
                    serving: true,
                },
                None => EndpointOwner::Node,
            },
        }
    }

    fn node(id: &str, addr: &str) -> NodeView {
        NodeView {
            id: id.into(),
            addr: addr.into(),
            ready: true,
        }
    }

    fn view() -> NetView {
        NetView {
            node_id: "a".into(),
            version: 3,
            networks: vec![net("netonexxxxxxxxxxxxxxxxxxx", 4097)],
            endpoints: vec![
                ep("netonexxxxxxxxxxxxxxxxxxx", "10.0.1.2/24", "a", None),
                ep("netonexxxxxxxxxxxxxxxxxxx", "10.0.1.3/24", "b", None),
                ep("netonexxxxxxxxxxxxxxxxxxx", "10.0.1.4/24", "a", Some("t1")),
                ep("netonexxxxxxxxxxxxxxxxxxx", "10.0.1.5/24", "b", Some("t2")),
            ],
            services: vec![],
            nodes: vec![node("a", "172.29.116.11"), node("b", "172.29.116.12")],
        }
    }

    #[test]
    fn names_fit_the_kernels_limit_and_macs_follow_libnetwork() {
        assert_eq!(bridge_name("NETonexxxxxxxxxxxxxxxxxxx"), "shlb-netonexxxx");
        assert!(vxlan_name("netonexxxxxxxxxxxxxxxxxxx").len() <= 15);
        assert_eq!(veth_name("taskabcdefghijklmnopqrstu", 17), "shlttaskabcdef1");
        assert_eq!(veth_name("taskabcdefghijklmnopqrstu", 17).len(), 15);
        assert_eq!(parse_mac("02:42:0a:00:01:03"), Some(mac_of(Ipv4Addr::new(10, 0, 1, 3))));
        assert_eq!(parse_mac("02:42:0a"), None);
        assert_eq!(parse_cidr("10.0.1.3/24"), Some((Ipv4Addr::new(10, 0, 1, 3), 24)));
        assert_eq!(parse_cidr("10.0.1.3/33"), None);
    }

    #[test]
    fn a_view_gives_one_bridge_and_vxlan_per_network_with_entries_for_remote_endpoints_only() {
        let want = desired(&view());
        let spec = &want["shlb-netonexxxx"];
        assert_eq!(spec.vxlan, "shlv-netonexxxx");
        assert_eq!((spec.vni, spec.mtu), (4097, 1450));
        assert_eq!(spec.addr, Some((Ipv4Addr::new(10, 0, 1, 2), 24)));
        assert_eq!(spec.local, Some(Ipv4Addr::new(172, 29, 116, 11)));
        let remotes: Vec<_> = spec
            .remotes
            .iter()
            .map(|r| (r.ip.to_string(), r.vtep.to_string()))
            .collect();
        assert_eq!(
            remotes,
            [
                ("10.0.1.3".to_string(), "172.29.116.12".to_string()),
                ("10.0.1.5".to_string(), "172.29.116.12".to_string())
            ],
            "the other node's host address and task, not this node's"
        );
        let mut ops = plan(&want, &Observed::default());
        assert_eq!(
            ops.drain(..4).collect::<Vec<_>>(),
            [
                Op::AddBridge {
                    name: "shlb-netonexxxx".into(),
                    mtu: 1450,
                },
                Op::AddHostLink {
                    name: "shlh-netonexxxx".into(),
                    peer: "shlq-netonexxxx".into(),
                    bridge: "shlb-netonexxxx".into(),
                    mtu: 1450,
                    mac: [2, 0x42, 10, 0, 1, 2]
                },
                Op::AddAddr {
                    dev: "shlh-netonexxxx".into(),
                    addr: Ipv4Addr::new(10, 0, 1, 2),
                    prefix: 24
                },
                Op::AddVxlan {
                    name: "shlv-netonexxxx".into(),
                    vni: 4097,
                    local: Some(Ipv4Addr::new(172, 29, 116, 11)),
                    mtu: 1450,
                    master: "shlb-netonexxxx".into()
                },
            ]
        );
        assert_eq!(ops.iter().filter(|o| matches!(o, Op::AddFdb { .. })).count(), 2);
        assert_eq!(ops.iter().filter(|o| matches!(o, Op::AddNeigh { .. })).count(), 2);
    }

    /// What [`plan`] would leave behind if every op worked.
    fn applied(want: &BTreeMap<String, NetSpec>) -> Observed {
        let mut have = Observed::default();
        for s in want.values() {
            have.bridges.insert(s.bridge.clone());
            have.host_links
                .insert(s.host_link.clone(), s.addr.into_iter().collect());
            have.vxlans.insert(
                s.vxlan.clone(),
                VxlanState {
                    vni: s.vni,
                    local: s.local,
                    port: 4789,
                    master: Some(s.bridge.clone()),
                    fdb: s.remotes.iter().map(|r| (r.mac, r.vtep)).collect(),
                    neigh: s.remotes.iter().map(|r| (r.ip, r.mac)).collect(),
                },
            );
        }
        have
    }

    #[test]
    fn what_matches_is_left_alone_and_changes_touch_only_what_changed() {
        let v = view();
        let have = applied(&desired(&v));
        assert_eq!(plan(&desired(&v), &have), [], "an agent restart changes nothing");

        // A task moves from node b to a new node c; b's task is gone.
        let mut v2 = v.clone();
        v2.endpoints.retain(|e| e.addr != "10.0.1.5/24");
        v2.endpoints
            .push(ep("netonexxxxxxxxxxxxxxxxxxx", "10.0.1.6/24", "c", Some("t3")));
        v2.nodes.push(node("c", "172.29.116.13"));
        let ops = plan(&desired(&v2), &have);
        let m5 = mac_of(Ipv4Addr::new(10, 0, 1, 5));
        let m6 = mac_of(Ipv4Addr::new(10, 0, 1, 6));
        let dev = "shlv-netonexxxx".to_string();
        assert_eq!(
            ops,
            [
                Op::DelFdb {
                    dev: dev.clone(),
                    mac: m5,
                    vtep: Ipv4Addr::new(172, 29, 116, 12)
                },
                Op::DelNeigh {
                    dev: dev.clone(),
                    ip: Ipv4Addr::new(10, 0, 1, 5),
                    mac: m5
                },
                Op::AddFdb {
                    dev: dev.clone(),
                    mac: m6,
                    vtep: Ipv4Addr::new(172, 29, 116, 13)
                },
                Op::AddNeigh {
                    dev,
                    ip: Ipv4Addr::new(10, 0, 1, 6),
                    mac: m6
                },
            ]
        );
    }

    #[test]
    fn a_network_the_view_drops_loses_its_devices_and_a_changed_vni_remakes_the_vxlan() {
        let v = view();
        let have = applied(&desired(&v));
        let mut gone = v.clone();
        gone.networks.clear();
        assert_eq!(
            plan(&desired(&gone), &have),
            [
                Op::DelLink {
                    name: "shlv-netonexxxx".into()
                },
                Op::DelHostLink {
                    name: "shlh-netonexxxx".into()
                },
                Op::DelLink {
                    name: "shlb-netonexxxx".into()
                }
            ]
        );
        let mut renum = v.clone();
        renum.networks[0].vni = 5000;
        let ops = plan(&desired(&renum), &have);
        assert_eq!(
            ops[..2],
            [
                Op::DelLink {
                    name: "shlv-netonexxxx".into()
                },
                Op::AddVxlan {
                    name: "shlv-netonexxxx".into(),
                    vni: 5000,
                    local: Some(Ipv4Addr::new(172, 29, 116, 11)),
                    mtu: 1450,
                    master: "shlb-netonexxxx".into()
                }
            ]
        );
        assert_eq!(
            ops.iter().filter(|o| matches!(o, Op::AddFdb { .. })).count(),
            2,
            "entries again"
        );
        // The host's address moves: its link is made again (a new MAC).
        let mut moved = v.clone();
        moved.endpoints[0].addr = "10.0.1.9/24".into();
        assert_eq!(
            plan(&desired(&moved), &have),
            [
                Op::DelHostLink {
                    name: "shlh-netonexxxx".into(),
                },
                Op::AddHostLink {
                    name: "shlh-netonexxxx".into(),
                    peer: "shlq-netonexxxx".into(),
                    bridge: "shlb-netonexxxx".into(),
                    mtu: 1450,
                    mac: [2, 0x42, 10, 0, 1, 9]
                },
                Op::AddAddr {
                    dev: "shlh-netonexxxx".into(),
                    addr: Ipv4Addr::new(10, 0, 1, 9),
                    prefix: 24
                }
            ]
        );
    }
}
