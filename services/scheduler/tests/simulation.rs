//! Deterministic simulation of the scheduler's reconcile passes and the
//! dispatcher's logic on 1,000 nodes: an in-memory store with the real
//! store's version rules, simulated agents, and a fake clock. No sleeps, no
//! I/O, no threads: every run is the same.
//!
//! Every commit is checked against the invariants (see [`Sim::check`]): at
//! most one live and one running task per slot (per node for global
//! services), reservations never exceed capacity, task states and desired
//! states never go backwards, a task never changes node, and no slot keeps
//! more than `TaskHistoryRetentionLimit` stopped tasks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shoal_dispatcher::logic::{assigned, Dispatcher, HEARTBEAT_FAILURE};
use shoal_scheduler::reconcile::{group_of, reconcile, Group};
use shoal_scheduler::snapshot::Snapshot;
use shoal_shared::dispatch::StatusUpdate;
use shoal_shared::model::*;
use shoal_shared::store::{Kind, Op, Record, StoreObject};

const NODES: usize = 1000;

/// What a simulated task's command does once started.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Run,
    Fail,
}

struct Sim {
    now: DateTime<Utc>,
    index: u64,
    records: BTreeMap<(Kind, String), Record>,
    snap: Snapshot,
    disp: Dispatcher,
    sessions: BTreeMap<String, String>,
    alive: BTreeMap<String, bool>,
    next_id: u64,
    /// Last seen (state, desired, node) per task, for the never-backwards checks.
    seen: HashMap<String, (TaskState, TaskState, String)>,
    limit: usize,
    /// Most tasks of one update in flight at once, per service.
    max_in_flight: BTreeMap<String, usize>,
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn node_id(i: usize) -> String {
    format!("node{i:04}")
}

fn behaviour(t: &Task) -> Behaviour {
    match t.spec.container_spec.as_ref().map(|c| c.image.as_str()) {
        Some("bad") => Behaviour::Fail,
        _ => Behaviour::Run,
    }
}

/// A spec with Docker's defaults filled in, as the API writes it.
fn spec(name: &str, replicas: Option<u64>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        task_template: TaskSpec {
            container_spec: Some(ContainerSpec {
                image: "busybox".into(),
                command: vec!["sleep".into(), "3600".into()],
                ..ContainerSpec::default()
            }),
            restart_policy: Some(RestartPolicy {
                condition: Some(RestartCondition::Any),
                delay: Some(Duration::from_secs(5)),
                max_attempts: Some(0),
                window: None,
            }),
            resources: Some(ResourceRequirements::default()),
            placement: Some(Placement::default()),
            ..TaskSpec::default()
        },
        mode: match replicas {
            Some(n) => ServiceMode::replicated(n),
            None => ServiceMode::global(),
        },
        update_config: Some(UpdateConfig {
            parallelism: 1,
            delay: Some(Duration::ZERO),
            failure_action: Some(FailureAction::Pause),
            monitor: Some(Duration::from_secs(5)),
            max_failure_ratio: Some(0.0),
            order: Some(UpdateOrder::StopFirst),
        }),
        rollback_config: Some(UpdateConfig {
            parallelism: 1,
            delay: Some(Duration::ZERO),
            failure_action: Some(FailureAction::Pause),
            monitor: Some(Duration::from_secs(5)),
            max_failure_ratio: Some(0.0),
            order: Some(UpdateOrder::StopFirst),
        }),
        ..ServiceSpec::default()
    }
}

impl Sim {
    /// `n` nodes, node objects created (as the API would for managers) with
    /// `setup` applied, then every agent registers.
    fn new(n: usize, setup: impl Fn(usize, &mut Node)) -> Sim {
        let mut sim = Sim {
            now: t0(),
            index: 0,
            records: BTreeMap::new(),
            snap: Snapshot::default(),
            disp: Dispatcher::new(t0(), "sim"),
            sessions: BTreeMap::new(),
            alive: BTreeMap::new(),
            next_id: 0,
            seen: HashMap::new(),
            limit: 5,
            max_in_flight: BTreeMap::new(),
        };
        sim.disp.period = Duration::from_secs(5);
        let mut ops = Vec::new();
        for i in 0..n {
            let mut node = Node::new(node_id(i), format!("host{i:04}"), NodeRole::Worker);
            node.description.resources = Resources {
                generic_resources: Vec::new(),
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 << 30,
            };
            node.description.platform = Platform {
                architecture: "x86_64".into(),
                os: "linux".into(),
            };
            setup(i, &mut node);
            ops.push(Op::Create {
                record: node.to_record().unwrap(),
            });
        }
        sim.commit(ops).unwrap();
        for i in 0..n {
            sim.register(&node_id(i));
        }
        sim.flush();
        sim
    }

