//! The answer index: what this host's `shoal-dns` answers, rebuilt from each
//! [`NetView`] (pure, no I/O).
//!
//! As Docker's embedded server (libnetwork's service records), per network:
//! - `<service>` -> the service's VIP on that network, or, when it has none
//!   there (endpoint mode dnsrr), every serving task's address;
//! - `tasks.<service>` -> every serving task's address;
//! - `<task name>` (the container's name, `<service>.<slot>.<task-id>`, or
//!   `<service>.<node-id>.<task-id>` for a global service) -> its address;
//! - the service's network aliases as `<service>` and `tasks.<service>`;
//! - a name is there only while the service has a serving task on the network
//!   (libnetwork adds a VIP record with the first task and removes it with
//!   the last one);
//! - `<name>.<network>` asks for `<name>` on that network only;
//! - reverse (PTR) for a task's address: `<task name>.<network>`.
//!
//! Names are scoped to the asker's networks: the networks of the task whose
//! address sent the query, ingress last; a source that is no task's sees the
//! network of the address it asked on, or every network of the view when it
//! asked on an address that is none of this host's (`--listen`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use shoal_shared::model::EndpointMode;
use shoal_shared::netview::{EndpointOwner, NetView};

/// TTL of a VIP answer: a service keeps its VIP for life (Docker's `respTTL`).
pub const VIP_TTL: u32 = 600;

/// TTL of answers made of task addresses (`tasks.`, dnsrr, task names, PTR):
/// they change as tasks come and go, and a stopped task must be gone from
/// every client within a second, so they are not to be cached.
pub const TASK_TTL: u32 = 0;

/// What a query asks for, as far as the index cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Mx,
    Ptr,
    Other,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A records (in index order; the server shuffles them, as Docker does).
    A { addrs: Vec<Ipv4Addr>, ttl: u32 },
    /// The name a task address has (without the trailing dot).
    Ptr { name: String, ttl: u32 },
    /// The name is the cluster's but has no record of this type (IPv6, MX):
    /// an empty NOERROR answer, never asked upstream.
    NoData,
    /// Not a cluster name in the asker's scope: the upstream resolvers answer.
    Forward,
}

#[derive(Debug, Default)]
struct Record {
    addrs: Vec<Ipv4Addr>,
    ttl: u32,
}

impl Record {
    fn add(&mut self, ip: Ipv4Addr, ttl: u32) {
        if self.addrs.is_empty() || ttl < self.ttl {
            self.ttl = ttl;
        }
        if !self.addrs.contains(&ip) {
            self.addrs.push(ip);
        }
    }
}

#[derive(Debug)]
struct Net {
    /// Lowercase, as names are compared.
    name: String,
    ingress: bool,
    names: HashMap<String, Record>,
    ptr: HashMap<Ipv4Addr, String>,
}

impl Net {
    fn add(&mut self, name: &str, ip: Ipv4Addr, ttl: u32) {
        self.names.entry(name.to_ascii_lowercase()).or_default().add(ip, ttl);
    }
}

/// The answers of one view.
#[derive(Debug, Default)]
pub struct Index {
    /// The view's version (0: no view yet).
    pub version: u64,
    nets: Vec<Net>,
    /// A task's address -> the networks of that task (ingress last).
    askers: HashMap<Ipv4Addr, Vec<usize>>,
    /// This host's own address on a network -> that network.
    locals: HashMap<Ipv4Addr, usize>,
    /// Every network, ingress last.
    all: Vec<usize>,
}

