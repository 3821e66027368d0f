//! `shoal load store`: N clients, each creating one labeled network and then
//! updating it (a label bump, naming the version it read) as fast as the
//! store answers, for `--seconds`. Only the store's NATS request API is used.
//! Also the removal of what a run left in the store, for every mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_shared::model::{Network, NetworkSpec, Service, Task};
use shoal_shared::store::{Kind, ListFilter, StoreObject};

use super::{progress, Ctx, Stats, LABEL};

pub async fn run(ctx: &Arc<Ctx>, clients: usize) -> Result<String, String> {
    if clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let stats = Arc::new(Stats::default());
    let mut objects = Vec::new();
    for i in 0..clients {
        let spec = NetworkSpec {
            name: ctx.name(format!("net-{i}")),
            labels: ctx.labels(),
            ..NetworkSpec::default()
        };
        let id = shoal_shared::id::new_id();
        ctx.created(Kind::Network, &id);
        let net = ctx
            .store
            .create(&Network::new(id, spec))
            .await
            .map_err(|e| format!("creating the networks: {e}"))?;
        objects.push(net);
    }
    println!(
        "store: {clients} clients, each updating its own network for {:.0} s",
        ctx.seconds
    );
    let ticker = progress("store", stats.clone());
    let until = Instant::now() + ctx.duration();
    let workers: Vec<_> = objects
        .into_iter()
        .map(|mut net| {
            let (store, stats) = (ctx.store.clone(), stats.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    net.spec.labels.insert(format!("{LABEL}.n"), n.to_string());
                    let t = Instant::now();
                    match store.update(&net).await {
                        Ok(updated) => {
                            stats.ok(t.elapsed());
                            net = updated;
                        }
                        Err(_) => {
                            stats.failed();
                            // Read it again: the update may have applied, or the version moved.
                            if let Ok(Some(fresh)) = store.get::<Network>(&net.meta.id).await {
                                net = fresh;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for w in workers {
        let _ = w.await;
    }
    ticker.abort();
    let secs = started.elapsed().as_secs_f64();
    let writes = stats.count();
    println!(
        "store: {writes} writes in {secs:.1} s by {clients} clients, {} failed",
        stats.failures()
    );
    Ok(format!(
        "load store clients={clients} writes={writes} writes_per_s={:.0} p50_ms={:.1} p99_ms={:.1} failed={}",
        writes as f64 / secs,
        stats.percentile_ms(50.0),
        stats.percentile_ms(99.0),
        stats.failures()
    ))
}

/// Deletes every service labeled with this run (recorded or not) and every
/// task of them; returns how many objects went. Polls until no task of them
/// is left (a scheduler pass that began before a service went may still
/// write its tasks), for at most 30 s.
pub async fn remove_services(ctx: &Ctx) -> Result<usize, String> {
    let store = &ctx.store;
    let by_label = ListFilter::default().label(LABEL, Some(ctx.run.clone()));
    let services: Vec<Service> = store
        .list(by_label)
        .await
        .map_err(|e| format!("listing this run's services: {e}"))?;
    let mut ids: Vec<String> = services.iter().map(|s| s.meta.id.clone()).collect();
    for (kind, id) in ctx.created.lock().unwrap().iter() {
        if *kind == Kind::Service && !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let mut removed = 0;
    for id in &ids {
        if store.delete(Kind::Service, id, None).await.is_ok() {
            removed += 1;
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = 0;
        for id in &ids {
            let tasks: Vec<Task> = store
                .list(ListFilter::default().field("service", id.clone()))
                .await
                .map_err(|e| format!("listing this run's tasks: {e}"))?;
            left += tasks.len();
            for t in tasks {
                if store.delete(Kind::Task, &t.meta.id, None).await.is_ok() {
                    removed += 1;
                }
            }
        }
        if left == 0 {
            return Ok(removed);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "tasks of this run's services were still written after 30 s ({left} last seen)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes every other object the run recorded (nodes, networks); returns how many went.
pub async fn remove_recorded(ctx: &Ctx) -> Result<usize, String> {
    let created: Vec<(Kind, String)> = std::mem::take(&mut *ctx.created.lock().unwrap());
    let mut removed = 0;
    for (kind, id) in created {
        if kind == Kind::Service {
            continue;
        }
        match ctx.store.delete(kind, &id, None).await {
            Ok(_) => removed += 1,
            Err(e) if e.code == shoal_shared::error::ErrorCode::NotFound => {}
            Err(e) => return Err(format!("removing {kind} {id}: {e}")),
        }
    }
    Ok(removed)
}

/// Lists this run's objects of one kind that are still in the store, for checks.
pub async fn left<T: StoreObject>(ctx: &Ctx) -> Result<usize, String> {
    ctx.store
        .list::<T>(ListFilter::default().label(LABEL, Some(ctx.run.clone())))
        .await
        .map(|v| v.len())
        .map_err(|e| e.to_string())
}
