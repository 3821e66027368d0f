//! The scheduler's view of the store: every node, service, task and the
//! cluster object, kept current from the change feed and from its own writes.

use std::collections::{BTreeMap, HashMap};

use shoal_shared::model::{Cluster, Node, Service, Task};
use shoal_shared::store::{Action, EventBatch, Kind, Record, StoreObject};

/// Everything the reconcile functions read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub cluster: Option<Cluster>,
    /// Index at which a deleted object was deleted: older copies are stale.
    tombstones: HashMap<(Kind, String), u64>,
}

/// The kinds the scheduler follows.
pub const KINDS: [Kind; 4] = [Kind::Cluster, Kind::Node, Kind::Service, Kind::Task];

fn newer<T: StoreObject>(map: &BTreeMap<String, T>, rec: &Record) -> bool {
    map.get(&rec.id)
        .is_none_or(|old| old.meta().version.index <= rec.version)
}

impl Snapshot {
    /// A snapshot holding exactly `records`.
    pub fn from_records(records: &[Record]) -> Snapshot {
        let mut s = Snapshot::default();
        for r in records {
            s.upsert(r);
        }
        s
    }

    /// Inserts or replaces an object unless what we hold is newer.
    pub fn upsert(&mut self, rec: &Record) {
        if self
            .tombstones
            .get(&(rec.kind, rec.id.clone()))
            .is_some_and(|&at| rec.version <= at)
        {
            return;
        }
        let res = match rec.kind {
            Kind::Node if newer(&self.nodes, rec) => rec.decode().map(|n| {
                self.nodes.insert(rec.id.clone(), n);
            }),
            Kind::Service if newer(&self.services, rec) => rec.decode().map(|n| {
                self.services.insert(rec.id.clone(), n);
            }),
            Kind::Task if newer(&self.tasks, rec) => rec.decode().map(|n| {
                self.tasks.insert(rec.id.clone(), n);
            }),
            Kind::Cluster
                if self
                    .cluster
                    .as_ref()
                    .is_none_or(|c| c.meta.version.index <= rec.version) =>
            {
                rec.decode().map(|c| self.cluster = Some(c))
            }
            _ => Ok(()),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, id = %rec.id, "snapshot: undecodable record skipped");
        }
    }

    /// Removes an object deleted at log index `at`.
    pub fn remove(&mut self, kind: Kind, id: &str, at: u64) {
        self.tombstones.insert((kind, id.to_string()), at);
        match kind {
            Kind::Node => {
                self.nodes.remove(id);
            }
            Kind::Service => {
                self.services.remove(id);
            }
            Kind::Task => {
                self.tasks.remove(id);
            }
            Kind::Cluster if self.cluster.as_ref().is_some_and(|c| c.meta.id == id) => self.cluster = None,
            _ => {}
        }
    }

    /// Applies one batch of the change feed.
    pub fn apply_batch(&mut self, batch: &EventBatch) {
        for c in &batch.changes {
            match c.action {
                Action::Create | Action::Update => self.upsert(&c.record),
                Action::Delete => self.remove(c.record.kind, &c.record.id, batch.index),
            }
        }
    }

    /// `TaskHistoryRetentionLimit` (default 5; negative keeps everything).
    pub fn history_limit(&self) -> i64 {
        self.cluster
            .as_ref()
            .and_then(|c| c.spec.orchestration.task_history_retention_limit)
            .unwrap_or(5)
    }
}
