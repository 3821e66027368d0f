//! Task history (step 5 of a pass), as SwarmKit's task reaper keeps it:
//! per slot (or a global service's node), stopped tasks beyond the cluster's
//! `TaskHistoryRetentionLimit` are deleted oldest first, and every removed
//! task that has stopped is deleted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_shared::model::TaskState;

use super::plan::DeleteReason;
use super::work::Work;
use super::{group_of, Group};

/// Deletes the oldest stopped tasks of each slot beyond the retention
/// limit, and every removed task that has stopped.
pub(super) fn prune_history(w: &mut Work) {
    let limit = w.snap.history_limit();
    let mut groups: BTreeMap<(String, Group), Vec<String>> = BTreeMap::new();
    for (id, t) in w.snap.tasks.iter().chain(w.created.iter()) {
        groups
            .entry((t.service_id.clone(), group_of(w.task(id))))
            .or_default()
            .push(id.clone());
    }
    for members in groups.values() {
        let mut total = members.len() as i64;
        let mut dead: Vec<(DateTime<Utc>, u64, String)> = Vec::new();
        for id in members {
            let t = w.task(id);
            if w.created.contains_key(id) || !w.deletable(t) {
                continue;
            }
            let node_gone = !t.node_id.is_empty() && !w.snap.nodes.contains_key(&t.node_id);
            if t.desired_state >= TaskState::Remove || node_gone {
                let (version, reason) = match node_gone {
                    true => (t.meta.version.index, DeleteReason::NodeGone),
                    false => (t.meta.version.index, DeleteReason::Removed),
                };
                w.delete(id, version, reason);
                total -= 1;
            } else {
                dead.push((t.meta.created_at, t.meta.version.index, id.clone()));
            }
        }
        if limit < 0 {
            continue;
        }
        dead.sort();
        for (_, version, id) in dead {
            if total <= limit {
                break;
            }
            w.delete(&id, version, DeleteReason::History);
            total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_shared::model::TaskState;

    use super::super::testkit::*;
    use super::super::{DeleteReason, Intent};

    #[test]
    fn stopped_tasks_beyond_the_limit_are_deleted_oldest_first() {
        let mut k = Kit::new(&["n1"], vec![service("s", Some(1))]);
        k.pass();
        let mut ended = Vec::new();
        for _ in 0..7 {
            let id = k.live("s")[0].meta.id.clone();
            k.report(&id, TaskState::Failed);
            ended.push(id);
            k.advance(Duration::from_secs(5));
            k.pass();
            k.advance(Duration::from_secs(1));
        }
        // Five per slot: the live one and the four newest that ended.
        let tasks = k.tasks("s");
        assert_eq!(
            tasks.len(),
            5,
            "{:?}",
            tasks.iter().map(|t| &t.meta.id).collect::<Vec<_>>()
        );
        for old in &ended[..3] {
            assert!(!k.snap.tasks.contains_key(old), "{old} is among the oldest");
        }
        let plan = k.pass();
        assert!(!plan.intents.iter().any(|i| matches!(
            i,
            Intent::Delete {
                reason: DeleteReason::History,
                ..
            }
        )));
    }

    #[test]
    fn tasks_of_a_removed_service_go_once_stopped() {
        let mut k = Kit::new(&["n1"], vec![service("s", Some(2))]);
        k.pass();
        k.run_all();
        k.delete_service("s");
        k.pass();
        assert_eq!(k.tasks("s").len(), 2, "still running: kept until stopped");
        k.stop_all();
        let plan = k.pass();
        assert_eq!(
            plan.intents
                .iter()
                .filter(|i| matches!(
                    i,
                    Intent::Delete {
                        reason: DeleteReason::Removed,
                        ..
                    }
                ))
                .count(),
            2
        );
        assert!(k.tasks("s").is_empty());
    }
}
