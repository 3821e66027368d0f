//! Placement: a pipeline of filters, then spread.
//!
//! Filters, in order: the node is ready and active; the task's resource
//! reservations fit in the node's capacity minus what its tasks reserve;
//! `Placement.Constraints`; `Placement.Platforms`; host-mode published ports
//! are free. Among the nodes that pass, the task goes to the node with the
//! fewest tasks of its service, then the fewest tasks in all; a node where
//! the service failed [`FAILURE_LIMIT`] times within [`FAILURE_WINDOW`] goes
//! last. When no node passes, the pipeline explains why as SwarmKit does:
//! `no suitable node (insufficient resources on 2 nodes; 1 node not available for new tasks)`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use shoal_shared::model::{
    Availability, Membership, Node, NodeState, PortProtocol, PublishMode, Resources, Task, TaskSpec, TaskState,
};

/// Failures of one service on one node that push the node to the end of the list.
pub const FAILURE_LIMIT: usize = 5;
/// The window in which those failures count.
pub const FAILURE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A placement constraint: `key==value` or `key!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub equal: bool,
    pub value: String,
}

impl Constraint {
    /// Parses `node.labels.zone == a`; `None` when malformed.
    pub fn parse(s: &str) -> Option<Constraint> {
        let (key, value, equal) = if let Some((k, v)) = s.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, v, false)
        } else {
            return None;
        };
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        Some(Constraint {
            key: key.to_string(),
            equal,
            value: value.trim().to_string(),
        })
    }

    /// Whether `node` satisfies the constraint. An unknown key or a missing
    /// label compares as the empty string (so `!=` holds, `==` does not).
    pub fn matches(&self, node: &Node) -> bool {
        let key = self.key.to_ascii_lowercase();
        let have: Option<String> = match key.as_str() {
            "node.id" => Some(node.meta.id.clone()),
            "node.hostname" => Some(node.description.hostname.clone()),
            "node.role" => Some(node.spec.role.as_str().to_string()),
            "node.platform.os" => Some(node.description.platform.os.clone()),
            "node.platform.arch" => Some(node.description.platform.architecture.clone()),
            _ => {
                if let Some(l) = self.key.strip_prefix("node.labels.") {
                    node.spec.labels.get(l).cloned()
                } else if let Some(l) = self.key.strip_prefix("engine.labels.") {
                    node.description.engine.labels.get(l).cloned()
                } else {
                    None
                }
            }
        };
        let eq = have.is_some_and(|h| h.eq_ignore_ascii_case(&self.value));
        eq == self.equal
    }
}

/// The filters of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    Ready,
    Resources,
    Constraints,
    Platform,
    HostPorts,
}

impl Filter {
    const ALL: [Filter; 5] = [
        Filter::Ready,
        Filter::Resources,
        Filter::Constraints,
        Filter::Platform,
        Filter::HostPorts,
    ];

    /// The metric label of the filter (`shoal_scheduler_pending_tasks{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            Filter::Ready => "unavailable",
            Filter::Resources => "resources",
            Filter::Constraints => "constraints",
            Filter::Platform => "platform",
            Filter::HostPorts => "host_ports",
        }
    }

    fn explain(self, n: usize) -> String {
        let nodes = if n == 1 {
            "1 node".to_string()
        } else {
            format!("{n} nodes")
        };
        match self {
            Filter::Ready => format!("{nodes} not available for new tasks"),
            Filter::Resources => format!("insufficient resources on {nodes}"),
            Filter::Constraints => format!("scheduling constraints not satisfied on {nodes}"),
            Filter::Platform => format!("unsupported platform on {nodes}"),
            Filter::HostPorts => format!("host-mode port already in use on {nodes}"),
        }
    }
}

/// Spread order of a node for a service: recently failing last, then fewest
/// tasks of the service, fewest tasks in all, node ID.
pub type SpreadKey = (bool, u64, u64, String);

