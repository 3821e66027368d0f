//! The store's membership: who votes, who only learns, who the leader
//! reaches; adding a replica (learner, then voter once caught up), removing
//! one (refused when it would lose quorum), and `--force-new-cluster`.
//!
//! A learner meant to become a voter says so in its membership record (its
//! `BasicNode` address ends in [`PROMOTE_MARK`]), so the intent is
//! replicated with the membership and whichever replica leads finishes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, ChangeMembers, CommittedLeaderId, EntryPayload, Membership, ServerState};
use shoal_shared::store::{MemberStatus, StoreMembership, StoreResponse};
use shoal_shared::{ErrorCode, ShoalError};

use crate::log_store::LogStore;
use crate::server::Replica;
use crate::typ::*;

/// Marks a learner the leader promotes to voter once it has caught up.
const PROMOTE_MARK: &str = " (to voter)";
/// A learner this close to the leader's last log index counts as caught up.
const CAUGHT_UP_LAG: u64 = 64;
/// File in the data dir asking the next start to force a new cluster.
pub const FORCE_MARKER: &str = "force-new-cluster";

/// When the leader last heard back from each peer (any Raft RPC answered).
#[derive(Clone, Default)]
pub struct Contacts(Arc<Mutex<HashMap<u64, Instant>>>);

impl Contacts {
    pub fn heard_from(&self, replica: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(replica, Instant::now());
    }

    fn within(&self, replica: u64, window: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&replica)
            .is_some_and(|t| t.elapsed() <= window)
    }
}

/// A membership record for `id`.
pub fn node(id: u64, promote: bool) -> BasicNode {
    let mark = if promote { PROMOTE_MARK } else { "" };
    BasicNode::new(format!("replica-{id}{mark}"))
}

fn wants_promotion(n: &BasicNode) -> bool {
    n.addr.ends_with(PROMOTE_MARK)
}

fn failed(what: &str, e: impl std::fmt::Display) -> ShoalError {
    ShoalError::unavailable(format!("{what}: {e}"))
}

impl Replica {
    /// The membership with reachability, as this replica (the leader) sees it.
    pub(crate) fn membership(&self) -> StoreMembership {
        let m = self.raft.metrics().borrow().clone();
        let matched = m.replication.clone().unwrap_or_default();
        let config = m.membership_config.membership();
        let window = self.reach_window;
        let status = |replica: u64, voter: bool| MemberStatus {
            replica,
            voter,
            reachable: replica == self.id || self.contacts.within(replica, window),
            matched: if replica == self.id {
                m.last_log_index
            } else {
                matched.get(&replica).cloned().flatten().map(|l| l.index)
            },
        };
        let mut members: Vec<MemberStatus> = config.voter_ids().map(|v| status(v, true)).collect();
        members.extend(config.learner_ids().map(|l| status(l, false)));
        StoreMembership {
            leader: self.id,
            term: m.current_term,
            last_log_index: m.last_log_index,
            members,
        }
    }

    pub(crate) async fn add_replica(&self, replica: u64, voter: bool) -> Result<(), ShoalError> {
        let status = self.membership();
        match status.member(replica) {
            Some(m) if m.voter => return Ok(()),
            Some(_) if !voter => return Ok(()),
            // A learner to become a voter: mark its record (`AddNodes` keeps
            // an existing record; the address is only this mark, never dialed).
            Some(_) => {
                self.raft
                    .change_membership(ChangeMembers::SetNodes([(replica, node(replica, true))].into()), false)
                    .await
                    .map_err(|e| failed(&format!("mark learner {replica}"), e))?;
            }
            // Non-blocking: the replica may not run yet (its host's manager
            // processes start after the promotion that asked for it).
            None => {
                self.raft
                    .add_learner(replica, node(replica, voter), false)
                    .await
                    .map_err(|e| failed(&format!("add learner {replica}"), e))?;
            }
        }
        if voter {
            self.promote_caught_up().await;
        }
        Ok(())
    }

