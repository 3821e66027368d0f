//! `shoal load <component>`: drives one component of a running cluster (the
//! one `--nats-url` names; the API by `--host`) with simulated load, prints
//! progress every second and a summary, whose last line is
//! `load <component> key=value ...`.
//!
//! - [`store`]: N clients writing through the store's NATS request API;
//! - [`scheduler`]: N simulated nodes (registered with the dispatcher, heartbeating), M tasks placed and committed;
//! - [`dispatcher`]: N simulated agents heartbeating and reporting their tasks; false Down count;
//! - [`agent`]: one real `shoal-agent` (process executor) started by the tool, M tasks assigned to it;
//! - [`api`]: Docker API requests/s for `service create`, `service ls`, `service ps` at a concurrency;
//! - [`dns`]: one `shoal-dns` the tool starts, its network view scripted ([`view`]), queried by N clients;
//! - [`ingress`]: one `shoal-ingress` the tool starts, N keep-alive HTTP clients through a published
//!   port against the same clients straight to the tasks.
//!
//! Everything the tool creates carries the label `shoal.load=<run>` (nodes:
//! the engine label) and a name starting `shoal-load-<run>`; it is removed
//! when the run ends, also on Ctrl-C or SIGTERM (a second signal stops the
//! cleanup). The cleanup deletes what the run recorded and anything else with
//! the run's label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use shoal_shared::store::{Kind, StoreClient};

pub mod agent;
pub mod api;
pub mod dispatcher;
pub mod dns;
pub mod ingress;
pub mod scheduler;
pub mod sim;
pub mod store;
pub mod view;

/// The label key on everything a load run creates; the value is the run's id.
pub const LABEL: &str = "shoal.load";

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// NATS server URL of the cluster to load.
    #[arg(long, env = "SHOAL_NATS_URL", default_value = "nats://127.0.0.1:4222", global = true)]
    pub nats_url: String,
    /// How long to load, in seconds (per phase for `api`).
    #[arg(long, default_value_t = 10.0, global = true)]
    pub seconds: f64,
    #[command(subcommand)]
    pub component: Component,
}

#[derive(Debug, Subcommand)]
pub enum Component {
    /// Store writes/s and latency at N concurrent clients (each updates its own object).
    Store {
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// Time for the scheduler to place and commit M tasks on N simulated nodes.
    Scheduler {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        tasks: u64,
    },
    /// N simulated agents heartbeating for --seconds and reporting M tasks running.
    Dispatcher {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 100)]
        tasks: u64,
        /// PID of the dispatcher, when it runs on this machine: its CPU use is reported.
        #[arg(long)]
        dispatcher_pid: Option<i32>,
    },
    /// M tasks assigned to one shoal-agent (process executor) that the tool starts.
    Agent {
        #[arg(long, default_value_t = 50)]
        tasks: u64,
    },
    /// Docker API requests/s and p50/p99 for service create, ls and ps.
    Api {
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Queries/s and latency of one shoal-dns (started by the tool) for service and tasks names.
    Dns {
        #[arg(long, default_value_t = 200)]
        services: usize,
        /// Tasks per service (`tasks.<service>` answers each).
        #[arg(long, default_value_t = 3)]
        tasks: usize,
        /// Clients, each with one query in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Requests/s and latency through one shoal-ingress (started by the tool) against the tasks directly.
    Ingress {
        /// Keep-alive HTTP connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Tasks behind the published port (HTTP servers on 127.0.0.2 and up).
        #[arg(long, default_value_t = 1)]
        backends: usize,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
}

/// What a run shares with its parts: who it is, how to reach the cluster,
/// what it created so far (for the cleanup) and whether it was told to stop.
pub struct Ctx {
    pub run: String,
    pub nats_url: String,
    pub nats: async_nats::Client,
    pub store: StoreClient,
    pub seconds: f64,
    pub created: Mutex<Vec<(Kind, String)>>,
}

impl Ctx {
    /// `shoal-load-<run>-<suffix>`.
    pub fn name(&self, suffix: impl std::fmt::Display) -> String {
        format!("shoal-load-{}-{suffix}", self.run)
    }

    /// The label every object of this run carries.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        [(LABEL.to_string(), self.run.clone())].into()
    }

    /// Notes an object this run created, for the cleanup.
    pub fn created(&self, kind: Kind, id: &str) {
        self.created.lock().unwrap().push((kind, id.to_string()));
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.max(0.1))
    }
}

/// Latencies and counts of one kind of operation, shared by its workers.
#[derive(Default)]
pub struct Stats {
    micros: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

impl Stats {
    pub fn ok(&self, took: Duration) {
        self.micros.lock().unwrap().push(took.as_micros() as u64);
    }
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> usize {
        self.micros.lock().unwrap().len()
    }
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// The `p`th percentile (0-100) in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut v = self.micros.lock().unwrap().clone();
        percentile_ms(&mut v, p)
    }
}

