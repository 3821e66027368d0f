//! The replicated state machine, in memory (as SwarmKit keeps its whole
//! state): objects, unique-name index and applied-request ids in one ordered
//! key-value map ([`Kv`]); the recent change history and the name and field
//! indexes ([`Indexes`], built from the objects at open) next to it. It is made
//! durable by snapshot files (see [`snapshot_file`]): on restart the replica
//! loads the last snapshot and openraft re-applies the committed entries of
//! the write-ahead log after it.
//!
//! Applying is deterministic: it depends only on the log entries (which carry
//! the proposer's timestamp), so every replica reaches the same state.
//!
//! Key layout (all keys are UTF-8, values MessagePack):
//! - `o/<kind>/<id>`   → [`Record`]
//! - `n/<kind>/<name>` → id (services and networks: unique names)
//! - `d/<index:020>`   → the request ids the entry at `index` applied, with their
//!   outcome (so a retried request applies once); one key per entry, not per
//!   transaction, dropped after [`DEDUP_WINDOW`] indexes or beyond [`DEDUP_BYTES`]
//! - `m/applied`, `m/membership`, `m/event_index` → state machine metadata
//!
//! The change history ([`HISTORY_WINDOW`] indexes, at most [`HISTORY_BYTES`]
//! of records) lets a watcher that missed events catch up without relisting. It
//! is a hint, as the feed is: after a restart it starts empty and a watcher
//! that asks for older events is told to relist.
//!
//! Snapshots do not hold up writes: the map's keys and values are shared
//! (`Arc`), so [`RaftStateMachine::get_snapshot_builder`] copies the map's
//! spine under the readers' lock (no value is copied), and encoding, writing
//! and `fsync` run on a blocking thread while entries keep applying.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use shoal_shared::store::*;
use shoal_shared::{ErrorCode, ShoalError};
use tokio::sync::mpsc;

use crate::codec;
use crate::index::Indexes;
use crate::typ::*;

/// Change-feed history kept for watchers that missed events (in log indexes).
pub const HISTORY_WINDOW: u64 = 50_000;
/// How long (in log indexes) a request id is remembered for exactly-once retries.
pub const DEDUP_WINDOW: u64 = 50_000;
/// At most this much memory (see [`dedup_size`], about 210 bytes an id) is
/// held by remembered request ids, whatever the window: about 80,000 ids, far
/// more than a client retries within its deadline. Every replica must use the
/// same value (it decides which retries apply again).
pub const DEDUP_BYTES: usize = 16 << 20;
/// At most this much (record bodies plus a per-change allowance) is kept in
/// the history, whatever the window.
pub const HISTORY_BYTES: usize = 8 << 20;

/// Memory a batch holds in the history, roughly: bodies plus a fixed part per change.
fn history_size(batch: &EventBatch) -> usize {
    batch.changes.iter().map(|c| c.record.body.json().len() + 256).sum()
}

const M_APPLIED: &str = "m/applied";
const M_MEMBERSHIP: &str = "m/membership";
const M_EVENT_INDEX: &str = "m/event_index";

fn obj_key(kind: Kind, id: &str) -> String {
    format!("o/{kind}/{id}")
}
fn obj_prefix(kind: Kind) -> String {
    format!("o/{kind}/")
}
fn name_key(kind: Kind, name: &str) -> String {
    format!("n/{kind}/{name}")
}
fn dedup_key(index: u64) -> String {
    format!("d/{index:020}")
}
/// Key prefixes of earlier layouts (history, request ids and their index),
/// dropped when a snapshot written by them is loaded.
const LEGACY_PREFIXES: [&str; 3] = ["e/", "r/", "q/"];

/// The state machine's keys and values. Both are shared, so a copy (for a
/// snapshot) costs the map's nodes, not its contents.
#[derive(Default, Clone, PartialEq)]
pub struct Kv {
    map: BTreeMap<Arc<str>, Arc<[u8]>>,
}

impl Kv {
    pub fn get(&self, key: &str) -> Option<&Arc<[u8]>> {
        self.map.get(key)
    }

