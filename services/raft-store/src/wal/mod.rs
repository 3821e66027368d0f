//! The replica's write-ahead log: the Raft log entries, the vote, the commit
//! index and the purge point, in preallocated segment files under
//! `<data-dir>/wal/`, as etcd's and SwarmKit's WAL keep them.
//!
//! - A segment is `<seq:016x>.wal`, preallocated (`posix_fallocate`) to
//!   [`SEGMENT_BYTES`]; the directory is fsynced after a segment is created or
//!   removed. Each segment starts with the vote, commit index and purge point
//!   as they were when it was opened, so older segments can go once the log is
//!   purged past their last entry.
//! - A record is `len: u32 LE | crc32: u32 LE | kind: u8 | payload` (`len`
//!   counts kind and payload, the CRC covers them); a zero length ends a
//!   segment's data (the rest is preallocated zeros).
//! - One flusher thread writes whatever is queued with one `pwrite` per
//!   segment and one `fdatasync` per file touched, then completes every
//!   waiter of that batch: an append is reported durable only after the
//!   `fdatasync` of the file holding it; so is a vote, a truncation and a purge.
//!   A commit index rides along with the next sync (losing it is harmless:
//!   entries are committed again by the leader).
//! - Truncations and purges are records too (the files are only appended to),
//!   replayed in order at open.
//!
//! Recovery at open: a segment's records are read until the first zero
//! length. A damaged record (length past the end, CRC mismatch, unknown kind)
//! in the last segment with no valid record anywhere after it is a torn
//! write: the tail from it on is zeroed, and the replica catches up from its
//! peers. Damage anywhere else (an earlier segment, or a valid record after
//! it) is corruption: [`Wal::open`] fails naming the file and offset.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Preallocated size of a segment (etcd's is 64 MiB too).
pub const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 8;

const K_ENTRY: u8 = 1;
const K_VOTE: u8 = 2;
const K_COMMITTED: u8 = 3;
const K_PURGED: u8 = 4;
const K_TRUNCATE: u8 = 5;

/// The WAL refused to open: damage that is not a torn tail, or an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal: {file}: corrupt record at offset {offset} ({reason}); {why}; refusing to start")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
        why: String,
    },
    #[error("wal: {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// Called once an operation is durable (or failed).
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Where an entry's bytes are: segment, offset of the entry bytes, length.
#[derive(Debug, Clone, Copy)]
struct Pos {
    seq: u64,
    offset: u64,
    len: u32,
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    capacity: u64,
    /// Highest entry index written to it.
    max_index: Option<u64>,
}

/// Bytes queued for one segment at one offset.
struct Chunk {
    seq: u64,
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Meta {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    current: u64,
    /// Next write offset in the current segment.
    offset: u64,
    entries: BTreeMap<u64, Pos>,
    meta: Meta,
    /// Queued, not yet taken by the flusher.
    pending: Vec<Arc<Chunk>>,
    /// Taken by the flusher, not yet written (readers look here too).
    writing: Vec<Arc<Chunk>>,
    waiters: Vec<Done>,
    failed: Option<String>,
    closed: bool,
}

struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    wake: Condvar,
}

/// The write-ahead log. Cheap to clone; the flusher stops when the last clone goes.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    _flusher: Arc<FlusherHandle>,
}

