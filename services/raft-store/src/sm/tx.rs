//! Staging and applying one transaction: pending writes read through before
//! the map, remembered outcomes for retried requests, name claims.

use super::*;

/// Pending key writes (`None` deletes).
pub(super) type Writes = BTreeMap<String, Option<Vec<u8>>>;
/// Reads a key through pending writes.
pub(super) type ReadFn<'a> = dyn Fn(&Writes, &str) -> Result<Option<Vec<u8>>, StorageError> + 'a;

/// Pending writes of one `apply` call, read through before the map.
pub(super) struct Overlay<'a> {
    pub(super) kv: &'a Kv,
    /// The indexes of `kv` (not of `writes`), for `Op::NoneMatch`; without
    /// them it reads the whole kind.
    pub(super) indexes: Option<&'a Indexes>,
    pub(super) writes: Writes,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(kv: &'a Kv) -> Self {
        Overlay {
            kv,
            indexes: None,
            writes: BTreeMap::new(),
        }
    }

    pub(super) fn with_indexes(kv: &'a Kv, indexes: &'a Indexes) -> Self {
        Overlay {
            indexes: Some(indexes),
            ..Overlay::new(kv)
        }
    }

    /// The IDs of `kind` that may match `filter`, as of the map plus these
    /// writes and `staged` (a superset: the caller reads and checks each).
    fn candidates(&self, staged: &Writes, kind: Kind, filter: &ListFilter) -> Vec<String> {
        let prefix = obj_prefix(kind);
        let mut ids: std::collections::BTreeSet<String> = match self.indexes.and_then(|ix| ix.candidates(kind, filter))
        {
            Some(ids) => ids.iter().map(|id| id.to_string()).collect(),
            None => self
                .kv
                .scan_prefix(&prefix)
                .map(|(k, _)| k[prefix.len()..].to_string())
                .collect(),
        };
        for k in self.writes.keys().chain(staged.keys()) {
            if let Some(id) = k.strip_prefix(prefix.as_str()) {
                ids.insert(id.to_string());
            }
        }
        ids.into_iter().collect()
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(self.kv.get(key).map(|v| v.to_vec()))
    }

    pub(super) fn get_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e)),
        }
    }

    pub(super) fn put_value<T: Serialize>(&mut self, key: String, v: &T) {
        self.writes.insert(key, Some(codec::encode(v)));
    }

    pub(super) fn remove(&mut self, key: String) {
        self.writes.insert(key, None);
    }
}

/// Applies pending writes to the map.
pub(super) fn write_all(kv: &mut Kv, writes: Writes) {
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
pub(super) struct Remembered {
    pub(super) index: u64,
    pub(super) term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) err: Option<ShoalError>,
}

/// The change batches one `apply` call made so far, in index order (on top of [`Mem`]'s history).
#[derive(Default)]
pub(super) struct Applied {
    pub(super) batches: Vec<EventBatch>,
}

impl Applied {
    pub(super) fn batch_at<'a>(&'a self, mem: &'a Mem, index: u64) -> Option<&'a EventBatch> {
        match self.batches.binary_search_by_key(&index, |b| b.index) {
            Ok(i) => Some(&self.batches[i]),
            Err(_) => mem.batch_at(index),
        }
    }
}

/// The outcome a retried transaction gets: the same index and term, and its
/// records as that entry wrote them (as they are now, once that history is gone).
pub(super) fn recall(
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
        let Some((kind, id)) = op.target() else { continue };
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
pub(super) fn apply_tx(
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

pub(super) type Staged = (Writes, TxOutcome, Vec<Change>);

/// Validates a transaction against the current state and returns its writes.
pub(super) fn stage_tx(
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
            Op::Exists { kind, id } => {
                if read_rec(&staged, *kind, id)?.is_none() {
                    return Ok(Err(ShoalError::not_found(format!("{kind} {id} not found"))));
                }
            }
            Op::NoneMatch { kind, filter } => {
                for id in ov.candidates(&staged, *kind, filter) {
                    if let Some(rec) = read_rec(&staged, *kind, &id)? {
                        if filter.matches(&rec) {
                            return Ok(Err(ShoalError::new(
                                ErrorCode::InUse,
                                format!("{kind} {id} refers to what this write removes"),
                            )));
                        }
                    }
                }
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
pub(super) fn claim_name(
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