    fn register(&mut self, id: &str) {
        let desc = self
            .snap
            .nodes
            .get(id)
            .map(|n| n.description.clone())
            .unwrap_or_else(|| NodeDescription {
                hostname: format!("host-{id}"),
                resources: Resources {
                    generic_resources: Vec::new(),
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 8 << 30,
                },
                ..NodeDescription::default()
            });
        let s = self.disp.register(id, desc, "127.0.0.1".into(), self.now);
        self.sessions.insert(id.to_string(), s);
        self.alive.insert(id.to_string(), true);
    }

    /// Commits a transaction with the store's rules: all or nothing, updates
    /// and versioned deletes must name the stored version, creates must be new.
    fn commit(&mut self, ops: Vec<Op>) -> Result<(), String> {
        if ops.is_empty() {
            return Ok(());
        }
        for op in &ops {
            match op {
                Op::Create { record } if self.records.contains_key(&(record.kind, record.id.clone())) => {
                    return Err(format!("create: {} exists", record.id));
                }
                Op::Update { record } => match self.records.get(&(record.kind, record.id.clone())) {
                    Some(cur) if cur.version == record.version => {}
                    other => return Err(format!("update {}: stale ({:?})", record.id, other.map(|r| r.version))),
                },
                Op::Delete { kind, id, version } => match self.records.get(&(*kind, id.clone())) {
                    Some(cur) if version.is_none_or(|v| v == cur.version) => {}
                    _ => return Err(format!("delete {id}: stale")),
                },
                _ => {}
            }
        }
        self.index += 1;
        for op in ops {
            match op {
                Op::Create { mut record } => {
                    record.version = self.index;
                    record.created_at = self.now;
                    record.updated_at = self.now;
                    record.sync_body();
                    self.snap.upsert(&record);
                    self.records.insert((record.kind, record.id.clone()), record);
                }
                Op::Update { mut record } => {
                    let created = self.records[&(record.kind, record.id.clone())].created_at;
                    record.version = self.index;
                    record.created_at = created;
                    record.updated_at = self.now;
                    record.sync_body();
                    self.snap.upsert(&record);
                    self.records.insert((record.kind, record.id.clone()), record);
                }
                Op::Delete { kind, id, .. } => {
                    self.records.remove(&(kind, id.clone()));
                    self.snap.remove(kind, &id, self.index);
                }
                // The scheduler writes no guards.
                Op::Exists { .. } | Op::NoneMatch { .. } => {}
            }
        }
        self.check();
        Ok(())
    }

    /// One scheduler pass, committed; whether it asked to run again later.
    fn schedule(&mut self) -> bool {
        let mut n = self.next_id;
        let plan = reconcile(&self.snap, self.now, &mut || {
            n += 1;
            format!("task{n:07}")
        });
        self.next_id = n;
        let wake = plan.wake_at.is_some();
        self.commit(plan.ops)
            .expect("a scheduler pass commits against its own snapshot");
        self.check_history();
        wake
    }

    /// Every live agent heartbeats and reports one step of each of its tasks.
    fn agents(&mut self) {
        let alive: Vec<String> = self.alive.iter().filter(|(_, a)| **a).map(|(n, _)| n.clone()).collect();
        let mut by_node: HashMap<&str, Vec<&Task>> = HashMap::new();
        for t in self.snap.tasks.values() {
            if assigned(t) {
                by_node.entry(t.node_id.as_str()).or_default().push(t);
            }
        }
        let mut reports: Vec<(String, Vec<StatusUpdate>)> = Vec::new();
        for n in &alive {
            let mut updates = Vec::new();
            for t in by_node.get(n.as_str()).into_iter().flatten() {
                let (state, err) = if t.desired_state > TaskState::Running {
                    (TaskState::Shutdown, String::new())
                } else if t.status.state < TaskState::Running {
                    (TaskState::Running, String::new())
                } else if behaviour(t) == Behaviour::Fail {
                    (TaskState::Failed, "task: non-zero exit (1)".to_string())
                } else {
                    continue;
                };
                updates.push(StatusUpdate {
                    task_id: t.meta.id.clone(),
                    status: TaskStatus {
                        timestamp: self.now,
                        state,
                        message: state.as_str().into(),
                        err,
                        ..TaskStatus::default()
                    },
                    trace: None,
                });
            }
            reports.push((n.clone(), updates));
        }
        for (n, updates) in reports {
            let s = self.sessions[&n].clone();
            assert!(self.disp.heartbeat(&n, &s, self.now), "session of {n} lost");
            if !updates.is_empty() {
                assert!(self.disp.status(&n, &s, updates, self.now));
            }
        }
        self.flush();
    }

