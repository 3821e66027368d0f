//! The store client every service uses: transactional writes, get, list,
//! change-feed history, and [`Watcher`](super::Watcher)s.
//!
//! Requests go to the replicas' queue group; a follower forwards to the leader.
//! The client retries what is retryable (no responder, a replica that did not
//! answer in time, not-leader) until its deadline. Writes are safe to retry:
//! each carries a request id and the store applies it once.

use std::time::Duration;

use tokio::time::Instant;

use super::proto::*;
use super::types::{Kind, Record, StoreObject};
use crate::envelope;
use crate::error::{ErrorCode, ShoalError};
use crate::subjects;

/// Default time a request may take, retries included ("fail within 5 s").
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(4800);
/// How long one attempt waits for a replica before trying again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct StoreClient {
    nats: async_nats::Client,
    deadline: Duration,
}

impl StoreClient {
    pub fn new(nats: async_nats::Client) -> StoreClient {
        StoreClient {
            nats,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// The same client with another overall deadline per request.
    pub fn with_deadline(&self, deadline: Duration) -> StoreClient {
        StoreClient {
            nats: self.nats.clone(),
            deadline,
        }
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Sends a request to any replica, retrying retryable failures until the deadline.
    pub async fn call(&self, req: &StoreRequest) -> Result<StoreResponse, ShoalError> {
        self.call_on(subjects::store_requests(), req).await
    }

    /// Sends a request to one replica (status, membership of a given replica).
    pub async fn call_replica(&self, replica: u64, req: &StoreRequest) -> Result<StoreResponse, ShoalError> {
        self.call_on(subjects::store_replica(replica), req).await
    }

    async fn call_on(&self, subject: String, req: &StoreRequest) -> Result<StoreResponse, ShoalError> {
        let deadline = Instant::now() + self.deadline;
        let mut backoff = Duration::from_millis(20);
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(if timed_out {
                    ShoalError::no_quorum()
                } else {
                    ShoalError::unavailable("no raft-store replica answered")
                });
            }
            let attempt = left.min(ATTEMPT_TIMEOUT);
            match envelope::request::<_, StoreResponse>(&self.nats, subject.clone(), req, attempt).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.code == ErrorCode::Unavailable || e.code == ErrorCode::NotLeader => {
                    timed_out |= e.message.contains("timed out");
                    tracing::debug!(error = %e, "store request: retrying");
                    let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits a transaction.
    pub async fn tx(&self, tx: TxRequest) -> Result<TxOutcome, ShoalError> {
        match self.call(&StoreRequest::Tx { tx }).await? {
            StoreResponse::Tx { outcome } => Ok(outcome),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates one object; returns it as stored (version and times set).
    pub async fn create<T: StoreObject>(&self, obj: &T) -> Result<T, ShoalError> {
        let out = self
            .tx(TxRequest::new(vec![Op::Create {
                record: obj.to_record()?,
            }]))
            .await?;
        first(out)?.decode()
    }

    /// Updates one object; its `Version.Index` must be the one read.
    pub async fn update<T: StoreObject>(&self, obj: &T) -> Result<T, ShoalError> {
        let out = self
            .tx(TxRequest::new(vec![Op::Update {
                record: obj.to_record()?,
            }]))
            .await?;
        first(out)?.decode()
    }

    /// Deletes one object (at `version`, when given).
    pub async fn delete(&self, kind: Kind, id: &str, version: Option<u64>) -> Result<Record, ShoalError> {
        let out = self
            .tx(TxRequest::new(vec![Op::Delete {
                kind,
                id: id.to_string(),
                version,
            }]))
            .await?;
        first(out)
    }

    pub async fn get_record(&self, kind: Kind, id: &str) -> Result<Option<Record>, ShoalError> {
        match self
            .call(&StoreRequest::Get {
                kind,
                id: id.to_string(),
            })
            .await?
        {
            StoreResponse::Get { record } => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn get<T: StoreObject>(&self, id: &str) -> Result<Option<T>, ShoalError> {
        self.get_record(T::KIND, id).await?.map(|r| r.decode()).transpose()
    }

    /// A consistent list of several kinds at one feed position.
    pub async fn list_records(&self, kinds: &[Kind], filter: ListFilter) -> Result<ListResult, ShoalError> {
        match self
            .call(&StoreRequest::List {
                kinds: kinds.to_vec(),
                filter,
            })
            .await?
        {
            StoreResponse::List { result } => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list<T: StoreObject>(&self, filter: ListFilter) -> Result<Vec<T>, ShoalError> {
        self.list_records(&[T::KIND], filter)
            .await?
            .records
            .iter()
            .map(|r| r.decode())
            .collect()
    }

    /// Change-feed history after `after` (at most `limit` batches).
    pub async fn events(&self, after: u64, limit: usize) -> Result<EventsResult, ShoalError> {
        match self.call(&StoreRequest::Events { after, limit }).await? {
            StoreResponse::Events { result } => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    /// The status of one replica.
    pub async fn status(&self, replica: u64) -> Result<StoreStatus, ShoalError> {
        match self.call_replica(replica, &StoreRequest::Status).await? {
            StoreResponse::Status { status } => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// The status of whichever replica answers first.
    pub async fn any_status(&self) -> Result<StoreStatus, ShoalError> {
        match self.call(&StoreRequest::Status).await? {
            StoreResponse::Status { status } => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// What one replica's own state machine holds (no leader involved; may be stale).
    pub async fn local_list(&self, replica: u64, kinds: &[Kind], filter: ListFilter) -> Result<ListResult, ShoalError> {
        match self
            .call_replica(
                replica,
                &StoreRequest::LocalList {
                    kinds: kinds.to_vec(),
                    filter,
                },
            )
            .await?
        {
            StoreResponse::List { result } => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn add_replica(&self, replica: u64, voter: bool) -> Result<(), ShoalError> {
        self.call(&StoreRequest::AddReplica { replica, voter })
            .await
            .map(|_| ())
    }

    pub async fn remove_replica(&self, replica: u64) -> Result<(), ShoalError> {
        self.call(&StoreRequest::RemoveReplica { replica }).await.map(|_| ())
    }

    /// A watcher of `kinds` (list, then follow the change feed).
    pub fn watch(&self, kinds: &[Kind]) -> super::Watcher {
        super::Watcher::new(self.clone(), kinds)
    }
}

fn first(out: TxOutcome) -> Result<Record, ShoalError> {
    out.records
        .into_iter()
        .next()
        .ok_or_else(|| ShoalError::internal("store returned no record"))
}

fn unexpected(resp: &StoreResponse) -> ShoalError {
    ShoalError::internal(format!("unexpected store response: {resp:?}"))
}
