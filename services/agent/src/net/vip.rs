//! Service VIPs inside a task's network sandbox (issue 11), as Docker's
//! per-sandbox IPVS does: a connection from the task to a service's VIP is
//! sent to one of the service's serving tasks on that network, the source
//! address kept. The agent keeps one nftables table ([`TABLE`]) in each
//! docker task's namespace; this module is the pure part: what that table
//! should hold, from the node's view and the task's networks.
//!
//! For every service with a VIP on a network the task is attached to
//! (`ingress` aside: the routing mesh connects to task addresses), one
//! [`VipRule`]: `ip daddr <VIP> dnat to` one of the serving task addresses
//! of that service on that network (round robin per new connection; the
//! connection's conntrack entry keeps it on its task), or, with no serving
//! task, a refusal (TCP reset, ICMP port unreachable). Ports are kept.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use shoal_shared::netview::{EndpointOwner, NetView};

use super::plan::parse_cidr;

/// The agent's nftables table in a task's namespace (family `ip`).
pub const TABLE: &str = "shoal";
/// Its NAT chain on the output hook.
pub const CHAIN: &str = "vips";

/// One VIP and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipRule {
    pub vip: Ipv4Addr,
    /// The serving tasks' addresses on the VIP's network, sorted; empty:
    /// connections are refused.
    pub backends: Vec<Ipv4Addr>,
}

/// What the table of one task should hold: its rules sorted by VIP. Two
/// tables that compare equal are the same ruleset, so the agent replaces
/// one only when this changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VipTable {
    pub rules: Vec<VipRule>,
}

