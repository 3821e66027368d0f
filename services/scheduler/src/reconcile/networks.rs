//! The network allocator's part of a pass, as SwarmKit's allocator does it
//! before orchestration and scheduling:
//!
//! - [`allocate_networks`]: a network without `IPAMOptions` gets its subnet
//!   (the one its spec names, else the first free one of the cluster's
//!   default address pools, `SubnetSize` wide), a gateway (the spec's, else
//!   the subnet's first address) and a VXLAN ID (the lowest free from 4096);
//!   networks are taken oldest first, so `ingress`, made by `swarm init`, gets
//!   the pool's first subnet;
//! - [`allocate_vips`]: a service in endpoint mode vip has one VIP on each of
//!   its networks, and on `ingress` when it publishes a port in ingress mode
//!   (first, as Docker lists it); VIPs of networks it left are released;
//! - [`allocate_tasks`]: a task that is not placed yet gets an address on each
//!   of its service's networks before the scheduler may place it; when a
//!   network is full the task stays pending, saying so.
//!
//! What is taken is read from the objects every pass ([`crate::ipam`]): VIPs
//! of every service, addresses of every task that has not ended.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_shared::model::{
    Driver, Endpoint, EndpointMode, EndpointVirtualIp, IpamConfig, IpamOptions, Network, NetworkAttachment,
    NetworkAttachmentConfig, PublishMode, Service, Task, TaskState, DEFAULTS, OVERLAY_DRIVER,
};

use super::plan::{Intent, ServiceChange};
use super::work::Work;
use crate::ipam::{self, Pool};

/// SwarmKit's words when a network has no address left for a VIP or a task.
pub const NO_ADDRESS: &str = "could not find an available IP";

/// The pools of the allocated networks, by network ID, with what is taken.
#[derive(Debug, Default)]
pub(super) struct Addresses {
    pools: HashMap<String, Pool>,
    /// Services whose VIP could not be allocated, with the reason (their tasks wait).
    vip_failures: HashMap<String, String>,
}

impl Addresses {
    fn allocate(&mut self, network: &str) -> Option<(Ipv4Addr, String)> {
        let pool = self.pools.get_mut(network)?;
        let a = pool.allocate()?;
        Some((a, pool.cidr(a)))
    }

    /// A host's own address: the highest free one.
    fn allocate_high(&mut self, network: &str) -> Option<String> {
        let pool = self.pools.get_mut(network)?;
        let a = pool.allocate_high()?;
        Some(pool.cidr(a))
    }

    fn release(&mut self, network: &str, a: Ipv4Addr) {
        if let Some(p) = self.pools.get_mut(network) {
            p.release(a);
        }
    }
}

/// The cluster's default address pools and subnet size.
fn default_pools(w: &Work) -> (Vec<Ipv4Net>, u8) {
    let (pools, size) = match w.snap.cluster() {
        Some(c) => (c.default_addr_pool.clone(), c.subnet_size),
        None => (vec![DEFAULTS.default_addr_pool.to_string()], DEFAULTS.subnet_size),
    };
    let size = if size == 0 { DEFAULTS.subnet_size } else { size };
    let mut parsed: Vec<Ipv4Net> = pools.iter().filter_map(|p| ipam::parse_subnet(p)).collect();
    if parsed.is_empty() {
        parsed = ipam::parse_subnet(DEFAULTS.default_addr_pool).into_iter().collect();
    }
    (parsed, size.min(32) as u8)
}

fn subnets_of(n: &Network) -> impl Iterator<Item = Ipv4Net> + '_ {
    n.ipam_options
        .iter()
        .flat_map(|o| o.configs.iter())
        .filter_map(|c| ipam::parse_subnet(&c.subnet))
}

fn vxlan_id_of(n: &Network) -> Option<u32> {
    n.driver_state.options.get(ipam::VXLAN_ID_OPTION)?.parse().ok()
}