    pub fn insert(&mut self, key: &str, value: Vec<u8>) {
        self.map.insert(Arc::from(key), Arc::from(value));
    }

    pub fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Keys and values under `prefix`, in key order.
    pub fn scan_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.map
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (&**k, &**v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

/// What the state machine keeps in memory, for readers and apply. Its lock
/// also makes a list and the feed position it reports consistent with each other.
#[derive(Default)]
struct Mem {
    /// The feed position: index of the last entry that changed anything.
    head: u64,
    /// Recent change batches, oldest first.
    history: VecDeque<Arc<EventBatch>>,
    history_bytes: usize,
    /// Name and field indexes of the records in `kv`.
    indexes: Indexes,
    /// The state: objects, names, request ids, metadata.
    kv: Kv,
}

impl Mem {
    /// Takes `kv`, loads the head and builds the indexes (the history starts empty).
    fn load(kv: Kv) -> Result<Mem, StorageError> {
        let mut indexes = Indexes::default();
        for (_, v) in kv.scan_prefix("o/") {
            let rec: Record = codec::decode(v).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            indexes.put(&rec);
        }
        Ok(Mem {
            head: Overlay::new(&kv).get_value(M_EVENT_INDEX)?.unwrap_or(0),
            indexes,
            kv,
            ..Mem::default()
        })
    }

    fn push_history(&mut self, batch: Arc<EventBatch>, window: u64, max_bytes: usize) {
        self.history_bytes += history_size(&batch);
        self.head = batch.index;
        self.history.push_back(batch);
        let floor = self.head.saturating_sub(window);
        while let Some(front) = self.history.front() {
            if front.index > floor && self.history_bytes <= max_bytes {
                break;
            }
            self.history_bytes -= history_size(front);
            self.history.pop_front();
        }
    }

    fn batch_at(&self, index: u64) -> Option<&EventBatch> {
        let i = self.history.binary_search_by_key(&index, |b| b.index).ok()?;
        self.history.get(i).map(|b| &**b)
    }
}

/// The request ids remembered for exactly-once retries (loaded from the `d/`
/// keys), bounded by a window of indexes and by their size.
///
/// Whether an id is remembered when an entry applies is decided entry by
/// entry ([`Dedup::trim`] before each entry), as a function of the entries
/// alone, so that every replica decides alike however its entries were
/// grouped into `apply` calls, and after a restart or a snapshot install
/// (the `d/` keys hold exactly what is remembered after each call).
#[derive(Default)]
struct Dedup {
    /// Request id → what was remembered of it.
    ids: HashMap<String, Remembered>,
    /// Index → the request ids remembered there, and their size.
    at: BTreeMap<u64, (Vec<String>, usize)>,
    /// Sum of the sizes in `at`.
    bytes: usize,
}

/// Memory one remembered request id holds, roughly: the id (twice), the
/// error message if refused, and a fixed part for the map entries.
fn dedup_size(id: &str, r: &Remembered) -> usize {
    2 * id.len() + r.err.as_ref().map_or(0, |e| e.message.len()) + 160
}

impl Dedup {
    fn load(kv: &Kv) -> Result<Dedup, StorageError> {
        let mut d = Dedup::default();
        for (k, v) in kv.scan_prefix("d/") {
            let index = k[2..]
                .parse::<u64>()
                .map_err(|_| sm_err(ErrorVerb::Read, format!("bad key {k}")))?;
            let entries: Vec<(String, Remembered)> = codec::decode(v).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            for (id, r) in entries {
                d.remember(index, id, r);
            }
        }
        Ok(d)
    }

    fn remember(&mut self, index: u64, id: String, r: Remembered) {
        let size = dedup_size(&id, &r);
        let (ids, bytes) = self.at.entry(index).or_default();
        ids.push(id.clone());
        *bytes += size;
        self.bytes += size;
        self.ids.insert(id, r);
    }

    fn recalled(&self, request_id: &str) -> Option<Remembered> {
        self.ids.get(request_id).cloned()
    }

    /// Before the entry at `index` applies: forgets the indexes more than
    /// `window` behind it, then the oldest ones while more than `max_bytes`
    /// are held. Returns the indexes forgotten (their `d/` keys go).
    fn trim(&mut self, index: u64, window: u64, max_bytes: usize) -> Vec<u64> {
        let floor = index.saturating_sub(window);
        let mut gone = Vec::new();
        while let Some(entry) = self.at.first_entry() {
            if *entry.key() >= floor && self.bytes <= max_bytes {
                break;
            }
            let (at, (ids, bytes)) = entry.remove_entry();
            self.bytes -= bytes;
            for id in ids {
                // Only if a later entry did not remember the same id again.
                if self.ids.get(&id).is_some_and(|r| r.index == at) {
                    self.ids.remove(&id);
                }
            }
            gone.push(at);
        }
        gone
    }
}

/// Read access to the state machine for the store API (get, list, history).
#[derive(Clone)]
pub struct Reader {
    mem: Arc<RwLock<Mem>>,
}

fn get_value<T: serde::de::DeserializeOwned>(kv: &Kv, key: &str) -> Result<Option<T>, ShoalError> {
    match kv.get(key) {
        None => Ok(None),
        Some(v) => codec::decode(v)
            .map(Some)
            .map_err(|e| ShoalError::internal(format!("corrupt {key}: {e}"))),
    }
}

impl Reader {
    fn mem(&self) -> std::sync::RwLockReadGuard<'_, Mem> {
        self.mem.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn event_index(&self) -> u64 {
        self.mem().head
    }

    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>, ShoalError> {
        get_value(&self.mem().kv, &obj_key(kind, id))
    }

    /// A consistent list of `kinds` (each sorted by id) and the feed position
    /// it reflects. Names and fields are looked up in the indexes, id
    /// prefixes as key prefixes; only a list with none of them reads a whole kind.
    pub fn list(&self, kinds: &[Kind], filter: &ListFilter) -> Result<ListResult, ShoalError> {
        let mem = self.mem();
        let mut records = Vec::new();
        for &kind in kinds {
            if let Some(ids) = mem.indexes.candidates(kind, filter) {
                for id in ids {
                    if let Some(rec) = get_value::<Record>(&mem.kv, &obj_key(kind, &id))? {
                        if filter.matches(&rec) {
                            records.push(rec);
                        }
                    }
                }
                continue;
            }
            for p in distinct_prefixes(&filter.id_prefixes) {
                let prefix = format!("{}{p}", obj_prefix(kind));
                for (_, v) in mem.kv.scan_prefix(&prefix) {
                    let rec: Record = codec::decode(v).map_err(|e| ShoalError::internal(e.to_string()))?;
                    if filter.matches(&rec) {
                        records.push(rec);
                    }
                }
            }
        }
        Ok(ListResult {
            event_index: mem.head,
            records,
        })
    }

    /// History after `after`; `compacted` when it no longer reaches back that far.
    pub fn events(&self, after: u64, limit: usize) -> Result<EventsResult, ShoalError> {
        let mem = self.mem();
        let head = mem.head;
        let mut batches = Vec::new();
        if after < head {
            let from = mem.history.partition_point(|b| b.index <= after);
            batches.extend(mem.history.iter().skip(from).take(limit.max(1)).map(|b| (**b).clone()));
            let reaches_back = batches.first().is_some_and(|b| b.prev_index == after);
            if !reaches_back {
                return Ok(EventsResult {
                    compacted: true,
                    batches: Vec::new(),
                    event_index: head,
                });
            }
        }
        let event_index = batches.last().map(|b| b.index).unwrap_or(head);
        Ok(EventsResult {
            compacted: false,
            batches,
            event_index,
        })
    }
}

/// The id prefixes to scan, sorted, none a prefix of another (so each record
/// is read once, in id order); no prefixes is one empty prefix (everything).
fn distinct_prefixes(prefixes: &[String]) -> Vec<&str> {
    let mut sorted: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    if sorted.is_empty() {
        return vec![""];
    }
    sorted.sort_unstable();
    let mut out: Vec<&str> = Vec::with_capacity(sorted.len());
    for p in sorted {
        // Sorted, a prefix comes right before what it covers.
        if !out.last().is_some_and(|q| p.starts_with(q)) {
            out.push(p);
        }
    }
    out
}

mod snapshot;
mod tx;

pub use snapshot::snapshot_file;
use snapshot::*;
use tx::*;

pub struct StateMachine {
    dir: PathBuf,
    mem: Arc<RwLock<Mem>>,
    /// Only `apply` uses it, so it is not behind the readers' lock.
    dedup: Dedup,
    /// Meta of the snapshot in the snapshot file.
    current: Arc<Mutex<Option<SnapshotMeta>>>,
    events: mpsc::UnboundedSender<Arc<EventBatch>>,
    history_window: u64,
    history_bytes: usize,
    dedup_window: u64,
    dedup_bytes: usize,
}

impl StateMachine {
    /// Opens the state machine of the replica whose data dir is `dir`: the
    /// snapshot file's state, or an empty one.
    pub fn open(dir: &Path, events: mpsc::UnboundedSender<Arc<EventBatch>>) -> Result<StateMachine, StorageError> {
        let _ = std::fs::remove_file(dir.join("snapshot.tmp"));
        let (kv, current) = match read_snapshot_file(dir)? {
            Some((meta, data)) => {
                let mut kv = decode_snapshot(&data)?;
                if let Some(applied) = &meta.last_log_id {
                    kv.insert(M_APPLIED, codec::encode(applied));
                }
                kv.insert(M_MEMBERSHIP, codec::encode(&meta.last_membership));
                (kv, Some(meta))
            }
            None => (Kv::default(), None),
        };
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            dedup: Dedup::load(&kv)?,
            mem: Arc::new(RwLock::new(Mem::load(kv)?)),
            current: Arc::new(Mutex::new(current)),
            events,
            history_window: HISTORY_WINDOW,
            history_bytes: HISTORY_BYTES,
            dedup_window: DEDUP_WINDOW,
            dedup_bytes: DEDUP_BYTES,
        })
    }