struct FlusherHandle {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn frame(kind: u8, payload: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = 1 + payload.iter().map(|p| p.len()).sum::<usize>();
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    for p in payload {
        h.update(p);
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.push(kind);
    for p in payload {
        out.extend_from_slice(p);
    }
}

/// One record parsed at an offset, or why not.
enum Parsed<'a> {
    Record { kind: u8, payload: &'a [u8], next: usize },
    End,
    Bad(String),
}

fn parse(buf: &[u8], at: usize) -> Parsed<'_> {
    let rest = &buf[at..];
    if rest.len() < HEADER {
        return if rest.iter().all(|&b| b == 0) {
            Parsed::End
        } else {
            Parsed::Bad("partial record header".into())
        };
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
    if len == 0 {
        return if crc == 0 {
            Parsed::End
        } else {
            Parsed::Bad("zero length with a checksum".into())
        };
    }
    if len > rest.len() - HEADER {
        return Parsed::Bad(format!("length {len} runs past the end of the file"));
    }
    let body = &rest[HEADER..HEADER + len];
    if crc32fast::hash(body) != crc {
        return Parsed::Bad("checksum mismatch".into());
    }
    let kind = body[0];
    if !(K_ENTRY..=K_TRUNCATE).contains(&kind) {
        return Parsed::Bad(format!("unknown record kind {kind}"));
    }
    Parsed::Record {
        kind,
        payload: &body[1..],
        next: at + HEADER + len,
    }
}

/// The offset of a valid record somewhere after `from`, if any.
fn valid_record_after(buf: &[u8], from: usize) -> Option<usize> {
    (from + 1..buf.len().saturating_sub(HEADER)).find(|&p| matches!(parse(buf, p), Parsed::Record { .. }))
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn u64_at(p: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(p.get(..8)?.try_into().ok()?))
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, replaying every segment.
    pub fn open(dir: &Path) -> Result<Wal, WalError> {
        Wal::open_with(dir, SEGMENT_BYTES)
    }

    /// As [`Wal::open`], with segments of `segment_bytes` (tests use small ones).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Wal, WalError> {
        let ioe = |p: &Path| {
            let p = p.to_path_buf();
            move |e| WalError::Io(p, e)
        };
        std::fs::create_dir_all(dir).map_err(ioe(dir))?;
        let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(ioe(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| seq_of(&e.path()).map(|s| (s, e.path())))
            .collect();
        paths.sort();
        // Leftover temporary files of a segment being created.
        for e in std::fs::read_dir(dir).map_err(ioe(dir))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }

        let mut st = State {
            segments: BTreeMap::new(),
            current: 0,
            offset: 0,
            entries: BTreeMap::new(),
            meta: Meta::default(),
            pending: Vec::new(),
            writing: Vec::new(),
            waiters: Vec::new(),
            failed: None,
            closed: false,
        };
        let last = paths.len().saturating_sub(1);
        for (i, (seq, path)) in paths.iter().enumerate() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(ioe(path))?;
            let buf = std::fs::read(path).map_err(ioe(path))?;
            let mut at = 0usize;
            let mut max_index = None;
            let end = loop {
                match parse(&buf, at) {
                    Parsed::End => break at,
                    Parsed::Record { kind, payload, next } => {
                        replay(&mut st, *seq, at, kind, payload, &mut max_index).map_err(|reason| {
                            WalError::Corrupt {
                                file: path.clone(),
                                offset: at as u64,
                                reason,
                                why: "the record is well formed but its contents are not".into(),
                            }
                        })?;
                        at = next;
                    }
                    Parsed::Bad(reason) => {
                        if i != last {
                            return Err(WalError::Corrupt {
                                file: path.clone(),
                                offset: at as u64,
                                reason,
                                why: "it is not in the last segment".into(),
                            });
                        }
                        if let Some(p) = valid_record_after(&buf, at) {
                            return Err(WalError::Corrupt {
                                file: path.clone(),
                                offset: at as u64,
                                reason,
                                why: format!("a valid record follows at offset {p}, so it is not a torn write"),
                            });
                        }
                        tracing::warn!(
                            file = %path.display(),
                            offset = at,
                            reason,
                            "wal: dropping a torn record at the end of the log"
                        );
                        break at;
                    }
                }
            };
            // Zero whatever follows the data (a torn tail), so later appends
            // never sit in front of old bytes.
            if let Some(last_nonzero) = buf.iter().rposition(|&b| b != 0) {
                if last_nonzero >= end {
                    let zeros = vec![0u8; last_nonzero + 1 - end];
                    file.write_all_at(&zeros, end as u64).map_err(ioe(path))?;
                    file.sync_data().map_err(ioe(path))?;
                }
            }
            let capacity = (buf.len() as u64).max(segment_bytes);
            st.segments.insert(
                *seq,
                Segment {
                    path: path.clone(),
                    file: Arc::new(file),
                    capacity,
                    max_index,
                },
            );
            st.current = *seq;
            st.offset = end as u64;
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segment_bytes,
            state: Mutex::new(st),
            wake: Condvar::new(),
        });
        {
            let mut st = shared.lock();
            if st.segments.is_empty() {
                let seq = 1;
                new_segment(&shared, &mut st, seq, 0).map_err(ioe(dir))?;
            }
        }
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("wal-flusher".into())
                .spawn(move || flusher(&shared))
                .map_err(ioe(dir))?
        };
        Ok(Wal {
            _flusher: Arc::new(FlusherHandle {
                shared: shared.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            shared,
        })
    }

    /// Queues entries (index, bytes), in index order; `done` runs once they are
    /// on the device. Entries at or after the first index replace those held.
    pub fn append(&self, entries: Vec<(u64, Vec<u8>)>, done: Done) {
        let mut st = self.shared.lock();
        if let Some(e) = &st.failed {
            let e = e.clone();
            drop(st);
            done(Err(io::Error::other(e)));
            return;
        }
        if let Some((first, _)) = entries.first() {
            let first = *first;
            st.entries.split_off(&first);
        }
        for (index, bytes) in entries {
            let ix = index.to_le_bytes();
            let rec_len = HEADER + 1 + 8 + bytes.len();
            let at = match self.reserve(&mut st, rec_len) {
                Ok(at) => at,
                Err(e) => {
                    st.failed = Some(format!("creating a segment: {e}"));
                    drop(st);
                    done(Err(e));
                    return;
                }
            };
            let mut out = Vec::with_capacity(rec_len);
            frame(K_ENTRY, &[&ix, &bytes], &mut out);
            let seq = st.current;
            st.entries.insert(
                index,
                Pos {
                    seq,
                    offset: at + (HEADER + 1 + 8) as u64,
                    len: bytes.len() as u32,
                },
            );
            let seg = st.segments.get_mut(&seq).expect("current segment");
            seg.max_index = Some(seg.max_index.map_or(index, |m| m.max(index)));
            st.pending.push(Arc::new(Chunk {
                seq,
                offset: at,
                bytes: out,
            }));
        }
        st.waiters.push(done);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Reserves `len` bytes in the current segment (opening the next one if
    /// they do not fit) and returns their offset.
    fn reserve(&self, st: &mut State, len: usize) -> io::Result<u64> {
        let cap = st.segments[&st.current].capacity;
        if st.offset + len as u64 > cap {
            let seq = st.current + 1;
            new_segment(&self.shared, st, seq, len as u64)?;
        }
        let at = st.offset;
        st.offset += len as u64;
        Ok(at)
    }

    /// Queues one non-entry record; `done` (if any) runs once it is durable.
    fn put(&self, kind: u8, payload: &[&[u8]], done: Option<Done>) {
        let mut st = self.shared.lock();
        if let Some(e) = &st.failed {
            let e = e.clone();
            drop(st);
            if let Some(d) = done {
                d(Err(io::Error::other(e)));
            }
            return;
        }
        let mut out = Vec::new();
        frame(kind, payload, &mut out);
        match self.reserve(&mut st, out.len()) {
            Ok(at) => {
                let seq = st.current;
                st.pending.push(Arc::new(Chunk {
                    seq,
                    offset: at,
                    bytes: out,
                }));
            }
            Err(e) => {
                st.failed = Some(format!("creating a segment: {e}"));
                drop(st);
                if let Some(d) = done {
                    d(Err(e));
                }
                return;
            }
        }
        // Without a waiter the record waits for the next sync (a commit
        // index is not worth an fdatasync of its own).
        if let Some(d) = done {
            st.waiters.push(d);
            drop(st);
            self.shared.wake.notify_one();
        }
    }

    /// Saves the vote; durable when `done` runs.
    pub fn save_vote(&self, bytes: Vec<u8>, done: Done) {
        self.shared.lock().meta.vote = Some(bytes.clone());
        self.put(K_VOTE, &[&bytes], Some(done));
    }

    /// Saves the commit index; written with the next sync, not waited for.
    pub fn save_committed(&self, bytes: Vec<u8>) {
        self.shared.lock().meta.committed = Some(bytes.clone());
        self.put(K_COMMITTED, &[&bytes], None);
    }

    /// Drops the entries from `index` on; durable when `done` runs.
    pub fn truncate(&self, index: u64, done: Done) {
        self.shared.lock().entries.split_off(&index);
        self.put(K_TRUNCATE, &[&index.to_le_bytes()], Some(done));
    }

    /// Drops the entries up to `index` (`bytes`: the purged log id, kept);
    /// segments holding only purged entries are removed once the purge
    /// record is on the device (never before: their entries would leave a gap).
    pub fn purge(&self, index: u64, bytes: Vec<u8>, done: Done) {
        let doomed: Vec<u64> = {
            let mut st = self.shared.lock();
            st.meta.purged = Some((index, bytes.clone()));
            let keep = st.entries.split_off(&(index + 1));
            st.entries = keep;
            let current = st.current;
            st.segments
                .iter()
                .filter(|(&seq, s)| seq != current && s.max_index.is_none_or(|m| m <= index))
                .map(|(&seq, _)| seq)
                .collect()
        };
        let shared = self.shared.clone();
        let then: Done = Box::new(move |res| {
            if res.is_ok() && !doomed.is_empty() {
                let removed: Vec<PathBuf> = {
                    let mut st = shared.lock();
                    doomed
                        .iter()
                        .filter_map(|seq| st.segments.remove(seq))
                        .map(|s| s.path)
                        .collect()
                };
                for p in &removed {
                    if let Err(e) = std::fs::remove_file(p) {
                        tracing::warn!(file = %p.display(), error = %e, "wal: removing a purged segment");
                    }
                }
                if let Err(e) = sync_dir(&shared.dir) {
                    tracing::warn!(error = %e, "wal: fsync of the directory after removing segments");
                }
            }
            done(res)
        });
        self.put(K_PURGED, &[&index.to_le_bytes(), &bytes], Some(then));
    }

    pub fn vote(&self) -> Option<Vec<u8>> {
        self.shared.lock().meta.vote.clone()
    }

    pub fn committed(&self) -> Option<Vec<u8>> {
        self.shared.lock().meta.committed.clone()
    }

    pub fn purged(&self) -> Option<(u64, Vec<u8>)> {
        self.shared.lock().meta.purged.clone()
    }

    /// The lowest and highest entry index held.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        let st = self.shared.lock();
        Some((*st.entries.keys().next()?, *st.entries.keys().next_back()?))
    }

    /// The bytes of the entries held in `start..end`, in order.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut from_disk = Vec::new();
        {
            let st = self.shared.lock();
            if start >= end {
                return Ok(out);
            }
            for (&index, pos) in st.entries.range(start..end) {
                let queued = st.pending.iter().chain(st.writing.iter()).find(|c| {
                    c.seq == pos.seq && c.offset <= pos.offset && pos.offset < c.offset + c.bytes.len() as u64
                });
                match queued {
                    Some(c) => {
                        let from = (pos.offset - c.offset) as usize;
                        out.push((index, c.bytes[from..from + pos.len as usize].to_vec()));
                    }
                    None => {
                        out.push((index, Vec::new()));
                        from_disk.push((out.len() - 1, st.segments[&pos.seq].file.clone(), *pos));
                    }
                }
            }
        }
        for (i, file, pos) in from_disk {
            let mut buf = vec![0u8; pos.len as usize];
            file.read_exact_at(&mut buf, pos.offset)?;
            out[i].1 = buf;
        }
        Ok(out)
    }

    /// Files of the segments held (for tests and tools).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.shared.lock().segments.values().map(|s| s.path.clone()).collect()
    }

    /// Waits until everything queued so far is durable.
    pub fn sync(&self, done: Done) {
        let mut st = self.shared.lock();
        st.waiters.push(done);
        drop(st);
        self.shared.wake.notify_one();
    }
}

