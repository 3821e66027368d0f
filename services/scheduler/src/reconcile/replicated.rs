//! Replicated services (step 4 of a pass): one live task per slot
//! `1..=Replicas`. Missing slots get new tasks, lowest first, within the
//! pass's budget (the rest come in the next passes, so a service of 100,000
//! replicas never makes one pass unbounded); surplus slots are removed from
//! the nodes with most of the service's tasks first, tasks that do not run
//! before those that do, highest slot first.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use shoal_shared::model::{Service, TaskState};

use super::plan::StopReason;
use super::work::Work;
use super::{Group, MAX_NEW_TASKS_PER_SERVICE};

/// Fills or trims the slots of `svc`. `groups` are its tasks by group,
/// `live_of` its live tasks of a group, `deferred` whether a group waits for
/// a stopping task (a stop-first update in flight) before it is refilled.
pub(super) fn reconcile_slots(
    w: &mut Work,
    svc: &Service,
    groups: &BTreeMap<Group, Vec<String>>,
    live_of: impl Fn(&Work, &[String]) -> Vec<String>,
    deferred: impl Fn(&Work, &[String]) -> bool,
    new_id: &mut dyn FnMut() -> String,
) {
    let want = svc.replicas().unwrap_or(1);
    let mut occupied: BTreeSet<u64> = BTreeSet::new();
    let mut live_slots: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (g, members) in groups {
        let Group::Slot(s) = g else { continue };
        let live = live_of(w, members);
        if !live.is_empty() {
            occupied.insert(*s);
            live_slots.insert(*s, live);
        } else if deferred(w, members) {
            occupied.insert(*s);
        }
    }
    let have = occupied.len() as u64;
    if have < want {
        let mut need = want - have;
        let mut left = MAX_NEW_TASKS_PER_SERVICE;
        let mut slot = 1;
        while need > 0 {
            if !occupied.contains(&slot) {
                if !w.may_create(&mut left) {
                    // Counted once for everything this service still wants.
                    w.deferred += (need - 1) as usize;
                    break;
                }
                let id = new_id();
                w.new_task(id, svc, &Group::Slot(slot));
                need -= 1;
            }
            slot += 1;
        }
    } else if have > want {
        scale_down(w, live_slots, (have - want) as usize);
    }
}

