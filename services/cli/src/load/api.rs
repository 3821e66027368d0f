//! `shoal load api`: Docker API requests against shoal-api (`--host`), at a
//! concurrency, `--seconds` per phase: `service create` (services of 0
//! replicas, labeled and named as this run's), `service ls`, then
//! `service ps` of one of them; requests/s and p50/p99 of each.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::{progress, Ctx, Stats, LABEL};
use crate::client::{urlencode, Client};

/// One phase: `concurrency` threads sending `op(worker, n)` until the phase ends.
async fn phase<F>(ctx: &Ctx, name: &'static str, concurrency: usize, op: F) -> (Arc<Stats>, f64)
where
    F: Fn(usize, u64) -> bool + Send + Sync + 'static,
{
    let stats = Arc::new(Stats::default());
    let ticker = progress(name, stats.clone());
    let until = Instant::now() + ctx.duration();
    let op = Arc::new(op);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (stats, op) = (stats.clone(), op.clone());
            tokio::task::spawn_blocking(move || {
                let mut n = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    if op(w, n) {
                        stats.ok(t.elapsed());
                    } else {
                        stats.failed();
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    ticker.abort();
    (stats, started.elapsed().as_secs_f64())
}

fn figures(name: &str, stats: &Stats, secs: f64) -> String {
    format!(
        "{name}_per_s={:.0} {name}_p50_ms={:.1} {name}_p99_ms={:.1} {name}_failed={}",
        stats.count() as f64 / secs,
        stats.percentile_ms(50.0),
        stats.percentile_ms(99.0),
        stats.failures()
    )
}

pub async fn run(ctx: &Arc<Ctx>, api: &Arc<Client>, concurrency: usize) -> Result<String, String> {
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    api.get::<Value>("/info").map_err(|e| e.to_string())?;
    println!("api: {concurrency} clients, {:.0} s per phase", ctx.seconds);

    let create = {
        let (api, prefix, labels) = (api.clone(), ctx.name("svc"), ctx.labels());
        move |w: usize, n: u64| {
            let body = json!({
                "Name": format!("{prefix}-{w}-{n}"),
                "Labels": labels,
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Command": ["sleep", "3600"]}},
                "Mode": {"Replicated": {"Replicas": 0}},
            });
            api.post::<Value, _>("/services/create", &body).is_ok()
        }
    };
    let (created, secs) = phase(ctx, "api create", concurrency, create).await;
    let create_figures = figures("create", &created, secs);
    if created.count() == 0 {
        return Err("api: no service could be created".into());
    }

    let ls = {
        let api = api.clone();
        move |_: usize, _: u64| api.get::<Vec<Value>>("/services").is_ok()
    };
    let (listed, secs) = phase(ctx, "api ls", concurrency, ls).await;
    let ls_figures = figures("ls", &listed, secs);

    let ps = {
        let api = api.clone();
        let filter = urlencode(&json!({"service": {ctx.name("svc-0-0"): true}}).to_string());
        move |_: usize, _: u64| api.get::<Vec<Value>>(&format!("/tasks?filters={filter}")).is_ok()
    };
    let (ps_stats, secs) = phase(ctx, "api ps", concurrency, ps).await;
    let ps_figures = figures("ps", &ps_stats, secs);
    println!(
        "api: {} services created, {} lists, {} task lists",
        created.count(),
        listed.count(),
        ps_stats.count()
    );
    Ok(format!(
        "load api concurrency={concurrency} {create_figures} {ls_figures} {ps_figures}"
    ))
}

/// Removes (through the API) every service labeled with this run.
pub async fn cleanup(ctx: &Ctx, api: &Arc<Client>) -> Result<usize, String> {
    let filter = urlencode(&json!({"label": {format!("{LABEL}={}", ctx.run): true}}).to_string());
    let api = api.clone();
    tokio::task::spawn_blocking(move || {
        let services: Vec<Value> = api
            .get(&format!("/services?filters={filter}"))
            .map_err(|e| format!("listing this run's services: {e}"))?;
        let mut removed = 0;
        for s in services {
            let Some(id) = s["ID"].as_str() else { continue };
            match api.delete(&format!("/services/{id}")) {
                Ok(()) => removed += 1,
                Err(e) => return Err(format!("removing service {id}: {e}")),
            }
        }
        Ok(removed)
    })
    .await
    .map_err(|e| e.to_string())?
}
