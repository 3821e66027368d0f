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

/// Pending key writes (`None` deletes).
type Writes = BTreeMap<String, Option<Vec<u8>>>;
/// Reads a key through pending writes.
type ReadFn<'a> = dyn Fn(&Writes, &str) -> Result<Option<Vec<u8>>, StorageError> + 'a;

/// Pending writes of one `apply` call, read through before the map.
struct Overlay<'a> {
    kv: &'a Kv,
    writes: Writes,
}

impl<'a> Overlay<'a> {
    fn new(kv: &'a Kv) -> Self {
        Overlay {
            kv,
            writes: BTreeMap::new(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(self.kv.get(key).map(|v| v.to_vec()))
    }

    fn get_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e)),
        }
    }

    fn put_value<T: Serialize>(&mut self, key: String, v: &T) {
        self.writes.insert(key, Some(codec::encode(v)));
    }

    fn remove(&mut self, key: String) {
        self.writes.insert(key, None);
    }
}

/// Applies pending writes to the map.
fn write_all(kv: &mut Kv, writes: Writes) {
    for (k, v) in writes {
        match v {
            Some(v) => kv.insert(&k, v),
            None => kv.remove(&k),
        }
    }
}

/// What is remembered of a transaction, for exactly-once retries: where it
/// committed, or why it was refused. (The records themselves are in the
/// change history at that index; keeping a second copy here would double
/// what every write costs.)
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    index: u64,
    term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    err: Option<ShoalError>,
}

/// The change batches one `apply` call made so far, in index order (on top of [`Mem`]'s history).
#[derive(Default)]
struct Applied {
    batches: Vec<EventBatch>,
}

impl Applied {
    fn batch_at<'a>(&'a self, mem: &'a Mem, index: u64) -> Option<&'a EventBatch> {
        match self.batches.binary_search_by_key(&index, |b| b.index) {
            Ok(i) => Some(&self.batches[i]),
            Err(_) => mem.batch_at(index),
        }
    }
}

/// The outcome a retried transaction gets: the same index and term, and its
/// records as that entry wrote them (as they are now, once that history is gone).
fn recall(
    ov: &Overlay<'_>,
    history: Option<&EventBatch>,
    tx: &TxRequest,
    r: Remembered,
) -> Result<Result<TxOutcome, ShoalError>, StorageError> {
    if let Some(err) = r.err {
        return Ok(Err(err));
    }
    let mut changes: Vec<Option<Record>> = history
        .map(|b| b.changes.iter().map(|c| Some(c.record.clone())).collect())
        .unwrap_or_default();
    let mut records = Vec::with_capacity(tx.ops.len());
    for op in &tx.ops {
        let (kind, id) = match op {
            Op::Create { record } | Op::Update { record } => (record.kind, record.id.as_str()),
            Op::Delete { kind, id, .. } => (*kind, id.as_str()),
        };
        let from_history = changes
            .iter_mut()
            .find(|c| c.as_ref().is_some_and(|r| r.kind == kind && r.id == id))
            .and_then(Option::take);
        let rec = match from_history {
            Some(rec) => Some(rec),
            None => ov.get_value::<Record>(&obj_key(kind, id))?,
        };
        records.extend(rec);
    }
    Ok(Ok(TxOutcome {
        index: r.index,
        term: r.term,
        records,
    }))
}

/// Applies one transaction at `index`; all of its ops or none. Returns its
/// outcome and, unless it is a retry, what to remember of it.
fn apply_tx(
    ov: &mut Overlay<'_>,
    tx: &TxRequest,
    index: u64,
    term: u64,
    at: DateTime<Utc>,
    changes: &mut Vec<Change>,
) -> Result<(Result<TxOutcome, ShoalError>, Remembered), StorageError> {
    // Each replica's apply of a traced write is a span of the writer's trace.
    let span = tracing::info_span!("store.apply", index, ops = tx.ops.len());
    shoal_shared::envelope::continue_traceparent(&span, tx.trace.as_deref());
    let _entered = span.enter();
    match stage_tx(ov, tx, index, term, at)? {
        Ok((staged, outcome, mut tx_changes)) => {
            for (k, v) in staged {
                ov.writes.insert(k, v);
            }
            changes.append(&mut tx_changes);
            Ok((Ok(outcome), Remembered { index, term, err: None }))
        }
        Err(err) => {
            let r = Remembered {
                index,
                term,
                err: Some(err.clone()),
            };
            Ok((Err(err), r))
        }
    }
}

type Staged = (Writes, TxOutcome, Vec<Change>);