/// What the scheduler knows about one node while placing.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Node,
    /// Tasks of each service placed here (desired running, not stopped).
    pub per_service: HashMap<String, u64>,
    pub total: u64,
    pub reserved: Resources,
    /// Host-mode ports in use: (protocol, port).
    pub host_ports: HashSet<(PortProtocol, u32)>,
    /// Recent failure timestamps per service.
    pub failures: HashMap<String, Vec<DateTime<Utc>>>,
}

/// Whether a task occupies its node (counts for spread and reservations).
pub fn occupies(t: &Task) -> bool {
    !t.node_id.is_empty() && t.desired_state.wants_run() && t.status.state <= TaskState::Running
}

/// The reservations of a task spec.
pub fn reservations(spec: &TaskSpec) -> Resources {
    spec.resources
        .as_ref()
        .and_then(|r| r.reservations.clone())
        .unwrap_or_default()
}

/// Host-mode published ports of a task spec (from the service endpoint, copied into the task labels
/// by nobody: shoal reads them from the task's own `Status.PortStatus` or, before it runs, from `ports`).
fn host_ports(ports: &[shoal_shared::model::PortConfig]) -> Vec<(PortProtocol, u32)> {
    ports
        .iter()
        .filter(|p| p.publish_mode == Some(PublishMode::Host) && p.published_port != 0)
        .map(|p| (p.protocol.unwrap_or_default(), p.published_port))
        .collect()
}

/// What a task needs from a node beyond its spec: its service's host-mode ports.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    pub reservations: Resources,
    pub host_ports: Vec<(PortProtocol, u32)>,
    pub constraints: Vec<Option<Constraint>>,
    pub platforms: Vec<shoal_shared::model::Platform>,
}

impl Needs {
    pub fn of(spec: &TaskSpec, ports: &[shoal_shared::model::PortConfig]) -> Needs {
        let placement = spec.placement.clone().unwrap_or_default();
        Needs {
            reservations: reservations(spec),
            host_ports: host_ports(ports),
            constraints: placement.constraints.iter().map(|c| Constraint::parse(c)).collect(),
            platforms: placement.platforms,
        }
    }
}