/// Gives every network without `IPAMOptions` its subnet, gateway and VXLAN
/// ID, then returns the address pools of all allocated networks with the
/// addresses taken in them.
pub(super) fn allocate_networks(w: &mut Work) -> Addresses {
    let (pools, size) = default_pools(w);
    let mut nets: Vec<&Network> = w.snap.networks.values().collect();
    nets.sort_by(|a, b| (a.meta.created_at, &a.meta.id).cmp(&(b.meta.created_at, &b.meta.id)));
    let mut taken: Vec<Ipv4Net> = nets.iter().flat_map(|n| subnets_of(n)).collect();
    let mut vnis: BTreeSet<u32> = nets.iter().filter_map(|n| vxlan_id_of(n)).collect();
    let mut allocated = Vec::new();
    for n in nets.iter().filter(|n| n.ipam_options.is_none()) {
        let asked: Vec<&IpamConfig> = n
            .spec
            .ipam_options
            .iter()
            .flat_map(|o| o.configs.iter())
            .filter(|c| ipam::parse_subnet(&c.subnet).is_some())
            .collect();
        let configs: Vec<IpamConfig> = if asked.is_empty() {
            let Some(subnet) = ipam::carve(&pools, size, &taken) else {
                continue;
            };
            vec![config(subnet, None, "")]
        } else {
            let subnets: Vec<Ipv4Net> = asked.iter().filter_map(|c| ipam::parse_subnet(&c.subnet)).collect();
            // A subnet another network has is not given twice: the network
            // waits (the API refuses such a create; this covers a race).
            if subnets.iter().any(|s| taken.iter().any(|t| ipam::overlaps(s, t))) {
                continue;
            }
            asked
                .iter()
                .zip(&subnets)
                .map(|(c, s)| config(*s, c.gateway.parse().ok(), &c.range))
                .collect()
        };
        let Some(vni) = ipam::next_vxlan_id(&vnis) else {
            continue;
        };
        vnis.insert(vni);
        let mut net = (*n).clone();
        taken.extend(configs.iter().filter_map(|c| ipam::parse_subnet(&c.subnet)));
        let subnet = configs.first().map(|c| c.subnet.clone()).unwrap_or_default();
        net.ipam_options = Some(IpamOptions {
            driver: Driver::named("default"),
            configs,
        });
        let mut state = Driver::named(OVERLAY_DRIVER);
        state.options.insert(ipam::VXLAN_ID_OPTION.into(), vni.to_string());
        net.driver_state = state;
        allocated.push((net, subnet));
    }
    for (net, subnet) in allocated {
        w.intents.push(Intent::NetworkAllocated {
            network: net.meta.id.clone(),
            subnet,
        });
        w.networks.insert(net.meta.id.clone(), net);
    }
    taken_addresses(w)
}

fn config(subnet: Ipv4Net, gateway: Option<Ipv4Addr>, range: &str) -> IpamConfig {
    let gateway = gateway.or_else(|| ipam::first_host(&subnet));
    IpamConfig {
        subnet: subnet.to_string(),
        range: range.to_string(),
        gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
    }
}

/// The pools of every allocated network, with the VIPs of every service and
/// the addresses of every task that has not ended marked taken.
fn taken_addresses(w: &Work) -> Addresses {
    let mut out = Addresses::default();
    let ids: Vec<&String> = w.snap.networks.keys().collect();
    for id in ids {
        let Some(n) = w.network(id) else { continue };
        let pool = n.ipam_options.iter().flat_map(|o| o.configs.iter()).find_map(Pool::of);
        if let Some(p) = pool {
            out.pools.insert(id.clone(), p);
        }
    }
    let mut take = |network: &str, addr: &str| {
        if let (Some(p), Some(a)) = (out.pools.get_mut(network), ipam::parse_addr(addr)) {
            p.take(a);
        }
    };
    for s in w.snap.services.values() {
        for v in s.endpoint.iter().flat_map(|e| e.virtual_ips.iter()) {
            take(&v.network_id, &v.addr);
        }
    }
    for n in w.snap.networks.values() {
        for addr in n.node_addresses.values() {
            take(&n.meta.id, addr);
        }
    }
    for t in w.snap.tasks.values() {
        if t.status.state.is_terminal() {
            continue;
        }
        for a in &t.networks_attachments {
            for addr in &a.addresses {
                take(&a.network.meta.id, addr);
            }
        }
    }
    out
}