/// Validates a transaction against the current state and returns its writes.
fn stage_tx(
    ov: &Overlay<'_>,
    tx: &TxRequest,
    index: u64,
    term: u64,
    at: DateTime<Utc>,
) -> Result<Result<Staged, ShoalError>, StorageError> {
    if let Some(fence) = tx.fencing_term {
        if fence < term {
            return Ok(Err(ShoalError::new(
                ErrorCode::Fenced,
                format!("write fenced: decided in term {fence}, but the leader's term is now {term}"),
            )));
        }
    }
    // Reads see the overlay plus this transaction's own earlier writes.
    let mut staged: Writes = BTreeMap::new();
    let read = |staged: &Writes, key: &str| -> Result<Option<Vec<u8>>, StorageError> {
        match staged.get(key) {
            Some(v) => Ok(v.clone()),
            None => ov.get(key),
        }
    };
    let read_rec = |staged: &Writes, kind: Kind, id: &str| -> Result<Option<Record>, StorageError> {
        match read(staged, &obj_key(kind, id))? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e)),
        }
    };
    let mut records = Vec::with_capacity(tx.ops.len());
    let mut changes = Vec::with_capacity(tx.ops.len());
    for op in &tx.ops {
        match op {
            Op::Create { record } => {
                if record.id.is_empty() {
                    return Ok(Err(ShoalError::invalid("object id must not be empty")));
                }
                if read_rec(&staged, record.kind, &record.id)?.is_some() {
                    return Ok(Err(ShoalError::new(
                        ErrorCode::AlreadyExists,
                        format!("{} {} already exists", record.kind, record.id),
                    )));
                }
                if let Some(err) = claim_name(&mut staged, &read, record.kind, record.name.as_deref(), &record.id)? {
                    return Ok(Err(err));
                }
                let mut rec = record.clone();
                rec.version = index;
                rec.created_at = at;
                rec.updated_at = at;
                staged.insert(obj_key(rec.kind, &rec.id), Some(codec::encode(&rec)));
                records.push(rec.clone());
                changes.push(Change {
                    action: Action::Create,
                    record: rec,
                    trace: tx.trace.clone(),
                });
            }
            Op::Update { record } => {
                let Some(cur) = read_rec(&staged, record.kind, &record.id)? else {
                    return Ok(Err(ShoalError::not_found(format!(
                        "{} {} not found",
                        record.kind, record.id
                    ))));
                };
                if cur.version != record.version {
                    return Ok(Err(ShoalError::new(
                        ErrorCode::StaleVersion,
                        format!(
                            "update out of sequence: {} {} is at version {}, not {}",
                            record.kind, record.id, cur.version, record.version
                        ),
                    )));
                }
                if cur.name != record.name {
                    if let Some(err) = claim_name(&mut staged, &read, record.kind, record.name.as_deref(), &record.id)?
                    {
                        return Ok(Err(err));
                    }
                    if let (true, Some(old)) = (record.kind.unique_names(), &cur.name) {
                        staged.insert(name_key(record.kind, old), None);
                    }
                }
                let mut rec = record.clone();
                rec.version = index;
                rec.created_at = cur.created_at;
                rec.updated_at = at;
                staged.insert(obj_key(rec.kind, &rec.id), Some(codec::encode(&rec)));
                records.push(rec.clone());
                changes.push(Change {
                    action: Action::Update,
                    record: rec,
                    trace: tx.trace.clone(),
                });
            }
            Op::Delete { kind, id, version } => {
                let Some(cur) = read_rec(&staged, *kind, id)? else {
                    return Ok(Err(ShoalError::not_found(format!("{kind} {id} not found"))));
                };
                if let Some(v) = version {
                    if *v != cur.version {
                        return Ok(Err(ShoalError::new(
                            ErrorCode::StaleVersion,
                            format!(
                                "update out of sequence: {kind} {id} is at version {}, not {v}",
                                cur.version
                            ),
                        )));
                    }
                }
                if let (true, Some(name)) = (kind.unique_names(), &cur.name) {
                    staged.insert(name_key(*kind, name), None);
                }
                staged.insert(obj_key(*kind, id), None);
                records.push(cur.clone());
                changes.push(Change {
                    action: Action::Delete,
                    record: cur,
                    trace: tx.trace.clone(),
                });
            }
        }
    }
    Ok(Ok((staged, TxOutcome { index, term, records }, changes)))
}

/// Reserves `name` for `id` when the kind has unique names; an error if taken.
fn claim_name(
    staged: &mut Writes,
    read: &ReadFn<'_>,
    kind: Kind,
    name: Option<&str>,
    id: &str,
) -> Result<Option<ShoalError>, StorageError> {
    let (true, Some(name)) = (kind.unique_names(), name) else {
        return Ok(None);
    };
    let key = name_key(kind, name);
    if let Some(owner) = read(staged, &key)? {
        if owner != id.as_bytes() {
            return Ok(Some(ShoalError::new(
                ErrorCode::NameConflict,
                format!("{kind} name {name:?} conflicts with an existing object"),
            )));
        }
    }
    staged.insert(key, Some(id.as_bytes().to_vec()));
    Ok(None)
}

