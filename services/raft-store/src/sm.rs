//! The replicated state machine: objects, unique-name index, change-feed
//! history and applied-request ids, all in the sled tree `sm`.
//!
//! Applying is deterministic: it depends only on the log entries (which carry
//! the proposer's timestamp), so every replica reaches the same state.
//!
//! Key layout (all keys are UTF-8):
//! - `o/<kind>/<id>`      → [`Record`] JSON
//! - `n/<kind>/<name>`    → id (services and networks: unique names)
//! - `e/<index:020>`      → [`EventBatch`] JSON (history retained for [`HISTORY_WINDOW`] indexes)
//! - `r/<request id>`     → the transaction's result (so a retried request applies once)
//! - `q/<index:020>/<id>` → "" (prunes `r/` after [`DEDUP_WINDOW`] indexes)
//! - `m/applied`, `m/membership`, `m/event_index` → state machine metadata

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use shoal_shared::store::*;
use shoal_shared::{ErrorCode, ShoalError};
use tokio::sync::mpsc;

use crate::codec;
use crate::typ::*;

/// Change-feed history kept for watchers that missed events (in log indexes).
pub const HISTORY_WINDOW: u64 = 50_000;
/// How long (in log indexes) a request id is remembered for exactly-once retries.
pub const DEDUP_WINDOW: u64 = 50_000;

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
fn ev_key(index: u64) -> String {
    format!("e/{index:020}")
}
fn req_key(id: &str) -> String {
    format!("r/{id}")
}
fn reqidx_key(index: u64, id: &str) -> String {
    format!("q/{index:020}/{id}")
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

/// Read access to the state machine for the store API (get, list, history).
#[derive(Clone)]
pub struct Reader {
    tree: sled::Tree,
    lock: Arc<RwLock<()>>,
}

impl Reader {
    fn get_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ShoalError> {
        match self.tree.get(key).map_err(|e| ShoalError::internal(e.to_string()))? {
            None => Ok(None),
            Some(v) => codec::decode(&v)
                .map(Some)
                .map_err(|e| ShoalError::internal(format!("corrupt {key}: {e}"))),
        }
    }

    pub fn event_index(&self) -> Result<u64, ShoalError> {
        Ok(self.get_value::<u64>(M_EVENT_INDEX)?.unwrap_or(0))
    }

    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>, ShoalError> {
        let _g = self.lock.read().unwrap_or_else(|p| p.into_inner());
        self.get_value(&obj_key(kind, id))
    }

    /// A consistent list of `kinds` and the feed position it reflects.
    pub fn list(&self, kinds: &[Kind], filter: &ListFilter) -> Result<ListResult, ShoalError> {
        let _g = self.lock.read().unwrap_or_else(|p| p.into_inner());
        let mut records = Vec::new();
        for &kind in kinds {
            // Narrow the scan to one id prefix when that is the only id criterion.
            let prefix = match filter.id_prefixes.as_slice() {
                [one] => format!("{}{one}", obj_prefix(kind)),
                _ => obj_prefix(kind),
            };
            for kv in self.tree.scan_prefix(prefix.as_bytes()) {
                let (_, v) = kv.map_err(|e| ShoalError::internal(e.to_string()))?;
                let rec: Record = codec::decode(&v).map_err(|e| ShoalError::internal(e.to_string()))?;
                if filter.matches(&rec) {
                    records.push(rec);
                }
            }
        }
        Ok(ListResult {
            event_index: self.event_index()?,
            records,
        })
    }

    /// History after `after`; `compacted` when it no longer reaches back that far.
    pub fn events(&self, after: u64, limit: usize) -> Result<EventsResult, ShoalError> {
        let _g = self.lock.read().unwrap_or_else(|p| p.into_inner());
        let head = self.event_index()?;
        let mut batches = Vec::new();
        if after < head {
            for kv in self
                .tree
                .range(ev_key(after + 1).into_bytes()..ev_key(u64::MAX).into_bytes())
            {
                let (_, v) = kv.map_err(|e| ShoalError::internal(e.to_string()))?;
                let b: EventBatch = codec::decode(&v).map_err(|e| ShoalError::internal(e.to_string()))?;
                batches.push(b);
                if batches.len() >= limit.max(1) {
                    break;
                }
            }
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

/// Pending key writes (`None` deletes).
type Writes = BTreeMap<String, Option<Vec<u8>>>;
/// Reads a key through pending writes.
type ReadFn<'a> = dyn Fn(&Writes, &str) -> Result<Option<Vec<u8>>, StorageError> + 'a;

/// Pending writes of one `apply` call, read through before sled.
struct Overlay<'a> {
    tree: &'a sled::Tree,
    writes: Writes,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            writes: BTreeMap::new(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(self
            .tree
            .get(key)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .map(|v| v.to_vec()))
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

    fn put_raw(&mut self, key: String, v: Vec<u8>) {
        self.writes.insert(key, Some(v));
    }

    fn remove(&mut self, key: String) {
        self.writes.insert(key, None);
    }

    /// Keys in `[from, to)` as seen through the overlay.
    fn keys_between(&self, from: &str, to: &str) -> Result<Vec<String>, StorageError> {
        let mut keys: std::collections::BTreeSet<String> = self
            .tree
            .range(from.as_bytes()..to.as_bytes())
            .keys()
            .map(|k| k.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        for (k, v) in self.writes.range(from.to_string()..to.to_string()) {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }

    fn into_batch(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => b.insert(k.into_bytes(), v),
                None => b.remove(k.into_bytes()),
            }
        }
        b
    }
}

/// What is remembered of a transaction, for exactly-once retries: where it
/// committed, or why it was refused. (The records themselves are in the
/// change history at that index; keeping a second copy here would double
/// what every write costs.)
#[derive(Serialize, Deserialize)]
struct Remembered {
    index: u64,
    term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    err: Option<ShoalError>,
}

/// The outcome a retried transaction gets: the same index and term, and its
/// records as that entry wrote them (as they are now, once that history is gone).
fn recall(ov: &Overlay<'_>, tx: &TxRequest, r: Remembered) -> Result<Result<TxOutcome, ShoalError>, StorageError> {
    if let Some(err) = r.err {
        return Ok(Err(err));
    }
    let batch: Option<EventBatch> = ov.get_value(&ev_key(r.index))?;
    let mut changes: Vec<Option<Record>> = batch
        .map(|b| b.changes.into_iter().map(|c| Some(c.record)).collect())
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

/// Applies one transaction at `index`; all of its ops or none.
fn apply_tx(
    ov: &mut Overlay<'_>,
    tx: &TxRequest,
    index: u64,
    term: u64,
    at: DateTime<Utc>,
    changes: &mut Vec<Change>,
) -> Result<Result<TxOutcome, ShoalError>, StorageError> {
    if let Some(prev) = ov.get_value::<Remembered>(&req_key(&tx.request_id))? {
        return recall(ov, tx, prev);
    }
    let result = stage_tx(ov, tx, index, term, at)?;
    let err = match result {
        Ok((staged, outcome, mut tx_changes)) => {
            for (k, v) in staged {
                ov.writes.insert(k, v);
            }
            changes.append(&mut tx_changes);
            ov.put_value(req_key(&tx.request_id), &Remembered { index, term, err: None });
            ov.put_raw(reqidx_key(index, &tx.request_id), Vec::new());
            return Ok(Ok(outcome));
        }
        Err(e) => e,
    };
    ov.put_value(
        req_key(&tx.request_id),
        &Remembered {
            index,
            term,
            err: Some(err.clone()),
        },
    );
    ov.put_raw(reqidx_key(index, &tx.request_id), Vec::new());
    Ok(Err(err))
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

/// Removes `prefix<index:020>...` keys older than `floor`.
fn prune(ov: &mut Overlay<'_>, prefix: &str, floor: u64) -> Result<(), StorageError> {
    if floor == 0 {
        return Ok(());
    }
    for key in ov.keys_between(prefix, &format!("{prefix}{floor:020}"))? {
        if let Some(id) = key
            .strip_prefix("q/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, id)| id.to_string())
        {
            ov.remove(req_key(&id));
        }
        ov.remove(key);
    }
    Ok(())
}

/// Snapshot file contents: every key of the state machine.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    entries: Vec<(String, serde_bytes::ByteBuf)>,
}

pub struct StateMachine {
    db: sled::Db,
    tree: sled::Tree,
    snap: sled::Tree,
    lock: Arc<RwLock<()>>,
    events: mpsc::UnboundedSender<EventBatch>,
    history_window: u64,
    dedup_window: u64,
}

impl StateMachine {
    pub fn open(db: &sled::Db, events: mpsc::UnboundedSender<EventBatch>) -> Result<StateMachine, sled::Error> {
        Ok(StateMachine {
            db: db.clone(),
            tree: db.open_tree("sm")?,
            snap: db.open_tree("snapshot")?,
            lock: Arc::new(RwLock::new(())),
            events,
            history_window: HISTORY_WINDOW,
            dedup_window: DEDUP_WINDOW,
        })
    }

    /// Smaller retention windows, for tests. Every replica of a cluster must
    /// use the same values, or their states diverge.
    #[cfg(test)]
    fn with_windows(mut self, history: u64, dedup: u64) -> StateMachine {
        self.history_window = history;
        self.dedup_window = dedup;
        self
    }

    pub fn reader(&self) -> Reader {
        Reader {
            tree: self.tree.clone(),
            lock: self.lock.clone(),
        }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        Overlay::new(&self.tree).get_value(key)
    }

    fn dump(&self) -> Result<SnapshotData, StorageError> {
        let _g = self.lock.read().unwrap_or_else(|p| p.into_inner());
        let mut entries = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(|e| sm_err(ErrorVerb::Read, e))?;
            entries.push((
                String::from_utf8_lossy(&k).into_owned(),
                serde_bytes::ByteBuf::from(v.to_vec()),
            ));
        }
        Ok(SnapshotData { entries })
    }
}

pub struct Builder {
    snap: sled::Tree,
    db: sled::Db,
    data: Option<SnapshotData>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = self.data.take().unwrap_or(SnapshotData { entries: Vec::new() });
        let bytes = codec::encode(&data);
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
        save_snapshot(&self.db, &self.snap, &meta, &bytes).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(bytes)),
        })
    }
}

async fn save_snapshot(
    db: &sled::Db,
    snap: &sled::Tree,
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let mut b = sled::Batch::default();
    b.insert("meta", codec::encode(meta));
    b.insert("data", bytes);
    snap.apply_batch(b).map_err(|e| sm_err(ErrorVerb::Write, e))?;
    db.flush_async().await.map_err(|e| sm_err(ErrorVerb::Write, e))?;
    Ok(())
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
        let mut ov = Overlay::new(&self.tree);
        let mut results = Vec::new();
        let mut batches = Vec::new();
        let mut event_index: u64 = ov.get_value(M_EVENT_INDEX)?.unwrap_or(0);
        for entry in entries {
            let index = entry.log_id.index;
            let term = entry.log_id.leader_id.term;
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
                    for tx in &cmd.txs {
                        out.push(apply_tx(&mut ov, tx, index, term, cmd.at, &mut changes)?);
                    }
                    if !changes.is_empty() {
                        let batch = EventBatch {
                            index,
                            prev_index: event_index,
                            term,
                            at: cmd.at,
                            changes,
                        };
                        ov.put_value(ev_key(index), &batch);
                        ov.put_value(M_EVENT_INDEX.into(), &index);
                        event_index = index;
                        batches.push(batch);
                    }
                    prune(&mut ov, "e/", index.saturating_sub(self.history_window))?;
                    prune(&mut ov, "q/", index.saturating_sub(self.dedup_window))?;
                    results.push(CommandResult(out));
                }
            }
        }
        let batch = ov.into_batch();
        {
            let _g = self.lock.write().unwrap_or_else(|p| p.into_inner());
            self.tree.apply_batch(batch).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        for b in batches {
            let _ = self.events.send(b);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Make the state machine durable up to what the snapshot will cover,
        // so the log may be purged behind it.
        if let Err(e) = self.db.flush_async().await {
            tracing::error!(error = %e, "flush before snapshot");
        }
        let (last_applied, membership) = self.applied_state().await.unwrap_or_default();
        Builder {
            snap: self.snap.clone(),
            db: self.db.clone(),
            data: self.dump().ok(),
            last_applied,
            membership,
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
        let data: SnapshotData = codec::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let mut b = sled::Batch::default();
        for kv in self.tree.iter() {
            let (k, _) = kv.map_err(|e| sm_err(ErrorVerb::Read, e))?;
            b.remove(k);
        }
        for (k, v) in data.entries {
            b.insert(k.into_bytes(), v.into_vec());
        }
        if let Some(applied) = &meta.last_log_id {
            b.insert(M_APPLIED, codec::encode(applied));
        }
        b.insert(M_MEMBERSHIP, codec::encode(&meta.last_membership));
        {
            let _g = self.lock.write().unwrap_or_else(|p| p.into_inner());
            self.tree.apply_batch(b).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        save_snapshot(&self.db, &self.snap, meta, &bytes).await?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let meta = self.snap.get("meta").map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let data = self.snap.get("data").map_err(|e| sm_err(ErrorVerb::Read, e))?;
        match (meta, data) {
            (Some(m), Some(d)) => Ok(Some(Snapshot {
                meta: codec::decode(&m).map_err(|e| sm_err(ErrorVerb::Read, e))?,
                snapshot: Box::new(std::io::Cursor::new(d.to_vec())),
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
    use serde_json::json;

    use super::*;

    fn open() -> (tempfile::TempDir, StateMachine, mpsc::UnboundedReceiver<EventBatch>) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).temporary(true).open().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        (dir, StateMachine::open(&db, tx).unwrap(), rx)
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
            ops,
        }
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