/// Whether the service publishes a port through the routing mesh.
fn uses_ingress(s: &Service) -> bool {
    let spec_ports = s.spec.endpoint_spec.iter().flat_map(|e| e.ports.iter());
    let ports = s.endpoint.iter().flat_map(|e| e.ports.iter()).chain(spec_ports);
    ports
        .into_iter()
        .any(|p| p.publish_mode.unwrap_or_default() == PublishMode::Ingress)
}

/// Whether the service's tasks must be on `ingress` (it publishes through
/// the routing mesh and `ingress` exists).
pub(super) fn wants_ingress(w: &Work, s: &Service) -> bool {
    uses_ingress(s) && w.snap.networks.values().any(|n| n.spec.ingress)
}

/// Whether a task's `ingress` attachment is as its service wants it
/// (`wants`, from [`wants_ingress`]): publishing a port through the routing
/// mesh, or no longer, needs new tasks, as SwarmKit makes a task dirty when
/// its endpoint changed. A task not given its addresses yet gets them as the
/// service is now. Other endpoint changes (a published port's number) roll
/// nothing: the routing mesh reads them from the service.
pub(super) fn ingress_as_wanted(t: &Task, wants: bool) -> bool {
    let unallocated = t.networks_attachments.is_empty() && t.status.state <= TaskState::Pending;
    unallocated || t.networks_attachments.iter().any(|a| a.network.spec.ingress) == wants
}

