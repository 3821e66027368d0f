//! The store-follower kit: what every manager-side actor that follows the
//! store (scheduler, dispatcher; allocator, DNS and ingress to come) needs,
//! written once.
//!
//! - [`Table`]: one kind's objects, typed, with versions (a copy never goes
//!   back to an older version), tombstones (a deleted object is not brought
//!   back by a late copy) pruned once the feed has passed them, and
//!   secondary indexes (e.g. tasks by node, by service).
//! - [`Mirror`]: a follower's set of tables and its feed position, fed by
//!   [`WatchEvent`]s (a reset replaces everything, a batch applies) and by
//!   the outcomes of its own writes (applied only when ahead of the feed).
//! - [`Acting`]: whether this process acts (its store replica leads), and
//!   the fencing term its writes carry; [`commit_fenced`] commits a pass's
//!   operations in chunks, concurrently, fenced by that term.
//! - [`GetState`]: the one message every actor answers with its observable
//!   state (tests and tools read it).
//!
//! Nothing here knows what a scheduler or a dispatcher does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::ops::Deref;

use futures::StreamExt;

use super::{Action, EventBatch, Kind, Op, Record, StoreClient, StoreObject, TxOutcome, TxRequest, WatchEvent};
use crate::ShoalError;

/// A secondary index: objects by the value of one attribute.
struct SecondaryIndex<T> {
    name: &'static str,
    key: fn(&T) -> Option<String>,
    ids: HashMap<String, BTreeSet<String>>,
}

/// One kind's objects as a follower holds them. Reads go through `Deref`
/// to the map of ID -> object.
pub struct Table<T> {
    items: BTreeMap<String, T>,
    /// ID -> index of the entry that deleted it.
    tombstones: BTreeMap<String, u64>,
    indexes: Vec<SecondaryIndex<T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            items: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            indexes: Vec::new(),
        }
    }
}

impl<T: Clone> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            items: self.items.clone(),
            tombstones: self.tombstones.clone(),
            indexes: self
                .indexes
                .iter()
                .map(|i| SecondaryIndex {
                    name: i.name,
                    key: i.key,
                    ids: i.ids.clone(),
                })
                .collect(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("items", &self.items)
            .field("tombstones", &self.tombstones.len())
            .finish()
    }
}

impl<T> Deref for Table<T> {
    type Target = BTreeMap<String, T>;
    fn deref(&self) -> &Self::Target {
        &self.items
    }
}

impl<T: StoreObject> Table<T> {
    /// Adds a secondary index named `name` on the attribute `key` returns
    /// (`None`: the object is not in the index).
    pub fn with_index(mut self, name: &'static str, key: fn(&T) -> Option<String>) -> Self {
        let mut ids: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (id, obj) in &self.items {
            if let Some(k) = key(obj) {
                ids.entry(k).or_default().insert(id.clone());
            }
        }
        self.indexes.push(SecondaryIndex { name, key, ids });
        self
    }