    /// The dispatcher's expiry check and batched write.
    fn flush(&mut self) {
        let down = self.disp.expired(self.snap.nodes.values(), self.now);
        let (ops, _) = self
            .disp
            .build_ops(&self.snap.nodes.clone(), &self.snap.tasks.clone(), &down, self.now);
        self.commit(ops).expect("dispatcher batch commits");
    }

    /// Runs scheduler, agents and dispatcher with the clock advancing 1 s a
    /// round until a round changes nothing and no timer is pending (or `max` rounds).
    fn converge(&mut self, max: usize) {
        for _ in 0..max {
            let before = self.index;
            let wake = self.schedule();
            self.agents();
            self.track_in_flight();
            self.now += TimeDelta::seconds(1);
            if self.index == before && !wake {
                return;
            }
        }
    }

    fn create_service(&mut self, spec: ServiceSpec) -> String {
        let id = format!("svc-{}", spec.name);
        let svc = Service::new(id.clone(), spec);
        self.commit(vec![Op::Create {
            record: svc.to_record().unwrap(),
        }])
        .unwrap();
        id
    }

    /// Changes a service's spec as the API does: keep the previous spec, clear UpdateStatus.
    fn update_service(&mut self, id: &str, f: impl FnOnce(&mut ServiceSpec)) {
        let mut svc = self.snap.services[id].clone();
        svc.previous_spec = Some(svc.spec.clone());
        f(&mut svc.spec);
        svc.update_status = None;
        self.commit(vec![Op::Update {
            record: svc.to_record().unwrap(),
        }])
        .unwrap();
    }

    fn update_node(&mut self, id: &str, f: impl FnOnce(&mut Node)) {
        let mut n = self.snap.nodes[id].clone();
        f(&mut n);
        self.commit(vec![Op::Update {
            record: n.to_record().unwrap(),
        }])
        .unwrap();
    }

    fn tasks_of(&self, sid: &str) -> Vec<&Task> {
        self.snap.tasks.values().filter(|t| t.service_id == sid).collect()
    }

    /// Running tasks of a service that are wanted running, per node.
    fn running_per_node(&self, sid: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in self.tasks_of(sid) {
            if t.status.state == TaskState::Running && t.desired_state == TaskState::Running {
                *m.entry(t.node_id.clone()).or_default() += 1;
            }
        }
        m
    }

    fn running(&self, sid: &str) -> usize {
        self.running_per_node(sid).values().sum()
    }

    /// Invariants checked after every commit.
    fn check(&mut self) {
        // States and desired states never go backwards; a task never changes node.
        for t in self.snap.tasks.values() {
            if let Some((state, desired, node)) = self.seen.get(&t.meta.id) {
                assert!(
                    t.status.state >= *state,
                    "task {} went from {state} to {}",
                    t.meta.id,
                    t.status.state
                );
                assert!(t.desired_state >= *desired, "task {} desired went back", t.meta.id);
                assert!(
                    node.is_empty() || *node == t.node_id,
                    "task {} moved from {node} to {}",
                    t.meta.id,
                    t.node_id
                );
            }
            self.seen
                .insert(t.meta.id.clone(), (t.status.state, t.desired_state, t.node_id.clone()));
        }
        // At most one live task and one running task per slot / per global node.
        let mut live: HashMap<(String, Group), usize> = HashMap::new();
        let mut run: HashMap<(String, Group), usize> = HashMap::new();
        for t in self.snap.tasks.values() {
            let k = (t.service_id.clone(), group_of(t));
            if t.desired_state <= TaskState::Running {
                *live.entry(k.clone()).or_default() += 1;
                if t.status.state == TaskState::Running {
                    *run.entry(k).or_default() += 1;
                }
            }
        }
        for (k, n) in live.iter().chain(run.iter()) {
            // Start-first updates run the new task beside the old one until it runs.
            let start_first =
                self.snap.services.get(&k.0).is_some_and(|s| {
                    s.spec.update_config.as_ref().and_then(|u| u.order) == Some(UpdateOrder::StartFirst)
                });
            let most = if start_first { 2 } else { 1 };
            assert!(*n <= most, "{n} live/running tasks in {k:?}");
        }
        // Reservations never exceed capacity.
        let mut used: HashMap<&str, (i64, i64)> = HashMap::new();
        for t in self.snap.tasks.values() {
            if shoal_scheduler::placement::occupies(t) {
                let r = shoal_scheduler::placement::reservations(&t.spec);
                let u = used.entry(t.node_id.as_str()).or_default();
                u.0 += r.nano_cpus;
                u.1 += r.memory_bytes;
            }
        }
        for (node, (cpu, mem)) in used {
            if let Some(n) = self.snap.nodes.get(node) {
                let cap = &n.description.resources;
                assert!(
                    cpu == 0 || cpu <= cap.nano_cpus,
                    "{node}: {cpu} CPU reserved of {}",
                    cap.nano_cpus
                );
                assert!(mem == 0 || mem <= cap.memory_bytes, "{node}: {mem} memory reserved");
            }
        }
    }

