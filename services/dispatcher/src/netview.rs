//! Each node's view of the cluster's networks ([`shoal_shared::netview`]),
//! computed from the dispatcher's mirror: pure functions, no I/O.
//!
//! A node takes part in a network when the allocator gave it an address
//! there (`Network.NodeAddresses`: every node on `ingress`, else the nodes of
//! the network's tasks). Its view holds those networks, every endpoint on
//! them (tasks placed on any node that have not ended, and every host's own
//! address), the services with a VIP or a task there, and the nodes those
//! endpoints live on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_shared::model::{mac_for_ip, Network, Node, NodeState, Service, Task, TaskState};
use shoal_shared::netview::{
    EndpointOwner, EndpointView, NetView, NetworkView, NodeView, ServiceView, OVERLAY_MTU, PROXY_PROTOCOL_LABEL,
};

/// What every node's view is cut from, built once per round.
#[derive(Debug, Default)]
pub struct Index {
    networks: BTreeMap<String, NetworkView>,
    /// Network ID -> its endpoints.
    endpoints: HashMap<String, Vec<EndpointView>>,
    /// Network ID -> IDs of the services with a VIP or a task on it.
    services_on: HashMap<String, BTreeSet<String>>,
    services: HashMap<String, ServiceView>,
    nodes: HashMap<String, NodeView>,
    /// Node ID -> the networks it takes part in.
    membership: HashMap<String, BTreeSet<String>>,
    /// Network ID -> a hash of everything a view shows of it (the network,
    /// its endpoints, their services and nodes): a node's view changed only
    /// if one of its networks' did, or its set of networks.
    fingerprints: HashMap<String, u64>,
}