fn norm_arch(a: &str) -> String {
    match a.to_ascii_lowercase().as_str() {
        "x86_64" | "amd64" => "amd64".into(),
        "aarch64" | "arm64" => "arm64".into(),
        other => other.to_string(),
    }
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        NodeInfo {
            node,
            per_service: HashMap::new(),
            total: 0,
            reserved: Resources::default(),
            host_ports: HashSet::new(),
            failures: HashMap::new(),
        }
    }

    /// Whether the node takes new tasks: ready, active and accepted.
    pub fn available(&self) -> bool {
        self.node.status.state == NodeState::Ready
            && self.node.spec.availability == Availability::Active
            && self.node.membership() == Membership::Accepted
    }

    /// The first filter the node fails for `needs`, if any.
    pub fn check(&self, needs: &Needs) -> Option<Filter> {
        Filter::ALL.into_iter().find(|f| !self.passes(*f, needs))
    }

    fn passes(&self, f: Filter, needs: &Needs) -> bool {
        match f {
            Filter::Ready => self.available(),
            Filter::Resources => {
                let cap = &self.node.description.resources;
                let r = &needs.reservations;
                (r.nano_cpus == 0 || self.reserved.nano_cpus + r.nano_cpus <= cap.nano_cpus)
                    && (r.memory_bytes == 0 || self.reserved.memory_bytes + r.memory_bytes <= cap.memory_bytes)
            }
            Filter::Constraints => needs
                .constraints
                .iter()
                .all(|c| c.as_ref().is_some_and(|c| c.matches(&self.node))),
            Filter::Platform => {
                needs.platforms.is_empty()
                    || needs.platforms.iter().any(|p| {
                        let np = &self.node.description.platform;
                        (p.os.is_empty() || p.os.eq_ignore_ascii_case(&np.os))
                            && (p.architecture.is_empty() || norm_arch(&p.architecture) == norm_arch(&np.architecture))
                    })
            }
            Filter::HostPorts => needs.host_ports.iter().all(|p| !self.host_ports.contains(p)),
        }
    }

    /// Whether the node passes the filters that do not change as tasks are placed.
    pub fn passes_static(&self, needs: &Needs) -> bool {
        [Filter::Ready, Filter::Constraints, Filter::Platform]
            .into_iter()
            .all(|f| self.passes(f, needs))
    }

    /// Whether the node satisfies the constraints and platforms, whatever its state.
    pub fn passes_static_ignoring_ready(&self, needs: &Needs) -> bool {
        [Filter::Constraints, Filter::Platform]
            .into_iter()
            .all(|f| self.passes(f, needs))
    }

    /// Whether the node still has room (resources, ports) for `needs`.
    pub fn fits(&self, needs: &Needs) -> bool {
        self.passes(Filter::Resources, needs) && self.passes(Filter::HostPorts, needs)
    }

    /// Records a task on this node.
    pub fn add(&mut self, service: &str, needs: &Needs) {
        *self.per_service.entry(service.to_string()).or_default() += 1;
        self.total += 1;
        self.reserved.nano_cpus += needs.reservations.nano_cpus;
        self.reserved.memory_bytes += needs.reservations.memory_bytes;
        self.host_ports.extend(needs.host_ports.iter().copied());
    }

    /// Whether `service` failed here often enough recently to go last.
    pub fn failing(&self, service: &str, now: DateTime<Utc>) -> bool {
        self.failures
            .get(service)
            .is_some_and(|f| f.iter().filter(|t| now - **t <= FAILURE_WINDOW).count() >= FAILURE_LIMIT)
    }

    /// Spread key: lower is better.
    pub fn key(&self, service: &str, now: DateTime<Utc>) -> SpreadKey {
        (
            self.failing(service, now),
            self.per_service.get(service).copied().unwrap_or(0),
            self.total,
            self.node.meta.id.clone(),
        )
    }
}

/// Every reason label a pending task can have: `addresses` when the
/// allocator could not give it an address on one of its networks, the
/// filters' labels, and `no_nodes` when there is no node at all to check.
pub const PENDING_REASONS: [&str; 7] = [
    "addresses",
    "unavailable",
    "resources",
    "constraints",
    "platform",
    "host_ports",
    "no_nodes",
];

/// Explains why no node passed, as SwarmKit does: most common failure
/// first. Also returns the reason's label: the most common failure's, or
/// `no_nodes`.
pub fn explain<'a>(nodes: impl Iterator<Item = &'a NodeInfo>, needs: &Needs) -> (String, &'static str) {
    let mut counts: BTreeMap<Filter, usize> = BTreeMap::new();
    for n in nodes {
        if let Some(f) = n.check(needs) {
            *counts.entry(f).or_default() += 1;
        }
    }
    let mut entries: Vec<(Filter, usize)> = counts.into_iter().collect();
    // Stable: ties keep pipeline order.
    entries.sort_by_key(|e| std::cmp::Reverse(e.1));
    let parts: Vec<String> = entries.iter().map(|(f, n)| f.explain(*n)).collect();
    let label = entries.first().map_or("no_nodes", |(f, _)| f.label());
    if parts.is_empty() {
        ("no suitable node".to_string(), label)
    } else {
        (format!("no suitable node ({})", parts.join("; ")), label)
    }
}