    /// No slot keeps more than the retention limit of stopped tasks.
    fn check_history(&self) {
        let mut dead: HashMap<(String, Group), usize> = HashMap::new();
        for t in self.snap.tasks.values() {
            if t.desired_state > TaskState::Running && t.status.state.is_terminal() {
                *dead.entry((t.service_id.clone(), group_of(t))).or_default() += 1;
            }
        }
        for (k, n) in dead {
            assert!(
                n <= self.limit,
                "{n} stopped tasks kept in {k:?} (limit {})",
                self.limit
            );
        }
    }

    /// Records how many slots of each service are mid-update (a current-spec
    /// task not yet running, or a slot with no live task).
    fn track_in_flight(&mut self) {
        for s in self.snap.services.values() {
            let mut slots: BTreeMap<Group, (bool, bool)> = BTreeMap::new();
            for t in self.snap.tasks.values().filter(|t| t.service_id == s.meta.id) {
                let e = slots.entry(group_of(t)).or_default();
                if t.desired_state <= TaskState::Running {
                    e.0 = true;
                    if t.spec == s.spec.task_template && t.status.state < TaskState::Running {
                        e.1 = true;
                    }
                }
            }
            let n = slots.values().filter(|(live, pending)| !live || *pending).count();
            let m = self.max_in_flight.entry(s.meta.id.clone()).or_default();
            *m = (*m).max(n);
        }
    }
}

#[test]
fn replicas_spread_evenly_over_a_thousand_nodes() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let a = sim.create_service(spec("a", Some(3000)));
    sim.converge(20);
    let per = sim.running_per_node(&a);
    assert_eq!(sim.running(&a), 3000);
    assert_eq!(per.len(), NODES);
    assert!(
        per.values().all(|n| *n == 3),
        "not 3 per node: {:?}",
        per.values().max()
    );
    // A second service fills the least loaded nodes in all: 1 each on 500 nodes.
    let b = sim.create_service(spec("b", Some(500)));
    sim.converge(20);
    let per_b = sim.running_per_node(&b);
    assert_eq!(per_b.len(), 500);
    assert!(per_b.values().all(|n| *n == 1));
    // Scale down removes from the most loaded nodes: totals stay within one.
    sim.update_service(&a, |s| s.mode = ServiceMode::replicated(1500));
    sim.converge(20);
    assert_eq!(sim.running(&a), 1500);
    let per = sim.running_per_node(&a);
    let (min, max) = (
        (0..NODES)
            .map(|i| per.get(&node_id(i)).copied().unwrap_or(0))
            .min()
            .unwrap(),
        per.values().max().copied().unwrap(),
    );
    assert!(max - min <= 1, "unbalanced after scale down: {min}..{max}");
    let slots: std::collections::BTreeSet<u64> = sim
        .tasks_of(&a)
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .filter_map(|t| t.slot)
        .collect();
    assert_eq!(slots.len(), 1500);
}