fn hash_of<T: serde::Serialize>(value: &T) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The VXLAN ID the allocator gave a network.
fn vni(n: &Network) -> Option<u32> {
    n.driver_state
        .options
        .get("com.docker.network.driver.overlay.vxlanid_list")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

fn network_view(n: &Network) -> Option<NetworkView> {
    let c = n.ipam_options.as_ref()?.configs.first()?;
    Some(NetworkView {
        id: n.meta.id.clone(),
        name: n.spec.name.clone(),
        subnet: c.subnet.clone(),
        gateway: c.gateway.clone(),
        vni: vni(n)?,
        ingress: n.spec.ingress,
        internal: n.spec.internal,
        attachable: n.spec.attachable,
        mtu: OVERLAY_MTU,
    })
}

fn endpoint(network_id: &str, addr: &str, node_id: &str, owner: EndpointOwner) -> Option<EndpointView> {
    let ip: std::net::Ipv4Addr = addr.split('/').next()?.parse().ok()?;
    Some(EndpointView {
        network_id: network_id.to_string(),
        addr: addr.to_string(),
        mac: mac_for_ip(ip),
        node_id: node_id.to_string(),
        owner,
    })
}

/// The service's name a task was made for.
fn service_name<'a>(t: &'a Task, s: Option<&'a Service>) -> &'a str {
    match (&t.service_annotations, s) {
        (Some(a), _) if !a.name.is_empty() => &a.name,
        (_, Some(s)) => &s.spec.name,
        _ => "",
    }
}

/// Docker's task name: `<service>.<slot>.<task-id>` (global: `<service>.<node-id>.<task-id>`).
pub fn task_name(service: &str, t: &Task) -> String {
    match t.slot {
        Some(slot) => format!("{service}.{slot}.{}", t.meta.id),
        None => format!("{service}.{}.{}", t.node_id, t.meta.id),
    }
}

/// The `--network-alias` names a task has on a network (its own spec's
/// networks, else its service's).
fn aliases(t: &Task, s: Option<&Service>, network: &Network) -> Vec<String> {
    let own = &t.spec.networks;
    let from_service = s.map(|s| s.spec.task_template.networks.as_slice()).unwrap_or_default();
    let list = if own.is_empty() { from_service } else { own.as_slice() };
    list.iter()
        .filter(|a| a.target == network.meta.id || a.target == network.spec.name)
        .flat_map(|a| a.aliases.iter().cloned())
        .collect()
}

impl Index {
    /// Builds the index from the mirror's objects.
    pub fn build<'a>(
        nodes: impl Iterator<Item = &'a Node>,
        networks: impl Iterator<Item = &'a Network>,
        services: impl Iterator<Item = &'a Service>,
        tasks: impl Iterator<Item = &'a Task>,
    ) -> Index {
        let mut ix = Index::default();
        let nodes: HashMap<&str, &Node> = nodes.map(|n| (n.meta.id.as_str(), n)).collect();
        let services: HashMap<&str, &Service> = services.map(|s| (s.meta.id.as_str(), s)).collect();
        let mut by_id: HashMap<&str, &Network> = HashMap::new();
        for n in networks {
            let Some(view) = network_view(n) else { continue };
            by_id.insert(n.meta.id.as_str(), n);
            ix.networks.insert(n.meta.id.clone(), view);
            for (node, addr) in &n.node_addresses {
                ix.membership.entry(node.clone()).or_default().insert(n.meta.id.clone());
                if let Some(e) = endpoint(&n.meta.id, addr, node, EndpointOwner::Node) {
                    ix.endpoints.entry(n.meta.id.clone()).or_default().push(e);
                }
            }
        }
        for t in tasks {
            if t.node_id.is_empty() || t.status.state.is_terminal() || t.networks_attachments.is_empty() {
                continue;
            }
            let svc = services.get(t.service_id.as_str()).copied();
            let name = service_name(t, svc);
            let ready = nodes
                .get(t.node_id.as_str())
                .is_some_and(|n| n.status.state == NodeState::Ready);
            let serving = t.status.state == TaskState::Running && t.desired_state.wants_run() && ready;
            for a in &t.networks_attachments {
                let Some(network) = by_id.get(a.network.meta.id.as_str()) else {
                    continue;
                };
                let owner = EndpointOwner::Task {
                    task_id: t.meta.id.clone(),
                    service_id: t.service_id.clone(),
                    service_name: name.to_string(),
                    task_name: task_name(name, t),
                    slot: t.slot,
                    aliases: aliases(t, svc, network),
                    serving,
                };
                let Some(addr) = a.addresses.first() else { continue };
                if let Some(e) = endpoint(&network.meta.id, addr, &t.node_id, owner) {
                    ix.endpoints.entry(network.meta.id.clone()).or_default().push(e);
                }
                ix.services_on
                    .entry(network.meta.id.clone())
                    .or_default()
                    .insert(t.service_id.clone());
            }
        }
        for s in services.values() {
            let endpoint = s.endpoint.as_ref();
            let vips: Vec<(String, String)> = endpoint
                .iter()
                .flat_map(|e| e.virtual_ips.iter())
                .filter(|v| ix.networks.contains_key(&v.network_id))
                .map(|v| (v.network_id.clone(), v.addr.clone()))
                .collect();
            for (nid, _) in &vips {
                ix.services_on.entry(nid.clone()).or_default().insert(s.meta.id.clone());
            }
            ix.services.insert(
                s.meta.id.clone(),
                ServiceView {
                    id: s.meta.id.clone(),
                    name: s.spec.name.clone(),
                    endpoint_mode: s.spec.endpoint_spec.as_ref().and_then(|e| e.mode).unwrap_or_default(),
                    vips,
                    ports: endpoint.map(|e| e.ports.clone()).unwrap_or_default(),
                    proxy_protocol: s
                        .spec
                        .labels
                        .get(PROXY_PROTOCOL_LABEL)
                        .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true" | "v2")),
                },
            );
        }
        for n in nodes.values() {
            ix.nodes.insert(
                n.meta.id.clone(),
                NodeView {
                    id: n.meta.id.clone(),
                    addr: n.status.addr.clone(),
                    ready: n.status.state == NodeState::Ready,
                },
            );
        }
        for list in ix.endpoints.values_mut() {
            list.sort_by(|a, b| a.addr.cmp(&b.addr));
        }
        let fingerprints: HashMap<String, u64> = ix
            .networks
            .keys()
            .map(|nid| {
                let endpoints = ix.endpoints.get(nid).map(Vec::as_slice).unwrap_or_default();
                let services: Vec<&ServiceView> = ix
                    .services_on
                    .get(nid)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| ix.services.get(s))
                    .collect();
                let nodes: BTreeSet<&str> = endpoints.iter().map(|e| e.node_id.as_str()).collect();
                let nodes: Vec<&NodeView> = nodes.iter().filter_map(|n| ix.nodes.get(*n)).collect();
                (nid.clone(), hash_of(&(&ix.networks[nid], endpoints, services, nodes)))
            })
            .collect();
        ix.fingerprints = fingerprints;
        ix
    }

    /// A hash of what a node's view shows (its version aside).
    fn fingerprint(&self, node_id: &str) -> u64 {
        let nets: Vec<(&str, u64)> = self
            .membership
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n.as_str(), *self.fingerprints.get(n)?)))
            .collect();
        let own = self.nodes.get(node_id);
        hash_of(&(nets, own))
    }

    /// One node's view, at store index `version`.
    pub fn view(&self, node_id: &str, version: u64) -> NetView {
        let mut view = NetView {
            node_id: node_id.to_string(),
            version,
            ..NetView::default()
        };
        let Some(nets) = self.membership.get(node_id) else {
            return view;
        };
        let mut services = BTreeSet::new();
        let mut nodes = BTreeSet::new();
        nodes.insert(node_id.to_string());
        for nid in nets {
            let Some(n) = self.networks.get(nid) else { continue };
            view.networks.push(n.clone());
            for e in self.endpoints.get(nid).into_iter().flatten() {
                nodes.insert(e.node_id.clone());
                view.endpoints.push(e.clone());
            }
            services.extend(self.services_on.get(nid).into_iter().flatten().cloned());
        }
        view.services = services.iter().filter_map(|s| self.services.get(s).cloned()).collect();
        view.nodes = nodes.iter().filter_map(|n| self.nodes.get(n).cloned()).collect();
        view
    }
}