/// Builds the node infos from the nodes and the tasks that occupy them.
pub fn node_infos<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    tasks: impl Iterator<Item = &'a Task>,
    ports_of: impl Fn(&str) -> Vec<shoal_shared::model::PortConfig>,
) -> BTreeMap<String, NodeInfo> {
    let mut infos: BTreeMap<String, NodeInfo> = nodes.map(|n| (n.meta.id.clone(), NodeInfo::new(n.clone()))).collect();
    for t in tasks {
        let Some(info) = infos.get_mut(&t.node_id) else {
            continue;
        };
        if occupies(t) {
            let needs = Needs {
                reservations: reservations(&t.spec),
                host_ports: host_ports(&ports_of(&t.service_id)),
                constraints: Vec::new(),
                platforms: Vec::new(),
            };
            info.add(&t.service_id, &needs);
        }
        if matches!(t.status.state, TaskState::Failed | TaskState::Rejected) {
            info.failures
                .entry(t.service_id.clone())
                .or_default()
                .push(t.status.timestamp);
        }
    }
    infos
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::{NodeRole, ResourceRequirements};

    fn node(id: &str) -> NodeInfo {
        let mut n = Node::new(id, format!("host-{id}"), NodeRole::Worker);
        n.status.state = NodeState::Ready;
        n.description.resources = Resources {
            generic_resources: Vec::new(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
        };
        n.spec.labels.insert("zone".into(), "a".into());
        NodeInfo::new(n)
    }

    #[test]
    fn constraints_parse_and_match_with_both_operators() {
        let n = node("n1");
        for (c, want) in [
            ("node.labels.zone==a", true),
            ("node.labels.zone == A", true),
            ("node.labels.zone!=a", false),
            ("node.labels.rack==x", false),
            ("node.labels.rack!=x", true),
            ("node.hostname==host-n1", true),
            ("node.id!=n1", false),
            ("node.role==worker", true),
            ("node.role==manager", false),
        ] {
            assert_eq!(Constraint::parse(c).unwrap().matches(&n.node), want, "{c}");
        }
        assert_eq!(Constraint::parse("node.labels.zone"), None);
    }

    #[test]
    fn spread_prefers_fewest_of_the_service_then_fewest_in_all_and_puts_failing_nodes_last() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let needs = Needs::default();
        let mut a = node("a");
        let mut b = node("b");
        let mut c = node("c");
        a.add("web", &needs);
        b.add("db", &needs);
        b.add("db", &needs);
        // c is empty but web failed there 5 times in the last 5 minutes.
        c.failures.insert(
            "web".into(),
            (0..5).map(|i| now - chrono::TimeDelta::seconds(10 * i)).collect(),
        );
        let mut keys = [a.key("web", now), b.key("web", now), c.key("web", now)];
        keys.sort();
        let order: Vec<&str> = keys.iter().map(|k| k.3.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        // Old failures no longer count.
        let later = now + FAILURE_WINDOW + chrono::TimeDelta::seconds(60);
        assert!(!c.failing("web", later));
        assert!(c.key("web", later) < b.key("web", later));
    }

    #[test]
    fn explanation_lists_the_most_common_failure_first() {
        let a = node("a");
        let mut b = node("b");
        b.reserved.nano_cpus = 2_000_000_000;
        let mut c = node("c");
        c.reserved.nano_cpus = 2_000_000_000;
        let mut d = node("d");
        d.node.spec.availability = Availability::Pause;
        let spec = TaskSpec {
            resources: Some(ResourceRequirements {
                limits: None,
                reservations: Some(Resources {
                    generic_resources: Vec::new(),
                    nano_cpus: 1_000_000_000,
                    memory_bytes: 0,
                }),
            }),
            ..TaskSpec::default()
        };
        let needs = Needs::of(&spec, &[]);
        assert_eq!(a.check(&needs), None);
        let (msg, reason) = explain([&b, &c, &d].into_iter(), &needs);
        assert_eq!(
            msg,
            "no suitable node (insufficient resources on 2 nodes; 1 node not available for new tasks)"
        );
        assert_eq!(reason, "resources", "the most common failure");
        assert_eq!(
            explain(std::iter::empty(), &needs),
            ("no suitable node".to_string(), "no_nodes")
        );
    }
}