#[test]
fn constraints_filter_nodes_and_unsatisfiable_ones_stay_pending() {
    let mut sim = Sim::new(NODES, |i, n| {
        n.spec
            .labels
            .insert("zone".into(), if i < 100 { "a" } else { "b" }.into());
        n.description
            .engine
            .labels
            .insert("disk".into(), if i.is_multiple_of(2) { "ssd" } else { "hdd" }.into());
        if i == 7 {
            n.spec.role = NodeRole::Manager;
        }
    });
    let mut s = spec("zoned", Some(250));
    s.task_template.placement = Some(Placement {
        constraints: vec!["node.labels.zone==a".into(), "engine.labels.disk != hdd".into()],
        ..Placement::default()
    });
    let z = sim.create_service(s);
    let mut m = spec("mgr", Some(2));
    m.task_template.placement = Some(Placement {
        constraints: vec!["node.role==manager".into()],
        ..Placement::default()
    });
    let mgr = sim.create_service(m);
    let mut never = spec("never", Some(1));
    never.task_template.placement = Some(Placement {
        constraints: vec!["node.labels.zone==c".into()],
        ..Placement::default()
    });
    let nv = sim.create_service(never);
    sim.converge(20);
    let per = sim.running_per_node(&z);
    assert_eq!(per.values().sum::<usize>(), 250);
    for (node, n) in &per {
        let i: usize = node[4..].parse().unwrap();
        assert!(
            i < 100 && i.is_multiple_of(2),
            "task on {node} violates the constraints"
        );
        assert!(*n == 5, "{node} has {n} tasks (50 eligible nodes, 250 tasks)");
    }
    assert_eq!(
        sim.running_per_node(&mgr).into_iter().collect::<Vec<_>>(),
        vec![(node_id(7), 2)]
    );
    let t = sim.tasks_of(&nv)[0].clone();
    assert_eq!(t.status.state, TaskState::Pending);
    assert_eq!(
        t.status.err,
        "no suitable node (scheduling constraints not satisfied on 1000 nodes)"
    );
    // As soon as a node qualifies, the pending task is placed there.
    sim.update_node(&node_id(999), |n| {
        n.spec.labels.insert("zone".into(), "c".into());
    });
    sim.converge(10);
    assert_eq!(
        sim.running_per_node(&nv).into_iter().collect::<Vec<_>>(),
        vec![(node_id(999), 1)]
    );
}

#[test]
fn reservations_never_exceed_capacity_and_pending_tasks_wait_for_room() {
    let mut sim = Sim::new(NODES, |i, n| {
        n.description.resources.nano_cpus = 2_000_000_000;
        if i == 0 {
            n.spec.availability = Availability::Pause;
        }
    });
    let mut s = spec("cpu", Some(2500));
    s.task_template.resources = Some(ResourceRequirements {
        limits: None,
        reservations: Some(Resources {
            generic_resources: Vec::new(),
            nano_cpus: 1_000_000_000,
            memory_bytes: 0,
        }),
    });
    let id = sim.create_service(s);
    sim.converge(20);
    assert_eq!(sim.running(&id), 1998, "two per available node");
    let pending: Vec<&Task> = sim
        .tasks_of(&id)
        .into_iter()
        .filter(|t| t.status.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 502);
    assert_eq!(
        pending[0].status.err,
        "no suitable node (insufficient resources on 999 nodes; 1 node not available for new tasks)"
    );
    // Room appears: the pending tasks are placed.
    // 502 pending tasks need 251 more nodes with room; node 0 is paused.
    for i in 1..=251 {
        sim.update_node(&node_id(i), |n| n.description.resources.nano_cpus = 4_000_000_000);
    }
    sim.converge(20);
    assert_eq!(sim.running(&id), 2500);
}

#[test]
fn drain_moves_tasks_away_and_pause_keeps_them() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let id = sim.create_service(spec("web", Some(2000)));
    sim.converge(20);
    for i in 0..100 {
        sim.update_node(&node_id(i), |n| n.spec.availability = Availability::Drain);
    }
    for i in 100..200 {
        sim.update_node(&node_id(i), |n| n.spec.availability = Availability::Pause);
    }
    sim.converge(20);
    let per = sim.running_per_node(&id);
    assert_eq!(per.values().sum::<usize>(), 2000);
    for i in 0..100 {
        assert!(!per.contains_key(&node_id(i)), "drained node {i} still runs tasks");
        assert!(sim
            .tasks_of(&id)
            .iter()
            .filter(|t| t.node_id == node_id(i))
            .all(|t| t.status.state == TaskState::Shutdown));
    }
    for i in 100..200 {
        assert_eq!(per.get(&node_id(i)), Some(&2), "paused node {i} kept its tasks");
    }
    // A new service gets nothing on paused or drained nodes.
    let other = sim.create_service(spec("other", Some(800)));
    sim.converge(20);
    let per = sim.running_per_node(&other);
    assert_eq!(per.values().sum::<usize>(), 800);
    assert!(per.keys().all(|n| n[4..].parse::<usize>().unwrap() >= 200));
}