/// What was last sent to each node (a hash of its view, not the view: a
/// thousand nodes on `ingress` would otherwise hold a million endpoints);
/// decides which views changed.
#[derive(Debug, Default)]
pub struct Sent {
    last: HashMap<String, u64>,
}

impl Sent {
    /// The views that differ from the last one sent to their node (the
    /// version alone does not count as a change), remembered as sent; nodes
    /// that are gone are forgotten. Only changed views are built.
    pub fn changed<'a>(&mut self, index: &Index, nodes: impl Iterator<Item = &'a str>, version: u64) -> Vec<NetView> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for node in nodes {
            seen.insert(node.to_string());
            let fingerprint = index.fingerprint(node);
            if self.last.get(node) == Some(&fingerprint) {
                continue;
            }
            self.last.insert(node.to_string(), fingerprint);
            out.push(index.view(node, version));
        }
        self.last.retain(|n, _| seen.contains(n));
        out
    }

    /// Forgets what was sent (a new acting term sends every view again).
    pub fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::{
        Driver, Endpoint, EndpointMode, EndpointSpec, EndpointVirtualIp, IpamConfig, IpamOptions, NetworkAttachment,
        NetworkAttachmentConfig, NetworkSpec, ServiceSpec,
    };

    fn network(id: &str, name: &str, subnet: &str, vni: u32, hosts: &[(&str, &str)]) -> Network {
        let mut spec = NetworkSpec::overlay(name);
        spec.ingress = name == "ingress";
        let mut n = Network::new(id, spec);
        n.ipam_options = Some(IpamOptions {
            driver: Driver::named("default"),
            configs: vec![IpamConfig {
                subnet: subnet.into(),
                range: String::new(),
                gateway: subnet.replace(".0/24", ".1"),
            }],
        });
        n.driver_state = Driver::named("overlay");
        n.driver_state
            .options
            .insert("com.docker.network.driver.overlay.vxlanid_list".into(), vni.to_string());
        n.node_addresses = hosts.iter().map(|(h, a)| (h.to_string(), a.to_string())).collect();
        n
    }

    fn node(id: &str, addr: &str, ready: bool) -> Node {
        let mut n: Node = serde_json::from_value(serde_json::json!({"ID": id})).unwrap();
        n.status.addr = addr.into();
        n.status.state = if ready { NodeState::Ready } else { NodeState::Down };
        n
    }

    fn service(id: &str, name: &str, mode: EndpointMode, vips: &[(&str, &str)], aliases: &[&str]) -> Service {
        let mut s: Service = serde_json::from_value(serde_json::json!({"ID": id})).unwrap();
        s.spec = ServiceSpec {
            name: name.into(),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(mode),
                ..EndpointSpec::default()
            }),
            ..ServiceSpec::default()
        };
        s.spec.task_template.networks = vec![NetworkAttachmentConfig {
            target: "net-a".into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ..NetworkAttachmentConfig::default()
        }];
        s.endpoint = Some(Endpoint {
            virtual_ips: vips
                .iter()
                .map(|(n, a)| EndpointVirtualIp {
                    network_id: n.to_string(),
                    addr: a.to_string(),
                })
                .collect(),
            ..Endpoint::default()
        });
        s
    }

    fn task(id: &str, svc: &str, slot: u64, node: &str, state: TaskState, on: &[(&Network, &str)]) -> Task {
        let mut t: Task = serde_json::from_value(serde_json::json!({"ID": id})).unwrap();
        t.service_id = svc.into();
        t.slot = Some(slot);
        t.node_id = node.into();
        t.status.state = state;
        t.desired_state = TaskState::Running;
        t.networks_attachments = on
            .iter()
            .map(|(n, a)| NetworkAttachment {
                network: (*n).clone(),
                addresses: vec![a.to_string()],
            })
            .collect();
        t
    }

    #[test]
    fn a_node_sees_the_networks_it_takes_part_in_with_every_endpoint_on_them() {
        let ing = network(
            "ing",
            "ingress",
            "10.0.0.0/24",
            4096,
            &[
                ("n1", "10.0.0.254/24"),
                ("n2", "10.0.0.253/24"),
                ("n3", "10.0.0.252/24"),
            ],
        );
        let a = network(
            "net-a",
            "a",
            "10.0.1.0/24",
            4097,
            &[("n1", "10.0.1.254/24"), ("n2", "10.0.1.253/24")],
        );
        let b = network("net-b", "b", "10.0.2.0/24", 4098, &[("n3", "10.0.2.254/24")]);
        let nodes = [
            node("n1", "192.0.2.1", true),
            node("n2", "192.0.2.2", true),
            node("n3", "192.0.2.3", false),
        ];
        let web = service("s-web", "web", EndpointMode::Vip, &[("net-a", "10.0.1.2/24")], &["www"]);
        let rr = service("s-rr", "rr", EndpointMode::Dnsrr, &[], &[]);
        let other = service("s-other", "other", EndpointMode::Vip, &[("net-b", "10.0.2.2/24")], &[]);
        let tasks = [
            task("t1", "s-web", 1, "n1", TaskState::Running, &[(&a, "10.0.1.3/24")]),
            task("t2", "s-web", 2, "n2", TaskState::Starting, &[(&a, "10.0.1.4/24")]),
            task("t3", "s-rr", 1, "n2", TaskState::Running, &[(&a, "10.0.1.5/24")]),
            task("t4", "s-other", 1, "n3", TaskState::Running, &[(&b, "10.0.2.3/24")]),
            task("t5", "s-web", 3, "n1", TaskState::Failed, &[(&a, "10.0.1.6/24")]),
        ];
        let ix = Index::build(
            nodes.iter(),
            [&ing, &a, &b].into_iter(),
            [&web, &rr, &other].into_iter(),
            tasks.iter(),
        );
        let v = ix.view("n1", 42);
        assert_eq!(v.version, 42);
        let nets: Vec<&str> = v.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nets, ["ingress", "a"], "by network ID");
        assert_eq!(v.network("net-a").unwrap().vni, 4097);
        assert_eq!(v.own_endpoint("net-a").unwrap().addr, "10.0.1.254/24");
        assert_eq!(v.own_endpoint("ing").unwrap().mac, "02:42:0a:00:00:fe");
        // Every endpoint on a and ingress, none of b's, no ended task.
        let addrs: BTreeSet<&str> = v.endpoints.iter().map(|e| e.addr.as_str()).collect();
        let want: BTreeSet<&str> = [
            "10.0.1.3/24",
            "10.0.1.4/24",
            "10.0.1.5/24",
            "10.0.1.253/24",
            "10.0.1.254/24",
            "10.0.0.252/24",
            "10.0.0.253/24",
            "10.0.0.254/24",
        ]
        .into();
        assert_eq!(addrs, want);
        let t1 = v.endpoints.iter().find(|e| e.addr == "10.0.1.3/24").unwrap();
        match &t1.owner {
            EndpointOwner::Task {
                task_name,
                serving,
                aliases,
                service_name,
                ..
            } => {
                assert_eq!(task_name, "web.1.t1");
                assert_eq!(service_name, "web");
                assert_eq!(aliases, &["www".to_string()]);
                assert!(*serving);
            }
            other => panic!("{other:?}"),
        }
        let t2 = v.endpoints.iter().find(|e| e.addr == "10.0.1.4/24").unwrap();
        assert!(
            matches!(t2.owner, EndpointOwner::Task { serving: false, .. }),
            "starting is not serving"
        );
        let svcs: Vec<&str> = v.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(svcs, ["rr", "web"]);
        assert_eq!(v.services[1].vips, [("net-a".to_string(), "10.0.1.2/24".to_string())]);
        // n3 holds an ingress endpoint, so n1 knows where it is (and that it is down).
        assert_eq!(v.nodes.len(), 3);
        assert!(!v.nodes.iter().find(|n| n.id == "n3").unwrap().ready);
        // n3 sees b and ingress; its task on a down node does not serve.
        let v3 = ix.view("n3", 42);
        let t4 = v3.endpoints.iter().find(|e| e.addr == "10.0.2.3/24").unwrap();
        assert!(matches!(t4.owner, EndpointOwner::Task { serving: false, .. }));
        assert!(v3.endpoints.iter().all(|e| !e.addr.starts_with("10.0.1.")));
        // A node in no network sees nothing.
        assert!(ix.view("n9", 42).networks.is_empty());
    }

    #[test]
    fn only_changed_views_are_sent_again() {
        let ing = network(
            "ing",
            "ingress",
            "10.0.0.0/24",
            4096,
            &[("n1", "10.0.0.254/24"), ("n2", "10.0.0.253/24")],
        );
        let nodes = [node("n1", "192.0.2.1", true), node("n2", "192.0.2.2", true)];
        let mut sent = Sent::default();
        let ix = Index::build(nodes.iter(), [&ing].into_iter(), std::iter::empty(), std::iter::empty());
        assert_eq!(sent.changed(&ix, ["n1", "n2"].into_iter(), 5).len(), 2);
        // Same content at a later index: nothing to send.
        assert!(sent.changed(&ix, ["n1", "n2"].into_iter(), 6).is_empty());
        // n2 leaves the cluster: n1's view changes (its endpoint is gone).
        let ing2 = network("ing", "ingress", "10.0.0.0/24", 4096, &[("n1", "10.0.0.254/24")]);
        let ix = Index::build(
            nodes[..1].iter(),
            [&ing2].into_iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        let out = sent.changed(&ix, ["n1"].into_iter(), 7);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].version, 7);
        assert_eq!(out[0].endpoints.len(), 1);
        sent.clear();
        assert_eq!(sent.changed(&ix, ["n1"].into_iter(), 8).len(), 1);
    }

    #[test]
    fn a_change_reaches_only_the_nodes_whose_networks_it_touches() {
        let ing = network(
            "ing",
            "ingress",
            "10.0.0.0/24",
            4096,
            &[("n1", "10.0.0.254/24"), ("n2", "10.0.0.253/24")],
        );
        let a = network("net-a", "a", "10.0.1.0/24", 4097, &[("n1", "10.0.1.254/24")]);
        let nodes = [node("n1", "192.0.2.1", true), node("n2", "192.0.2.2", true)];
        let web = service("s-web", "web", EndpointMode::Vip, &[("net-a", "10.0.1.2/24")], &[]);
        let build = |state: TaskState| {
            let tasks = [
                task("t1", "s-web", 1, "n1", state, &[(&a, "10.0.1.3/24")]),
                // A task on no network: its changes touch no view.
                task("t9", "s-web", 9, "n2", state, &[]),
            ];
            Index::build(nodes.iter(), [&ing, &a].into_iter(), [&web].into_iter(), tasks.iter())
        };
        let mut sent = Sent::default();
        assert_eq!(
            sent.changed(&build(TaskState::Starting), ["n1", "n2"].into_iter(), 1)
                .len(),
            2
        );
        // t1 starts serving: only n1 (on a) gets a new view; n2 sees only ingress.
        let out = sent.changed(&build(TaskState::Running), ["n1", "n2"].into_iter(), 2);
        assert_eq!(out.iter().map(|v| v.node_id.as_str()).collect::<Vec<_>>(), ["n1"]);
        assert!(sent
            .changed(&build(TaskState::Running), ["n1", "n2"].into_iter(), 3)
            .is_empty());
    }
}