    /// IDs of the objects whose `index` attribute is `value`.
    pub fn ids_by(&self, index: &str, value: &str) -> impl Iterator<Item = &String> + '_ {
        self.indexes
            .iter()
            .find(|i| i.name == index)
            .and_then(|i| i.ids.get(value))
            .into_iter()
            .flatten()
    }

    /// The objects whose `index` attribute is `value`.
    pub fn by<'a>(&'a self, index: &str, value: &str) -> impl Iterator<Item = &'a T> + 'a {
        self.ids_by(index, value).filter_map(|id| self.items.get(id))
    }

    /// Stores an object unless what is held (or its deletion) is newer;
    /// whether it was stored.
    pub fn put(&mut self, obj: T, version: u64) -> bool {
        let id = obj.meta().id.clone();
        if self.tombstones.get(&id).is_some_and(|&at| version <= at) {
            return false;
        }
        if self
            .items
            .get(&id)
            .is_some_and(|old| old.meta().version.index > version)
        {
            return false;
        }
        if let Some(old) = self.items.remove(&id) {
            self.unindex(&id, &old);
        }
        for i in &mut self.indexes {
            if let Some(k) = (i.key)(&obj) {
                i.ids.entry(k).or_default().insert(id.clone());
            }
        }
        self.items.insert(id, obj);
        true
    }

    /// Removes an object deleted by the entry at `at`; the removed object.
    pub fn delete(&mut self, id: &str, at: u64) -> Option<T> {
        let prev = self.tombstones.get(id).copied().unwrap_or(0);
        self.tombstones.insert(id.to_string(), prev.max(at));
        let old = self.items.remove(id)?;
        self.unindex(id, &old);
        Some(old)
    }

    fn unindex(&mut self, id: &str, old: &T) {
        for i in &mut self.indexes {
            if let Some(k) = (i.key)(old) {
                if let Some(set) = i.ids.get_mut(&k) {
                    set.remove(id);
                    if set.is_empty() {
                        i.ids.remove(&k);
                    }
                }
            }
        }
    }

    /// Entries held beyond the objects themselves (tombstones and index
    /// entries): what a follower's memory grows with besides its data.
    pub fn overhead(&self) -> usize {
        self.tombstones.len()
            + self
                .indexes
                .iter()
                .map(|i| i.ids.len() + i.ids.values().map(BTreeSet::len).sum::<usize>())
                .sum::<usize>()
    }
}

/// A table as the mirror drives it, whatever its object type.
pub trait Followed {
    /// Decodes and stores a record (see [`Table::put`]); whether it was stored.
    fn upsert(&mut self, rec: &Record) -> bool;
    /// Removes an object deleted at `at`; whether it was held.
    fn remove(&mut self, id: &str, at: u64) -> bool;
    /// Forgets tombstones at or below `upto`: the feed has passed them, and
    /// nothing older is applied any more.
    fn prune(&mut self, upto: u64);
    /// Empties the table (before a reset), keeping its indexes' definitions.
    fn clear(&mut self);
    fn tombstones(&self) -> usize;
}

impl<T: StoreObject> Followed for Table<T> {
    fn upsert(&mut self, rec: &Record) -> bool {
        match rec.decode::<T>() {
            Ok(obj) => self.put(obj, rec.version),
            Err(e) => {
                tracing::warn!(error = %e, id = %rec.id, kind = %rec.kind, "mirror: undecodable record skipped");
                false
            }
        }
    }

    fn remove(&mut self, id: &str, at: u64) -> bool {
        self.delete(id, at).is_some()
    }

    fn prune(&mut self, upto: u64) {
        self.tombstones.retain(|_, at| *at > upto);
    }

    fn clear(&mut self) {
        self.items.clear();
        self.tombstones.clear();
        for i in &mut self.indexes {
            i.ids.clear();
        }
    }

    fn tombstones(&self) -> usize {
        self.tombstones.len()
    }
}

/// A follower's set of tables and feed position. Implement the two
/// accessors; the feeding is provided.
pub trait Mirror {
    /// The table holding `kind`, if this mirror follows it.
    fn table(&mut self, kind: Kind) -> Option<&mut dyn Followed>;
    /// The kinds this mirror follows (what its watcher watches).
    fn kinds(&self) -> &'static [Kind];
    /// The index of the last feed entry applied.
    fn position(&self) -> u64;
    fn set_position(&mut self, index: u64);

    /// Applies one watcher event.
    fn apply_event(&mut self, ev: &WatchEvent) {
        match ev {
            WatchEvent::Reset { index, records } => self.reset(*index, records),
            WatchEvent::Batch(b) => self.apply_batch(b),
        }
    }

    /// Replaces everything with `records`, the state at feed position `index`.
    fn reset(&mut self, index: u64, records: &[Record]) {
        for kind in self.kinds() {
            if let Some(t) = self.table(*kind) {
                t.clear();
            }
        }
        for r in records {
            if let Some(t) = self.table(r.kind) {
                t.upsert(r);
            }
        }
        self.set_position(index);
    }

