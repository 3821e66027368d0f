//! The store client every service uses: transactional writes, get, list,
//! change-feed history, and [`Watcher`](super::Watcher)s.
//!
//! Requests go to the replicas' queue group; a follower forwards to the leader.
//! The client retries what is retryable (no responder, a replica that did not
//! answer in time, not-leader) until its deadline. Writes are safe to retry:
//! each carries a request id and the store applies it once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::proto::*;
use super::types::{Kind, Record, StoreObject};
use crate::envelope;
use crate::error::{ErrorCode, ShoalError};
use crate::subjects;

/// Default time a request may take, retries included ("fail within 5 s").
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(4800);
/// Deadline of membership changes, which wait for a new replica to catch up.
pub const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(30);
/// How long one attempt waits for the leader before trying again.
const LEADER_ATTEMPT: Duration = Duration::from_secs(3);
/// How long one attempt waits for any replica (one may be frozen).
const ANY_ATTEMPT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct StoreClient {
    nats: async_nats::Client,
    deadline: Duration,
    /// The replica believed to lead (0: unknown), learned from replies.
    leader: Arc<AtomicU64>,
}

impl StoreClient {
    pub fn new(nats: async_nats::Client) -> StoreClient {
        StoreClient {
            nats,
            deadline: DEFAULT_DEADLINE,
            leader: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same client with another overall deadline per request.
    pub fn with_deadline(&self, deadline: Duration) -> StoreClient {
        StoreClient {
            nats: self.nats.clone(),
            deadline,
            leader: self.leader.clone(),
        }
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Sends a request to the leader (or, when no leader is known, to any
    /// replica, which forwards it), retrying retryable failures until the deadline.
    pub async fn call(&self, req: &StoreRequest) -> Result<StoreResponse, ShoalError> {
        self.call_on(None, req).await
    }

    /// Sends a request to one replica (status, membership of a given replica).
    pub async fn call_replica(&self, replica: u64, req: &StoreRequest) -> Result<StoreResponse, ShoalError> {
        self.call_on(Some(replica), req).await
    }

    async fn call_on(&self, replica: Option<u64>, req: &StoreRequest) -> Result<StoreResponse, ShoalError> {
        let deadline = Instant::now() + self.deadline;
        let mut backoff = Duration::from_millis(20);
        let mut last: Option<ShoalError> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match last {
                    Some(e) if e.code == ErrorCode::NoQuorum => e,
                    Some(e) if e.message.contains("timed out") => ShoalError::no_quorum(),
                    Some(e) => e,
                    None => ShoalError::unavailable("no raft-store replica answered"),
                });
            }
            let known = self.leader.load(Ordering::Relaxed);
            let (subject, attempt) = match replica {
                Some(r) => (subjects::store_replica(r), LEADER_ATTEMPT),
                None if known != 0 && req.needs_leader() => (subjects::store_replica(known), LEADER_ATTEMPT),
                None => (subjects::store_requests(), ANY_ATTEMPT),
            };
            let (res, hint) =
                envelope::request_with_leader::<_, StoreResponse>(&self.nats, subject, req, left.min(attempt)).await;
            if let Some(l) = hint {
                self.leader.store(l, Ordering::Relaxed);
            }
            match res {
                Ok(resp) => return Ok(resp),
                Err(e) if e.code.retryable() => {
                    tracing::debug!(error = %e, "store request: retrying");
                    match (e.code, e.leader) {
                        (ErrorCode::NotLeader, Some(l)) if replica.is_none() => {
                            // Go straight to the leader named in the error.
                            self.leader.store(l, Ordering::Relaxed);
                            last = Some(e);
                            continue;
                        }
                        _ if hint.is_none() => self.leader.store(0, Ordering::Relaxed),
                        _ => {}
                    }
                    last = Some(e);
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
        self.create_guarded(obj, Vec::new()).await
    }

    /// Creates one object if the `guards` (`Op::Exists`, `Op::NoneMatch`) hold.
    pub async fn create_guarded<T: StoreObject>(&self, obj: &T, mut guards: Vec<Op>) -> Result<T, ShoalError> {
        guards.push(Op::Create {
            record: obj.to_record()?,
        });
        first(self.tx(TxRequest::new(guards)).await?)?.decode()
    }

    /// Updates one object; its `Version.Index` must be the one read.
    pub async fn update<T: StoreObject>(&self, obj: &T) -> Result<T, ShoalError> {
        self.update_guarded(obj, Vec::new()).await
    }

    /// Updates one object if the `guards` hold.
    pub async fn update_guarded<T: StoreObject>(&self, obj: &T, mut guards: Vec<Op>) -> Result<T, ShoalError> {
        guards.push(Op::Update {
            record: obj.to_record()?,
        });
        first(self.tx(TxRequest::new(guards)).await?)?.decode()
    }

    /// Deletes one object (at `version`, when given).
    pub async fn delete(&self, kind: Kind, id: &str, version: Option<u64>) -> Result<Record, ShoalError> {
        self.delete_guarded(kind, id, version, Vec::new()).await
    }

    /// Deletes one object if the `guards` hold.
    pub async fn delete_guarded(
        &self,
        kind: Kind,
        id: &str,
        version: Option<u64>,
        mut guards: Vec<Op>,
    ) -> Result<Record, ShoalError> {
        guards.push(Op::Delete {
            kind,
            id: id.to_string(),
            version,
        });
        first(self.tx(TxRequest::new(guards)).await?)
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

    /// The term in which `replica` leads the store, or `None` when it does not
    /// (or does not answer within a second): what a leader-only service acts
    /// on, fencing its writes with that term.
    pub async fn acting_term(&self, replica: u64) -> Option<u64> {
        match self.with_deadline(Duration::from_millis(1000)).status(replica).await {
            Ok(s) if s.leader == Some(replica) => Some(s.term),
            _ => None,
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

    /// The store's membership and each member's reachability, as the leader sees them.
    pub async fn membership(&self) -> Result<StoreMembership, ShoalError> {
        match self.call(&StoreRequest::Membership).await? {
            StoreResponse::Membership { membership } => Ok(membership),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes `replica` a member: a learner at once; with `voter`, promoted by
    /// the leader once it has caught up (see [`StoreRequest::AddReplica`]).
    /// This is the call a manager's join or promotion makes for its host's replica.
    /// A membership change commits a configuration entry that a loaded
    /// leader may take seconds to make durable; it gets
    /// [`MEMBERSHIP_DEADLINE`] (or this client's deadline, if longer).
    pub async fn add_replica(&self, replica: u64, voter: bool) -> Result<(), ShoalError> {
        self.membership_client()
            .call(&StoreRequest::AddReplica { replica, voter })
            .await
            .map(|_| ())
    }

    pub async fn remove_replica(&self, replica: u64) -> Result<(), ShoalError> {
        self.membership_client()
            .call(&StoreRequest::RemoveReplica { replica })
            .await
            .map(|_| ())
    }

    fn membership_client(&self) -> StoreClient {
        self.with_deadline(self.deadline.max(MEMBERSHIP_DEADLINE))
    }

    /// Makes `replica` the only voter of a new cluster with its data
    /// (`swarm init --force-new-cluster`); asked of that replica alone.
    pub async fn force_new_cluster(&self, replica: u64) -> Result<StoreStatus, ShoalError> {
        match self.call_replica(replica, &StoreRequest::ForceNewCluster).await? {
            StoreResponse::Status { status } => Ok(status),
            other => Err(unexpected(&other)),
        }
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