    fn mem_mut(&self) -> std::sync::RwLockWriteGuard<'_, Mem> {
        self.mem.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Smaller retention windows, for tests. Every replica of a cluster must
    /// use the same values, or their states diverge.
    #[cfg(test)]
    fn with_windows(mut self, history: u64, dedup: u64) -> StateMachine {
        self.history_window = history;
        self.dedup_window = dedup;
        self
    }

    #[cfg(test)]
    fn with_history_bytes(mut self, bytes: usize) -> StateMachine {
        self.history_bytes = bytes;
        self
    }

    #[cfg(test)]
    fn with_dedup_bytes(mut self, bytes: usize) -> StateMachine {
        self.dedup_bytes = bytes;
        self
    }

    pub fn reader(&self) -> Reader {
        Reader { mem: self.mem.clone() }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        Overlay::new(&mem.kv).get_value(key)
    }

    /// A copy of the map (its contents shared).
    fn view(&self) -> Kv {
        self.mem.read().unwrap_or_else(|p| p.into_inner()).kv.clone()
    }

    #[cfg(test)]
    fn dump(&self) -> Result<SnapshotData, StorageError> {
        Ok(SnapshotData {
            entries: self
                .view()
                .iter()
                .map(|(k, v)| (k.to_string(), serde_bytes::ByteBuf::from(v.to_vec())))
                .collect(),
        })
    }
}