    /// Applies one batch of the change feed, then prunes tombstones the feed has passed.
    fn apply_batch(&mut self, batch: &EventBatch) {
        for c in &batch.changes {
            let Some(t) = self.table(c.record.kind) else { continue };
            match c.action {
                Action::Create | Action::Update => {
                    t.upsert(&c.record);
                }
                Action::Delete => {
                    t.remove(&c.record.id, batch.index);
                }
            }
        }
        if batch.index > self.position() {
            self.set_position(batch.index);
        }
        let upto = self.position();
        for kind in self.kinds() {
            if let Some(t) = self.table(*kind) {
                t.prune(upto);
            }
        }
    }

    /// Applies the outcome of this follower's own write, so the next pass
    /// sees it before the feed brings it. An outcome the feed has already
    /// passed is skipped: the feed brought it, or something newer.
    fn apply_outcome(&mut self, ops: &[Op], outcome: &TxOutcome) {
        if outcome.index <= self.position() {
            return;
        }
        let writes = ops.iter().filter(|op| op.target().is_some());
        for (op, rec) in writes.zip(outcome.records.iter()) {
            let Some(t) = self.table(rec.kind) else { continue };
            match op {
                Op::Delete { id, .. } => {
                    t.remove(id, outcome.index);
                }
                _ => {
                    t.upsert(rec);
                }
            }
        }
    }

    /// Tombstones held over all tables.
    fn tombstones(&mut self) -> usize {
        let mut n = 0;
        for kind in self.kinds() {
            if let Some(t) = self.table(*kind) {
                n += t.tombstones();
            }
        }
        n
    }
}

