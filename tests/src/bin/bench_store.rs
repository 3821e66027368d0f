//! Store benchmark: committed writes/s and latency percentiles with 1, 16 and
//! 64 concurrent clients against 3 `shoal-raft-store` replicas over loopback
//! NATS, fsync on. Prints figures; asserts nothing. Run by `ops/bench/store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_shared::store::*;
use shoal_tests::StoreCluster;

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let replicas: u64 = std::env::var("BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let c = StoreCluster::start(replicas, BENCH_RAFT_TIMING);
    let client = c.client().await;
    let leader = c.leader(&client, &[], Duration::from_secs(30)).await;
    println!(
        "{replicas} replica(s) up, replica {leader} leads; each level runs {:?}",
        run_time()
    );
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
    let get = |n: usize| results.iter().find(|(c, _)| *c == n).map(|(_, f)| f);
    let (Some(one), Some(many)) = (get(1), get(64)) else {
        return;
    };
    println!(
        "bench store writes_per_s_1={:.0} writes_per_s_64={:.0} p99_ms_64={:.2}",
        one.writes_per_s, many.writes_per_s, many.p99_ms
    );
}
