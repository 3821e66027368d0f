//! API lookup benchmark: mean latency of `GET /services/<id>`, `GET
//! /services/<name>`, `GET /tasks?filters={"service":[<name>]}` and `DELETE
//! /services/<id>` against one `shoal-raft-store` and one `shoal-api` with
//! 20 services, then with 10,000 (`BENCH_SERVICES`). Services are created by
//! many concurrent requests. Prints figures; asserts nothing. Run by
//! `ops/bench/api`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_tests::api::{raw_request, Api};
use shoal_tests::{rss_mb, StoreCluster};

/// Production-like Raft timing (see bench_store).
const BENCH_RAFT_TIMING: &[&str] = &["--tick-ms", "100", "--election-tick", "30"];
/// Concurrent requests while creating services.
const CREATORS: usize = 32;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn spec(i: usize) -> String {
    json!({
        "Name": format!("svc-{i}"),
        "Labels": { "bench": "api", "team": format!("t{}", i % 7) },
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "busybox:latest",
                "Command": ["sleep", "3600"],
                "Env": ["A=1", "B=2", format!("N={i}")],
            },
            "RestartPolicy": { "Condition": "any" },
        },
        "Mode": { "Replicated": { "Replicas": 1 } },
    })
    .to_string()
}

/// Creates services `from..to` with [`CREATORS`] concurrent requests; returns their IDs by index.
fn create(port: u16, from: usize, to: usize) -> Vec<(usize, String)> {
    let next = Arc::new(AtomicUsize::new(from));
    let threads: Vec<_> = (0..CREATORS)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut made = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return made;
                    }
                    let body = spec(i);
                    for attempt in 0.. {
                        match raw_request(port, "POST", "/v1.50/services/create", Some(body.as_bytes()), &[]) {
                            Ok(r) if r.status == 201 => {
                                made.push((i, r.json()["ID"].as_str().unwrap_or_default().to_string()));
                                break;
                            }
                            Ok(r) if attempt >= 5 => panic!("create svc-{i}: {} {}", r.status, r.body),
                            Err(e) if attempt >= 5 => panic!("create svc-{i}: {e}"),
                            _ => std::thread::sleep(Duration::from_millis(100)),
                        }
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<(usize, String)> = threads.into_iter().flat_map(|t| t.join().expect("creator")).collect();
    all.sort();
    all
}

/// Mean milliseconds of `request(i)` for i in 0.., at most `n` times or ~`budget`.
fn mean_ms(n: usize, budget: Duration, mut request: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut done = 0;
    while done < n && (done < 5 || start.elapsed() < budget) {
        request(done);
        done += 1;
    }
    start.elapsed().as_secs_f64() * 1000.0 / done as f64
}

fn expect(port: u16, method: &str, path: &str, status: u16) {
    let r = raw_request(port, method, path, None, &[]).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(r.status, status, "{method} {path}: {}", r.body);
}

struct Level {
    services: usize,
    get_ms: f64,
    get_by_name_ms: f64,
    tasks_filtered_ms: f64,
    delete_ms: f64,
}

fn measure(port: u16, ids: &mut [(usize, String)], samples: usize) -> Level {
    let budget = Duration::from_secs(10);
    let n = ids.len();
    let pick = |k: usize| (k * 7919) % n;
    let get_ms = mean_ms(samples, budget, |k| {
        expect(port, "GET", &format!("/v1.50/services/{}", ids[pick(k)].1), 200)
    });
    let get_by_name_ms = mean_ms(samples, budget, |k| {
        expect(port, "GET", &format!("/v1.50/services/svc-{}", ids[pick(k)].0), 200)
    });
    let tasks_filtered_ms = mean_ms(samples, budget, |k| {
        let q = format!("%7B%22service%22:%5B%22svc-{}%22%5D%7D", ids[pick(k)].0);
        expect(port, "GET", &format!("/v1.50/tasks?filters={q}"), 200)
    });
    // Delete some, then create them again (untimed) so the level stays.
    let victims: Vec<(usize, String)> = (0..10.min(n / 2)).map(|k| ids[pick(k + 1)].clone()).collect();
    let delete_ms = mean_ms(victims.len(), Duration::MAX, |k| {
        expect(port, "DELETE", &format!("/v1.50/services/{}", victims[k].1), 200)
    });
    for (i, _) in &victims {
        let again = create(port, *i, i + 1);
        if let Some(slot) = ids.iter_mut().find(|(j, _)| j == i) {
            slot.1 = again[0].1.clone();
        }
    }
    Level {
        services: n,
        get_ms,
        get_by_name_ms,
        tasks_filtered_ms,
        delete_ms,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let big = env_or("BENCH_SERVICES", 10_000);
    let samples = env_or("BENCH_SAMPLES", 200);
    let store = StoreCluster::start(1, BENCH_RAFT_TIMING);
    let client = store.client().await;
    store.leader(&client, &[], Duration::from_secs(30)).await;
    let api = Api::start(&store, &[]);
    let port = api.port;
    let init = raw_request(
        port,
        "POST",
        "/v1.50/swarm/init",
        Some(br#"{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"127.0.0.1"}"#),
        &[],
    )
    .expect("swarm init");
    assert_eq!(init.status, 200, "swarm init: {}", init.body);

    let mut levels = Vec::new();
    let mut ids = create(port, 0, 20);
    levels.push(measure(port, &mut ids, samples));
    let started = Instant::now();
    ids.extend(create(port, 20, big));
    let create_s = started.elapsed().as_secs_f64();
    let create_per_s = (big - 20) as f64 / create_s;
    println!(
        "created {} services in {create_s:.1} s ({create_per_s:.0}/s, {CREATORS} concurrent requests)",
        big - 20
    );
    levels.push(measure(port, &mut ids, samples));
    let rss = |pid: Option<i32>| pid.and_then(rss_mb).unwrap_or(f64::NAN);
    let store_rss = rss(store.pid(1));
    let api_rss = rss(Some(api.proc.pid().as_raw()));
    for l in &levels {
        println!(
            "services={:<6} get_ms={:>7.2} get_by_name_ms={:>7.2} tasks_filtered_ms={:>7.2} delete_ms={:>7.2}",
            l.services, l.get_ms, l.get_by_name_ms, l.tasks_filtered_ms, l.delete_ms
        );
    }
    println!("memory with {big} services: rss_mb_store={store_rss:.0} rss_mb_api={api_rss:.0}");
    let (small, large) = (&levels[0], &levels[1]);
    println!(
        "bench api get_ms_20={:.2} get_ms_{big}={:.2} get_by_name_ms_20={:.2} get_by_name_ms_{big}={:.2} \
         tasks_filtered_ms_20={:.2} tasks_filtered_ms_{big}={:.2} delete_ms_20={:.2} delete_ms_{big}={:.2} \
         create_per_s={create_per_s:.0}",
        small.get_ms,
        large.get_ms,
        small.get_by_name_ms,
        large.get_by_name_ms,
        small.tasks_filtered_ms,
        large.tasks_filtered_ms,
        small.delete_ms,
        large.delete_ms,
    );
}