/// Removes `n` slots: first those whose task was never placed, then those
/// not running, then running ones; within each, from the node with most of
/// the service's live tasks, highest slot first. O((slots + n) log slots).
fn scale_down(w: &mut Work, live_slots: BTreeMap<u64, Vec<String>>, n: usize) {
    let mut load: HashMap<String, usize> = HashMap::new();
    for ids in live_slots.values() {
        for id in ids {
            *load.entry(w.task(id).node_id.clone()).or_default() += 1;
        }
    }
    // Tier (unplaced, not running) -> node -> its slots in that tier, ascending.
    let mut tiers: BTreeMap<(bool, bool), BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    for (slot, ids) in &live_slots {
        let t = w.task(&ids[0]);
        let tier = (t.node_id.is_empty(), t.status.state != TaskState::Running);
        tiers
            .entry(tier)
            .or_default()
            .entry(t.node_id.clone())
            .or_default()
            .push(*slot);
    }
    let mut removed = 0;
    for (_, mut nodes) in tiers.into_iter().rev() {
        // Max-heap of (node load when pushed, the node's highest slot, node);
        // loads only fall, so a stale entry is re-pushed with the current one.
        let mut heap: BinaryHeap<(usize, u64, String)> = nodes
            .iter()
            .filter_map(|(node, slots)| Some((load[node], *slots.last()?, node.clone())))
            .collect();
        while removed < n {
            let Some((l, _, node)) = heap.pop() else { break };
            if l != load[&node] {
                if let Some(top) = nodes[&node].last() {
                    heap.push((load[&node], *top, node));
                }
                continue;
            }
            let Some(slot) = nodes.get_mut(&node).and_then(Vec::pop) else {
                continue;
            };
            for id in &live_slots[&slot] {
                if let Some(c) = load.get_mut(&w.task(id).node_id) {
                    *c = c.saturating_sub(1);
                }
                w.set_desired(id, TaskState::Remove, StopReason::ScaleDown);
            }
            removed += 1;
            if let Some(top) = nodes[&node].last() {
                heap.push((load[&node], *top, node));
            }
        }
        if removed >= n {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Intent, StopReason, MAX_NEW_TASKS_PER_PASS, MAX_NEW_TASKS_PER_SERVICE};
    use shoal_shared::model::TaskState;

    fn created_for(plan: &super::super::Plan, sid: &str) -> usize {
        plan.intents
            .iter()
            .filter(|i| matches!(i, Intent::Create { service, .. } if service == sid))
            .count()
    }

    #[test]
    fn missing_slots_get_tasks_lowest_first() {
        let mut k = Kit::new(&["n1"], vec![service("s", Some(3))]);
        k.pass();
        let mut slots: Vec<u64> = k.live("s").iter().filter_map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, [1, 2, 3]);
        // One task ends for good (removed behind the scheduler's back): its slot is refilled.
        let t = k.live("s").into_iter().find(|t| t.slot == Some(2)).unwrap();
        k.delete_task(&t.meta.id);
        let plan = k.pass();
        assert_eq!(created_for(&plan, "s"), 1);
        assert!(k.live("s").iter().any(|t| t.slot == Some(2)));
    }

    /// Issue 14, D1: a service of the maximum size makes bounded passes and
    /// does not hold another service's first task back.
    #[test]
    fn a_huge_service_is_made_in_bounded_passes_and_never_delays_another() {
        let mut k = Kit::new(&["n1", "n2"], vec![service("big", Some(100_000))]);
        let plan = k.pass();
        assert_eq!(plan.created, MAX_NEW_TASKS_PER_SERVICE);
        assert_eq!(plan.deferred, 100_000 - MAX_NEW_TASKS_PER_SERVICE);
        assert_eq!(plan.wake_at, Some(k.now), "the next pass is asked for at once");

        // A small service created meanwhile gets its task in the very next pass.
        let small = service("small", Some(1));
        k.put(&small);
        let plan = k.pass();
        assert_eq!(created_for(&plan, "small"), 1);
        assert!(plan.created <= MAX_NEW_TASKS_PER_PASS);

        // Several huge services at once: still bounded per pass, and a new one is first.
        for s in ["big2", "big3", "big4", "big5"] {
            k.put(&service(s, Some(100_000)));
        }
        let plan = k.pass();
        assert!(plan.created <= MAX_NEW_TASKS_PER_PASS, "{}", plan.created);
        k.put(&service("late", Some(2)));
        let plan = k.pass();
        assert_eq!(created_for(&plan, "late"), 2);
        assert!(plan.created <= MAX_NEW_TASKS_PER_PASS);

        // Removing the huge services stops their growth at the next pass.
        for s in ["big", "big2", "big3", "big4", "big5"] {
            k.delete_service(s);
        }
        let plan = k.pass();
        assert_eq!(plan.created, 0);
        assert_eq!(plan.deferred, 0);
    }

    #[test]
    fn scale_down_takes_unplaced_then_not_running_then_from_the_most_loaded_node() {
        let mut k = Kit::new(&["n1", "n2"], vec![service("s", Some(6))]);
        k.pass();
        // n1 gets a third task: drain n2 briefly is overkill; instead report states.
        let tasks = k.live("s");
        let on = |n: &str| tasks.iter().filter(|t| t.node_id == n).count();
        assert_eq!((on("n1"), on("n2")), (3, 3));
        // Everything runs but one task on n2.
        k.run_all();
        let lagging = tasks.iter().find(|t| t.node_id == "n2").unwrap().meta.id.clone();
        k.report(&lagging, TaskState::Starting);
        k.set_service("s", |s| s.spec.mode = shoal_shared::model::ServiceMode::replicated(3));
        let plan = k.pass();
        let removed: Vec<&String> = plan
            .intents
            .iter()
            .filter_map(|i| match i {
                Intent::Remove {
                    task,
                    reason: StopReason::ScaleDown,
                } => Some(task),
                _ => None,
            })
            .collect();
        assert_eq!(removed.len(), 3);
        assert_eq!(removed[0], &lagging, "the task that does not run goes first");
        let live = k.live("s");
        let on = |n: &str| live.iter().filter(|t| t.node_id == n).count();
        assert_eq!(on("n1") + on("n2"), 3);
        assert!((on("n1") as i64 - on("n2") as i64).abs() <= 1, "spread kept");
    }

    #[test]
    fn scaling_a_large_service_to_zero_removes_every_slot_in_one_pass() {
        let mut k = Kit::new(&["n1", "n2", "n3"], vec![service("s", Some(3000))]);
        for _ in 0..3 {
            k.pass();
        }
        assert_eq!(k.live("s").len(), 3000);
        k.set_service("s", |s| s.spec.mode = shoal_shared::model::ServiceMode::replicated(0));
        k.pass();
        assert!(k.live("s").is_empty());
    }
}
