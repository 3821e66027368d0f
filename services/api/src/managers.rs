//! Managers and the store's membership: a manager Node carries its store
//! replica's id (`ManagerStatus.RaftID`, store-only); `Leader` and
//! `Reachability` are read from the store's live membership, promotion adds
//! the node's replica (learner, then voter once caught up), demotion removes
//! it, and `swarm init --force-new-cluster` restarts this host's replica as
//! the only voter.

use std::time::Duration;

use shoal_shared::model::{ManagerStatus, Node, NodeRole, Reachability};
use shoal_shared::store::{ListFilter, Op, StoreMembership, StoreObject, TxRequest};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long `node ls` waits for the membership before showing stored flags.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(2);
/// How long a forced new cluster may take to elect its one voter.
const FORCE_WAIT: Duration = Duration::from_secs(30);

/// The store's membership, or `None` when the leader does not answer in time.
pub async fn membership(state: &AppState) -> Option<StoreMembership> {
    match state.store.with_deadline(MEMBERSHIP_WAIT).membership().await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(error = %e, "store membership unavailable; showing stored manager status");
            None
        }
    }
}

/// A manager's `Leader` and `Reachability` from the store's membership:
/// the leader's replica is `Leader`; a member the leader heard from lately is
/// reachable, another unreachable; a replica not (yet) in the membership is
/// unknown. Without a replica id or a membership, the stored flags stay.
pub fn apply_live_status(ms: &mut ManagerStatus, m: Option<&StoreMembership>) {
    let Some(m) = m.filter(|_| ms.raft_id != 0) else {
        return;
    };
    ms.leader = m.leader == ms.raft_id;
    ms.reachability = match m.member(ms.raft_id) {
        Some(member) if member.reachable => Reachability::Reachable,
        Some(_) => Reachability::Unreachable,
        None => Reachability::Unknown,
    };
}

/// A replica id no member and no manager Node uses (one more than the highest).
fn free_replica_id(nodes: &[Node], m: &StoreMembership) -> u64 {
    let in_nodes = nodes
        .iter()
        .filter_map(|n| n.manager_status.as_ref().map(|s| s.raft_id));
    let in_store = m.members.iter().map(|mm| mm.replica);
    in_nodes.chain(in_store).max().unwrap_or(0) + 1
}

/// `docker node promote` (or a spec with `Role: manager`): gives `n` a store
/// replica id (kept when it has one), to be made a member once `n` is
/// written with it (see [`add_replica`]): the host's manager processes start
/// on that id (the agent's systemd hook, see ARCHITECTURE.md "Store
/// membership"). A swarm whose managers have no replica ids (APIs started
/// without `--store-replica`) keeps stored flags: `None`, `n` marked a
/// reachable manager.
pub async fn promote(state: &AppState, n: &mut Node) -> ApiResult<Option<u64>> {
    let nodes: Vec<Node> = state.store.list(ListFilter::default()).await?;
    let mapped = nodes
        .iter()
        .any(|o| o.is_manager() && o.manager_status.as_ref().is_some_and(|s| s.raft_id != 0));
    let addr = format!("{}:2377", n.status.addr);
    let ms = n.manager_status.get_or_insert_with(|| ManagerStatus {
        reachability: Reachability::Reachable,
        addr,
        ..ManagerStatus::default()
    });
    if !mapped {
        return Ok(None);
    }
    if ms.raft_id == 0 {
        let m = state.store.membership().await?;
        ms.raft_id = free_replica_id(&nodes, &m);
    }
    ms.reachability = Reachability::Unknown;
    Ok(Some(ms.raft_id))
}

/// Adds `replica` to the store's membership (learner, voter once caught
/// up). The call a manager's join or promotion makes for its host's replica.
pub async fn add_replica(state: &AppState, replica: u64) -> ApiResult<()> {
    state.store.add_replica(replica, true).await?;
    Ok(())
}