#[test]
fn lost_nodes_go_down_and_their_tasks_run_elsewhere_then_stop_on_return() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let id = sim.create_service(spec("web", Some(3000)));
    sim.converge(20);
    for i in 0..50 {
        sim.alive.insert(node_id(i), false);
    }
    // Two missed periods: still ready.
    for _ in 0..10 {
        sim.agents();
        sim.now += TimeDelta::seconds(1);
    }
    assert!(sim.snap.nodes[&node_id(0)].status.state == NodeState::Ready);
    for _ in 0..6 {
        sim.agents();
        sim.now += TimeDelta::seconds(1);
    }
    for i in 0..NODES {
        let n = &sim.snap.nodes[&node_id(i)];
        if i < 50 {
            assert_eq!(n.status.state, NodeState::Down);
            assert_eq!(n.status.message, HEARTBEAT_FAILURE);
        } else {
            assert_eq!(n.status.state, NodeState::Ready, "false down: {i}");
        }
    }
    sim.converge(20);
    let per = sim.running_per_node(&id);
    assert_eq!(per.values().sum::<usize>(), 3000);
    assert!((0..50).all(|i| !per.contains_key(&node_id(i))));
    // The agents return: ready again, and their old tasks are shut down, not duplicated.
    for i in 0..50 {
        sim.register(&node_id(i));
    }
    sim.flush();
    sim.converge(20);
    for i in 0..50 {
        assert_eq!(sim.snap.nodes[&node_id(i)].status.state, NodeState::Ready);
        for t in sim.tasks_of(&id).iter().filter(|t| t.node_id == node_id(i)) {
            assert!(
                t.desired_state == TaskState::Running || t.status.state == TaskState::Shutdown,
                "old task {} on returned node is {}",
                t.meta.id,
                t.status.state
            );
        }
    }
    assert_eq!(sim.running(&id), 3000);
}

#[test]
fn global_service_follows_nodes() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let id = sim.create_service(spec("agent", None));
    sim.converge(20);
    let per = sim.running_per_node(&id);
    assert_eq!(per.len(), NODES);
    assert!(per.values().all(|n| *n == 1));
    // A node joins (created by the dispatcher on registration).
    sim.register("newnode");
    sim.flush();
    sim.converge(20);
    assert_eq!(sim.running_per_node(&id).get("newnode"), Some(&1));
    // Drain stops its task; back to active starts a new one.
    sim.update_node(&node_id(3), |n| n.spec.availability = Availability::Drain);
    sim.converge(20);
    assert_eq!(sim.running(&id), NODES);
    assert!(!sim.running_per_node(&id).contains_key(&node_id(3)));
    sim.update_node(&node_id(3), |n| n.spec.availability = Availability::Active);
    sim.converge(20);
    assert_eq!(sim.running_per_node(&id).get(&node_id(3)), Some(&1));
    // A removed node's task is deleted once it has stopped or the node is gone.
    let rec = sim.snap.nodes[&node_id(5)].meta.clone();
    sim.commit(vec![Op::Delete {
        kind: Kind::Node,
        id: rec.id.clone(),
        version: Some(rec.version.index),
    }])
    .unwrap();
    sim.alive.insert(node_id(5), false);
    sim.converge(20);
    assert!(sim.tasks_of(&id).iter().all(|t| t.node_id != node_id(5)));
    assert_eq!(sim.running(&id), NODES);
}

#[test]
fn failing_tasks_restart_in_their_slot_and_history_is_pruned() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let mut s = spec("crash", Some(10));
    s.task_template.container_spec.as_mut().unwrap().image = "bad".into();
    let id = sim.create_service(s);
    let mut once = spec("once", Some(3));
    once.task_template.container_spec.as_mut().unwrap().image = "bad".into();
    once.task_template.restart_policy.as_mut().unwrap().max_attempts = Some(2);
    let once = sim.create_service(once);
    let mut none = spec("none", Some(2));
    none.task_template.container_spec.as_mut().unwrap().image = "bad".into();
    none.task_template.restart_policy.as_mut().unwrap().condition = Some(RestartCondition::None);
    let none = sim.create_service(none);
    for _ in 0..120 {
        sim.schedule();
        sim.agents();
        sim.now += TimeDelta::seconds(1);
    }
    let tasks = sim.tasks_of(&id);
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for t in &tasks {
        *per_slot.entry(t.slot.unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_slot.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(per_slot.values().all(|n| *n <= 5), "history not pruned: {per_slot:?}");
    assert!(tasks.iter().any(|t| t.status.err == "task: non-zero exit (1)"));
    // Max attempts 2: the first run and two restarts per slot, then no more.
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for t in sim.tasks_of(&once) {
        *per_slot.entry(t.slot.unwrap()).or_default() += 1;
        assert_eq!(t.status.state, TaskState::Failed);
    }
    assert_eq!(per_slot.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);
    // Condition none: never restarted.
    assert_eq!(sim.tasks_of(&none).len(), 2);
}

#[test]
fn rolling_update_respects_parallelism_and_delay_and_completes() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let id = sim.create_service(spec("web", Some(30)));
    sim.converge(20);
    sim.max_in_flight.clear();
    sim.update_service(&id, |s| {
        s.task_template.container_spec.as_mut().unwrap().image = "busybox:2".into();
        let u = s.update_config.as_mut().unwrap();
        u.parallelism = 3;
        u.delay = Some(Duration::from_secs(10));
        u.monitor = Some(Duration::from_secs(2));
    });
    sim.converge(400);
    let svc = sim.snap.services[&id].clone();
    let us = svc.update_status.clone().unwrap();
    assert_eq!(us.state, Some(UpdateState::Completed), "{us:?}");
    assert!(
        us.completed_at.unwrap() - us.started_at.unwrap() >= TimeDelta::seconds(90),
        "10 batches, 10 s apart"
    );
    assert_eq!(sim.running(&id), 30);
    assert!(sim
        .tasks_of(&id)
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .all(|t| t.spec == svc.spec.task_template));
    let most = sim.max_in_flight[&id];
    assert!(
        most <= 3 && most > 0,
        "{most} slots updating at once with parallelism 3"
    );
}

