//! The scheduler's view of the store: every node, service, task and the
//! cluster object, kept current from the change feed and from its own
//! writes by the shared follower kit ([`shoal_shared::store::mirror`]):
//! versions, tombstones pruned as the feed passes them, a reset on relist.

use shoal_shared::model::{Cluster, Network, Node, Service, Task, DEFAULTS};
use shoal_shared::store::mirror::{Mirror, Table};
use shoal_shared::store::{Kind, Record};

/// Everything the reconcile functions read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Table<Node>,
    pub services: Table<Service>,
    pub tasks: Table<Task>,
    pub clusters: Table<Cluster>,
    pub networks: Table<Network>,
    position: u64,
}

/// The kinds the scheduler follows.
pub const KINDS: [Kind; 5] = [Kind::Cluster, Kind::Node, Kind::Service, Kind::Task, Kind::Network];

shoal_shared::mirror_tables!(Snapshot, position, KINDS, [
    Node => nodes,
    Service => services,
    Task => tasks,
    Cluster => clusters,
    Network => networks,
]);

impl Snapshot {
    /// A snapshot holding exactly `records`.
    pub fn from_records(records: &[Record]) -> Snapshot {
        let mut s = Snapshot::default();
        s.reset(0, records);
        s
    }

    /// Inserts or replaces an object unless what we hold is newer.
    pub fn upsert(&mut self, rec: &Record) {
        if let Some(t) = self.table(rec.kind) {
            t.upsert(rec);
        }
    }

    /// Removes an object deleted at log index `at`.
    pub fn remove(&mut self, kind: Kind, id: &str, at: u64) {
        if let Some(t) = self.table(kind) {
            t.remove(id, at);
        }
    }

    /// The cluster object, once there is one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }

    /// `TaskHistoryRetentionLimit` (default 5; negative keeps everything).
    pub fn history_limit(&self) -> i64 {
        self.cluster()
            .and_then(|c| c.spec.orchestration.task_history_retention_limit)
            .unwrap_or(DEFAULTS.task_history_retention_limit)
    }
}
