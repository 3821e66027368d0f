//! Global services (step 4 of a pass): one live task per node that is
//! available and passes the service's constraints and platforms.

use std::collections::BTreeMap;

use shoal_shared::model::Service;

use super::work::Work;
use super::Group;
use crate::placement::{Needs, NodeInfo};

/// Gives every eligible node of `svc` a task where it has none (and none
/// waiting for a stopping one).
/// The nodes a global service (or global job) runs on: available, and
/// passing its static filters (constraints, platform, ...).
pub(super) fn eligible_nodes(w: &Work, svc: &Service) -> Vec<String> {
    let needs = Needs::of(&svc.spec.task_template, &[]);
    w.snap
        .nodes
        .values()
        .filter(|n| {
            let info = NodeInfo::new((*n).clone());
            info.available() && info.passes_static(&needs)
        })
        .map(|n| n.meta.id.clone())
        .collect()
}

pub(super) fn reconcile_nodes(
    w: &mut Work,
    svc: &Service,
    groups: &BTreeMap<Group, Vec<String>>,
    live_of: impl Fn(&Work, &[String]) -> Vec<String>,
    deferred: impl Fn(&Work, &[String]) -> bool,
    new_id: &mut dyn FnMut() -> String,
) {
    let eligible = eligible_nodes(w, svc);
    for node in eligible {
        let g = Group::Node(node);
        let members = groups.get(&g).cloned().unwrap_or_default();
        if live_of(w, &members).is_empty() && !deferred(w, &members) {
            let id = new_id();
            w.new_task(id, svc, &g);
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_shared::model::Availability;

    use super::super::testkit::*;

    #[test]
    fn one_task_per_eligible_node_following_nodes() {
        let mut k = Kit::new(&["n1", "n2", "n3"], vec![service("g", None)]);
        k.set_node("n3", |n| n.spec.availability = Availability::Pause);
        k.pass();
        let mut on: Vec<String> = k.live("g").iter().map(|t| t.node_id.clone()).collect();
        on.sort();
        assert_eq!(on, ["n1", "n2"]);
        k.put(&node("n4"));
        k.pass();
        assert_eq!(k.live("g").len(), 3);
        assert!(k.live("g").iter().all(|t| t.slot.is_none()));
    }
}
