//! One replica at work: the Raft node, its RPC server, the store API, the
//! proposal batcher and the change-feed publisher.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::store::*;
use shoal_shared::subjects::{self, RaftRpc};
use shoal_shared::ShoalError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use crate::codec;
use crate::config::Config;
use crate::log_store::LogStore;
use crate::membership::{self, node, Contacts};
use crate::network::NatsNetwork;
use crate::sm::{Reader, StateMachine};
use crate::typ::*;

/// How long a replica waits for a leader to be known before answering no-quorum.
const LEADER_WAIT: Duration = Duration::from_millis(1500);
/// How long a write or a linearizable read may wait for a quorum.
const QUORUM_WAIT: Duration = Duration::from_millis(2500);
/// Transactions per proposal (at most).
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 256 * 1024;

struct Pending {
    tx: TxRequest,
    size: usize,
    reply: oneshot::Sender<Result<TxOutcome, ShoalError>>,
}

/// A running replica. Cheap to share (`Arc`).
pub struct Replica {
    pub id: u64,
    pub raft: Raft,
    nats: async_nats::Client,
    pub(crate) data_dir: std::path::PathBuf,
    reader: Reader,
    proposals: mpsc::Sender<Pending>,
    is_leader: Arc<AtomicBool>,
    in_flight: usize,
    /// When this replica last heard back from each peer (its Raft RPCs answered).
    pub(crate) contacts: Contacts,
    /// How recently a member must have answered to count as reachable.
    pub(crate) reach_window: Duration,
    /// Set once Raft is shut down (for a forced new cluster or the process's end).
    stopped: AtomicBool,
}

impl Replica {
    /// Opens the log and the state machine, starts Raft and every background task of the replica.
    pub async fn start(cfg: &Config, nats: async_nats::Client) -> anyhow::Result<Arc<Replica>> {
        let legacy = cfg.data_dir.join("store.sled");
        let wal_dir = cfg.data_dir.join("wal");
        if legacy.exists() && !wal_dir.exists() {
            anyhow::bail!(
                "{} holds a store of an earlier layout (sled); this version keeps its log in {} and \
                 its state in snapshot files. Remove the data dir's store.sled to start this replica \
                 empty (it then catches up from its peers), or run the earlier version",
                legacy.display(),
                wal_dir.display()
            );
        }
        let mut log = LogStore::open(&wal_dir)?;
        let marker = cfg.data_dir.join(membership::FORCE_MARKER);
        if marker.exists() {
            membership::force_single_voter(&mut log, cfg.replica_id).await?;
            std::fs::remove_file(&marker)?;
            crate::wal::sync_dir(&cfg.data_dir)?;
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let sm = StateMachine::open(&cfg.data_dir, events_tx)?;
        let reader = sm.reader();

        let election = cfg.election_timeout().as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: cfg.heartbeat().as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            install_snapshot_timeout: (election * 2).max(1000),
            max_payload_entries: 16,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_interval),
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            snapshot_max_chunk_size: 128 * 1024,
            ..Default::default()
        }
        .validate()?;
        let contacts = Contacts::default();
        let network = NatsNetwork {
            nats: nats.clone(),
            contacts: contacts.clone(),
        };
        let raft = Raft::new(cfg.replica_id, Arc::new(raft_config), network, log, sm).await?;

        let (proposals, proposals_rx) = mpsc::channel(8192);
        let replica = Arc::new(Replica {
            id: cfg.replica_id,
            raft,
            nats,
            data_dir: cfg.data_dir.clone(),
            reader,
            proposals,
            is_leader: Arc::new(AtomicBool::new(false)),
            in_flight: cfg.proposals_in_flight,
            contacts,
            reach_window: cfg.election_timeout() * 2,
            stopped: AtomicBool::new(false),
        });

        replica.clone().serve_raft_rpcs().await?;
        tokio::spawn(replica.clone().batch_proposals(proposals_rx));
        tokio::spawn(replica.clone().publish_events(events_rx));
        tokio::spawn(replica.clone().watch_leadership());
        tokio::spawn(replica.clone().keep_promoting(cfg.heartbeat()));