impl Index {
    pub fn build(view: &NetView) -> Index {
        let mut nets: Vec<Net> = view
            .networks
            .iter()
            .map(|n| Net {
                name: n.name.to_ascii_lowercase(),
                ingress: n.ingress,
                names: HashMap::new(),
                ptr: HashMap::new(),
            })
            .collect();
        let net_of: HashMap<&str, usize> = view
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        // (service ID, network) -> its VIP there, for services in vip mode.
        let mut vips: HashMap<(&str, usize), Ipv4Addr> = HashMap::new();
        for s in &view.services {
            if s.endpoint_mode == EndpointMode::Dnsrr {
                continue;
            }
            for (net, addr) in &s.vips {
                let ip = addr.split('/').next().and_then(|a| a.parse().ok());
                if let (Some(&ni), Some(ip)) = (net_of.get(net.as_str()), ip) {
                    vips.insert((s.id.as_str(), ni), ip);
                }
            }
        }
        let mut task_nets: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut task_ips: Vec<(Ipv4Addr, &str)> = Vec::new();
        let mut locals = HashMap::new();
        for e in &view.endpoints {
            let (Some(&ni), Some(ip)) = (net_of.get(e.network_id.as_str()), e.ip()) else {
                continue;
            };
            let EndpointOwner::Task {
                task_id,
                service_id,
                service_name,
                task_name,
                aliases,
                serving,
                ..
            } = &e.owner
            else {
                if e.node_id == view.node_id {
                    locals.insert(ip, ni);
                }
                continue;
            };
            let on = task_nets.entry(task_id.as_str()).or_default();
            if !on.contains(&ni) {
                on.push(ni);
            }
            task_ips.push((ip, task_id.as_str()));
            if !serving {
                continue;
            }
            let net = &mut nets[ni];
            net.add(&format!("tasks.{service_name}"), ip, TASK_TTL);
            for a in aliases {
                net.add(&format!("tasks.{a}"), ip, TASK_TTL);
            }
            net.add(task_name, ip, TASK_TTL);
            let (addr, ttl) = match vips.get(&(service_id.as_str(), ni)) {
                Some(&vip) => (vip, VIP_TTL),
                None => (ip, TASK_TTL),
            };
            net.add(service_name, addr, ttl);
            for a in aliases {
                net.add(a, addr, ttl);
            }
            let ptr = format!("{}.{}", task_name.to_ascii_lowercase(), net.name);
            net.ptr.insert(ip, ptr);
        }
        let ingress_last = |v: &mut Vec<usize>| v.sort_by_key(|&i| nets[i].ingress);
        for v in task_nets.values_mut() {
            ingress_last(v);
        }
        let mut all: Vec<usize> = (0..nets.len()).collect();
        ingress_last(&mut all);
        let askers = task_ips
            .into_iter()
            .filter_map(|(ip, t)| Some((ip, task_nets.get(t)?.clone())))
            .collect();
        Index {
            version: view.version,
            nets,
            askers,
            locals,
            all,
        }
    }

    /// This host's own addresses (where it serves on port 53).
    pub fn own_addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.locals.keys().copied()
    }

    /// The networks a query from `src`, asked on `local`, may see.
    pub fn scope(&self, src: IpAddr, local: IpAddr) -> &[usize] {
        if let Some(nets) = v4(src).and_then(|s| self.askers.get(&s)) {
            return nets;
        }
        match v4(local).and_then(|l| self.locals.get(&l)) {
            Some(ni) => std::slice::from_ref(ni),
            None => &self.all,
        }
    }

    /// The answer to `name` (lowercase, without the trailing dot) in `scope`.
    pub fn resolve(&self, scope: &[usize], name: &str, kind: Kind) -> Answer {
        if kind == Kind::Ptr {
            return match reverse_v4(name).and_then(|ip| scope.iter().find_map(|&ni| self.nets[ni].ptr.get(&ip))) {
                Some(n) => Answer::Ptr {
                    name: n.clone(),
                    ttl: TASK_TTL,
                },
                None => Answer::Forward,
            };
        }
        let Some(rec) = self.lookup(scope, name) else {
            return Answer::Forward;
        };
        match kind {
            Kind::A => Answer::A {
                addrs: rec.addrs.clone(),
                ttl: rec.ttl,
            },
            Kind::Aaaa | Kind::Mx => Answer::NoData,
            Kind::Ptr | Kind::Other => Answer::Forward,
        }
    }

    fn lookup(&self, scope: &[usize], name: &str) -> Option<&Record> {
        if let Some(r) = scope.iter().find_map(|&ni| self.nets[ni].names.get(name)) {
            return Some(r);
        }
        let (name, net) = name.rsplit_once('.')?;
        scope
            .iter()
            .filter(|&&ni| self.nets[ni].name == net)
            .find_map(|&ni| self.nets[ni].names.get(name))
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// `4.3.2.1.in-addr.arpa` -> 1.2.3.4.
fn reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o = [0u8; 4];
    let mut parts = rest.split('.');
    for i in (0..4).rev() {
        o[i] = parts.next()?.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(o))
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
