//! Orchestration harness: a store (1 or 3 replicas), a scheduler and a
//! dispatcher per manager, and agents with the `process` executor, each a
//! real process. Agents run in their own process group, which their tasks
//! share: a test may SIGKILL an agent alone (its tasks keep running, as
//! containers outlive a crashed engine), and dropping the harness kills every
//! group, so no task process outlives a test, also when it fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use shoal_shared::model::*;
use shoal_shared::procfs;
use shoal_shared::store::{ListFilter, StoreClient};

use crate::{bin, dump_logs, eventually, Proc, StoreCluster};

/// How long a scenario step may take to converge on a loaded 2-core machine.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Kills a whole process group (an agent and its tasks) when dropped.
pub struct ProcGroup(pub i32);

impl Drop for ProcGroup {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

pub struct AgentProc {
    pub name: String,
    pub data_dir: PathBuf,
    pub proc: Option<Proc>,
    starts: u32,
}

/// A swarm of real processes. Fields drop in order: task groups first.
pub struct Orch {
    groups: Vec<ProcGroup>,
    pub agents: BTreeMap<String, AgentProc>,
    pub schedulers: BTreeMap<u64, Proc>,
    pub dispatchers: BTreeMap<u64, Proc>,
    pub client: StoreClient,
    pub store: StoreCluster,
}

impl Drop for Orch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(self.store.dir.path(), 30);
        }
    }
}

fn shoal_cmd(name: &str, nats: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHOAL_LOG", std::env::var("ORCH_LOG").unwrap_or_else(|_| "info".into()))
        .env("SHOAL_OVERLAY", "false")
        .args(["--nats-url", nats]);
    cmd
}

impl Orch {
    /// `replicas` store replicas, a scheduler and a dispatcher per replica,
    /// a Cluster object with `heartbeat` as the dispatcher heartbeat period,
    /// and agents `node-1` .. `node-<agents>`.
    pub async fn start(replicas: u64, agents: usize, heartbeat: Duration) -> Orch {
        let store = StoreCluster::start(replicas, &[]);
        let client = store.client().await;
        store.leader(&client, &[], CONVERGE).await;
        let mut cluster = Cluster::new(shoal_shared::id::new_id(), JoinTokens::default());
        cluster.spec.dispatcher.heartbeat_period = Some(heartbeat);
        client
            .with_deadline(Duration::from_secs(20))
            .create(&cluster)
            .await
            .expect("create the cluster object");
        let mut o = Orch {
            groups: Vec::new(),
            agents: BTreeMap::new(),
            schedulers: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
            client,
            store,
        };
        for r in 1..=replicas {
            o.start_scheduler(r);
            o.start_dispatcher(r);
        }
        for i in 1..=agents {
            o.start_agent(&format!("node-{i}"));
        }
        o
    }

    fn log(&self, name: &str) -> PathBuf {
        let mut n = 0;
        loop {
            n += 1;
            let p = self.store.dir.path().join(format!("{name}.{n}.log"));
            if !p.exists() {
                return p;
            }
        }
    }

    pub fn start_scheduler(&mut self, replica: u64) {
        let mut cmd = shoal_cmd("shoal-scheduler", &self.store.nats.url());
        cmd.args(["--store-replica", &replica.to_string(), "--leader-check-ms", "200"]);
        let log = self.log(&format!("scheduler-{replica}"));
        self.schedulers
            .insert(replica, Proc::spawn(&format!("scheduler-{replica}"), cmd, &log));
    }

    pub fn kill_scheduler(&mut self, replica: u64) {
        if let Some(p) = self.schedulers.remove(&replica) {
            p.signal(Signal::SIGKILL);
        }
    }

    pub fn start_dispatcher(&mut self, replica: u64) {
        let mut cmd = shoal_cmd("shoal-dispatcher", &self.store.nats.url());
        cmd.args(["--store-replica", &replica.to_string(), "--leader-check-ms", "200"]);
        let log = self.log(&format!("dispatcher-{replica}"));
        self.dispatchers
            .insert(replica, Proc::spawn(&format!("dispatcher-{replica}"), cmd, &log));
    }

    /// Starts (or restarts) the agent `name` with its data dir kept across restarts.
    pub fn start_agent(&mut self, name: &str) {
        self.start_agent_with(name, &[]);
    }

    /// Starts (or restarts) the agent `name` with extra environment (e.g. `FAILPOINTS`).
    pub fn start_agent_with(&mut self, name: &str, env: &[(&str, &str)]) {
        use std::os::unix::process::CommandExt;
        let data_dir = self.store.dir.path().join(format!("agent-{name}"));
        let mut cmd = shoal_cmd("shoal-agent", &self.store.nats.url());
        cmd.envs(env.iter().copied());
        cmd.args(["--node-name", name, "--executor", "process"])
            .arg("--data-dir")
            .arg(&data_dir)
            .process_group(0);
        let log = self.log(&format!("agent-{name}"));
        let proc = Proc::spawn(&format!("agent-{name}"), cmd, &log);
        self.groups.push(ProcGroup(proc.pid().as_raw()));
        let a = self.agents.entry(name.to_string()).or_insert_with(|| AgentProc {
            name: name.to_string(),
            data_dir,
            proc: None,
            starts: 0,
        });
        a.starts += 1;
        a.proc = Some(proc);
    }

