//! What a manager host brings to the swarm, and joining as one.
//!
//! A manager's Node object carries its swarm address (`ManagerStatus.Addr`,
//! where others join and renew certificates) and, store-only, the NATS URLs
//! its host serves (`ManagerStatus.NATSURLs`). A joining host is given the
//! union of those, so it learns where every manager's NATS server is, not
//! only the one it asked.
//!
//! A host that joins with the manager token gets a certificate with OU
//! `swarm-manager`, is registered with the manager role, starts its own swarm
//! listener, and then needs its store replica in the store's membership:
//! [`add_store_replica`] is where that happens. Until raft-store changes its
//! membership at run time (learner, then voter), the replicas are a static
//! peer set (`SHOAL_PEERS`), so a manager host joins with its replica already
//! a voter and the hook only checks that it serves this swarm's store.
//!
//! Managers and the store's membership: a manager Node carries its store
//! replica's id (`ManagerStatus.RaftID`, store-only); `Leader` and
//! `Reachability` are read from the store's live membership, promotion adds
//! the node's replica (learner, then voter once caught up), demotion removes
//! it, and `swarm init --force-new-cluster` restarts this host's replica as
//! the only voter.

use std::time::Duration;

use shoal_shared::membership::Membership;
use shoal_shared::model::{Cluster, ManagerStatus, Node, NodeRole, Reachability};
use shoal_shared::store::{ListFilter, Op, StoreClient, StoreMembership, StoreObject, TxRequest};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Why a host without NATS of its own cannot join as a manager.
pub const NO_STORE_REPLICA: &str = "this node runs no NATS server and store replica of its own (--nats-url none): it \
                                    can join the swarm as a worker only";

/// The NATS URLs this host serves other hosts (none when it reaches NATS
/// only through its membership).
pub fn own_nats_urls(state: &AppState) -> Vec<String> {
    if state.swarm.nats_from_membership {
        Vec::new()
    } else {
        state.swarm.nats_advertise.clone()
    }
}

/// The ManagerStatus a manager's Node gets: reachable at its swarm address,
/// with the NATS URLs its host serves.
pub fn manager_status(state: &AppState, ip: &str, leader: bool) -> ManagerStatus {
    ManagerStatus {
        leader,
        reachability: Reachability::Reachable,
        addr: state.swarm.advertised(ip).unwrap_or_else(|| format!("{ip}:2377")),
        nats_urls: own_nats_urls(state),
        raft_id: state.store_replica.unwrap_or(0),
    }
}

/// The ManagerStatus of a host that joins as a manager, from what it sent.
pub fn joining_manager_status(ip: &str, swarm_addr: &str, nats_urls: &[String]) -> ManagerStatus {
    ManagerStatus {
        leader: false,
        reachability: Reachability::Reachable,
        addr: if swarm_addr.is_empty() {
            format!("{ip}:2377")
        } else {
            swarm_addr.to_string()
        },
        nats_urls: nats_urls.to_vec(),
        // The joined host writes its replica's id (see `add_store_replica`).
        raft_id: 0,
    }
}

