//! openraft type configuration: what a log entry carries and what applying it returns.

use std::io::Cursor;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_shared::store::{TxOutcome, TxRequest};
use shoal_shared::ShoalError;

/// The payload of one log entry: the transactions the leader batched together,
/// with the time it proposed them (so every replica applies the same timestamps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub at: DateTime<Utc>,
    pub txs: Vec<TxRequest>,
}

/// The result of applying a [`Command`]: one result per transaction, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandResult(pub Vec<Result<TxOutcome, ShoalError>>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<u64>;
