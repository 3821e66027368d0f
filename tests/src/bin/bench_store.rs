//! Store benchmark: committed writes/s and latency percentiles with 1, 16 and
//! 64 concurrent clients against 3 `shoal-raft-store` replicas over loopback
//! NATS, fsync on; then memory: the replicas' resident memory idle, and with
//! the store emptied again after cycles of creating and deleting 2,000
//! services with a task each (`BENCH_CHURN_CYCLES`, `BENCH_CHURN_OBJECTS`).
//! Prints figures; asserts nothing. Run by `ops/bench/store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_shared::store::*;
use shoal_tests::{dir_mb, rss_mb, StoreCluster};

/// How long each concurrency level runs.
/// Raft timing as a production store runs it (elections after 3-6 s), with
/// 100 ms heartbeats; the tests' 0.5-1 s elections fire spuriously when the
/// benchmark saturates both cores.
const BENCH_RAFT_TIMING: &[&str] = &["--tick-ms", "100", "--election-tick", "30"];

/// How long each concurrency level runs (`BENCH_SECS` overrides).
fn run_time() -> Duration {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

struct Figures {
    writes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

async fn run_level(client: &StoreClient, clients: usize, tag: &str) -> Figures {
    let stop_at = Instant::now() + run_time();
    let seq = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.with_deadline(Duration::from_secs(10));
            let seq = seq.clone();
            let errors = errors.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < stop_at {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let id = format!("{tag}-{n}");
                    let t0 = Instant::now();
                    let tx = TxRequest::new(vec![Op::Create {
                        record: Record::blob(id, json!({ "Spec": { "Name": "bench", "Replicas": n } })),
                    }]);
                    match client.tx(tx).await {
                        Ok(_) => lat.push(t0.elapsed()),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("write {n} failed after {:?}: {e}", t0.elapsed());
                            }
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i].as_secs_f64() * 1000.0
    };
    Figures {
        writes_per_s: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Applies `ops` one per transaction with `clients` concurrent writers.
async fn write_all(client: &StoreClient, ops: Vec<Op>, clients: usize) {
    let ops = Arc::new(std::sync::Mutex::new(ops));
    let writers: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.with_deadline(Duration::from_secs(30));
            let ops = ops.clone();
            tokio::spawn(async move {
                loop {
                    let Some(op) = ops.lock().expect("ops").pop() else {
                        return;
                    };
                    if let Err(e) = client.tx(TxRequest::new(vec![op])).await {
                        eprintln!("churn write failed: {e}");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
}

/// A service-sized record (about 1.5 KiB of JSON) and one task of it.
fn service_and_task(cycle: usize, i: usize) -> [Record; 2] {
    let id = format!("svc{cycle}x{i:05}");
    let mut s = Record::blob(
        id.clone(),
        json!({
            "Spec": {
                "Name": format!("svc-{i}"),
                "Labels": { "bench": "store", "team": format!("t{}", i % 7) },
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "busybox:latest@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                        "Command": ["sleep", "3600"],
                        "Env": (0..20).map(|e| format!("VARIABLE_{e}=value-{e}-{i}")).collect::<Vec<_>>(),
                    },
                    "RestartPolicy": { "Condition": "any", "MaxAttempts": 0 },
                    "Placement": { "Constraints": ["node.role==worker"] },
                },
                "Mode": { "Replicated": { "Replicas": 1 } },
                "UpdateConfig": { "Parallelism": 1, "Delay": 0, "FailureAction": "pause" },
            },
        }),
    );
    s.kind = Kind::Service;
    s.name = Some(format!("svc-{i}"));
    let mut t = Record::blob(
        format!("task{cycle}x{i:05}"),
        json!({ "ServiceID": id, "Slot": 1, "Status": { "State": "running", "Message": "started" } }),
    );
    t.kind = Kind::Task;
    t.fields = [
        ("service", id.as_str()),
        ("node", "node-1"),
        ("desired-state", "running"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    [s, t]
}

/// Deletes every record of these kinds whose id starts with `prefix`.
async fn empty(client: &StoreClient, kinds: &[Kind], prefix: &str) {
    let all = client
        .with_deadline(Duration::from_secs(30))
        .list_records(kinds, ListFilter::default().id_prefix(prefix))
        .await
        .expect("list");
    let ops = all
        .records
        .into_iter()
        .map(|r| Op::Delete {
            kind: r.kind,
            id: r.id,
            version: None,
        })
        .collect();
    write_all(client, ops, 64).await;
}

struct Memory {
    rss_mb: f64,
    data_mb: f64,
}

/// The largest resident memory of the replicas, and the largest data dir.
fn memory(c: &StoreCluster) -> Memory {
    let mut m = Memory {
        rss_mb: 0.0,
        data_mb: 0.0,
    };
    for &id in &c.ids {
        if let Some(rss) = c.pid(id).and_then(rss_mb) {
            m.rss_mb = m.rss_mb.max(rss);
        }
        m.data_mb = m.data_mb.max(dir_mb(&c.dir.path().join(format!("replica-{id}"))));
    }
    m
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let replicas: u64 = std::env::var("BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // `BENCH_STORE_ARGS="--cache-mb 1024"` passes more flags to every replica.
    let extra = std::env::var("BENCH_STORE_ARGS").unwrap_or_default();
    let mut flags: Vec<&str> = BENCH_RAFT_TIMING.to_vec();
    flags.extend(extra.split_whitespace());
    let c = StoreCluster::start(replicas, &flags);
    let client = c.client().await;
    let leader = c.leader(&client, &[], Duration::from_secs(30)).await;
    println!(
        "{replicas} replica(s) up, replica {leader} leads; each level runs {:?}",
        run_time()
    );
    // Settle (allocator purges) before and after each phase; figures, not conditions.
    let settle = || tokio::time::sleep(Duration::from_secs(2));
    settle().await;
    let idle = memory(&c);
    // `BENCH_LEVELS=1,64` runs only those levels (the summary line needs 1 and 64).
    let levels: Vec<usize> = std::env::var("BENCH_LEVELS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64]);
    let mut results = Vec::new();
    for clients in levels {
        let f = run_level(&client, clients, &format!("c{clients}")).await;
        println!(
            "clients={clients:<3} writes_per_s={:>9.0} p50_ms={:>7.2} p99_ms={:>7.2} max_ms={:>8.2} errors={}",
            f.writes_per_s, f.p50_ms, f.p99_ms, f.max_ms, f.errors
        );
        results.push((clients, f));
    }

    // Memory: empty the store, then create and delete services with a task
    // each, `cycles` times, and look at what the replicas hold with nothing in it.
    let cycles: usize = std::env::var("BENCH_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let objects: usize = std::env::var("BENCH_CHURN_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    // The levels' blobs (`c<clients>-<n>`), a slice at a time (a list is one NATS message).
    for (clients, _) in &results {
        for d in 0..10 {
            empty(&client, &[Kind::Blob], &format!("c{clients}-{d}")).await;
        }
    }
    settle().await;
    let after_writes = memory(&c);
    let mut full = Memory {
        rss_mb: 0.0,
        data_mb: 0.0,
    };
    let churn_start = Instant::now();
    for cycle in 0..cycles {
        let ops = (0..objects)
            .flat_map(|i| service_and_task(cycle, i))
            .map(|record| Op::Create { record })
            .collect();
        write_all(&client, ops, 64).await;
        let m = memory(&c);
        full.rss_mb = full.rss_mb.max(m.rss_mb);
        full.data_mb = full.data_mb.max(m.data_mb);
        empty(&client, &[Kind::Service, Kind::Task], "").await;
    }
    let churn_s = churn_start.elapsed().as_secs_f64();
    settle().await;
    let churned = memory(&c);
    println!(
        "memory rss_mb_idle={:.0} rss_mb_empty_after_writes={:.0} rss_mb_full_max={:.0} rss_mb_empty_after_churn={:.0} \
         data_mb_idle={:.1} data_mb_full_max={:.1} data_mb_empty_after_churn={:.1} (churn: {cycles} x {objects} services \
         + tasks created and deleted in {churn_s:.0} s)",
        idle.rss_mb,
        after_writes.rss_mb,
        full.rss_mb,
        churned.rss_mb,
        idle.data_mb,
        full.data_mb,
        churned.data_mb,
    );

    let get = |n: usize| results.iter().find(|(c, _)| *c == n).map(|(_, f)| f);
    let (Some(one), Some(many)) = (get(1), get(64)) else {
        return;
    };
    println!(
        "bench store writes_per_s_1={:.0} writes_per_s_64={:.0} p99_ms_64={:.2} rss_mb_idle={:.0} \
         rss_mb_empty_after_churn={:.0}",
        one.writes_per_s, many.writes_per_s, many.p99_ms, idle.rss_mb, churned.rss_mb
    );
}