    pub(crate) async fn remove_replica(&self, replica: u64) -> Result<(), ShoalError> {
        let status = self.membership();
        let Some(member) = status.member(replica) else {
            return Ok(());
        };
        if member.voter {
            // SwarmKit's CanRemoveMember: the voters left, reachable, must
            // still be a quorum of the voters left.
            let rest: Vec<&MemberStatus> = status
                .members
                .iter()
                .filter(|m| m.voter && m.replica != replica)
                .collect();
            let reachable = rest.iter().filter(|m| m.reachable).count();
            if rest.is_empty() || reachable < rest.len() / 2 + 1 {
                return Err(ShoalError::new(
                    ErrorCode::InvalidArgument,
                    shoal_shared::error::LOSES_QUORUM_MESSAGE,
                ));
            }
        }
        let change = if member.voter {
            ChangeMembers::RemoveVoters([replica].into())
        } else {
            ChangeMembers::RemoveNodes([replica].into())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| failed(&format!("remove {replica}"), e))?;
        Ok(())
    }

    /// Promotes every learner marked for it that has caught up (leader only).
    pub(crate) async fn promote_caught_up(&self) {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.clone().unwrap_or_default();
        let ready: BTreeSet<u64> = m
            .membership_config
            .membership()
            .learner_ids()
            .filter(|id| {
                let marked = m
                    .membership_config
                    .membership()
                    .get_node(id)
                    .is_some_and(wants_promotion);
                let at = matched.get(id).cloned().flatten().map_or(0, |l| l.index);
                marked && at > 0 && at + CAUGHT_UP_LAG >= last
            })
            .collect();
        if ready.is_empty() {
            return;
        }
        match self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(ready.clone()), false)
            .await
        {
            Ok(_) => tracing::info!(?ready, "caught-up learners promoted to voters"),
            Err(e) => tracing::info!(?ready, error = %e, "promoting learners: will retry"),
        }
    }

    /// `--force-new-cluster` asked of this replica: stops Raft (everything
    /// acknowledged is on disk) and leaves the marker that makes the next
    /// start force a one-voter cluster; the caller then restarts the process.
    pub(crate) async fn prepare_force_new_cluster(&self) -> Result<StoreResponse, ShoalError> {
        let status = self.status();
        self.shutdown().await;
        let marker = self.data_dir.join(FORCE_MARKER);
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .and_then(|_| crate::wal::sync_dir(&self.data_dir))
            .map_err(|e| ShoalError::internal(format!("write {}: {e}", marker.display())))?;
        tracing::warn!("forcing a new cluster: restarting with this replica as the only voter");
        Ok(StoreResponse::Status { status })
    }

    /// While leading, promotes marked learners as they catch up.
    pub(crate) async fn keep_promoting(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if self.is_shut_down() {
                return;
            }
            self.promote_caught_up().await;
        }
    }
}

/// `--force-new-cluster`: appends a membership entry naming this replica the
/// only voter, and a committed vote for it in a new term, so Raft starts as
/// the leader of a one-voter cluster with every entry of the log kept (those
/// not yet committed commit with it). Does nothing to an empty store.
pub async fn force_single_voter(log: &mut LogStore, id: u64) -> anyhow::Result<bool> {
    let state = log.get_log_state().await?;
    let vote = log.read_vote().await?;
    let Some(last) = state.last_log_id else {
        return Ok(false);
    };
    let term = vote.map_or(0, |v| v.leader_id().term).max(last.leader_id.term) + 1;
    let voters: BTreeSet<u64> = [id].into();
    let nodes: BTreeMap<u64, BasicNode> = [(id, node(id, false))].into();
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, id), last.index + 1),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    };
    log.append_durable(vec![entry]).await?;
    log.save_vote(&Vote::new_committed(term, id)).await?;
    tracing::warn!(
        replica = id,
        term,
        index = last.index + 1,
        "forced a new cluster: this replica is the only voter"
    );
    Ok(true)
}

/// Replaces this process with a fresh start of the same binary and
/// arguments (same PID, so a supervisor or test harness keeps tracking it).
pub fn restart_process() -> ! {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let _argv0 = args.next();
    let err = std::process::Command::new("/proc/self/exe").args(args).exec();
    tracing::error!(error = %err, "could not restart the process; exiting");
    std::process::exit(1)
}
