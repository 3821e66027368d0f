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

use shoal_shared::membership::Membership;
use shoal_shared::model::{Cluster, ManagerStatus, Node, Reachability};
use shoal_shared::store::{ListFilter, StoreClient};

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
/// into the store's membership.
///
/// With the interim static peer set (`SHOAL_PEERS`, every manager host's
/// replica a voter from its start) there is nothing to add: this checks that
/// the store this host reaches through its own NATS is the swarm's, so that
/// a manager whose replica is not a member is refused rather than registered.
/// Dynamic membership (raft-store adding the replica as a learner, then
/// promoting it to voter) replaces the check with that request.
pub async fn add_store_replica(state: &AppState, m: &Membership) -> ApiResult<()> {
    let store = state.store()?;
    match store.get::<Cluster>(&m.cluster_id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::unavailable(format!(
            "this node's store replica is not a member of swarm {}: a manager host's raft-store must be in the \
             managers' peer set (SHOAL_PEERS) and its NATS server in their cluster",
            m.cluster_id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// After a join as a manager: this host serves joins and renewals too, and
/// its store replica is in the store's membership.
pub async fn joined_as_manager(state: &actix_web::web::Data<AppState>, m: &Membership) -> ApiResult<()> {
    crate::join::start_listener(state).map_err(|e| ApiError::internal(format!("swarm listener: {e}")))?;
    add_store_replica(state, m).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
