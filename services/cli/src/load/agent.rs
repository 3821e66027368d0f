//! `shoal load agent`: starts one `shoal-agent` of its own on this machine
//! (process executor, a node of its own with the engine label
//! `shoal.load=<run>`, data in a temporary directory), assigns it M tasks
//! through one service only it can take (`sleep 3600` as host processes),
//! and measures the time until the store has all M running, then from the
//! service's removal until none of its processes is left.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_shared::model::TaskState;
use shoal_shared::procfs;
use shoal_shared::store::Kind;

use super::scheduler::{create_service, wait_tasks, Want};
use super::{Cleanup, Ctx, LABEL};

/// The agent process this run started.
pub struct AgentProcess {
    child: tokio::process::Child,
    node_id: String,
    dir: PathBuf,
}

/// PIDs of the task processes an agent of `node_id` started (they carry `SHOAL_NODE_ID`).
fn task_pids(node_id: &str) -> Vec<i32> {
    procfs::pids()
        .into_iter()
        .filter(|p| procfs::env_var(*p, "SHOAL_NODE_ID").as_deref() == Some(node_id))
        .filter(|p| procfs::env_var(*p, "SHOAL_TASK_ID").is_some())
        .filter(|p| !procfs::Stat::read(*p).is_some_and(|s| s.zombie()))
        .collect()
}

impl AgentProcess {
    fn start(ctx: &Ctx) -> Result<AgentProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))?;
        let bin = exe.parent().unwrap_or(std::path::Path::new(".")).join("shoal-agent");
        if !bin.is_file() {
            return Err(format!("{} not found (it is installed next to shoal)", bin.display()));
        }
        let node_id = shoal_shared::id::new_id();
        let dir = std::env::temp_dir().join(ctx.name("agent"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("agent.log")).map_err(|e| format!("agent log: {e}"))?;
        ctx.created(Kind::Node, &node_id);
        let child = tokio::process::Command::new(&bin)
            .args(["--nats-url", &ctx.nats_url, "--node-id", &node_id])
            .args(["--node-name", &ctx.name("agent"), "--executor", "process"])
            // Its tasks are processes without networks: no overlay devices
            // or namespace of its own to leave behind on the machine.
            .args(["--overlay", "false"])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--label")
            .arg(format!("{LABEL}={}", ctx.run))
            .env("SHOAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(AgentProcess { child, node_id, dir })
    }

    /// Stops the agent (SIGTERM, then SIGKILL after 10 s), then any task
    /// process it left, and removes its data directory.
    pub async fn stop(mut self, _ctx: &Ctx) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
        for p in task_pids(&self.node_id) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn run(ctx: &Arc<Ctx>, tasks: u64, cleanup: &mut Cleanup) -> Result<String, String> {
    let agent = AgentProcess::start(ctx)?;
    let node_id = agent.node_id.clone();
    println!(
        "agent: started shoal-agent as node {node_id} (process executor), logs in {}",
        agent.dir.display()
    );
    cleanup.agent = Some(agent);
    let nodes: std::collections::HashSet<String> = [node_id.clone()].into_iter().collect();
    let t0 = Instant::now();
    let svc = create_service(ctx, "svc", tasks).await?;
    let limit = Duration::from_secs_f64(ctx.seconds.max(120.0));
    let start_s = wait_tasks(
        ctx,
        "agent",
        &Want {
            service: &svc.meta.id,
            nodes: &nodes,
            state: TaskState::Running,
            count: tasks,
        },
        t0,
        limit,
    )
    .await?;
    let procs = task_pids(&node_id).len();
    println!("agent: {tasks} tasks running in {start_s:.2} s ({procs} task processes)");

    let t1 = Instant::now();
    ctx.store
        .delete(Kind::Service, &svc.meta.id, None)
        .await
        .map_err(|e| format!("removing the service: {e}"))?;
    let stopped = super::poll_until(limit, || async { task_pids(&node_id).is_empty() }).await;
    if !stopped {
        return Err(format!(
            "agent: task processes still running {} s after the service went",
            limit.as_secs()
        ));
    }
    let stop_s = t1.elapsed().as_secs_f64();
    println!("agent: every task process gone {stop_s:.2} s after the service was removed");
    Ok(format!(
        "load agent tasks={tasks} processes={procs} start_s={start_s:.2} tasks_per_s={:.1} stop_s={stop_s:.2}",
        tasks as f64 / start_s
    ))
}