#[test]
fn failed_update_pauses_or_rolls_back() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let paused = sim.create_service(spec("p", Some(20)));
    let mut r = spec("r", Some(20));
    r.update_config.as_mut().unwrap().failure_action = Some(FailureAction::Rollback);
    r.update_config.as_mut().unwrap().parallelism = 2;
    let rolled = sim.create_service(r);
    sim.converge(20);
    let good = sim.snap.services[&rolled].spec.task_template.clone();
    for id in [&paused, &rolled] {
        sim.update_service(id, |s| {
            s.task_template.container_spec.as_mut().unwrap().image = "bad".into();
            s.task_template.restart_policy.as_mut().unwrap().delay = Some(Duration::from_secs(1));
        });
    }
    sim.converge(200);
    let p = sim.snap.services[&paused].clone();
    let us = p.update_status.unwrap();
    assert_eq!(us.state, Some(UpdateState::Paused));
    assert!(
        us.message
            .starts_with("update paused due to failure or early termination of task"),
        "{}",
        us.message
    );
    let bad_slots: std::collections::BTreeSet<u64> = sim
        .tasks_of(&paused)
        .iter()
        .filter(|t| t.spec == p.spec.task_template)
        .filter_map(|t| t.slot)
        .collect();
    // The rollout stopped early: the failure is seen within a few slots
    // (a failing task runs briefly, as in SwarmKit, where monitor only counts failures).
    assert!(
        !bad_slots.is_empty() && bad_slots.len() <= 3,
        "{} slots updated",
        bad_slots.len()
    );
    let old = sim
        .tasks_of(&paused)
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.spec == p.previous_spec.clone().unwrap().task_template)
        .count();
    assert_eq!(
        old,
        20 - bad_slots.len(),
        "the other slots keep running the previous spec"
    );

    let r = sim.snap.services[&rolled].clone();
    let us = r.update_status.unwrap();
    assert_eq!(us.state, Some(UpdateState::RollbackCompleted), "{us:?}");
    assert_eq!(r.spec.task_template, good);
    assert_eq!(sim.running(&rolled), 20);
    assert!(sim
        .tasks_of(&rolled)
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .all(|t| t.spec == good));
}

#[test]
fn published_ports_are_allocated_uniquely_and_host_ports_never_collide() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let port = |target: u32, published: u32, mode: PublishMode| PortConfig {
        protocol: Some(PortProtocol::Tcp),
        target_port: target,
        published_port: published,
        publish_mode: Some(mode),
        ..PortConfig::default()
    };
    let mut ids = Vec::new();
    for (i, published) in [(0, 0), (1, 30000), (2, 0)] {
        let mut s = spec(&format!("p{i}"), Some(1));
        s.endpoint_spec = Some(EndpointSpec {
            mode: None,
            ports: vec![
                port(80, published, PublishMode::Ingress),
                port(443, 0, PublishMode::Ingress),
            ],
        });
        ids.push(sim.create_service(s));
    }
    // A host-mode port: at most one task per node can have it.
    let mut h = spec("host", Some(1200));
    h.endpoint_spec = Some(EndpointSpec {
        mode: None,
        ports: vec![port(8080, 8080, PublishMode::Host)],
    });
    let host = sim.create_service(h);
    sim.converge(20);
    let mut all = Vec::new();
    for id in &ids {
        let e = sim.snap.services[id].endpoint.clone().expect("endpoint allocated");
        for p in &e.ports {
            assert!((30000..=32767).contains(&p.published_port), "{p:?}");
            all.push(p.published_port);
        }
    }
    let unique: std::collections::BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "published ports collide: {all:?}");
    assert!(all.contains(&30000), "an explicit published port is kept");
    let per = sim.running_per_node(&host);
    assert_eq!(per.values().sum::<usize>(), 1000);
    assert!(per.values().all(|n| *n == 1));
    let pending: Vec<&Task> = sim
        .tasks_of(&host)
        .into_iter()
        .filter(|t| t.status.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 200);
    assert_eq!(
        pending[0].status.err,
        "no suitable node (host-mode port already in use on 1000 nodes)"
    );
    // Allocations are stable: another pass changes nothing.
    let before = sim.snap.services[&ids[0]].endpoint.clone();
    sim.converge(5);
    assert_eq!(sim.snap.services[&ids[0]].endpoint, before);
}

