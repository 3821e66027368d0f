//! Placement (step 6 of a pass), as SwarmKit's scheduler does it: every
//! task that wants to run and has no node is placed on a node that passes
//! the filters ([`crate::placement`]: ready, active, constraints, platform,
//! resources, host ports), spreading the service's tasks, or left pending
//! with SwarmKit's explanation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_shared::model::{PortConfig, Task, TaskState};

use super::is_live;
use super::plan::Intent;
use super::work::Work;
use crate::placement::{self, Needs};

/// Places every task that wants to run and has no node yet (step 6).
/// Returns how many were placed, and how many were left pending by reason
/// (the labels of [`placement::PENDING_REASONS`]).
pub(super) fn schedule(w: &mut Work) -> (usize, BTreeMap<&'static str, usize>) {
    let view: Vec<&Task> = w.view().collect();
    let ports_of = |sid: &str| -> Vec<PortConfig> {
        w.services
            .get(sid)
            .or_else(|| w.snap.services.get(sid))
            .and_then(|s| s.endpoint.as_ref())
            .map(|e| e.ports.clone())
            .unwrap_or_default()
    };
    let mut infos = placement::node_infos(w.snap.nodes.values(), view.iter().copied(), ports_of);
    let mut todo: Vec<(String, String, Option<u64>, String)> = view
        .iter()
        .filter(|t| is_live(t) && t.status.state <= TaskState::Pending && !w.unallocated.contains(&t.meta.id))
        .map(|t| (t.service_id.clone(), t.node_id.clone(), t.slot, t.meta.id.clone()))
        .collect();
    todo.sort();
    let ports: HashMap<String, Vec<PortConfig>> = todo.iter().map(|(sid, ..)| (sid.clone(), ports_of(sid))).collect();
    drop(view);

    let now = w.now;
    let (mut placed, mut pending) = (0, BTreeMap::new());
    // Candidate sets per (service, placement): spread keys of nodes passing the static filters.
    let mut sets: HashMap<(String, String), BTreeSet<placement::SpreadKey>> = HashMap::new();
    for (sid, preset, _, id) in todo {
        let needs = Needs::of(&w.task(&id).spec, &ports[&sid]);
        let chosen = if !preset.is_empty() {
            infos
                .get(&preset)
                .filter(|i| i.check(&needs).is_none())
                .map(|_| preset.clone())
        } else {
            let key = (sid.clone(), format!("{:?}", (&needs.constraints, &needs.platforms)));
            let set = sets.entry(key).or_insert_with(|| {
                infos
                    .values()
                    .filter(|i| i.passes_static(&needs))
                    .map(|i| i.key(&sid, now))
                    .collect()
            });
            set.iter()
                .find(|k| infos.get(&k.3).is_some_and(|i| i.fits(&needs)))
                .map(|k| k.3.clone())
        };
        match chosen {
            Some(node) => {
                let info = infos.get_mut(&node).expect("chosen node");
                let oldkey = info.key(&sid, now);
                info.add(&sid, &needs);
                let newkey = info.key(&sid, now);
                // Other services' candidate sets keep stale totals for the rest
                // of this pass, which keeps spread good enough within one pass.
                for ((s, _), set) in sets.iter_mut() {
                    if *s == sid && set.remove(&oldkey) {
                        set.insert(newkey.clone());
                    }
                }
                w.intents.push(Intent::Place {
                    task: id.clone(),
                    node: node.clone(),
                });
                let t = w.task_mut(&id);
                t.node_id = node;
                t.status.state = TaskState::Assigned;
                t.status.timestamp = now;
                t.status.message = "scheduler assigned task to node".into();
                t.status.err = String::new();
                placed += 1;
            }
            None => {
                let (msg, reason) = if preset.is_empty() {
                    placement::explain(infos.values(), &needs)
                } else {
                    placement::explain(infos.get(&preset).into_iter(), &needs)
                };
                *pending.entry(reason).or_insert(0) += 1;
                w.set_pending(&id, msg);
            }
        }
    }
    (placed, pending)
}

#[cfg(test)]
mod tests {
    use shoal_shared::model::{Placement, ResourceRequirements, Resources, TaskState};

    use super::super::testkit::*;
    use super::super::Intent;

    #[test]
    fn tasks_are_spread_placed_or_left_pending_with_the_reason() {
        let mut k = Kit::new(&["n1", "n2"], vec![service("s", Some(4))]);
        let plan = k.pass();
        let placed = plan
            .intents
            .iter()
            .filter(|i| matches!(i, Intent::Place { .. }))
            .count();
        assert_eq!(placed, 4);
        let on = |k: &Kit, n: &str| k.live("s").iter().filter(|t| t.node_id == n).count();
        assert_eq!((on(&k, "n1"), on(&k, "n2")), (2, 2));

        let mut big = service("big", Some(1));
        big.spec.task_template.resources = Some(ResourceRequirements {
            reservations: Some(Resources {
                generic_resources: Vec::new(),
                nano_cpus: 64_000_000_000,
                memory_bytes: 0,
            }),
            ..ResourceRequirements::default()
        });
        let mut pinned = service("pinned", Some(1));
        pinned.spec.task_template.placement = Some(Placement {
            constraints: vec!["node.hostname==nowhere".into()],
            ..Placement::default()
        });
        k.put(&big);
        k.put(&pinned);
        let plan = k.pass();
        assert_eq!(
            plan.pending_by_reason,
            std::collections::BTreeMap::from([("constraints", 1), ("resources", 1)]),
            "pending tasks counted by reason"
        );
        let reasons: Vec<&String> = plan
            .intents
            .iter()
            .filter_map(|i| match i {
                Intent::Pending { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{:?}", plan.intents);
        assert!(
            reasons.iter().any(|r| r.contains("insufficient resources")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("scheduling constraints")),
            "{reasons:?}"
        );
        assert!(k.live("big").iter().all(|t| t.status.state == TaskState::Pending));
        // Pending again with the same reason: not written again.
        let plan = k.pass();
        assert!(!plan.intents.iter().any(|i| matches!(i, Intent::Pending { .. })));
    }
}