/// Snapshot contents (as sent to peers): every key of the state machine.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    entries: Vec<(String, serde_bytes::ByteBuf)>,
}

/// Encodes a map as [`SnapshotData`] without copying it first.
struct SnapshotRef<'a>(&'a Kv);

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Entries<'a>(&'a Kv);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(k, v)| (k, serde_bytes::Bytes::new(v))))
            }
        }
        let mut st = s.serialize_struct("SnapshotData", 1)?;
        st.serialize_field("entries", &Entries(self.0))?;
        st.end()
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<Kv, StorageError> {
    let data: SnapshotData = codec::decode(bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    let mut kv = Kv::default();
    for (k, v) in data.entries {
        if LEGACY_PREFIXES.iter().any(|p| k.starts_with(p)) {
            continue;
        }
        kv.insert(&k, v.into_vec());
    }
    Ok(kv)
}

/// The replica's snapshot file in its data dir: `snapshot` holds the
/// latest; a new one is written to `snapshot.tmp`, fsynced, renamed over it,
/// and the directory fsynced.
///
/// Layout: `SHOALSN1 | meta length: u32 LE | meta (MessagePack) | data | crc32: u32 LE`
/// (the CRC covers everything before it; data is [`SnapshotData`]).
pub fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

const SNAP_MAGIC: &[u8; 8] = b"SHOALSN1";

/// Writes a snapshot durably (blocking) unless the file already holds a
/// later one; `current` (the file's meta) serializes writers.
fn save_snapshot(
    current: &Mutex<Option<SnapshotMeta>>,
    dir: &Path,
    meta: &SnapshotMeta,
    data: &[u8],
) -> std::io::Result<()> {
    let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
    if cur.as_ref().is_some_and(|c| c.last_log_id > meta.last_log_id) {
        return Ok(());
    }
    write_snapshot_file(dir, meta, data)?;
    *cur = Some(meta.clone());
    Ok(())
}

fn write_snapshot_file(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> std::io::Result<()> {
    let path = snapshot_file(dir);
    let tmp = dir.join("snapshot.tmp");
    let meta_bytes = codec::encode(meta);
    let mut crc = crc32fast::Hasher::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for part in [
        &SNAP_MAGIC[..],
        &(meta_bytes.len() as u32).to_le_bytes(),
        &meta_bytes,
        data,
    ] {
        crc.update(part);
        f.write_all(part)?;
    }
    f.write_all(&crc.finalize().to_le_bytes())?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the snapshot file: its meta and data, or `None` if there is none.
fn read_snapshot_file(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let path = snapshot_file(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(sm_err(ErrorVerb::Read, format!("{}: {e}", path.display()))),
    };
    let bad = |why: &str| sm_err(ErrorVerb::Read, format!("snapshot {}: {why}", path.display()));
    if bytes.len() < 16 || &bytes[..8] != SNAP_MAGIC {
        return Err(bad("not a shoal snapshot file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(bad("checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
    if 12 + meta_len > body.len() {
        return Err(bad("meta runs past the end"));
    }
    let meta: SnapshotMeta = codec::decode(&body[12..12 + meta_len]).map_err(|e| bad(&e.to_string()))?;
    Ok(Some((meta, body[12 + meta_len..].to_vec())))
}

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
        let mut ov = Overlay::new(&mem.kv);
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
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
    use serde_json::json;

    use super::*;

    fn open() -> (
        tempfile::TempDir,
        StateMachine,
        mpsc::UnboundedReceiver<Arc<EventBatch>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let sm = StateMachine::open(dir.path(), tx).unwrap();
        (dir, sm, rx)
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn entry(index: u64, txs: Vec<TxRequest>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command { at: at(), txs }),
        }
    }

    fn create(id: &str, name: Option<&str>) -> Op {
        let mut r = Record::blob(id, json!({ "n": id }));
        if let Some(n) = name {
            r.kind = Kind::Service;
            r.name = Some(n.into());
        }
        Op::Create { record: r }
    }

    fn tx(id: &str, ops: Vec<Op>) -> TxRequest {
        TxRequest {
            request_id: id.into(),
            fencing_term: None,
            trace: None,
            ops,
        }
    }

    fn task(id: &str, service: &str, node: &str) -> Record {
        let mut r = Record::blob(id, json!({ "n": id }));
        r.kind = Kind::Task;
        r.fields = [("service", service), ("node", node), ("desired-state", "running")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    fn service(id: &str, name: &str) -> Record {
        let mut r = Record::blob(id, json!({ "n": id }));
        r.kind = Kind::Service;
        r.name = Some(name.into());
        r
    }

    /// The indexes held equal those built from the records in the tree.
    fn assert_indexes_agree(sm: &StateMachine) {
        let records: Vec<Record> = sm
            .view()
            .scan_prefix("o/")
            .map(|(_, v)| codec::decode(v).unwrap())
            .collect();
        let mem = sm.mem.read().unwrap();
        assert_eq!(mem.indexes, Indexes::build(&records));
        assert_eq!(mem.indexes.len(), records.len());
    }

    fn ids_of(res: ListResult) -> Vec<String> {
        res.records.into_iter().map(|r| r.id).collect()
    }

    /// Applies creates of `services` services with `tasks` tasks each (on nodes n0, n1).
    async fn populate(sm: &mut StateMachine, services: usize, tasks: usize) {
        let mut ops = Vec::new();
        for s in 0..services {
            ops.push(Op::Create {
                record: service(&format!("s{s}"), &format!("web{s}")),
            });
            for t in 0..tasks {
                ops.push(Op::Create {
                    record: task(&format!("t{s}-{t}"), &format!("s{s}"), &format!("n{}", t % 2)),
                });
            }
        }
        sm.apply(vec![entry(1, vec![tx("populate", ops)])]).await.unwrap();
    }

    #[tokio::test]
    async fn lists_by_name_and_field_follow_updates_and_deletes() {
        let (_d, mut sm, _e) = open();
        populate(&mut sm, 3, 2).await;
        let r = sm.reader();
        let by_service = |s: &str| ListFilter::default().field("service", s);
        assert_eq!(
            ids_of(r.list(&[Kind::Task], &by_service("s1")).unwrap()),
            ["t1-0", "t1-1"]
        );
        assert_eq!(
            ids_of(r.list(&[Kind::Task], &by_service("s1").field("node", "n1")).unwrap()),
            ["t1-1"]
        );
        assert_eq!(
            ids_of(
                r.list(&[Kind::Service], &ListFilter::default().name("web2").name("web0"))
                    .unwrap()
            ),
            ["s0", "s2"]
        );
        assert_indexes_agree(&sm);

        // A task moves to another node and service, a service is renamed, one is deleted.
        let mut moved = task("t1-0", "s2", "n1");
        moved.version = 1;
        let mut renamed = service("s0", "front");
        renamed.version = 1;
        let res = sm
            .apply(vec![entry(
                2,
                vec![tx(
                    "2",
                    vec![
                        Op::Update { record: moved },
                        Op::Update { record: renamed },
                        Op::Delete {
                            kind: Kind::Task,
                            id: "t2-1".into(),
                            version: None,
                        },
                    ],
                )],
            )])
            .await
            .unwrap();
        assert!(res[0].0[0].is_ok(), "{:?}", res[0].0[0]);
        assert_eq!(ids_of(r.list(&[Kind::Task], &by_service("s1")).unwrap()), ["t1-1"]);
        assert_eq!(
            ids_of(r.list(&[Kind::Task], &by_service("s2")).unwrap()),
            ["t1-0", "t2-0"]
        );
        assert_eq!(
            ids_of(
                r.list(&[Kind::Task], &ListFilter::default().field("node", "n1"))
                    .unwrap()
            ),
            ["t0-1", "t1-0", "t1-1"]
        );
        let by_name = |n: &str| ids_of(r.list(&[Kind::Service], &ListFilter::default().name(n)).unwrap());
        assert!(by_name("web0").is_empty());
        assert_eq!(by_name("front"), ["s0"]);
        assert_indexes_agree(&sm);
    }

    #[tokio::test]
    async fn lists_by_name_field_or_id_prefixes_read_only_what_they_return() {
        let (_d, mut sm, _e) = open();
        populate(&mut sm, 3, 2).await;
        // Records a whole-kind scan would trip over: lists that read them fail.
        for k in ["o/task/zzz", "o/service/zzz", "o/node/zzz"] {
            sm.mem_mut().kv.insert(k, b"not a record".to_vec());
        }
        let r = sm.reader();
        assert!(
            r.list(&[Kind::Task], &ListFilter::default()).is_err(),
            "a full scan reads it"
        );
        let tasks = r
            .list(&[Kind::Task], &ListFilter::default().field("service", "s0"))
            .unwrap();
        assert_eq!(ids_of(tasks), ["t0-0", "t0-1"]);
        let svc = r.list(&[Kind::Service], &ListFilter::default().name("web1")).unwrap();
        assert_eq!(ids_of(svc), ["s1"]);
        // Several id prefixes: each scanned alone, a prefix covered by another once.
        let f = ListFilter::default().id_prefix("t2").id_prefix("t0-1").id_prefix("t0");
        assert_eq!(
            ids_of(r.list(&[Kind::Task], &f).unwrap()),
            ["t0-0", "t0-1", "t2-0", "t2-1"]
        );
        let f = ListFilter::default().id_prefix("s1").id_prefix("n");
        assert_eq!(ids_of(r.list(&[Kind::Service, Kind::Node], &f).unwrap()), ["s1"]);
        assert_eq!(r.get(Kind::Service, "s2").unwrap().map(|r| r.id), Some("s2".into()));
    }

    #[tokio::test]
    async fn indexes_come_back_on_reopen_and_with_an_installed_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let open_at = || {
            let (tx, rx) = mpsc::unbounded_channel();
            (StateMachine::open(dir.path(), tx).unwrap(), rx)
        };
        let snap = {
            let (mut sm, _e) = open_at();
            populate(&mut sm, 4, 3).await;
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
        };
        // Reopened: the state is the snapshot file's.
        let (sm, _e) = open_at();
        assert_indexes_agree(&sm);
        let f = ListFilter::default().field("service", "s3");
        assert_eq!(
            ids_of(sm.reader().list(&[Kind::Task], &f).unwrap()),
            ["t3-0", "t3-1", "t3-2"]
        );

        // A replica with other objects installs the snapshot: its indexes are the snapshot's.
        let (_d2, mut other, _e2) = open();
        other
            .apply(vec![entry(
                1,
                vec![tx(
                    "x",
                    vec![
                        Op::Create {
                            record: task("t9", "s3", "n0"),
                        },
                        Op::Create {
                            record: service("s9", "web3"),
                        },
                    ],
                )],
            )])
            .await
            .unwrap();
        other.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        assert_indexes_agree(&other);
        assert_eq!(
            ids_of(other.reader().list(&[Kind::Task], &f).unwrap()),
            ["t3-0", "t3-1", "t3-2"]
        );
        let f = ListFilter::default().name("web3");
        assert_eq!(ids_of(other.reader().list(&[Kind::Service], &f).unwrap()), ["s3"]);
    }

    #[tokio::test]
    async fn request_ids_and_history_stay_bounded_under_churn() {
        // Create and delete objects, one small transaction per request, as a
        // busy cluster does: what is held stays within the configured bytes.
        let (_d, sm, _e) = open();
        let dedup_bytes = 64 << 10;
        let history_bytes = 32 << 10;
        let mut sm = sm
            .with_windows(1_000_000, 1_000_000)
            .with_history_bytes(history_bytes)
            .with_dedup_bytes(dedup_bytes);
        let mut index = 0;
        for round in 0..20 {
            let mut entries = Vec::new();
            for i in 0..100 {
                index += 1;
                let txs = (0..4)
                    .map(|j| tx(&format!("c{round}-{i}-{j}"), vec![create(&format!("o{i}-{j}"), None)]))
                    .collect();
                entries.push(entry(index, txs));
            }
            for i in 0..100 {
                index += 1;
                let txs = (0..4)
                    .map(|j| {
                        tx(
                            &format!("d{round}-{i}-{j}"),
                            vec![Op::Delete {
                                kind: Kind::Blob,
                                id: format!("o{i}-{j}"),
                                version: None,
                            }],
                        )
                    })
                    .collect();
                entries.push(entry(index, txs));
            }
            let res = sm.apply(entries).await.unwrap();
            assert!(res.iter().all(|r| r.0.iter().all(Result::is_ok)));
            let per_entry = 4 * dedup_size(
                "c00-00-0",
                &Remembered {
                    index,
                    term: 1,
                    err: None,
                },
            );
            assert!(sm.dedup.bytes <= dedup_bytes + per_entry, "{} bytes", sm.dedup.bytes);
            assert!(sm.mem.read().unwrap().history_bytes <= history_bytes);
        }
        // 16,000 request ids went through; a few hundred are remembered, and
        // the keys in the tree are exactly those remembered.
        let held = sm.dedup.ids.len();
        assert!((100..=400).contains(&held), "{held} request ids held");
        let keys = sm.view().scan_prefix("d/").count();
        assert_eq!(keys, sm.dedup.at.len());
        assert_eq!(Dedup::load(&sm.view()).unwrap().ids.len(), held);
        // The most recent is still recalled, the oldest not.
        let res = sm
            .apply(vec![entry(
                index + 1,
                vec![
                    tx("d19-99-3", vec![create("again", None)]),
                    tx("c0-0-0", vec![create("o0-0", None)]),
                ],
            )])
            .await
            .unwrap();
        assert_eq!(res[0].0[0].as_ref().unwrap().index, index, "recalled");
        assert_eq!(res[0].0[1].as_ref().unwrap().index, index + 1, "applied anew");
        assert!(sm.view().scan_prefix("o/").count() <= 2);
    }

    #[tokio::test]
    async fn applies_transactions_and_chains_the_change_feed() {
        let (_d, mut sm, mut events) = open();
        let res = sm
            .apply(vec![
                entry(1, vec![tx("r1", vec![create("a", None), create("b", None)])]),
                entry(2, vec![tx("r2", vec![create("a", None)])]),
                entry(
                    3,
                    vec![tx(
                        "r3",
                        vec![Op::Delete {
                            kind: Kind::Blob,
                            id: "b".into(),
                            version: Some(1),
                        }],
                    )],
                ),
            ])
            .await
            .unwrap();
        let out = res[0].0[0].as_ref().unwrap();
        assert_eq!(out.index, 1);
        assert_eq!(out.records[0].version, 1);
        assert_eq!(out.records[0].created_at, at());
        let mut synced = out.records[0].clone();
        synced.sync_body();
        let body = synced.body.to_value();
        assert_eq!(body["Version"]["Index"], json!(1));
        assert_eq!(body["CreatedAt"], json!("2026-11-29T10:00:00.123456789Z"));
        assert_eq!(body["n"], json!("a"), "the object's own fields are untouched");
        assert_eq!(res[1].0[0].as_ref().unwrap_err().code, ErrorCode::AlreadyExists);
        assert!(res[2].0[0].is_ok());

        // Entry 2 changed nothing, so the feed goes 1 -> 3 with prev_index linking them.
        let b1 = events.recv().await.unwrap();
        let b3 = events.recv().await.unwrap();
        assert_eq!((b1.index, b1.prev_index, b1.changes.len()), (1, 0, 2));
        assert_eq!((b3.index, b3.prev_index), (3, 1));
        assert_eq!(b3.changes[0].action, Action::Delete);

        let r = sm.reader();
        let list = r.list(&[Kind::Blob], &ListFilter::default()).unwrap();
        assert_eq!(list.event_index, 3);
        assert_eq!(
            list.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        let hist = r.events(0, 10).unwrap();
        assert!(!hist.compacted);
        assert_eq!(hist.batches.iter().map(|b| b.index).collect::<Vec<_>>(), vec![1, 3]);
        assert!(r.events(3, 10).unwrap().batches.is_empty());
        assert_eq!(r.events(1, 10).unwrap().batches[0].index, 3);
    }

    #[tokio::test]
    async fn a_retried_request_applies_once_with_the_same_result() {
        let (_d, mut sm, mut events) = open();
        let first = sm
            .apply(vec![entry(1, vec![tx("same", vec![create("x", None)])])])
            .await
            .unwrap();
        let again = sm
            .apply(vec![entry(2, vec![tx("same", vec![create("x", None)])])])
            .await
            .unwrap();
        assert_eq!(first[0].0[0], again[0].0[0], "the retry must get the original outcome");
        assert!(again[0].0[0].is_ok());
        assert_eq!(events.recv().await.unwrap().index, 1);
        assert!(events.try_recv().is_err(), "the retry must not change anything");
    }

    #[tokio::test]
    async fn names_are_unique_per_kind_and_freed_on_delete() {
        let (_d, mut sm, _e) = open();
        let res = sm
            .apply(vec![
                entry(1, vec![tx("1", vec![create("s1", Some("web"))])]),
                entry(2, vec![tx("2", vec![create("s2", Some("web"))])]),
                entry(
                    3,
                    vec![tx(
                        "3",
                        vec![Op::Delete {
                            kind: Kind::Service,
                            id: "s1".into(),
                            version: None,
                        }],
                    )],
                ),
                entry(4, vec![tx("4", vec![create("s2", Some("web"))])]),
            ])
            .await
            .unwrap();
        assert_eq!(res[1].0[0].as_ref().unwrap_err().code, ErrorCode::NameConflict);
        assert!(res[3].0[0].is_ok(), "{:?}", res[3]);
    }

    #[tokio::test]
    async fn fencing_refuses_terms_older_than_the_entrys() {
        let (_d, mut sm, _e) = open();
        let mut e = entry(
            1,
            vec![
                tx("old", vec![create("a", None)]).fenced(1),
                tx("cur", vec![create("b", None)]).fenced(3),
            ],
        );
        e.log_id = LogId::new(CommittedLeaderId::new(3, 1), 1);
        let res = sm.apply(vec![e]).await.unwrap();
        assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::Fenced);
        assert!(res[0].0[1].is_ok());
    }

    #[tokio::test]
    async fn pruned_history_reports_compaction_and_old_request_ids_are_forgotten() {
        let (_d, sm, _e) = open();
        let mut sm = sm.with_windows(5, 5);
        let entries: Vec<_> = (1..=20)
            .map(|i| entry(i, vec![tx(&format!("r{i}"), vec![create(&format!("o{i}"), None)])]))
            .collect();
        sm.apply(entries).await.unwrap();
        let r = sm.reader();
        assert!(r.events(2, 100).unwrap().compacted, "history before index 15 is gone");
        let recent = r.events(17, 100).unwrap();
        assert!(!recent.compacted);
        assert_eq!(
            recent.batches.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![18, 19, 20]
        );
        // r1 is forgotten, so replaying it is a new transaction (which now conflicts).
        let res = sm
            .apply(vec![entry(21, vec![tx("r1", vec![create("o1", None)])])])
            .await
            .unwrap();
        assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::AlreadyExists);
        // r20 is remembered.
        let res = sm
            .apply(vec![entry(22, vec![tx("r20", vec![create("o20", None)])])])
            .await
            .unwrap();
        assert_eq!(res[0].0[0].as_ref().unwrap().index, 20);
    }

    #[tokio::test]
    async fn request_ids_survive_a_restart_and_the_history_restarts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let open_at = || {
            let (tx, rx) = mpsc::unbounded_channel();
            (StateMachine::open(dir.path(), tx).unwrap(), rx)
        };
        {
            let (mut sm, _e) = open_at();
            sm.apply(vec![
                entry(1, vec![tx("r1", vec![create("a", None)])]),
                entry(2, vec![tx("r2", vec![create("a", None)])]),
            ])
            .await
            .unwrap();
            assert!(!sm.reader().events(0, 10).unwrap().compacted);
            // The state machine is in memory: a restart finds it in the
            // snapshot file (and the log entries after it, replayed by openraft).
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        }
        let (mut sm, _e) = open_at();
        let r = sm.reader();
        assert_eq!(r.event_index(), 1, "the feed position is kept");
        assert!(r.events(0, 10).unwrap().compacted, "the history is not: relist");
        assert!(!r.events(1, 10).unwrap().compacted, "a watcher at the head is fine");
        let res = sm
            .apply(vec![entry(
                3,
                vec![tx("r1", vec![create("a", None)]), tx("r2", vec![create("a", None)])],
            )])
            .await
            .unwrap();
        let again = res[0].0[0].as_ref().expect("r1 is recalled, not applied again");
        assert_eq!((again.index, again.records[0].id.as_str()), (1, "a"));
        assert_eq!(res[0].0[1].as_ref().unwrap_err().code, ErrorCode::AlreadyExists);
    }

    #[tokio::test]
    async fn the_history_is_bounded_by_its_size_too() {
        let (_d, sm, _e) = open();
        let one = history_size(&EventBatch {
            index: 1,
            prev_index: 0,
            term: 1,
            at: at(),
            changes: vec![Change {
                action: Action::Create,
                record: Record::blob("o01", json!({ "n": "o01" })),
                trace: None,
            }],
        });
        // Room for three batches of one change each.
        let mut sm = sm.with_history_bytes(3 * one);
        let entries: Vec<_> = (1..=10)
            .map(|i| entry(i, vec![tx(&format!("r{i}"), vec![create(&format!("o{i:02}"), None)])]))
            .collect();
        sm.apply(entries).await.unwrap();
        let r = sm.reader();
        assert!(r.events(6, 100).unwrap().compacted, "batch 7 is gone");
        let kept = r.events(7, 100).unwrap();
        assert!(!kept.compacted);
        assert_eq!(kept.batches.iter().map(|b| b.index).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert_eq!(sm.mem.read().unwrap().history_bytes, 3 * one);
    }

    #[tokio::test]
    async fn a_request_repeated_within_one_entry_applies_once() {
        let (_d, mut sm, mut events) = open();
        let res = sm
            .apply(vec![entry(
                1,
                vec![tx("same", vec![create("x", None)]), tx("same", vec![create("x", None)])],
            )])
            .await
            .unwrap();
        assert_eq!(res[0].0[0], res[0].0[1]);
        assert!(res[0].0[1].is_ok());
        assert_eq!(events.recv().await.unwrap().changes.len(), 1);
    }

    #[tokio::test]
    async fn replicas_decide_alike_however_their_entries_are_grouped() {
        // Request ids leave the window as a function of the index, not of how
        // many entries one `apply` call got: two replicas, one applying entry
        // by entry and one all at once, must reach the same results and state.
        let entries = || -> Vec<Entry> {
            (1..=12)
                .map(|i| {
                    let id = format!("r{}", i % 4);
                    entry(i, vec![tx(&id, vec![create(&format!("o{i}"), None)])])
                })
                .collect()
        };
        let (_d1, one, _e1) = open();
        let mut one = one.with_windows(3, 3);
        let (_d2, all, _e2) = open();
        let mut all = all.with_windows(3, 3);
        let mut by_one = Vec::new();
        for e in entries() {
            by_one.extend(one.apply(vec![e]).await.unwrap());
        }
        let by_all = all.apply(entries()).await.unwrap();
        assert_eq!(by_one, by_all);
        let keys = |sm: &StateMachine| -> Vec<(String, Vec<u8>)> {
            sm.dump()
                .unwrap()
                .entries
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect()
        };
        assert_eq!(keys(&one), keys(&all));
        // r0 was applied at 4, 8 and 12: each time more than the window later.
        let indexes: Vec<u64> = [3usize, 7, 11]
            .iter()
            .map(|&i| by_one[i].0[0].as_ref().unwrap().index)
            .collect();
        assert_eq!(indexes, vec![4, 8, 12]);
    }

    #[tokio::test]
    async fn replicas_decide_alike_when_request_ids_are_bounded_by_size() {
        // Room for three entries' request ids: the fourth entry back is
        // forgotten, entry by entry, however the entries are grouped.
        let entries = || -> Vec<Entry> {
            (1..=12)
                .map(|i| {
                    let id = format!("r{}", i % 4);
                    entry(i, vec![tx(&id, vec![create(&format!("o{i}"), None)])])
                })
                .collect()
        };
        let room = 3 * dedup_size(
            "r0",
            &Remembered {
                index: 1,
                term: 1,
                err: None,
            },
        );
        let (_d1, one, _e1) = open();
        let mut one = one.with_dedup_bytes(room);
        let (_d2, all, _e2) = open();
        let mut all = all.with_dedup_bytes(room);
        let mut by_one = Vec::new();
        for e in entries() {
            by_one.extend(one.apply(vec![e]).await.unwrap());
        }
        let by_all = all.apply(entries()).await.unwrap();
        assert_eq!(by_one, by_all);
        assert_eq!(one.dump().unwrap().entries.len(), all.dump().unwrap().entries.len());
        for (a, b) in one
            .dump()
            .unwrap()
            .entries
            .iter()
            .zip(all.dump().unwrap().entries.iter())
        {
            assert_eq!(a, b);
        }
        let indexes: Vec<u64> = [3usize, 7, 11]
            .iter()
            .map(|&i| by_one[i].0[0].as_ref().unwrap().index)
            .collect();
        assert_eq!(indexes, vec![4, 8, 12], "each time applied anew");
        assert_eq!(one.dedup.ids.len(), 4);
    }

    #[tokio::test]
    async fn keys_of_the_earlier_layout_are_dropped_from_a_snapshot() {
        let keep = codec::encode(&Record::blob("keep", json!({})));
        let entries = [
            ("e/00000000000000000001", b"x".to_vec()),
            ("o/blob/keep", keep.clone()),
            ("q/00000000000000000001/req", b"x".to_vec()),
            ("r/req", b"x".to_vec()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_bytes::ByteBuf::from(v)))
        .collect();
        let bytes = codec::encode(&SnapshotData { entries });
        let (_d, mut sm, _e) = open();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 1)),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-1-0".into(),
        };
        sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(bytes)))
            .await
            .unwrap();
        let keys: Vec<String> = sm.view().iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, vec![M_APPLIED, M_MEMBERSHIP, "o/blob/keep"]);
    }

    #[tokio::test]
    async fn a_snapshot_installs_the_same_state_elsewhere() {
        let (_d, mut sm, _e) = open();
        sm.apply(vec![entry(
            1,
            vec![tx("1", vec![create("s1", Some("web")), create("b", None)])],
        )])
        .await
        .unwrap();
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let (_d2, mut other, _e2) = open();
        other.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        let (applied, _) = other.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
        let a = sm
            .reader()
            .list(&[Kind::Service, Kind::Blob], &ListFilter::default())
            .unwrap();
        let b = other
            .reader()
            .list(&[Kind::Service, Kind::Blob], &ListFilter::default())
            .unwrap();
        assert_eq!(a, b);
        // The name index came along: a second "web" is refused on the new replica too.
        let res = other
            .apply(vec![entry(2, vec![tx("2", vec![create("s2", Some("web"))])])])
            .await
            .unwrap();
        assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::NameConflict);
        assert!(other.get_current_snapshot().await.unwrap().is_some());
    }
}