/// `docker node demote`: removes `n`'s replica from the store's voters,
/// refused in Docker's words when the voters left could not make a quorum.
pub async fn demote(state: &AppState, n: &Node) -> ApiResult<()> {
    let raft_id = n.manager_status.as_ref().map_or(0, |s| s.raft_id);
    if raft_id == 0 {
        return Ok(()); // a manager from before replica ids: nothing to remove
    }
    let m = state.store.membership().await?;
    if m.member(raft_id).is_none() {
        return Err(ApiError::not_found(
            "rpc error: code = NotFound desc = can't find manager in raft memberlist",
        ));
    }
    state.store.remove_replica(raft_id).await?;
    Ok(())
}

/// `swarm init --force-new-cluster`: this host's replica restarts as the
/// only voter of its store, keeping every object; then this node is the
/// leading manager and every other manager a worker (their replicas are no
/// longer members; they come back by promotion or a manager join). Returns
/// whether the store held a swarm (else a plain init follows).
pub async fn force_new_cluster(state: &AppState) -> ApiResult<bool> {
    let Some(replica) = state.store_replica else {
        return Err(ApiError::bad_request(
            "--force-new-cluster: this node runs no store replica (shoal-api --store-replica / SHOAL_REPLICA_ID)",
        ));
    };
    state.store.force_new_cluster(replica).await?;
    let store = state.store.with_deadline(FORCE_WAIT);
    let deadline = tokio::time::Instant::now() + FORCE_WAIT;
    loop {
        match store.with_deadline(Duration::from_secs(1)).status(replica).await {
            Ok(s) if s.leader == Some(replica) && s.voters == [replica] => break,
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(ApiError::unavailable(shoal_shared::error::NO_LEADER_MESSAGE));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    state.forget_cluster();
    let clusters: Vec<shoal_shared::model::Cluster> = store.list(ListFilter::default()).await?;
    if clusters.is_empty() {
        return Ok(false);
    }
    let nodes: Vec<Node> = store.list(ListFilter::default()).await?;
    let mut ops = Vec::new();
    for mut n in nodes {
        let before = n.clone();
        if n.meta.id == state.node_id {
            n.spec.role = NodeRole::Manager;
            let ms = n.manager_status.get_or_insert_with(ManagerStatus::default);
            ms.raft_id = replica;
            ms.leader = true;
            ms.reachability = Reachability::Reachable;
            if ms.addr.is_empty() {
                ms.addr = format!("{}:2377", n.status.addr);
            }
        } else if n.spec.role == NodeRole::Manager || n.manager_status.is_some() {
            n.spec.role = NodeRole::Worker;
            n.manager_status = None;
        }
        if n != before {
            ops.push(Op::Update { record: n.to_record()? });
        }
    }
    if !ops.is_empty() {
        store.tx(TxRequest::new(ops)).await?;
    }
    tracing::warn!(replica, "forced a new cluster: this node is the only manager");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::store::MemberStatus;

    fn member(replica: u64, voter: bool, reachable: bool) -> MemberStatus {
        MemberStatus {
            replica,
            voter,
            reachable,
            matched: None,
        }
    }

    #[test]
    fn live_status_comes_from_the_membership() {
        let m = StoreMembership {
            leader: 2,
            term: 4,
            last_log_index: Some(10),
            members: vec![member(1, true, false), member(2, true, true), member(3, true, true)],
        };
        let status = |raft_id: u64, leader: bool| {
            let mut ms = ManagerStatus {
                leader,
                reachability: Reachability::Reachable,
                addr: String::new(),
                raft_id,
            };
            apply_live_status(&mut ms, Some(&m));
            (ms.leader, ms.reachability)
        };
        assert_eq!(status(1, true), (false, Reachability::Unreachable));
        assert_eq!(status(2, false), (true, Reachability::Reachable));
        assert_eq!(status(3, false), (false, Reachability::Reachable));
        assert_eq!(status(9, false), (false, Reachability::Unknown));
        // No replica id: the stored flags stay.
        assert_eq!(status(0, true), (true, Reachability::Reachable));
        let mut n = Node::new("n", "h", NodeRole::Manager);
        n.manager_status = Some(ManagerStatus {
            raft_id: 7,
            ..ManagerStatus::default()
        });
        assert_eq!(free_replica_id(&[n], &m), 8);
    }
}