/// The VIP table of task `task_id`, attached to `networks` (network IDs;
/// the networks its endpoints in the view name count too, which is all an
/// agent knows of a task it re-adopted after a restart).
pub fn desired(view: &NetView, task_id: &str, networks: &[String]) -> VipTable {
    let mut nets: BTreeSet<&str> = networks.iter().map(String::as_str).collect();
    for e in &view.endpoints {
        if matches!(&e.owner, EndpointOwner::Task { task_id: t, .. } if t == task_id) {
            nets.insert(&e.network_id);
        }
    }
    // Only networks the view lists and that are not the routing mesh's.
    nets.retain(|id| view.network(id).is_some_and(|n| !n.ingress));
    let mut rules = Vec::new();
    let mut seen = BTreeSet::new();
    for s in &view.services {
        for (net, cidr) in &s.vips {
            if !nets.contains(net.as_str()) {
                continue;
            }
            let Some((vip, _)) = parse_cidr(cidr) else { continue };
            if !seen.insert(vip) {
                continue;
            }
            let backends: BTreeSet<Ipv4Addr> = view
                .endpoints
                .iter()
                .filter(|e| &e.network_id == net)
                .filter(|e| {
                    matches!(&e.owner, EndpointOwner::Task { service_id, serving: true, .. } if *service_id == s.id)
                })
                .filter_map(|e| e.ip())
                .collect();
            rules.push(VipRule {
                vip,
                backends: backends.into_iter().collect(),
            });
        }
    }
    rules.sort();
    VipTable { rules }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::EndpointMode;
    use shoal_shared::netview::{EndpointView, NetworkView, ServiceView};

    fn network(id: &str, subnet: &str, ingress: bool) -> NetworkView {
        NetworkView {
            id: id.into(),
            name: id.into(),
            subnet: subnet.into(),
            gateway: String::new(),
            vni: 4096,
            ingress,
            internal: false,
            attachable: false,
            mtu: 1450,
        }
    }

    fn task(net: &str, addr: &str, task: &str, service: &str, serving: bool) -> EndpointView {
        EndpointView {
            network_id: net.into(),
            addr: addr.into(),
            mac: String::new(),
            node_id: "n2".into(),
            owner: EndpointOwner::Task {
                task_id: task.into(),
                service_id: service.into(),
                service_name: service.into(),
                task_name: format!("{service}.1.{task}"),
                slot: Some(1),
                aliases: vec![],
                serving,
            },
        }
    }

    fn service(id: &str, vips: &[(&str, &str)]) -> ServiceView {
        ServiceView {
            id: id.into(),
            name: id.into(),
            endpoint_mode: EndpointMode::Vip,
            vips: vips.iter().map(|(n, a)| (n.to_string(), a.to_string())).collect(),
            ports: vec![],
            proxy_protocol: false,
        }
    }

    /// Network a (10.0.1.0/24) and b (10.0.2.0/24), ingress (10.0.0.0/24);
    /// web on a and ingress with two serving tasks and one stopping; db on b;
    /// the client task c1 on a.
    fn view() -> NetView {
        NetView {
            node_id: "n1".into(),
            version: 1,
            networks: vec![
                network("a", "10.0.1.0/24", false),
                network("b", "10.0.2.0/24", false),
                network("ing", "10.0.0.0/24", true),
            ],
            endpoints: vec![
                task("a", "10.0.1.5/24", "w2", "web", true),
                task("a", "10.0.1.4/24", "w1", "web", true),
                task("a", "10.0.1.6/24", "w3", "web", false),
                task("ing", "10.0.0.4/24", "w1", "web", true),
                task("b", "10.0.2.4/24", "d1", "db", true),
                task("a", "10.0.1.9/24", "c1", "client", true),
            ],
            services: vec![
                service("web", &[("ing", "10.0.0.2/24"), ("a", "10.0.1.2/24")]),
                service("db", &[("b", "10.0.2.2/24")]),
                service("client", &[("a", "10.0.1.3/24")]),
            ],
            nodes: vec![],
        }
    }

    fn rule(vip: [u8; 4], backends: &[[u8; 4]]) -> VipRule {
        VipRule {
            vip: vip.into(),
            backends: backends.iter().map(|b| Ipv4Addr::from(*b)).collect(),
        }
    }

    #[test]
    fn a_task_gets_the_vips_of_its_networks_with_their_serving_tasks() {
        let t = desired(&view(), "c1", &[]);
        assert_eq!(
            t.rules,
            vec![
                // Its own service's VIP too (a task may call its own service).
                rule([10, 0, 1, 2], &[[10, 0, 1, 4], [10, 0, 1, 5]]),
                rule([10, 0, 1, 3], &[[10, 0, 1, 9]]),
            ]
        );
    }

    #[test]
    fn ingress_and_networks_the_task_is_not_on_give_nothing() {
        // w1 is on a and ingress: web's ingress VIP is the mesh's, not its.
        let t = desired(&view(), "w1", &[]);
        assert!(t.rules.iter().all(|r| r.vip != Ipv4Addr::new(10, 0, 0, 2)));
        assert!(t.rules.iter().all(|r| r.vip != Ipv4Addr::new(10, 0, 2, 2)));
        // A task the view does not know yet: its attachments name its networks.
        let t = desired(&view(), "new", &["b".into()]);
        assert_eq!(t.rules, vec![rule([10, 0, 2, 2], &[[10, 0, 2, 4]])]);
        // A network the view does not list: nothing.
        assert_eq!(desired(&view(), "new", &["zz".into()]), VipTable::default());
    }

    #[test]
    fn a_vip_without_serving_tasks_is_kept_with_no_backend() {
        let mut v = view();
        for e in &mut v.endpoints {
            if let EndpointOwner::Task {
                service_id, serving, ..
            } = &mut e.owner
            {
                if service_id == "web" {
                    *serving = false;
                }
            }
        }
        let t = desired(&v, "c1", &[]);
        assert_eq!(t.rules[0], rule([10, 0, 1, 2], &[]));
        assert_ne!(t, desired(&view(), "c1", &[]));
    }

    #[test]
    fn the_table_does_not_depend_on_the_views_order() {
        let mut v = view();
        v.endpoints.reverse();
        v.services.reverse();
        assert_eq!(desired(&v, "c1", &[]), desired(&view(), "c1", &[]));
        // A change elsewhere (another network's task) changes nothing here.
        v.endpoints.push(task("b", "10.0.2.7/24", "d2", "db", true));
        assert_eq!(desired(&v, "c1", &[]), desired(&view(), "c1", &[]));
    }
}