/// Implements [`Mirror`] for a struct of tables: its position field, the
/// constant listing its kinds, and which field holds which kind, e.g.
/// `shoal_shared::mirror_tables!(Follow, position, KINDS, [Node => nodes, Task => tasks]);`
#[macro_export]
macro_rules! mirror_tables {
    ($ty:ty, $pos:ident, $kinds:expr, [$($kind:ident => $field:ident),+ $(,)?]) => {
        impl $crate::store::mirror::Mirror for $ty {
            fn table(&mut self, kind: $crate::store::Kind) -> Option<&mut dyn $crate::store::mirror::Followed> {
                match kind {
                    $($crate::store::Kind::$kind => Some(&mut self.$field),)+
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            fn kinds(&self) -> &'static [$crate::store::Kind] {
                &$kinds
            }

            fn position(&self) -> u64 {
                self.$pos
            }

            fn set_position(&mut self, index: u64) {
                self.$pos = index;
            }
        }
    };
}

/// Whether this process acts: its store replica leads, in `term`. Writes
/// carry the term as their fence, so a process that lost leadership
/// without knowing cannot write.
#[derive(Debug, Clone, Default)]
pub struct Acting {
    term: Option<u64>,
}

impl Acting {
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Records what the store said; whether it changed (then log it and,
    /// when now acting, start work).
    pub fn observe(&mut self, term: Option<u64>) -> bool {
        let changed = term != self.term;
        self.term = term;
        changed
    }

    /// A write was refused as fenced: no longer acting until the next poll says so.
    pub fn fenced(&mut self) {
        self.term = None;
    }

    /// Asks the store whether `replica` leads, and in which term.
    pub async fn poll(client: &StoreClient, replica: u64) -> Option<u64> {
        client.acting_term(replica).await
    }
}

/// Commits `ops` in chunks of at most `max_ops`, `in_flight` at a time,
/// each fenced by `term`. Every operation of a pass touches a different
/// object, so the chunks commit independently. Returns the committed chunks
/// with their outcomes, and the last error if any chunk failed.
pub async fn commit_fenced(
    client: &StoreClient,
    ops: Vec<Op>,
    term: u64,
    max_ops: usize,
    in_flight: usize,
) -> (Vec<(Vec<Op>, TxOutcome)>, Option<ShoalError>) {
    let chunks = chunk_ops(ops, max_ops);
    let results: Vec<(Vec<Op>, Result<TxOutcome, ShoalError>)> = futures::stream::iter(chunks.into_iter().map(|ops| {
        let client = client.clone();
        async move {
            let res = client.tx(TxRequest::new(ops.clone()).fenced(term)).await;
            (ops, res)
        }
    }))
    .buffer_unordered(in_flight.max(1))
    .collect()
    .await;
    let mut done = Vec::new();
    let mut err = None;
    for (ops, res) in results {
        match res {
            Ok(out) => done.push((ops, out)),
            Err(e) => err = Some(e),
        }
    }
    (done, err)
}

/// Splits operations into transactions of at most `max_ops` operations
/// and about 900 KiB (a NATS message holds 1 MiB by default).
pub fn chunk_ops(ops: Vec<Op>, max_ops: usize) -> Vec<Vec<Op>> {
    const MAX_BYTES: usize = 900 * 1024;
    let max_ops = max_ops.max(1);
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = match &op {
            Op::Create { record } | Op::Update { record } => record.body.len() + 256,
            Op::Delete { .. } | Op::Exists { .. } => 128,
            Op::NoneMatch { filter, .. } => 256 + serde_json::to_vec(filter).map_or(0, |v| v.len()),
        };
        if !cur.is_empty() && (cur.len() >= max_ops || bytes + size > MAX_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(op);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The message every shoal actor answers with its observable state `S`
/// (sessions, counts, last error: what tests and tools look at).
pub struct GetState<S>(PhantomData<fn() -> S>);

impl<S> GetState<S> {
    pub fn new() -> Self {
        GetState(PhantomData)
    }
}

impl<S: 'static> actix::Message for GetState<S> {
    type Result = S;
}

impl<S> Default for GetState<S> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Node, NodeRole, Task, TaskSpec};
    use crate::store::Change;
    use chrono::Utc;

    #[derive(Default)]
    struct Follow {
        tasks: Table<Task>,
        nodes: Table<Node>,
        position: u64,
    }

    impl Follow {
        fn new() -> Follow {
            Follow {
                tasks: Table::default()
                    .with_index("node", |t: &Task| Some(t.node_id.clone()).filter(|n| !n.is_empty()))
                    .with_index("service", |t: &Task| Some(t.service_id.clone())),
                ..Follow::default()
            }
        }
    }

    const KINDS: [Kind; 2] = [Kind::Task, Kind::Node];
    crate::mirror_tables!(Follow, position, KINDS, [Task => tasks, Node => nodes]);

    fn task(id: &str, service: &str, node: &str, version: u64) -> Record {
        let mut t = Task::new(id, service, TaskSpec::default());
        t.node_id = node.into();
        let mut r = t.to_record().unwrap();
        r.version = version;
        r
    }

    fn batch(index: u64, changes: Vec<(Action, Record)>) -> EventBatch {
        EventBatch {
            index,
            prev_index: index - 1,
            term: 1,
            at: Utc::now(),
            changes: changes
                .into_iter()
                .map(|(action, record)| Change {
                    action,
                    record,
                    trace: None,
                })
                .collect(),
        }
    }

    #[test]
    fn versions_and_tombstones_keep_stale_copies_out_and_indexes_follow() {
        let mut m = Follow::new();
        m.apply_batch(&batch(1, vec![(Action::Create, task("t1", "s1", "", 1))]));
        m.apply_batch(&batch(2, vec![(Action::Update, task("t1", "s1", "n1", 2))]));
        assert_eq!(m.tasks.ids_by("node", "n1").collect::<Vec<_>>(), ["t1"]);
        assert_eq!(m.tasks.by("service", "s1").count(), 1);
        // An older copy does not go back.
        assert!(!m.tasks.upsert(&task("t1", "s1", "", 1)));
        assert_eq!(m.tasks["t1"].node_id, "n1");
        // A move of index entry on change of attribute.
        m.apply_batch(&batch(3, vec![(Action::Update, task("t1", "s1", "n2", 3))]));
        assert_eq!(m.tasks.ids_by("node", "n1").count(), 0);
        assert_eq!(m.tasks.ids_by("node", "n2").count(), 1);
        // A deletion the feed brings ...
        m.apply_batch(&batch(4, vec![(Action::Delete, task("t1", "s1", "n2", 3))]));
        assert!(m.tasks.is_empty());
        assert_eq!(m.tasks.ids_by("node", "n2").count(), 0);
        // ... is not undone by the late outcome of an own write from before it.
        let out = TxOutcome {
            index: 3,
            term: 1,
            records: vec![task("t1", "s1", "n2", 3)],
        };
        m.apply_outcome(
            &[Op::Update {
                record: task("t1", "s1", "n2", 3),
            }],
            &out,
        );
        assert!(m.tasks.is_empty());
        // An outcome ahead of the feed is applied.
        let out = TxOutcome {
            index: 9,
            term: 1,
            records: vec![task("t2", "s1", "n1", 9)],
        };
        m.apply_outcome(
            &[Op::Create {
                record: task("t2", "s1", "n1", 9),
            }],
            &out,
        );
        assert!(m.tasks.contains_key("t2"));
    }

    #[test]
    fn a_reset_replaces_everything() {
        let mut m = Follow::new();
        m.apply_batch(&batch(1, vec![(Action::Create, task("t1", "s1", "n1", 1))]));
        let mut n = Node::new("n1", "h", NodeRole::Worker).to_record().unwrap();
        n.version = 5;
        m.reset(5, &[task("t2", "s2", "n2", 4), n]);
        assert_eq!(m.tasks.keys().collect::<Vec<_>>(), ["t2"]);
        assert_eq!(m.tasks.ids_by("node", "n1").count(), 0);
        assert_eq!(m.tasks.ids_by("node", "n2").count(), 1);
        assert_eq!(m.nodes.len(), 1);
        assert_eq!(m.position(), 5);
    }

    /// Issue 10: the mirror's memory stays bounded under task churn; it
    /// used to keep a tombstone per deleted task for good.
    #[test]
    fn memory_stays_bounded_while_100k_tasks_are_created_and_deleted_in_cycles() {
        let mut m = Follow::new();
        let mut index = 0;
        let mut peak = 0;
        for cycle in 0..10 {
            let ids: Vec<String> = (0..10_000).map(|i| format!("c{cycle}-t{i}")).collect();
            for chunk in ids.chunks(500) {
                index += 1;
                let changes = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        (
                            Action::Create,
                            task(id, &format!("s{}", i % 7), &format!("n{}", i % 13), index),
                        )
                    })
                    .collect();
                m.apply_batch(&batch(index, changes));
            }
            assert_eq!(m.tasks.len(), 10_000);
            for chunk in ids.chunks(500) {
                index += 1;
                let changes = chunk
                    .iter()
                    .map(|id| (Action::Delete, task(id, "s0", "n0", index - 1)))
                    .collect();
                m.apply_batch(&batch(index, changes));
                peak = peak.max(m.tasks.len() + m.tasks.overhead());
            }
            assert!(m.tasks.is_empty());
            assert_eq!(m.tasks.overhead(), 0, "cycle {cycle}: nothing left behind");
            assert_eq!(m.tombstones(), 0);
        }
        // 100,000 tasks went through; at most one cycle's worth was ever held.
        assert!(peak <= 10_000 * 6, "peak {peak}");
    }

    #[test]
    fn chunks_hold_at_most_max_ops() {
        let ops: Vec<Op> = (0..7)
            .map(|i| Op::Delete {
                kind: Kind::Task,
                id: format!("t{i}"),
                version: None,
            })
            .collect();
        let sizes: Vec<usize> = chunk_ops(ops, 3).iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert!(chunk_ops(Vec::new(), 3).is_empty());
    }
}
