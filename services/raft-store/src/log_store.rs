//! The Raft log and vote in the replica's write-ahead log ([`crate::wal`]).
//!
//! Appends, votes, truncations and purges are reported to openraft only
//! after the `fdatasync` of the segment holding them.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader};
use tokio::sync::oneshot;

use crate::codec;
use crate::typ::*;
use crate::wal::{Wal, WalError};

#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn read_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl ToString) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// Runs `f` with a completion callback and waits for it.
async fn durable(f: impl FnOnce(crate::wal::Done)) -> std::io::Result<()> {
    let (tx, rx) = oneshot::channel();
    f(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("wal flusher stopped")))
}

impl LogStore {
    /// Opens the log in `dir` (recovering a torn tail; refusing mid-log corruption).
    pub fn open(dir: &Path) -> Result<LogStore, WalError> {
        Ok(LogStore { wal: Wal::open(dir)? })
    }

    pub fn from_wal(wal: Wal) -> LogStore {
        LogStore { wal }
    }

    /// Appends entries and waits until they are durable (outside Raft: for
    /// `--force-new-cluster` before Raft starts).
    pub async fn append_durable(&mut self, entries: Vec<Entry>) -> std::io::Result<()> {
        let records: Vec<(u64, Vec<u8>)> = entries.iter().map(|e| (e.log_id.index, codec::encode(e))).collect();
        durable(|d| self.wal.append(records, d)).await
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        match self.wal.purged() {
            None => Ok(None),
            Some((_, b)) => codec::decode(&b).map(Some).map_err(read_err),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal
            .read(start, end)
            .map_err(read_err)?
            .into_iter()
            .map(|(_, b)| codec::decode(&b).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.wal.bounds() {
            Some((_, last)) => {
                let e = self.wal.read(last, last + 1).map_err(read_err)?;
                match e.first() {
                    Some((_, b)) => Some(codec::decode::<Entry>(b).map_err(read_err)?.log_id),
                    None => last_purged_log_id,
                }
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = codec::encode(vote);
        durable(|d| self.wal.save_vote(bytes, d))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self.wal.vote() {
            None => Ok(None),
            Some(b) => codec::decode(&b)
                .map(Some)
                .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e)),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            crate::metrics::metrics().commit_index.set(c.index as i64);
        }
        self.wal.save_committed(codec::encode(&committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        match self.wal.committed() {
            None => Ok(None),
            Some(b) => Ok(codec::decode::<Option<LogId>>(&b).map_err(read_err)?),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let records: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index, codec::encode(&e)))
            .collect();
        self.wal
            .append(records, Box::new(move |res| callback.log_io_completed(res)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        durable(|d| self.wal.truncate(log_id.index, d)).await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = codec::encode(&log_id);
        durable(|d| self.wal.purge(log_id.index, bytes, d))
            .await
            .map_err(write_err)
    }
}