/// Applies one record read back at open.
fn replay(st: &mut State, seq: u64, at: usize, kind: u8, p: &[u8], max_index: &mut Option<u64>) -> Result<(), String> {
    match kind {
        K_ENTRY => {
            let index = u64_at(p).ok_or("short entry record")?;
            st.entries.split_off(&index);
            st.entries.insert(
                index,
                Pos {
                    seq,
                    offset: (at + HEADER + 1 + 8) as u64,
                    len: (p.len() - 8) as u32,
                },
            );
            *max_index = Some(max_index.map_or(index, |m| m.max(index)));
        }
        K_VOTE => st.meta.vote = Some(p.to_vec()),
        K_COMMITTED => st.meta.committed = Some(p.to_vec()),
        K_PURGED => {
            let index = u64_at(p).ok_or("short purge record")?;
            st.meta.purged = Some((index, p[8..].to_vec()));
            let keep = st.entries.split_off(&(index + 1));
            st.entries = keep;
        }
        K_TRUNCATE => {
            let index = u64_at(p).ok_or("short truncate record")?;
            st.entries.split_off(&index);
        }
        _ => return Err(format!("unknown record kind {kind}")),
    }
    Ok(())
}

/// Creates segment `seq` (room for at least `need` more bytes), makes it
/// current and queues its header (vote, commit index, purge point).
fn new_segment(shared: &Shared, st: &mut State, seq: u64, need: u64) -> io::Result<()> {
    let path = shared.dir.join(format!("{seq:016x}.wal"));
    let tmp = shared.dir.join(format!("{seq:016x}.wal.tmp"));
    let mut header = Vec::new();
    if let Some(v) = &st.meta.vote {
        frame(K_VOTE, &[v], &mut header);
    }
    if let Some(c) = &st.meta.committed {
        frame(K_COMMITTED, &[c], &mut header);
    }
    if let Some((i, b)) = &st.meta.purged {
        frame(K_PURGED, &[&i.to_le_bytes(), b], &mut header);
    }
    let capacity = shared.segment_bytes.max(need + header.len() as u64 + HEADER as u64);
    {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        fs2::FileExt::allocate(&file, capacity)?;
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    sync_dir(&shared.dir)?;
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    st.segments.insert(
        seq,
        Segment {
            path,
            file: Arc::new(file),
            capacity,
            max_index: None,
        },
    );
    st.current = seq;
    st.offset = header.len() as u64;
    Ok(())
}

fn flusher(shared: &Shared) {
    loop {
        let mut st = shared.lock();
        while st.waiters.is_empty() && !st.closed {
            st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed && st.pending.is_empty() && st.waiters.is_empty() {
            return;
        }
        let chunks = std::mem::take(&mut st.pending);
        st.writing = chunks.clone();
        let waiters = std::mem::take(&mut st.waiters);
        let files: Vec<(u64, Arc<File>)> = chunks
            .iter()
            .map(|c| (c.seq, st.segments[&c.seq].file.clone()))
            .collect();
        let failed = st.failed.clone();
        drop(st);

        let started = std::time::Instant::now();
        let res = match failed {
            Some(e) => Err(io::Error::other(e)),
            None => write_and_sync(&chunks, &files),
        };
        crate::metrics::metrics()
            .log_flush_seconds
            .observe(started.elapsed().as_secs_f64());

        let mut st = shared.lock();
        st.writing.clear();
        if let Err(e) = &res {
            // After a failed write or fsync nothing later can be trusted.
            st.failed.get_or_insert_with(|| e.to_string());
            tracing::error!(error = %e, "wal: write or fdatasync failed; the log refuses further writes");
        }
        drop(st);
        for w in waiters {
            w(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// One `pwrite` per run of adjacent chunks, then one `fdatasync` per file, in order.
fn write_and_sync(chunks: &[Arc<Chunk>], files: &[(u64, Arc<File>)]) -> io::Result<()> {
    let mut i = 0;
    let mut buf = Vec::new();
    while i < chunks.len() {
        let (seq, start) = (chunks[i].seq, chunks[i].offset);
        buf.clear();
        let mut j = i;
        while j < chunks.len() && chunks[j].seq == seq && chunks[j].offset == start + buf.len() as u64 {
            buf.extend_from_slice(&chunks[j].bytes);
            j += 1;
        }
        files[i].1.write_all_at(&buf, start)?;
        i = j;
    }
    let mut synced = HashSet::new();
    for (seq, file) in files {
        if synced.insert(*seq) {
            file.sync_data()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