/// `first`, then what `rest` adds, without repeats.
pub fn union(first: &[String], rest: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = first.to_vec();
    for u in rest {
        if !u.is_empty() && !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// The managers' swarm addresses and, this host's first, their NATS URLs,
/// from their Node objects.
pub async fn managers_of(state: &AppState, store: &StoreClient) -> ApiResult<(Vec<String>, Vec<String>)> {
    let nodes: Vec<Node> = store.list(ListFilter::default()).await?;
    let statuses: Vec<&ManagerStatus> = nodes
        .iter()
        .filter(|n| n.is_manager())
        .filter_map(|n| n.manager_status.as_ref())
        .collect();
    let addrs = union(&[], statuses.iter().map(|m| m.addr.clone()));
    let nats = union(
        &state.swarm.nats_advertise,
        statuses.iter().flat_map(|m| m.nats_urls.iter().cloned()),
    );
    Ok((addrs, nats))
}

/// The hook where a host that joined as a manager gets its store replica
/// into the store's membership: the store this host reaches through its own
/// NATS must be the swarm's (else the join is refused rather than
/// registered), then this host's replica (`--store-replica`) is written on
/// its Node and added to the membership (learner, then voter once caught
/// up; nothing to do for one that is a voter already, as in the dev
/// cluster's static peer set).
pub async fn add_store_replica(state: &AppState, m: &Membership) -> ApiResult<()> {
    let store = state.store()?;
    match store.get::<Cluster>(&m.cluster_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ApiError::unavailable(format!(
                "this node's store replica is not a member of swarm {}: a manager host's raft-store must be in the \
                 managers' peer set (SHOAL_PEERS) and its NATS server in their cluster",
                m.cluster_id
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let Some(replica) = state.store_replica else {
        return Ok(());
    };
    if let Some(mut node) = store.get::<Node>(&state.node_id).await? {
        if let Some(ms) = node.manager_status.as_mut().filter(|ms| ms.raft_id != replica) {
            ms.raft_id = replica;
            store.update(&node).await?;
        }
    }
    add_replica(state, replica).await
}

/// After a join as a manager: this host serves joins and renewals too, and
/// its store replica is in the store's membership.
pub async fn joined_as_manager(state: &actix_web::web::Data<AppState>, m: &Membership) -> ApiResult<()> {
    crate::join::start_listener(state).map_err(|e| ApiError::internal(format!("swarm listener: {e}")))?;
    add_store_replica(state, m).await
}

/// How long `node ls` waits for the membership before showing stored flags.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(2);
/// How long a forced new cluster may take to elect its one voter.
const FORCE_WAIT: Duration = Duration::from_secs(30);

/// The store's membership, or `None` when the leader does not answer in time.
pub async fn membership(state: &AppState) -> Option<StoreMembership> {
    match state.store().ok()?.with_deadline(MEMBERSHIP_WAIT).membership().await {
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
    let nodes: Vec<Node> = state.store()?.list(ListFilter::default()).await?;
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
        let m = state.store()?.membership().await?;
        ms.raft_id = free_replica_id(&nodes, &m);
    }
    ms.reachability = Reachability::Unknown;
    Ok(Some(ms.raft_id))
}

/// Adds `replica` to the store's membership (learner, voter once caught
/// up). The call a manager's join or promotion makes for its host's replica.
pub async fn add_replica(state: &AppState, replica: u64) -> ApiResult<()> {
    state.store()?.add_replica(replica, true).await?;
    Ok(())
}

/// `docker node demote`: removes `n`'s replica from the store's voters,
/// refused in Docker's words when the voters left could not make a quorum.
pub async fn demote(state: &AppState, n: &Node) -> ApiResult<()> {
    let raft_id = n.manager_status.as_ref().map_or(0, |s| s.raft_id);
    if raft_id == 0 {
        return Ok(()); // a manager from before replica ids: nothing to remove
    }
    let m = state.store()?.membership().await?;
    if m.member(raft_id).is_none() {
        return Err(ApiError::not_found(
            "rpc error: code = NotFound desc = can't find manager in raft memberlist",
        ));
    }
    state.store()?.remove_replica(raft_id).await?;
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
    state.store()?.force_new_cluster(replica).await?;
    let store = state.store()?.with_deadline(FORCE_WAIT);
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
                nats_urls: Vec::new(),
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

    #[test]
    fn union_keeps_the_first_list_first_and_drops_repeats() {
        let a = vec!["nats://a:4222".to_string()];
        let got = union(
            &a,
            ["nats://b:4222", "nats://a:4222", "", "nats://b:4222"].map(String::from),
        );
        assert_eq!(got, ["nats://a:4222", "nats://b:4222"]);
    }
}
