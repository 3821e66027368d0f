//! Promotion starts this host's manager processes, demotion stops them
//! (issue 16 §1), under systemd (`--manage-units`, `SHOAL_MANAGE_UNITS`).
//!
//! The API reads its own Node on every request already; this loop reads it
//! every few seconds too. When the Node is a manager with a store replica
//! (`ManagerStatus.RaftID`, written by `docker node promote`) and this host
//! was not configured as a manager (no `SHOAL_REPLICA_ID` of its own), it
//! writes `<data-dir>/promoted.env` (the replica id, no `SHOAL_INIT`, the
//! local NATS) and starts `shoal-manager.target`: the store replica starts
//! empty and waits to be contacted; the leader, which added it as a learner
//! to become a voter, catches it up and promotes it. When the Node is a
//! worker again (`docker node demote` removed the replica first), it stops
//! the target (the agent and this API are `PartOf` the worker target and
//! stay) and removes the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::web;
use shoal_shared::model::{Node, NodeRole};

use crate::state::AppState;

pub const PROMOTED_ENV: &str = "promoted.env";
const TARGET: &str = "shoal-manager.target";
const EVERY: Duration = Duration::from_secs(2);

/// What this host should run, from its Node as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A manager with this store replica.
    Manager(u64),
    /// A worker: no manager processes started by promotion.
    Worker,
    /// Not known (no Node, a manager without a replica yet): change nothing.
    Unknown,
}

pub fn want(node: Option<&Node>) -> Want {
    match node {
        Some(n) if n.spec.role == NodeRole::Manager => match n.manager_status.as_ref().map(|m| m.raft_id) {
            Some(id) if id != 0 => Want::Manager(id),
            _ => Want::Unknown,
        },
        Some(_) => Want::Worker,
        None => Want::Unknown,
    }
}

/// The environment the promoted manager units read after raft-store.env.
pub fn promoted_env(replica: u64) -> String {
    format!(
        "# Written by shoal-api: this host was promoted to manager (docker node promote).\n\
         SHOAL_REPLICA_ID={replica}\nSHOAL_INIT=false\nSHOAL_NATS_URL=nats://127.0.0.1:4222\n"
    )
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn step(dir: &Path, want: &Want) -> Result<(), String> {
    let file = dir.join(PROMOTED_ENV);
    match want {
        Want::Manager(replica) => {
            let text = promoted_env(*replica);
            if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                shoal_shared::membership::write_file(dir, PROMOTED_ENV, text.as_bytes(), 0o644)
                    .map_err(|e| format!("write {}: {e}", file.display()))?;
                tracing::info!(replica, "promoted: starting {TARGET}");
                // A replica id that changed needs the units restarted.
                systemctl(&["restart", "--no-block", TARGET])?;
            } else if systemctl(&["is-active", "--quiet", TARGET]).is_err() {
                systemctl(&["start", "--no-block", TARGET])?;
            }
        }
        Want::Worker if file.exists() => {
            tracing::info!("demoted: stopping {TARGET}");
            systemctl(&["stop", TARGET])?;
            std::fs::remove_file(&file).map_err(|e| format!("remove {}: {e}", file.display()))?;
        }
        Want::Worker | Want::Unknown => {}
    }
    Ok(())
}

/// Follows this node's role for as long as the API runs.
pub async fn follow(state: web::Data<AppState>, dir: PathBuf) {
    loop {
        tokio::time::sleep(EVERY).await;
        let Ok(store) = state.store() else { continue };
        let node = match store.with_deadline(EVERY).get::<Node>(&state.node_id).await {
            Ok(n) => n,
            Err(_) => continue,
        };
        let want = want(node.as_ref());
        let dir = dir.clone();
        let done = tokio::task::spawn_blocking(move || step(&dir, &want)).await;
        if let Ok(Err(e)) = done {
            tracing::warn!("switching this host's manager processes: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::ManagerStatus;

    #[test]
    fn a_manager_with_a_replica_wants_the_manager_set() {
        let mut n = Node::new("n1", "h", NodeRole::Manager);
        assert_eq!(want(Some(&n)), Want::Unknown);
        n.manager_status = Some(ManagerStatus {
            raft_id: 4,
            ..Default::default()
        });
        assert_eq!(want(Some(&n)), Want::Manager(4));
        n.spec.role = NodeRole::Worker;
        assert_eq!(want(Some(&n)), Want::Worker);
        assert_eq!(want(None), Want::Unknown);
        assert!(promoted_env(4).contains("SHOAL_REPLICA_ID=4\nSHOAL_INIT=false\n"));
    }
}