/// The `p`th percentile (nearest rank, 0-100) of microsecond samples, in ms.
pub fn percentile_ms(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0
}

/// Prints `<what>: <t> s: <n> done (<rate>/s)[, <k> failed]` every second until dropped.
pub fn progress(what: &'static str, stats: Arc<Stats>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let (n, f) = (stats.count(), stats.failures());
            let t = t0.elapsed().as_secs_f64();
            let failed = if f > 0 { format!(", {f} failed") } else { String::new() };
            println!("{what}: {t:.0} s: {n} done ({:.0}/s){failed}", n as f64 / t);
        }
    })
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Polls `check` every 200 ms until it is true or `deadline` passes; returns whether it became true.
pub async fn poll_until<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `shoal load`; returns the exit status.
pub fn run(args: LoadArgs, host: crate::client::Client) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal load: {e}");
            return 1;
        }
    };
    rt.block_on(run_async(args, Arc::new(host)))
}

async fn run_async(args: LoadArgs, api: Arc<crate::client::Client>) -> i32 {
    let run = shoal_shared::id::new_id()[..10].to_string();
    let nats = match tokio::time::timeout(
        Duration::from_secs(10),
        shoal_shared::config::connect(&args.nats_url, "shoal-load"),
    )
    .await
    {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            eprintln!("shoal load: cannot connect to NATS at {}: {e}", args.nats_url);
            return 1;
        }
        Err(_) => {
            eprintln!("shoal load: cannot connect to NATS at {}: timed out", args.nats_url);
            return 1;
        }
    };
    let ctx = Arc::new(Ctx {
        run: run.clone(),
        nats_url: args.nats_url.clone(),
        store: StoreClient::new(nats.clone()).with_deadline(Duration::from_secs(10)),
        nats,
        seconds: args.seconds,
        created: Mutex::new(Vec::new()),
    });
    println!("load run {run}: objects are labeled {LABEL}={run}");
    let what = args.component;
    let mut cleanup_state = Cleanup::default();
    let result = {
        let work = async {
            match &what {
                Component::Store { clients } => store::run(&ctx, *clients).await,
                Component::Scheduler { nodes, tasks } => scheduler::run(&ctx, *nodes, *tasks, &mut cleanup_state).await,
                Component::Dispatcher {
                    agents,
                    tasks,
                    dispatcher_pid,
                } => dispatcher::run(&ctx, *agents, *tasks, *dispatcher_pid, &mut cleanup_state).await,
                Component::Agent { tasks } => agent::run(&ctx, *tasks, &mut cleanup_state).await,
                Component::Api { concurrency } => api::run(&ctx, &api, *concurrency).await,
                Component::Dns {
                    services,
                    tasks,
                    concurrency,
                } => dns::run(&ctx, *services, *tasks, *concurrency).await,
                Component::Ingress {
                    connections,
                    backends,
                    size,
                } => ingress::run(&ctx, *connections, *backends, *size).await,
            }
        };
        tokio::select! {
            r = work => r,
            _ = stop_signal() => Err("interrupted".to_string()),
        }
    };
    if let Err(e) = &result {
        eprintln!("shoal load: {e}; cleaning up");
    }
    let cleaned = tokio::select! {
        r = cleanup(&ctx, &api, &what, cleanup_state) => r,
        _ = stop_signal() => Err(format!("cleanup interrupted: objects labeled {LABEL}={run} may be left")),
    };
    match (result, cleaned) {
        (Ok(summary), Ok(removed)) => {
            println!("removed {removed} objects");
            println!("{summary}");
            0
        }
        (Err(_), Ok(removed)) => {
            println!("removed {removed} objects");
            1
        }
        (_, Err(e)) => {
            eprintln!("shoal load: {e}");
            1
        }
    }
}

/// What a run must undo beyond its stored objects: sessions it keeps alive,
/// the agent process it started.
#[derive(Default)]
pub struct Cleanup {
    pub sims: Option<sim::SimAgents>,
    pub agent: Option<agent::AgentProcess>,
}

async fn cleanup(
    ctx: &Ctx,
    api: &Arc<crate::client::Client>,
    what: &Component,
    state: Cleanup,
) -> Result<usize, String> {
    let mut removed = 0;
    // These put nothing in the store (their processes and scripts end with the run).
    if let Component::Dns { .. } | Component::Ingress { .. } = what {
        return Ok(0);
    }
    if let Component::Api { .. } = what {
        removed += api::cleanup(ctx, api).await?;
    }
    // Services first (their tasks go with them), then what ran them.
    removed += store::remove_services(ctx).await?;
    if let Some(agent) = state.agent {
        agent.stop(ctx).await;
    }
    if let Some(sims) = state.sims {
        sims.stop();
    }
    removed += store::remove_recorded(ctx).await?;
    Ok(removed)
}