        let members: BTreeSet<u64> = if cfg.init {
            [cfg.replica_id].into()
        } else {
            cfg.peers.iter().copied().collect()
        };
        // One replica, the lowest id, initializes a cluster of --peers. When
        // every replica did, each started an election in term 1 at once; one
        // that had voted for itself then turned the winner's first appends
        // away, the winner stepped down, and nobody led until the next
        // election timeout (3-6 s with production timing), all writes stalled.
        let initializer = members.first().copied() == Some(cfg.replica_id);
        if initializer && !replica.raft.is_initialized().await? {
            let nodes: BTreeMap<u64, BasicNode> = members.iter().map(|&id| (id, node(id, false))).collect();
            match replica.raft.initialize(nodes).await {
                Ok(()) => tracing::info!(?members, "initialized a new store cluster"),
                Err(e) => tracing::info!(error = %e, "not initializing"),
            }
        }
        Ok(replica)
    }

    /// Stops Raft (everything acknowledged is already on disk).
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.raft.shutdown().await;
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    async fn serve_raft_rpcs(self: Arc<Self>) -> anyhow::Result<()> {
        let mut sub = self.nats.subscribe(subjects::raft_rpc_all(self.id)).await?;
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let me = self.clone();
                tokio::spawn(async move { me.raft_rpc(msg).await });
            }
        });
        Ok(())
    }

    async fn raft_rpc(&self, msg: async_nats::Message) {
        let subject = msg.subject.as_str();
        let body = if subject == subjects::raft_rpc(self.id, RaftRpc::AppendEntries) {
            match codec::decode(&msg.payload) {
                Ok(req) => Ok(codec::encode(&self.raft.append_entries(req).await)),
                Err(e) => Err(e),
            }
        } else if subject == subjects::raft_rpc(self.id, RaftRpc::Vote) {
            match codec::decode(&msg.payload) {
                Ok(req) => Ok(codec::encode(&self.raft.vote(req).await)),
                Err(e) => Err(e),
            }
        } else if subject == subjects::raft_rpc(self.id, RaftRpc::InstallSnapshot) {
            match codec::decode(&msg.payload) {
                Ok(req) => Ok(codec::encode(&self.raft.install_snapshot(req).await)),
                Err(e) => Err(e),
            }
        } else {
            return;
        };
        match (body, msg.reply) {
            (Ok(body), Some(to)) => {
                let _ = self.nats.publish(to, body.into()).await;
            }
            (Err(e), _) => tracing::warn!(subject = %msg.subject, error = %e, "malformed raft rpc"),
            (Ok(_), None) => {}
        }
    }

    /// Serves one store API message. `direct` requests (addressed to this
    /// replica) are never forwarded.
    pub async fn handle(self: Arc<Self>, msg: async_nats::Message, direct: bool) {
        let span = tracing::info_span!("store.request", replica = self.id, direct);
        envelope::continue_trace(&span, msg.headers.as_ref());
        async {
            let mut restart = false;
            let reply: Reply<StoreResponse> = match envelope::decode::<StoreRequest>(&msg.payload) {
                Err(e) => Reply::Err(e),
                Ok(StoreRequest::ForceNewCluster) if direct => {
                    let res = self.prepare_force_new_cluster().await;
                    restart = res.is_ok();
                    res.into()
                }
                Ok(req) => self.serve(req, direct).await.into(),
            };
            let mut headers = async_nats::HeaderMap::new();
            if let Some(leader) = self.raft.metrics().borrow().current_leader {
                headers.insert(envelope::LEADER_HEADER, leader.to_string().as_str());
            }
            envelope::respond_with_headers(&self.nats, &msg, &reply, headers).await;
            if restart {
                let _ = self.nats.flush().await;
                membership::restart_process();
            }
        }
        .instrument(span)
        .await
    }

    async fn serve(&self, req: StoreRequest, direct: bool) -> Result<StoreResponse, ShoalError> {
        match req {
            StoreRequest::Status => return Ok(StoreResponse::Status { status: self.status() }),
            StoreRequest::LocalList { kinds, filter } => {
                return Ok(StoreResponse::List {
                    result: self.reader.list(&kinds, &filter)?,
                })
            }
            // Never forwarded: it would force whichever replica leads.
            StoreRequest::ForceNewCluster => {
                return Err(ShoalError::invalid(
                    "force-new-cluster is asked of one replica directly (shoal.store.replica.<id>)",
                ))
            }
            _ => {}
        }
        let leader = self.wait_for_leader().await.ok_or_else(ShoalError::no_quorum)?;
        if leader != self.id {
            if direct {
                return Err(ShoalError::not_leader(Some(leader)));
            }
            return envelope::request(&self.nats, subjects::store_replica(leader), &req, QUORUM_WAIT).await;
        }
        match req {
            StoreRequest::Tx { tx } => Ok(StoreResponse::Tx {
                outcome: self.write(tx).await?,
            }),
            StoreRequest::Get { kind, id } => {
                self.read_barrier().await?;
                Ok(StoreResponse::Get {
                    record: self.reader.get(kind, &id)?,
                })
            }
            StoreRequest::List { kinds, filter } => {
                self.read_barrier().await?;
                Ok(StoreResponse::List {
                    result: self.reader.list(&kinds, &filter)?,
                })
            }
            StoreRequest::Events { after, limit } => {
                self.read_barrier().await?;
                Ok(StoreResponse::Events {
                    result: self.reader.events(after, limit)?,
                })
            }
            StoreRequest::AddReplica { replica, voter } => {
                self.add_replica(replica, voter).await?;
                Ok(StoreResponse::Done)
            }
            StoreRequest::RemoveReplica { replica } => {
                self.remove_replica(replica).await?;
                Ok(StoreResponse::Done)
            }
            StoreRequest::Membership => Ok(StoreResponse::Membership {
                membership: self.membership(),
            }),
            StoreRequest::Status | StoreRequest::LocalList { .. } | StoreRequest::ForceNewCluster => {
                unreachable!("served above")
            }
        }
    }

    async fn wait_for_leader(&self) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            if let Some(l) = metrics.borrow().current_leader {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until this leader is confirmed by a quorum and has applied
    /// everything committed before the read (a linearizable read).
    async fn read_barrier(&self) -> Result<(), ShoalError> {
        match tokio::time::timeout(QUORUM_WAIT, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ShoalError::no_quorum()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ShoalError::not_leader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ShoalError::no_quorum())
            }
            Ok(Err(e)) => Err(ShoalError::unavailable(e.to_string())),
        }
    }

    async fn write(&self, mut tx: TxRequest) -> Result<TxOutcome, ShoalError> {
        // The writer's trace goes with the entry: each replica's apply and
        // the change feed continue it, as children of this span (from the
        // proposal to its commit and apply on this leader).
        let span = tracing::info_span!("store.commit", ops = tx.ops.len());
        tx.trace = envelope::traceparent(&span);
        self.propose(tx).instrument(span).await
    }

    async fn propose(&self, tx: TxRequest) -> Result<TxOutcome, ShoalError> {
        let size = tx.ops.len() * 256 + 64;
        let (reply, rx) = oneshot::channel();
        self.proposals
            .send(Pending { tx, size, reply })
            .await
            .map_err(|_| ShoalError::unavailable("replica is shutting down"))?;
        match tokio::time::timeout(QUORUM_WAIT, rx).await {
            Err(_) => Err(ShoalError::no_quorum()),
            Ok(Err(_)) => Err(ShoalError::unavailable("proposal dropped")),
            Ok(Ok(res)) => res,
        }
    }

    /// Groups concurrent transactions into one log entry per proposal.
    async fn batch_proposals(self: Arc<Self>, mut rx: mpsc::Receiver<Pending>) {
        let slots = Arc::new(Semaphore::new(self.in_flight));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else { return };
            let mut bytes = first.size;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.size;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let raft = self.raft.clone();
            tokio::spawn(async move {
                let (txs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.tx, p.reply)).unzip();
                let n = txs.len();
                let m = crate::metrics::metrics();
                m.proposals.inc();
                m.batch_size.observe(n as f64);
                let cmd = Command {
                    at: chrono::Utc::now(),
                    txs,
                };
                match raft.client_write(cmd).await {
                    Ok(resp) => {
                        let mut results = resp.data.0.into_iter();
                        for reply in replies {
                            let r = results
                                .next()
                                .unwrap_or_else(|| Err(ShoalError::internal(format!("batch of {n}: result missing"))));
                            let _ = reply.send(r);
                        }
                    }
                    Err(e) => {
                        let err = match e {
                            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                                ShoalError::not_leader(f.leader_id)
                            }
                            other => ShoalError::unavailable(other.to_string()),
                        };
                        for reply in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                }
                drop(permit);
            });
        }
    }

    /// Publishes change batches in apply order while this replica leads.
    async fn publish_events(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Arc<EventBatch>>) {
        while let Some(batch) = rx.recv().await {
            if self.is_leader.load(Ordering::Acquire) {
                if let Err(e) = self
                    .nats
                    .publish(subjects::store_events(), envelope::encode(&*batch))
                    .await
                {
                    tracing::warn!(error = %e, index = batch.index, "could not publish change batch");
                }
            }
        }
    }

    /// Tracks whether this replica leads, and announces it when it starts to.
    async fn watch_leadership(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut was = false;
        loop {
            let (now, term) = {
                let m = metrics.borrow();
                let g = crate::metrics::metrics();
                g.term.set(m.current_term as i64);
                g.is_leader.set((m.state == ServerState::Leader) as i64);
                g.applied_index.set(m.last_applied.map_or(0, |l| l.index as i64));
                g.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
                (m.state == ServerState::Leader, m.current_term)
            };
            self.is_leader.store(now, Ordering::Release);
            if now && !was {
                tracing::info!(term, "this replica is now the store leader");
                let note = serde_json::json!({ "replica": self.id, "term": term });
                let _ = self
                    .nats
                    .publish(subjects::store_leader(), envelope::encode(&note))
                    .await;
            }
            was = now;
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// This replica's view of the cluster.
    pub fn status(&self) -> StoreStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        StoreStatus {
            replica: self.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            state: format!("{:?}", m.state).to_lowercase(),
        }
    }
}
