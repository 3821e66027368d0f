//! Fixtures for the roles' unit tests: nodes, services, a snapshot, passes
//! whose plans are applied back with store versions, and agents' reports.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shoal_shared::model::*;
use shoal_shared::store::{Kind, Op, StoreObject};

use super::{reconcile, Plan};
use crate::snapshot::Snapshot;

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// A ready, active node with a CPU and a GiB of memory.
pub fn node(id: &str) -> Node {
    let mut n = Node::new(id, format!("host-{id}"), NodeRole::Worker);
    n.status.state = NodeState::Ready;
    n.description.resources = Resources {
        generic_resources: Vec::new(),
        nano_cpus: 1_000_000_000,
        memory_bytes: 1 << 30,
    };
    n.description.platform = Platform {
        architecture: "x86_64".into(),
        os: "linux".into(),
    };
    n
}

/// A service with Docker's defaults (`replicas: None` is global).
pub fn service(id: &str, replicas: Option<u64>) -> Service {
    let mut spec = ServiceSpec {
        name: format!("svc-{id}"),
        task_template: TaskSpec {
            container_spec: Some(ContainerSpec {
                image: "busybox".into(),
                ..ContainerSpec::default()
            }),
            restart_policy: Some(RestartPolicy {
                condition: Some(RestartCondition::Any),
                delay: Some(Duration::from_secs(5)),
                max_attempts: Some(0),
                window: None,
            }),
            ..TaskSpec::default()
        },
        mode: match replicas {
            Some(n) => ServiceMode::replicated(n),
            None => ServiceMode::global(),
        },
        ..ServiceSpec::default()
    };
    spec.update_config = Some(DEFAULTS.update_config.clone());
    spec.rollback_config = Some(DEFAULTS.rollback_config.clone());
    Service::new(id, spec)
}

/// A cluster: its objects, a version counter, a clock and task names.
pub struct Kit {
    pub snap: Snapshot,
    pub index: u64,
    pub now: DateTime<Utc>,
    next: u64,
}

impl Kit {
    pub fn new(nodes: &[&str], services: Vec<Service>) -> Kit {
        let mut k = Kit {
            snap: Snapshot::default(),
            index: 0,
            now: t0(),
            next: 0,
        };
        for n in nodes {
            k.put(&node(n));
        }
        for s in services {
            k.put(&s);
        }
        k
    }

    /// Writes an object as the store would (a new version).
    pub fn put<T: StoreObject>(&mut self, obj: &T) {
        self.index += 1;
        let mut r = obj.to_record().unwrap();
        r.version = self.index;
        self.snap.upsert(&r);
    }

    /// One pass, its plan committed.
    pub fn pass(&mut self) -> Plan {
        let next = &mut self.next;
        let plan = reconcile(&self.snap, self.now, &mut || {
            *next += 1;
            format!("t{next:06}")
        });
        self.index += 1;
        for op in &plan.ops {
            match op {
                Op::Create { record } | Op::Update { record } => {
                    let mut r = record.clone();
                    r.version = self.index;
                    self.snap.upsert(&r);
                }
                Op::Delete { kind, id, .. } => self.snap.remove(*kind, id, self.index),
                Op::Exists { .. } | Op::NoneMatch { .. } => {}
            }
        }
        plan
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += TimeDelta::from_std(d).unwrap();
    }

    /// Tasks of a service.
    pub fn tasks(&self, sid: &str) -> Vec<Task> {
        self.snap
            .tasks
            .values()
            .filter(|t| t.service_id == sid)
            .cloned()
            .collect()
    }

    /// Live tasks (desired running or less, or complete for a job) of a service.
    pub fn live(&self, sid: &str) -> Vec<Task> {
        self.tasks(sid)
            .into_iter()
            .filter(|t| t.desired_state.wants_run())
            .collect()
    }

    /// An agent reports a task's state.
    pub fn report(&mut self, task: &str, state: TaskState) {
        let mut t = self.snap.tasks[task].clone();
        t.status.state = state;
        t.status.timestamp = self.now;
        self.put(&t);
    }

    /// Every placed task that should run reports running.
    pub fn run_all(&mut self) {
        let ids: Vec<String> = self
            .snap
            .tasks
            .values()
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Assigned)
            .map(|t| t.meta.id.clone())
            .collect();
        for id in ids {
            self.report(&id, TaskState::Running);
        }
    }

    /// Every task asked to stop that still runs reports shutdown.
    pub fn stop_all(&mut self) {
        let ids: Vec<String> = self
            .snap
            .tasks
            .values()
            .filter(|t| t.desired_state > TaskState::Running && !t.status.state.is_terminal())
            .map(|t| t.meta.id.clone())
            .collect();
        for id in ids {
            self.report(&id, TaskState::Shutdown);
        }
    }

    pub fn set_service(&mut self, sid: &str, f: impl FnOnce(&mut Service)) {
        let mut s = self.snap.services[sid].clone();
        f(&mut s);
        self.put(&s);
    }

    pub fn set_node(&mut self, id: &str, f: impl FnOnce(&mut Node)) {
        let mut n = self.snap.nodes[id].clone();
        f(&mut n);
        self.put(&n);
    }

    pub fn delete_service(&mut self, sid: &str) {
        self.index += 1;
        self.snap.remove(Kind::Service, sid, self.index);
    }
}

impl Kit {
    /// A task disappears from the store (as the reaper or an operator deletes it).
    pub fn delete_task(&mut self, id: &str) {
        self.index += 1;
        self.snap.remove(Kind::Task, id, self.index);
    }
}