    /// SIGKILLs the agent process alone: its tasks keep running.
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(p) = self.agents.get_mut(name).and_then(|a| a.proc.take()) {
            p.signal(Signal::SIGKILL);
        }
    }

    /// The node ID an agent keeps in its data dir.
    pub fn node_id(&self, name: &str) -> String {
        std::fs::read_to_string(self.agents[name].data_dir.join("node-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, String> {
        self.client
            .list::<Node>(ListFilter::default())
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn tasks(&self, service: &str) -> Result<Vec<Task>, String> {
        self.client
            .list::<Task>(ListFilter::default().field("service", service))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn service(&self, id: &str) -> Result<Service, String> {
        self.client
            .get::<Service>(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("service {id} not found"))
    }

    /// Waits until the named agents' nodes are all ready; returns name -> node ID.
    pub async fn wait_ready(&self, names: &[&str]) -> BTreeMap<String, String> {
        eventually(CONVERGE, "agents' nodes ready", || async {
            let nodes = self.nodes().await?;
            let mut out = BTreeMap::new();
            for name in names {
                let id = self.node_id(name);
                match nodes.iter().find(|n| n.meta.id == id) {
                    Some(n) if n.status.state == NodeState::Ready => {
                        out.insert(name.to_string(), id);
                    }
                    other => return Err(format!("{name}: {:?}", other.map(|n| n.status.clone()))),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Creates a service as the API would; returns its ID.
    pub async fn create_service(&self, spec: ServiceSpec) -> String {
        let svc = Service::new(shoal_shared::id::new_id(), spec);
        self.client
            .with_deadline(Duration::from_secs(20))
            .create(&svc)
            .await
            .expect("create service")
            .meta
            .id
    }

    /// Changes a service's spec as the API does for `docker service update`:
    /// the old spec becomes `PreviousSpec`, `UpdateStatus` is cleared.
    pub async fn update_service(&self, id: &str, f: impl Fn(&mut ServiceSpec)) {
        eventually(CONVERGE, "service update committed", || async {
            let mut svc = self.service(id).await?;
            svc.previous_spec = Some(svc.spec.clone());
            f(&mut svc.spec);
            svc.update_status = None;
            self.client.update(&svc).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await
    }

    /// Changes a node's spec as `docker node update` does.
    pub async fn update_node(&self, id: &str, f: impl Fn(&mut Node)) {
        eventually(CONVERGE, "node update committed", || async {
            let mut n = self
                .client
                .get::<Node>(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("node not found")?;
            f(&mut n);
            self.client.update(&n).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await
    }
}

/// A service spec with Docker's defaults filled in, running `command` with the process executor.
pub fn service_spec(name: &str, replicas: Option<u64>, command: &[&str]) -> ServiceSpec {
    let mut spec = DEFAULTS.service_spec();
    spec.name = name.into();
    let cs = spec.task_template.container_spec.get_or_insert_with(Default::default);
    cs.image = "busybox:1".into();
    cs.command = command.iter().map(|s| s.to_string()).collect();
    spec.mode = match replicas {
        Some(n) => ServiceMode::replicated(n),
        None => ServiceMode::global(),
    };
    spec
}

/// Tasks that are wanted running and run, per node ID.
pub fn running_per_node(tasks: &[Task]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in tasks {
        if t.desired_state == TaskState::Running && t.status.state == TaskState::Running {
            *m.entry(t.node_id.clone()).or_default() += 1;
        }
    }
    m
}

/// Panics if a slot (or a global service's node) has two tasks observed running
/// while wanted running.
pub fn assert_one_running_per_slot(tasks: &[Task]) {
    let mut seen: BTreeMap<(Option<u64>, String), &str> = BTreeMap::new();
    for t in tasks {
        if t.desired_state == TaskState::Running && t.status.state == TaskState::Running {
            let key = (
                t.slot,
                if t.slot.is_some() {
                    String::new()
                } else {
                    t.node_id.clone()
                },
            );
            if let Some(other) = seen.insert(key.clone(), &t.meta.id) {
                panic!("two running tasks in {key:?}: {other} and {}", t.meta.id);
            }
        }
    }
}

/// The task processes of a node running on this host, found as its agent
/// finds them (by `SHOAL_NODE_ID`/`SHOAL_TASK_ID` in their environment):
/// task ID -> PIDs (a task's own children included).
pub fn task_processes(node_id: &str) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for pid in procfs::pids() {
        if procfs::env_var(pid, "SHOAL_NODE_ID").as_deref() != Some(node_id) {
            continue;
        }
        if procfs::Stat::read(pid).is_none_or(|s| s.zombie()) {
            continue;
        }
        if let Some(task) = procfs::env_var(pid, "SHOAL_TASK_ID") {
            out.entry(task).or_default().push(pid);
        }
    }
    out
}

/// Whether the process of a task (from its reported PID) is alive.
pub fn pid_alive(t: &Task) -> Option<bool> {
    let pid = t.status.container_status.as_ref()?.pid?;
    let stat = i32::try_from(pid).ok().and_then(procfs::Stat::read);
    Some(std::path::Path::new(&format!("/proc/{pid}")).exists() && stat.is_none_or(|s| !s.zombie()))
}