/// The networks a service's tasks attach to, in Docker's order: `ingress`
/// first when the service publishes through it, then the spec's, each once;
/// networks that do not exist (any more) are left out.
fn networks_of(w: &Work, s: &Service, attach: &[NetworkAttachmentConfig]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if uses_ingress(s) {
        if let Some(n) = w.snap.networks.values().find(|n| n.spec.ingress) {
            out.push(n.meta.id.clone());
        }
    }
    let spec = match attach {
        [] => s.spec.networks.as_slice(),
        some => some,
    };
    for a in spec {
        let id = match w.network(&a.target) {
            Some(n) => n.meta.id.clone(),
            None => match w.snap.networks.values().find(|n| n.spec.name == a.target) {
                Some(n) => n.meta.id.clone(),
                None => continue,
            },
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Gives each service in endpoint mode vip a VIP on each of its networks,
/// keeping those it has, releasing those of networks it left.
pub(super) fn allocate_vips(w: &mut Work, addrs: &mut Addresses) {
    let sids: Vec<String> = w.snap.services.keys().cloned().collect();
    for sid in sids {
        let s = w.service(&sid);
        let dnsrr = s.spec.endpoint_spec.as_ref().and_then(|e| e.mode) == Some(EndpointMode::Dnsrr);
        let wanted = if dnsrr {
            Vec::new()
        } else {
            networks_of(w, s, &s.spec.task_template.networks)
        };
        let current: Vec<EndpointVirtualIp> = s.endpoint.iter().flat_map(|e| e.virtual_ips.clone()).collect();
        let mut vips = Vec::new();
        for nid in &wanted {
            if let Some(v) = current.iter().find(|v| &v.network_id == nid) {
                vips.push(v.clone());
                continue;
            }
            match addrs.allocate(nid) {
                Some((_, addr)) => vips.push(EndpointVirtualIp {
                    network_id: nid.clone(),
                    addr,
                }),
                None => {
                    let name = w.network(nid).map_or(nid.as_str(), |n| n.spec.name.as_str());
                    let why = if addrs.pools.contains_key(nid) {
                        format!("network {name}: {NO_ADDRESS} while allocating VIP")
                    } else {
                        format!("network {name} is not allocated yet")
                    };
                    addrs.vip_failures.insert(sid.clone(), why);
                }
            }
        }
        if vips != current {
            let spec = s.spec.endpoint_spec.clone().unwrap_or_default();
            w.set_service(&sid, ServiceChange::VirtualIps, |s| {
                s.endpoint
                    .get_or_insert_with(|| Endpoint {
                        spec,
                        ..Endpoint::default()
                    })
                    .virtual_ips = vips;
            });
        }
    }
}

/// Gives every live task that is not placed yet and has no attachments an
/// address on each of its service's networks; a task that cannot get them
/// all stays pending with the reason and is not placed this pass.
pub(super) fn allocate_tasks(w: &mut Work, addrs: &mut Addresses) {
    let todo: Vec<String> = w
        .view()
        .filter(|t| {
            t.desired_state.wants_run()
                && t.status.state <= TaskState::Pending
                && t.networks_attachments.is_empty()
                && w.snap.services.contains_key(&t.service_id)
        })
        .map(|t| t.meta.id.clone())
        .collect();
    for id in todo {
        let t = w.task(&id);
        let sid = t.service_id.clone();
        // The task's own spec says its networks (a rolling update may leave
        // tasks of the old spec); ingress comes from the service.
        let nets = networks_of(w, w.service(&sid), &t.spec.networks);
        if nets.is_empty() {
            continue;
        }
        let mut why = addrs.vip_failures.get(&sid).cloned();
        let mut got: Vec<(String, Ipv4Addr, String)> = Vec::new();
        if why.is_none() {
            for nid in &nets {
                match addrs.allocate(nid) {
                    Some((a, cidr)) => got.push((nid.clone(), a, cidr)),
                    None => {
                        let name = w.network(nid).map_or(nid.as_str(), |n| n.spec.name.as_str());
                        why = Some(if addrs.pools.contains_key(nid) {
                            format!("network {name}: {NO_ADDRESS}")
                        } else {
                            format!("network {name} is not allocated yet")
                        });
                        break;
                    }
                }
            }
        }
        match why {
            None => {
                let attachments: Vec<NetworkAttachment> = got
                    .into_iter()
                    .filter_map(|(nid, _, cidr)| {
                        let mut network = w.network(&nid)?.clone();
                        network.node_addresses.clear();
                        Some(NetworkAttachment {
                            network,
                            addresses: vec![cidr],
                        })
                    })
                    .collect();
                w.task_mut(&id).networks_attachments = attachments;
            }
            Some(msg) => {
                for (nid, a, _) in got {
                    addrs.release(&nid, a);
                }
                w.unallocated.insert(id.clone());
                w.set_pending(&id, msg);
            }
        }
    }
}

/// Gives every node that takes part in a network its own address there
/// (every node for `ingress`, which every host joins for the routing mesh;
/// else the nodes of the tasks attached to it that have not ended), and
/// takes back the addresses of nodes that no longer take part. Runs after
/// placement, so a task placed this pass finds its host's address with it.
pub(super) fn allocate_node_addresses(w: &mut Work, addrs: &mut Addresses) {
    let mut wanted: HashMap<String, BTreeSet<String>> = HashMap::new();
    for n in w.snap.networks.values().filter(|n| n.spec.ingress) {
        wanted.insert(n.meta.id.clone(), w.snap.nodes.keys().cloned().collect());
    }
    for t in w.view() {
        if t.node_id.is_empty() || t.status.state.is_terminal() {
            continue;
        }
        for a in &t.networks_attachments {
            wanted
                .entry(a.network.meta.id.clone())
                .or_default()
                .insert(t.node_id.clone());
        }
    }
    let ids: Vec<String> = w.snap.networks.keys().cloned().collect();
    for id in ids {
        let Some(n) = w.network(&id) else { continue };
        if !addrs.pools.contains_key(&id) {
            continue;
        }
        let want = wanted.remove(&id).unwrap_or_default();
        let mut next = n.node_addresses.clone();
        next.retain(|node, addr| {
            let keep = want.contains(node);
            if !keep {
                if let Some(a) = ipam::parse_addr(addr) {
                    addrs.release(&id, a);
                }
            }
            keep
        });
        for node in want {
            if next.contains_key(&node) {
                continue;
            }
            match addrs.allocate_high(&id) {
                Some(cidr) => {
                    next.insert(node, cidr);
                }
                None => {
                    tracing::warn!(network = %n.spec.name, node = %node, "scheduler: no address left for a host on the network");
                }
            }
        }
        if next != n.node_addresses {
            let mut n = n.clone();
            n.node_addresses = next;
            w.networks.insert(id, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use shoal_shared::model::*;

    use super::super::testkit::*;
    use super::super::Intent;
    use super::NO_ADDRESS;

    fn network(k: &mut Kit, id: &str, name: &str, subnet: Option<&str>, ingress: bool) {
        let mut spec = NetworkSpec::overlay(name);
        spec.ingress = ingress;
        spec.ipam_options = subnet.map(|s| IpamOptions {
            driver: Driver::default(),
            configs: vec![IpamConfig {
                subnet: s.into(),
                ..IpamConfig::default()
            }],
        });
        let mut n = Network::new(id, spec);
        n.meta.created_at = k.now + chrono::TimeDelta::seconds(k.index as i64);
        k.put(&n);
    }

    fn subnet(k: &Kit, id: &str) -> Option<(String, String, String)> {
        let n = &k.snap.networks[id];
        let c = n.ipam_options.as_ref()?.configs.first()?.clone();
        Some((
            c.subnet,
            c.gateway,
            n.driver_state.options[crate::ipam::VXLAN_ID_OPTION].clone(),
        ))
    }

    fn on(svc: &mut Service, net: &str) {
        svc.spec.task_template.networks.push(NetworkAttachmentConfig {
            target: net.into(),
            ..NetworkAttachmentConfig::default()
        });
    }

    fn vips(k: &Kit, sid: &str) -> Vec<(String, String)> {
        let s = &k.snap.services[sid];
        s.endpoint
            .iter()
            .flat_map(|e| e.virtual_ips.iter())
            .map(|v| (v.network_id.clone(), v.addr.clone()))
            .collect()
    }

    fn addresses(k: &Kit, sid: &str) -> Vec<Vec<(String, String)>> {
        let mut tasks = k.live(sid);
        tasks.sort_by_key(|t| t.slot);
        tasks
            .iter()
            .map(|t| {
                t.networks_attachments
                    .iter()
                    .map(|a| (a.network.meta.id.clone(), a.addresses.join(",")))
                    .collect()
            })
            .collect()
    }

    fn pair(n: &str, a: &str) -> (String, String) {
        (n.to_string(), a.to_string())
    }

    fn hosts(k: &Kit, id: &str) -> Vec<(String, String)> {
        k.snap.networks[id]
            .node_addresses
            .iter()
            .map(|(n, a)| pair(n, a))
            .collect()
    }

    #[test]
    fn hosts_get_their_own_address_on_ingress_and_on_the_networks_of_their_tasks() {
        let mut k = Kit::new(&["n1", "n2", "n3"], vec![]);
        network(&mut k, "ing", "ingress", None, true);
        network(&mut k, "net-a", "a", None, false);
        k.pass();
        // Every host takes part in ingress, from the top of the subnet.
        assert_eq!(
            hosts(&k, "ing"),
            [
                pair("n1", "10.0.0.254/24"),
                pair("n2", "10.0.0.253/24"),
                pair("n3", "10.0.0.252/24")
            ]
        );
        assert_eq!(hosts(&k, "net-a"), []);
        let mut web = service("web", Some(2));
        on(&mut web, "net-a");
        k.put(&web);
        k.pass();
        let nodes: BTreeSet<String> = k.live("web").iter().map(|t| t.node_id.clone()).collect();
        assert_eq!(nodes.len(), 2, "spread over two hosts");
        let got = hosts(&k, "net-a");
        assert_eq!(got.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>(), nodes);
        // Host addresses never collide with the tasks' (low, first free) or the VIP.
        let taken: BTreeSet<String> = addresses(&k, "web")
            .into_iter()
            .flatten()
            .map(|(_, a)| a)
            .chain(vips(&k, "web").into_iter().map(|(_, a)| a))
            .collect();
        assert!(
            got.iter()
                .all(|(_, a)| !taken.contains(a) && a.starts_with("10.0.1.25")),
            "{got:?} {taken:?}"
        );
        // A task's attachment does not carry the hosts' addresses.
        assert!(k
            .live("web")
            .iter()
            .all(|t| t.networks_attachments[0].network.node_addresses.is_empty()));
        // Once the service is gone and its tasks ended, the hosts leave the network.
        k.delete_service("web");
        k.pass();
        k.stop_all();
        k.pass();
        k.pass();
        assert_eq!(hosts(&k, "net-a"), [], "{:?}", k.tasks("web"));
        assert_eq!(hosts(&k, "ing").len(), 3);
        // A node that leaves the cluster leaves ingress.
        k.index += 1;
        k.snap.remove(shoal_shared::store::Kind::Node, "n3", k.index);
        k.pass();
        assert_eq!(
            hosts(&k, "ing"),
            [pair("n1", "10.0.0.254/24"), pair("n2", "10.0.0.253/24")]
        );
    }

    #[test]
    fn networks_get_subnets_from_the_pool_oldest_first_with_a_gateway_and_a_vxlan_id() {
        let mut k = Kit::new(&["n1"], vec![]);
        network(&mut k, "ing", "ingress", None, true);
        network(&mut k, "net-a", "a", None, false);
        network(&mut k, "net-b", "b", Some("10.0.1.0/24"), false);
        network(&mut k, "net-c", "c", Some("192.168.7.0/24"), false);
        let plan = k.pass();
        let allocated = plan
            .intents
            .iter()
            .filter(|i| matches!(i, Intent::NetworkAllocated { .. }))
            .count();
        assert_eq!(allocated, 3, "{:?}", plan.intents);
        let row = |s: &str, g: &str, v: &str| Some((s.to_string(), g.to_string(), v.to_string()));
        assert_eq!(subnet(&k, "ing"), row("10.0.0.0/24", "10.0.0.1", "4096"));
        assert_eq!(subnet(&k, "net-a"), row("10.0.1.0/24", "10.0.1.1", "4097"));
        // net-b asked for a subnet net-a already has: it waits, as SwarmKit leaves it unallocated.
        assert_eq!(subnet(&k, "net-b"), None);
        assert_eq!(subnet(&k, "net-c"), row("192.168.7.0/24", "192.168.7.1", "4098"));
        // Nothing more to do; a removed network's subnet and VXLAN ID are free again.
        assert!(k.pass().intents.is_empty());
        k.index += 1;
        k.snap.remove(shoal_shared::store::Kind::Network, "net-a", k.index);
        network(&mut k, "net-d", "d", None, false);
        k.pass();
        assert_eq!(subnet(&k, "net-b"), row("10.0.1.0/24", "10.0.1.1", "4097"));
        assert_eq!(subnet(&k, "net-d"), row("10.0.2.0/24", "10.0.2.1", "4099"));
    }

    #[test]
    fn the_cluster_pool_and_subnet_size_are_honoured() {
        let mut k = Kit::new(&["n1"], vec![]);
        let mut c = Cluster::new("c", JoinTokens::default());
        c.default_addr_pool = vec!["20.20.0.0/16".into()];
        c.subnet_size = 26;
        k.put(&c);
        network(&mut k, "ing", "ingress", None, true);
        network(&mut k, "net-a", "a", None, false);
        k.pass();
        assert_eq!(subnet(&k, "ing").unwrap().0, "20.20.0.0/26");
        assert_eq!(subnet(&k, "net-a").unwrap().0, "20.20.0.64/26");
    }

    #[test]
    fn services_get_vips_and_tasks_addresses_before_they_are_placed() {
        let mut k = Kit::new(&["n1", "n2"], vec![]);
        network(&mut k, "ing", "ingress", None, true);
        network(&mut k, "net-a", "a", None, false);
        k.pass();
        let mut web = service("web", Some(2));
        on(&mut web, "net-a");
        web.spec.endpoint_spec = Some(EndpointSpec {
            ports: vec![serde_json::from_value(serde_json::json!({"TargetPort": 80, "PublishedPort": 8080})).unwrap()],
            ..EndpointSpec::default()
        });
        let mut rr = service("rr", Some(1));
        on(&mut rr, "a"); // by name, as an older spec may hold it
        rr.spec.endpoint_spec = Some(EndpointSpec {
            mode: Some(EndpointMode::Dnsrr),
            ..EndpointSpec::default()
        });
        k.put(&web);
        k.put(&rr);
        k.pass();
        // Ingress first, as Docker lists them.
        assert_eq!(
            vips(&k, "web"),
            [pair("ing", "10.0.0.2/24"), pair("net-a", "10.0.1.2/24")]
        );
        assert_eq!(vips(&k, "rr"), []);
        let web_addrs = addresses(&k, "web");
        assert_eq!(web_addrs.len(), 2);
        assert!(web_addrs
            .iter()
            .all(|a| a.len() == 2 && a[0].0 == "ing" && a[1].0 == "net-a"));
        let all: BTreeSet<String> = ["web", "rr"]
            .iter()
            .flat_map(|s| addresses(&k, s))
            .flatten()
            .map(|(_, a)| a)
            .collect();
        // Every address once: 2 web tasks on two networks, 1 rr task.
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(
            !all.contains("10.0.1.2/24") && !all.contains("10.0.0.2/24"),
            "VIPs are not reused"
        );
        assert!(k.live("web").iter().all(|t| t.status.state == TaskState::Assigned));
        // The attachment carries the allocated network, as Docker's task shows it.
        let t = &k.live("rr")[0];
        assert_eq!(t.networks_attachments[0].network.spec.name, "a");
        assert!(t.networks_attachments[0].network.ipam_options.is_some());
    }

    #[test]
    fn a_full_subnet_leaves_tasks_pending_and_ended_tasks_give_addresses_back() {
        let mut k = Kit::new(&["n1"], vec![]);
        // A /29: .0 network, .1 gateway, .7 broadcast; .2-.6 are five addresses.
        network(&mut k, "small", "small", Some("10.5.0.0/29"), false);
        k.pass();
        let mut s = service("s", Some(6));
        on(&mut s, "small");
        k.put(&s);
        let plan = k.pass();
        assert_eq!(vips(&k, "s"), [pair("small", "10.5.0.2/29")]);
        let pending: Vec<Task> = k
            .live("s")
            .into_iter()
            .filter(|t| t.status.state == TaskState::Pending)
            .collect();
        assert_eq!(pending.len(), 2, "{:?}", plan.intents);
        assert!(pending.iter().all(|t| t.node_id.is_empty()
            && t.networks_attachments.is_empty()
            && t.status.err == format!("network small: {NO_ADDRESS}")));
        assert_eq!(plan.pending_by_reason.get("addresses"), Some(&2));
        // Scaling down frees the addresses of the tasks that go; the pending ones get them.
        k.run_all();
        k.set_service("s", |s| s.spec.mode = ServiceMode::replicated(2));
        k.pass();
        k.stop_all();
        k.set_service("s", |s| s.spec.mode = ServiceMode::replicated(4));
        k.pass();
        k.pass();
        let live = k.live("s");
        assert_eq!(live.len(), 4);
        assert!(
            live.iter().all(|t| t.networks_attachments.len() == 1),
            "{:?}",
            live.iter()
                .map(|t| (&t.status, t.networks_attachments.len()))
                .collect::<Vec<_>>()
        );
        let addrs: BTreeSet<String> = live
            .iter()
            .map(|t| t.networks_attachments[0].addresses[0].clone())
            .collect();
        assert_eq!(addrs.len(), 4);
        assert!(!addrs.contains("10.5.0.2/29"));
    }

    #[test]
    fn a_new_scheduler_reading_the_store_keeps_what_was_given() {
        let mut k = Kit::new(&["n1"], vec![]);
        network(&mut k, "net-a", "a", None, false);
        let mut s = service("s", Some(3));
        on(&mut s, "net-a");
        k.put(&s);
        k.pass();
        k.run_all();
        let before = (vips(&k, "s"), addresses(&k, "s"));
        // Another scheduler (a restart, a new leader) starts from the store's records.
        let records: Vec<_> = [
            k.snap
                .networks
                .values()
                .map(|n| shoal_shared::store::StoreObject::to_record(n).unwrap())
                .collect::<Vec<_>>(),
            k.snap
                .services
                .values()
                .map(|n| shoal_shared::store::StoreObject::to_record(n).unwrap())
                .collect(),
            k.snap
                .tasks
                .values()
                .map(|n| shoal_shared::store::StoreObject::to_record(n).unwrap())
                .collect(),
            k.snap
                .nodes
                .values()
                .map(|n| shoal_shared::store::StoreObject::to_record(n).unwrap())
                .collect(),
        ]
        .concat();
        k.snap = crate::snapshot::Snapshot::from_records(&records);
        assert!(k.pass().intents.is_empty());
        assert_eq!((vips(&k, "s"), addresses(&k, "s")), before);
        let mut t = service("t", Some(2));
        on(&mut t, "net-a");
        k.put(&t);
        k.pass();
        let mut all: Vec<String> = ["s", "t"]
            .iter()
            .flat_map(|s| addresses(&k, s))
            .flatten()
            .map(|(_, a)| a)
            .chain(vips(&k, "s").into_iter().chain(vips(&k, "t")).map(|(_, a)| a))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!((n, all.len()), (7, 7), "{all:?}");
    }

    #[test]
    fn leaving_a_network_releases_its_vip() {
        let mut k = Kit::new(&["n1"], vec![]);
        network(&mut k, "net-a", "a", None, false);
        network(&mut k, "net-b", "b", None, false);
        let mut s = service("s", Some(1));
        on(&mut s, "net-a");
        k.put(&s);
        k.pass();
        assert_eq!(vips(&k, "s"), [pair("net-a", "10.0.0.2/24")]);
        k.set_service("s", |s| s.spec.task_template.networks[0].target = "net-b".into());
        k.pass();
        assert_eq!(vips(&k, "s"), [pair("net-b", "10.0.1.2/24")]);
    }

    /// Two rounds of a one-at-a-time rollout: replace, stop, start.
    fn roll_two(k: &mut Kit) {
        for _ in 0..2 {
            k.pass();
            k.stop_all();
            k.pass();
            k.run_all();
        }
        k.pass();
    }

    #[test]
    fn publishing_through_the_mesh_rolls_the_tasks_onto_ingress_and_a_new_port_number_does_not() {
        let mut k = Kit::new(&["n1"], vec![]);
        network(&mut k, "ing", "ingress", None, true);
        network(&mut k, "net-a", "a", None, false);
        k.pass();
        let mut web = service("web", Some(2));
        on(&mut web, "net-a");
        k.put(&web);
        k.pass();
        k.run_all();
        let on_ingress = |k: &Kit| -> Vec<bool> {
            k.live("web")
                .iter()
                .map(|t| t.networks_attachments.iter().any(|a| a.network.meta.id == "ing"))
                .collect()
        };
        assert_eq!(on_ingress(&k), [false, false]);
        let publish = |s: &mut Service, port: u64| {
            s.spec.endpoint_spec = Some(EndpointSpec {
                ports: vec![
                    serde_json::from_value(serde_json::json!({"TargetPort": 80, "PublishedPort": port})).unwrap(),
                ],
                ..EndpointSpec::default()
            });
        };
        // --publish-add: the running tasks are replaced by tasks on ingress, one at a time.
        k.set_service("web", |s| publish(s, 8080));
        roll_two(&mut k);
        assert_eq!(on_ingress(&k), [true, true]);
        let ids: Vec<String> = k.live("web").iter().map(|t| t.meta.id.clone()).collect();
        // Another published port number: nothing to roll.
        k.set_service("web", |s| publish(s, 9090));
        k.pass();
        k.pass();
        assert_eq!(k.live("web").iter().map(|t| t.meta.id.clone()).collect::<Vec<_>>(), ids);
        // --publish-rm: off ingress again.
        k.set_service("web", |s| s.spec.endpoint_spec = None);
        roll_two(&mut k);
        assert_eq!(on_ingress(&k), [false, false]);
    }
}