#[test]
fn a_requested_rollback_returns_to_the_previous_spec() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let id = sim.create_service(spec("rb", Some(12)));
    sim.converge(20);
    let first = sim.snap.services[&id].spec.task_template.clone();
    sim.update_service(&id, |s| {
        s.task_template.container_spec.as_mut().unwrap().image = "busybox:2".into();
        s.update_config.as_mut().unwrap().parallelism = 4;
        s.update_config.as_mut().unwrap().monitor = Some(Duration::from_secs(1));
    });
    sim.converge(200);
    assert_eq!(
        sim.snap.services[&id].update_status.as_ref().unwrap().state,
        Some(UpdateState::Completed)
    );
    // `docker service rollback`: the API swaps in PreviousSpec and marks the rollback started.
    let mut svc = sim.snap.services[&id].clone();
    let prev = svc.previous_spec.take().unwrap();
    svc.previous_spec = Some(std::mem::replace(&mut svc.spec, prev));
    svc.update_status = Some(UpdateStatus {
        state: Some(UpdateState::RollbackStarted),
        started_at: None,
        completed_at: None,
        message: "manually requested rollback".into(),
    });
    sim.commit(vec![Op::Update {
        record: svc.to_record().unwrap(),
    }])
    .unwrap();
    sim.max_in_flight.clear();
    sim.converge(200);
    let svc = sim.snap.services[&id].clone();
    let us = svc.update_status.unwrap();
    assert_eq!(us.state, Some(UpdateState::RollbackCompleted), "{us:?}");
    assert_eq!(us.message, "rollback completed");
    assert_eq!(sim.running(&id), 12);
    assert!(sim
        .tasks_of(&id)
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .all(|t| t.spec == first));
    let most = sim.max_in_flight[&id];
    assert_eq!(most, 1, "the rollback config (parallelism 1) paces the rollback");
}

#[test]
fn start_first_update_starts_the_new_task_before_stopping_the_old() {
    let mut sim = Sim::new(NODES, |_, _| {});
    let mut s = spec("sf", Some(10));
    s.update_config.as_mut().unwrap().order = Some(UpdateOrder::StartFirst);
    s.update_config.as_mut().unwrap().parallelism = 2;
    s.update_config.as_mut().unwrap().monitor = Some(Duration::from_secs(1));
    let id = sim.create_service(s);
    sim.converge(20);
    sim.update_service(&id, |s| {
        s.task_template.container_spec.as_mut().unwrap().image = "busybox:2".into();
    });
    // Until the update completes, every slot always has a running task.
    let mut seen_both = false;
    for _ in 0..200 {
        sim.schedule();
        sim.agents();
        sim.now += TimeDelta::seconds(1);
        let mut running: BTreeMap<u64, usize> = BTreeMap::new();
        for t in sim.tasks_of(&id) {
            if t.status.state == TaskState::Running {
                *running.entry(t.slot.unwrap()).or_default() += 1;
            }
        }
        assert_eq!(
            running.len(),
            10,
            "a slot had no running task during a start-first update"
        );
        seen_both |= running.values().any(|n| *n == 2);
        let us = sim.snap.services[&id].update_status.clone();
        if us.and_then(|u| u.state) == Some(UpdateState::Completed) {
            break;
        }
    }
    assert!(seen_both, "old and new tasks ran side by side");
    let svc = sim.snap.services[&id].clone();
    assert_eq!(svc.update_status.unwrap().state, Some(UpdateState::Completed));
    let live: Vec<&Task> = sim
        .tasks_of(&id)
        .into_iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .collect();
    assert_eq!(live.len(), 10);
    assert!(live.iter().all(|t| t.spec == svc.spec.task_template));
}
