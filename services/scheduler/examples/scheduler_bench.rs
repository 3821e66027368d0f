//! Scheduler benchmark: 100,000 tasks for 1,000 simulated nodes, decided by
//! reconcile passes and committed (batched, fenced) through a real 3-replica
//! store. Prints figures; asserts nothing. Run by `ops/bench/scheduler`.
//! Last line: `bench scheduler tasks=<n> nodes=<n> tasks_per_s=<n>`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_scheduler::reconcile::reconcile;
use shoal_scheduler::snapshot::{Snapshot, KINDS};
use shoal_shared::model::*;
use shoal_shared::store::mirror::{chunk_ops, Mirror};
use shoal_shared::store::{ListFilter, Op, StoreObject, TxRequest};
use shoal_tests::StoreCluster;

/// Raft timing as a production store runs it (elections after 3-6 s), with
/// 100 ms heartbeats; the tests' 0.5-1 s elections fire spuriously when the
/// benchmark saturates both cores.
const BENCH_RAFT_TIMING: &[&str] = &["--tick-ms", "100", "--election-tick", "30"];

const NODES: usize = 1000;
const SERVICES: usize = 100;
const REPLICAS: u64 = 1000;
/// Transactions in flight at once (`SHOAL_BENCH_IN_FLIGHT`).
const IN_FLIGHT: usize = 8;
/// Operations per transaction (`SHOAL_BENCH_TX_OPS`).
const TX_OPS: usize = 250;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (in_flight, tx_ops) = (
        env_or("SHOAL_BENCH_IN_FLIGHT", IN_FLIGHT),
        env_or("SHOAL_BENCH_TX_OPS", TX_OPS),
    );
    let c = StoreCluster::start(3, BENCH_RAFT_TIMING);
    let client = c.client().await.with_deadline(Duration::from_secs(30));
    let leader = c.leader(&client, &[], Duration::from_secs(30)).await;
    let mut term = client.status(leader).await.expect("leader status").term;
    println!("3 replicas up, replica {leader} leads (term {term}); {tx_ops} operations per transaction, {in_flight} in flight");

    // 1,000 ready nodes, as the dispatcher leaves them after registration.
    let mut ops = Vec::new();
    for i in 0..NODES {
        let mut n = Node::new(format!("node{i:04}"), format!("host{i:04}"), NodeRole::Worker);
        n.status.state = NodeState::Ready;
        n.description.resources = Resources {
            generic_resources: Vec::new(),
            nano_cpus: 64_000_000_000,
            memory_bytes: 256 << 30,
        };
        ops.push(Op::Create {
            record: n.to_record().unwrap(),
        });
    }
    for i in 0..SERVICES {
        let spec = ServiceSpec {
            name: format!("svc{i:03}"),
            task_template: TaskSpec {
                container_spec: Some(ContainerSpec {
                    image: "busybox".into(),
                    command: vec!["sleep".into(), "3600".into()],
                    ..ContainerSpec::default()
                }),
                restart_policy: Some(RestartPolicy {
                    condition: Some(RestartCondition::Any),
                    delay: Some(Duration::from_secs(5)),
                    max_attempts: Some(0),
                    window: None,
                }),
                resources: Some(ResourceRequirements {
                    limits: None,
                    reservations: Some(Resources {
                        generic_resources: Vec::new(),
                        nano_cpus: 10_000_000,
                        memory_bytes: 1 << 20,
                    }),
                }),
                ..TaskSpec::default()
            },
            mode: ServiceMode::replicated(REPLICAS),
            ..ServiceSpec::default()
        };
        ops.push(Op::Create {
            record: Service::new(format!("svc{i:03}"), spec).to_record().unwrap(),
        });
    }
    client.tx(TxRequest::new(ops)).await.expect("nodes and services");
    let list = client.list_records(&KINDS, ListFilter::default()).await.expect("list");
    let mut snap = Snapshot::from_records(&list.records);
    println!(
        "{} nodes, {} services of {REPLICAS} replicas",
        snap.nodes.len(),
        snap.services.len()
    );

    let started = Instant::now();
    let mut passes = 0;
    let mut reconcile_time = Duration::ZERO;
    let mut txs = 0;
    let mut retries = 0;
    loop {
        let t = Instant::now();
        let plan = reconcile(&snap, chrono::Utc::now(), &mut shoal_shared::id::new_id);
        reconcile_time += t.elapsed();
        passes += 1;
        if plan.ops.is_empty() {
            break;
        }
        println!(
            "pass {passes}: {} ops ({} created, {} placed, {} pending) decided in {:.0} ms",
            plan.ops.len(),
            plan.created,
            plan.placed,
            plan.pending,
            t.elapsed().as_secs_f64() * 1000.0
        );
        let chunks = chunk_ops(plan.ops, tx_ops);
        txs += chunks.len();
        let results: Vec<_> = futures::stream::iter(chunks.into_iter().map(|ops| {
            let client = client.clone();
            async move {
                let out = client.tx(TxRequest::new(ops.clone()).fenced(term)).await;
                (ops, out)
            }
        }))
        .buffered(in_flight)
        .collect()
        .await;
        let mut failed = None;
        for (ops, out) in results {
            match out {
                Ok(out) => snap.apply_outcome(&ops, &out),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            // As the scheduler does: learn the new term, read the store again, decide again.
            println!("pass {passes}: a transaction failed ({e}); re-reading the store");
            retries += 1;
            let leader = c.leader(&client, &[], Duration::from_secs(30)).await;
            term = client.status(leader).await.expect("leader status").term;
            let list = client.list_records(&KINDS, ListFilter::default()).await.expect("list");
            snap = Snapshot::from_records(&list.records);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let assigned = snap
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Assigned && !t.node_id.is_empty())
        .count();
    let per_node: Vec<usize> = {
        let mut m = std::collections::HashMap::<&str, usize>::new();
        for t in snap.tasks.values() {
            *m.entry(t.node_id.as_str()).or_default() += 1;
        }
        m.values().copied().collect()
    };
    println!(
        "{assigned} tasks assigned in {elapsed:.2} s: {passes} passes, {txs} transactions ({retries} failed passes), reconcile {:.2} s; per node min {} max {}",
        reconcile_time.as_secs_f64(),
        per_node.iter().min().unwrap_or(&0),
        per_node.iter().max().unwrap_or(&0)
    );
    let mut stored = 0;
    for i in 0..SERVICES {
        stored += client
            .list_records(
                &[shoal_shared::store::Kind::Task],
                ListFilter::default().field("service", format!("svc{i:03}")),
            )
            .await
            .map(|r| r.records.len())
            .unwrap_or(0);
    }
    println!("tasks in the store: {stored}");
    let t = Instant::now();
    let plan = reconcile(&snap, chrono::Utc::now(), &mut shoal_shared::id::new_id);
    println!(
        "a pass over the converged state: {} ops in {:.0} ms",
        plan.ops.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "bench scheduler tasks={assigned} nodes={NODES} tasks_per_s={:.0}",
        assigned as f64 / elapsed
    );
}
