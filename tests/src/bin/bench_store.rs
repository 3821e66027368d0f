//! Store benchmark: committed writes/s and latency percentiles with 1, 16 and
//! 64 concurrent clients against 3 `shoal-raft-store` replicas over loopback
//! NATS (every acknowledged write `fdatasync`ed on a majority); then memory:
//! the replicas' resident memory idle, and with the store emptied again after
//! cycles of creating and deleting 2,000 services with a task each
//! (`BENCH_CHURN_CYCLES`, `BENCH_CHURN_OBJECTS`); then growth: the leader's
//! resident memory holding 100,000 task objects and the time a restarted
//! replica takes to serve them again; then (built with `--features etcd`) the
//! same client loop against a 3-member etcd cluster on loopback (Debian's
//! `etcd-server`, its own `fdatasync`), through etcd's gRPC `KV/Put`.
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

/// The record each benchmark write puts (shoal: created; etcd: its JSON as the value).
fn bench_record(id: String, n: u64) -> Record {
    Record::blob(id, json!({ "Spec": { "Name": "bench", "Replicas": n } }))
}

/// Something that writes one record and waits for its acknowledgement.
trait Writer: Clone + Send + Sync + 'static {
    fn put(&self, record: Record) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

impl Writer for StoreClient {
    async fn put(&self, record: Record) -> Result<(), String> {
        self.tx(TxRequest::new(vec![Op::Create { record }]))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

async fn run_level<W: Writer>(client: &W, clients: usize, tag: &str) -> Figures {
    let stop_at = Instant::now() + run_time();
    let seq = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.clone();
            let seq = seq.clone();
            let errors = errors.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < stop_at {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let id = format!("{tag}-{n}");
                    let t0 = Instant::now();
                    match client.put(bench_record(id, n)).await {
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
    let mut c = StoreCluster::start(replicas, &flags);
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
    let writer = client.with_deadline(Duration::from_secs(10));
    for &clients in &levels {
        let f = run_level(&writer, clients, &format!("c{clients}")).await;
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

    // Growth: 100,000 task objects (in transactions of 100), the leader's
    // memory holding them, and a follower's restart until it serves them.
    let objects_100k: usize = std::env::var("BENCH_GROWTH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let growth = growth(&mut c, &client, objects_100k).await;
    println!(
        "growth objects={objects_100k} load_s={:.1} rss_mb_leader={:.0} restart_s={:.2} data_mb={:.1}",
        growth.load_s, growth.rss_mb, growth.restart_s, growth.data_mb
    );
    drop(client);
    drop(c);

    let etcd = etcd_levels(&levels).await;

    let get = |n: usize| results.iter().find(|(c, _)| *c == n).map(|(_, f)| f);
    let etcd_get = |n: usize| etcd.iter().find(|(c, _)| *c == n).map(|(_, f)| f.writes_per_s);
    let fmt = |v: Option<f64>| v.map_or("nan".to_string(), |v| format!("{v:.0}"));
    let ratio = |n: usize| match (get(n), etcd_get(n)) {
        (Some(s), Some(e)) if e > 0.0 => format!("{:.2}", s.writes_per_s / e),
        _ => "nan".to_string(),
    };
    if let Some(e) = etcd.iter().find(|(c, _)| *c == 64).map(|(_, f)| f) {
        println!("etcd p99_ms_64={:.2} max_ms_64={:.2}", e.p99_ms, e.max_ms);
    }
    println!(
        "rss_mb_100k={:.0} restart_s_100k={:.2}",
        growth.rss_mb, growth.restart_s
    );
    println!(
        "bench store writes_per_s_1={} writes_per_s_16={} writes_per_s_64={} p99_ms_64={} max_ms_64={} \
         etcd_writes_per_s_1={} etcd_writes_per_s_16={} etcd_writes_per_s_64={} ratio_1={} ratio_16={} ratio_64={} \
         sync=fdatasync",
        fmt(get(1).map(|f| f.writes_per_s)),
        fmt(get(16).map(|f| f.writes_per_s)),
        fmt(get(64).map(|f| f.writes_per_s)),
        get(64).map_or("nan".to_string(), |f| format!("{:.2}", f.p99_ms)),
        get(64).map_or("nan".to_string(), |f| format!("{:.2}", f.max_ms)),
        fmt(etcd_get(1)),
        fmt(etcd_get(16)),
        fmt(etcd_get(64)),
        ratio(1),
        ratio(16),
        ratio(64),
    );
}

struct Growth {
    load_s: f64,
    rss_mb: f64,
    restart_s: f64,
    data_mb: f64,
}

async fn growth(c: &mut StoreCluster, client: &StoreClient, objects: usize) -> Growth {
    let started = Instant::now();
    let per_tx = 100;
    let txs: Vec<Vec<Op>> = (0..objects.div_ceil(per_tx))
        .map(|t| {
            (t * per_tx..((t + 1) * per_tx).min(objects))
                .map(|i| {
                    let mut r = Record::blob(
                        format!("g{i:06}"),
                        json!({
                            "ServiceID": format!("svc{}", i % 1000),
                            "Slot": i / 1000,
                            "NodeID": format!("node{}", i % 1000),
                            "Spec": { "ContainerSpec": { "Image": "busybox:latest", "Command": ["sleep", "3600"] } },
                            "Status": { "State": "running", "Message": "started" },
                            "DesiredState": "running",
                        }),
                    );
                    r.kind = Kind::Task;
                    r.fields = [
                        ("service", format!("svc{}", i % 1000)),
                        ("node", format!("node{}", i % 1000)),
                        ("desired-state", "running".to_string()),
                        ("slot", (i / 1000).to_string()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                    Op::Create { record: r }
                })
                .collect()
        })
        .collect();
    let txs = Arc::new(std::sync::Mutex::new(txs));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let client = client.with_deadline(Duration::from_secs(30));
            let txs = txs.clone();
            tokio::spawn(async move {
                let mut last = 0;
                loop {
                    let Some(ops) = txs.lock().expect("txs").pop() else {
                        return last;
                    };
                    match client.tx(TxRequest::new(ops)).await {
                        Ok(out) => last = last.max(out.index),
                        Err(e) => eprintln!("growth write failed: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut last_index = 0;
    for w in writers {
        last_index = last_index.max(w.await.expect("writer"));
    }
    let load_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = c.leader(client, &[], Duration::from_secs(30)).await;
    let rss_mb = c.pid(leader).and_then(rss_mb).unwrap_or(f64::NAN);
    let data_mb = dir_mb(&c.dir.path().join(format!("replica-{leader}")));
    // A follower killed and started again: until it has applied everything.
    let follower = *c.ids.iter().find(|&&i| i != leader).expect("a follower");
    c.kill(follower);
    let restarted = Instant::now();
    c.restart(follower);
    let deadline = restarted + Duration::from_secs(300);
    let probe = client.with_deadline(Duration::from_millis(500));
    loop {
        if let Ok(s) = probe.status(follower).await {
            if s.last_applied.unwrap_or(0) >= last_index && s.leader.is_some() {
                break;
            }
        }
        if Instant::now() > deadline {
            eprintln!("replica {follower} did not catch up within 300 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Growth {
        load_s,
        rss_mb,
        restart_s: restarted.elapsed().as_secs_f64(),
        data_mb,
    }
}

#[cfg(not(feature = "etcd"))]
async fn etcd_levels(_levels: &[usize]) -> Vec<(usize, Figures)> {
    println!("etcd: skipped (bench_store built without --features etcd)");
    Vec::new()
}

#[cfg(feature = "etcd")]
async fn etcd_levels(levels: &[usize]) -> Vec<(usize, Figures)> {
    let Some(cluster) = etcd::Cluster::start().await else {
        return Vec::new();
    };
    let client = cluster.client().await;
    println!(
        "etcd {} : 3 members on loopback, writing to the leader ({})",
        cluster.version, client.endpoint
    );
    let mut out = Vec::new();
    for &clients in levels {
        let f = run_level(&client, clients, &format!("c{clients}")).await;
        println!(
            "etcd clients={clients:<3} writes_per_s={:>9.0} p50_ms={:>7.2} p99_ms={:>7.2} max_ms={:>8.2} errors={}",
            f.writes_per_s, f.p50_ms, f.p99_ms, f.max_ms, f.errors
        );
        out.push((clients, f));
    }
    out
}

/// etcd v3 over gRPC with hand-declared messages (the fields the benchmark
/// uses, numbered as in etcd's `rpc.proto`), so no `protoc` is needed.
#[cfg(feature = "etcd")]
mod etcd {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use shoal_shared::store::Record;
    use shoal_tests::{free_port, Proc};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::{Channel, Endpoint};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
        #[prost(uint64, tag = "4")]
        pub raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }

    async fn unary<Req, Resp>(channel: &Channel, path: &'static str, req: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec)
            .await
            .map(|r| r.into_inner())
    }

    /// Three `etcd` members on loopback, each in its own data dir, stopped on drop.
    pub struct Cluster {
        _dir: tempfile::TempDir,
        procs: Vec<Proc>,
        clients: Vec<String>,
        pub version: String,
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for p in self.procs.drain(..) {
                p.stop(Duration::from_secs(5));
            }
        }
    }

    impl Cluster {
        pub async fn start() -> Option<Cluster> {
            let on_path = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("etcd"))
                    .find(|p| p.is_file())
            });
            let Some(etcd) = on_path else {
                println!("etcd: skipped (no etcd binary; ops/bootstrap installs Debian's etcd-server)");
                return None;
            };
            let dir = tempfile::Builder::new()
                .prefix("shoal-etcd-")
                .tempdir()
                .expect("temp dir");
            let peers: Vec<(String, u16, u16)> = (1..=3).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
            let initial = peers
                .iter()
                .map(|(n, _, p)| format!("{n}=http://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut procs = Vec::new();
            for (name, client, peer) in &peers {
                let mut cmd = Command::new(&etcd);
                cmd.env_clear()
                    .arg("--name")
                    .arg(name)
                    .arg("--data-dir")
                    .arg(dir.path().join(name))
                    .arg("--listen-client-urls")
                    .arg(format!("http://127.0.0.1:{client}"))
                    .arg("--advertise-client-urls")
                    .arg(format!("http://127.0.0.1:{client}"))
                    .arg("--listen-peer-urls")
                    .arg(format!("http://127.0.0.1:{peer}"))
                    .arg("--initial-advertise-peer-urls")
                    .arg(format!("http://127.0.0.1:{peer}"))
                    .arg("--initial-cluster")
                    .arg(&initial)
                    .arg("--initial-cluster-state")
                    .arg("new")
                    .arg("--initial-cluster-token")
                    .arg("shoal-bench")
                    .arg("--log-level")
                    .arg("warn");
                procs.push(Proc::spawn(name, cmd, &dir.path().join(format!("{name}.log"))));
            }
            let clients = peers.iter().map(|(_, c, _)| format!("http://127.0.0.1:{c}")).collect();
            let mut c = Cluster {
                _dir: dir,
                procs,
                clients,
                version: String::new(),
            };
            c.version = c.wait_for_leader().await.1;
            Some(c)
        }

        /// Waits until a member reports a leader; returns the leader's client URL and etcd's version.
        async fn wait_for_leader(&self) -> (String, String) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                for url in &self.clients {
                    let Ok(ch) = Endpoint::from_shared(url.clone()).expect("url").connect().await else {
                        continue;
                    };
                    let Ok(st) =
                        unary::<_, StatusResponse>(&ch, "/etcdserverpb.Maintenance/Status", StatusRequest {}).await
                    else {
                        continue;
                    };
                    let me = st.header.map_or(0, |h| h.member_id);
                    if st.leader != 0 && st.leader == me {
                        return (url.clone(), st.version);
                    }
                }
                assert!(Instant::now() < deadline, "etcd: no leader within 60 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// A client of the leader (one HTTP/2 connection, shared by every writer, as etcd's clients do).
        pub async fn client(&self) -> Client {
            let (endpoint, _) = self.wait_for_leader().await;
            let channel = Endpoint::from_shared(endpoint.clone())
                .expect("url")
                .connect()
                .await
                .expect("connect to etcd");
            Client { channel, endpoint }
        }
    }

    #[derive(Clone)]
    pub struct Client {
        channel: Channel,
        pub endpoint: String,
    }

    impl super::Writer for Client {
        async fn put(&self, record: Record) -> Result<(), String> {
            let req = PutRequest {
                key: record.id.clone().into_bytes(),
                value: serde_json::to_vec(&record).map_err(|e| e.to_string())?,
            };
            unary::<_, PutResponse>(&self.channel, "/etcdserverpb.KV/Put", req)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}