pub struct Builder {
    dir: PathBuf,
    view: Kv,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    current: Arc<Mutex<Option<SnapshotMeta>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let snapshot_id = match &self.last_applied {
            Some(l) => format!(
                "{}-{}-{}",
                l.leader_id.term,
                l.index,
                chrono::Utc::now().timestamp_millis()
            ),
            None => format!("0-0-{}", chrono::Utc::now().timestamp_millis()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        // Encoding and fsync run off the runtime's workers; apply goes on meanwhile.
        let view = std::mem::take(&mut self.view);
        let dir = self.dir.clone();
        let m = meta.clone();
        let current = self.current.clone();
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let bytes = codec::encode(&SnapshotRef(&view));
            drop(view);
            save_snapshot(&current, &dir, &m, &bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        crate::metrics::metrics()
            .snapshot_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.meta::<LogId>(M_APPLIED)?,
            self.meta::<StoredMembership>(M_MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut done = Applied::default();
        // Read what the call starts from; readers may share the lock meanwhile.
        // The write lock is taken only to commit the call's results below.
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        let mut ov = Overlay::with_indexes(&mem.kv, &mem.indexes);
        let mut event_index = mem.head;
        for entry in entries {
            let index = entry.log_id.index;
            let term = entry.log_id.leader_id.term;
            for gone in self.dedup.trim(index, self.dedup_window, self.dedup_bytes) {
                ov.remove(dedup_key(gone));
            }
            ov.put_value(M_APPLIED.into(), &entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(CommandResult::default()),
                EntryPayload::Membership(m) => {
                    ov.put_value(M_MEMBERSHIP.into(), &StoredMembership::new(Some(entry.log_id), m));
                    results.push(CommandResult::default());
                }
                EntryPayload::Normal(cmd) => {
                    let mut changes = Vec::new();
                    let mut out = Vec::with_capacity(cmd.txs.len());
                    let mut remembered = Vec::with_capacity(cmd.txs.len());
                    for tx in &cmd.txs {
                        if let Some(prev) = self.dedup.recalled(&tx.request_id) {
                            out.push(recall(&ov, done.batch_at(&mem, prev.index), tx, prev)?);
                            continue;
                        }
                        let (outcome, r) = apply_tx(&mut ov, tx, index, term, cmd.at, &mut changes)?;
                        out.push(outcome);
                        self.dedup.remember(index, tx.request_id.clone(), r.clone());
                        remembered.push((tx.request_id.clone(), r));
                    }
                    if !remembered.is_empty() {
                        ov.put_value(dedup_key(index), &remembered);
                    }
                    if !changes.is_empty() {
                        ov.put_value(M_EVENT_INDEX.into(), &index);
                        done.batches.push(EventBatch {
                            index,
                            prev_index: event_index,
                            term,
                            at: cmd.at,
                            changes,
                        });
                        event_index = index;
                    }
                    results.push(CommandResult(out));
                }
            }
        }
        let writes = ov.writes;
        drop(mem);
        let mut mem = self.mem_mut();
        write_all(&mut mem.kv, writes);
        for b in done.batches {
            for c in &b.changes {
                mem.indexes.apply(c);
            }
            let b = Arc::new(b);
            mem.push_history(b.clone(), self.history_window, self.history_bytes);
            let _ = self.events.send(b);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A consistent view: apply runs on this same task, so nothing changes
        // between reading the applied state and copying the map.
        let (last_applied, membership) = self.applied_state().await.unwrap_or_default();
        Builder {
            dir: self.dir.clone(),
            view: self.view(),
            last_applied,
            membership,
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut kv = decode_snapshot(&bytes)?;
        if let Some(applied) = &meta.last_log_id {
            kv.insert(M_APPLIED, codec::encode(applied));
        }
        kv.insert(M_MEMBERSHIP, codec::encode(&meta.last_membership));
        // Durable before openraft purges the log behind it.
        let dir = self.dir.clone();
        let m = meta.clone();
        let current = self.current.clone();
        tokio::task::spawn_blocking(move || save_snapshot(&current, &dir, &m, &bytes))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.dedup = Dedup::load(&kv)?;
        // The history before the snapshot is not in it: watchers behind it relist.
        let fresh = Mem::load(kv)?;
        *self.mem_mut() = fresh;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        if self.current.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Ok(None);
        }
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, e))??;
        Ok(read.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests;
