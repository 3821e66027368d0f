//! Several hosts on one machine: a manager host (one store replica, a
//! scheduler, a dispatcher and an API serving the swarm port on its own
//! loopback port) and joining hosts, each an API and an agent with
//! `--swarm-dir` in its own data dir. A worker host's API has `--nats-url
//! none` and reaches the managers only through what `docker swarm join` gave
//! it; a manager host's API has NATS of its own (the store's: the interim
//! static peer set, one store for every manager) and a swarm port. Everything
//! is killed on drop, also when a test fails (agents with their task process
//! groups).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::api::{Api, Run};
use crate::orch::ProcGroup;
use crate::{bin, dump_logs, free_port, Proc, StoreCluster};

/// A joining host: its API and its agent.
pub struct Host {
    pub name: String,
    /// A manager host's swarm port (joins, renewals) on 127.0.0.1.
    pub swarm_port: Option<u16>,
    group: Option<ProcGroup>,
    pub agent: Option<Proc>,
    pub api: Api,
}

impl Host {
    /// `<api data dir>/swarm`: what the join wrote.
    pub fn swarm_dir(&self) -> PathBuf {
        self.api.dir.path().join("swarm")
    }

    pub fn docker(&self, args: &[&str]) -> Run {
        self.api.docker(args)
    }

    pub fn node_id(&self) -> String {
        self.api.node_id()
    }

    /// A manager host's swarm address, as `docker swarm join` takes it.
    pub fn swarm_addr(&self) -> String {
        format!("127.0.0.1:{}", self.swarm_port.expect("a manager host"))
    }

    /// Whether the agent process is still running.
    pub fn agent_running(&mut self) -> bool {
        self.agent.as_mut().is_some_and(|a| !a.exited())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(self.api.dir.path(), 40);
        }
        self.agent.take();
        self.group.take();
    }
}

/// A manager host and the hosts that join it. Fields drop in order.
pub struct Hosts {
    pub hosts: Vec<Host>,
    pub procs: Vec<Proc>,
    pub manager: Api,
    /// The manager's swarm port (joins, renewals) on 127.0.0.1.
    pub swarm_port: u16,
    pub store: StoreCluster,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs(self.manager.dir.path(), 40);
        }
    }
}

fn shoal_cmd(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHOAL_LOG", "info")
        .env("SHOAL_OVERLAY", "false");
    cmd
}

impl Hosts {
    /// The manager host, not initialized (`swarm init` is the test's);
    /// `extra` flags go to its API.
    pub fn start(extra: &[&str]) -> Hosts {
        Hosts::start_replicas(1, extra)
    }

    /// The same over a store of `replicas` replicas, with a scheduler and a
    /// dispatcher for each (whichever replica leads, one of them acts).
    pub fn start_replicas(replicas: u64, extra: &[&str]) -> Hosts {
        let store = StoreCluster::start(replicas, &[]);
        let swarm_port = free_port();
        let listen = format!("127.0.0.1:{swarm_port}");
        let mut args = vec!["--swarm-listen", listen.as_str()];
        args.extend_from_slice(extra);
        let manager = Api::start(&store, &args);
        let mut procs = Vec::new();
        for replica in 1..=replicas {
            for name in ["shoal-scheduler", "shoal-dispatcher"] {
                let mut cmd = shoal_cmd(name);
                cmd.args([
                    "--nats-url",
                    &store.nats.url(),
                    "--store-replica",
                    &replica.to_string(),
                    "--leader-check-ms",
                    "200",
                ]);
                let log = store.dir.path().join(format!("{name}-{replica}.log"));
                procs.push(Proc::spawn(name, cmd, &log));
            }
        }
        Hosts {
            hosts: Vec::new(),
            procs,
            manager,
            swarm_port,
            store,
        }
    }

    /// The manager's swarm address, as `docker swarm join` takes it.
    pub fn swarm_addr(&self) -> String {
        format!("127.0.0.1:{}", self.swarm_port)
    }

    /// Starts a host that is in no swarm yet: an API without NATS and an
    /// agent (process executor) waiting for the join. Returns its index.
    pub fn add_host(&mut self, name: &str, api_extra: &[&str]) -> usize {
        self.add("none", None, name, api_extra)
    }

    /// Starts a host that will join as a manager: an API on the store's NATS
    /// (no Node of its own yet) serving a swarm port, and an agent waiting
    /// for the join. Returns its index.
    pub fn add_manager_host(&mut self, name: &str, api_extra: &[&str]) -> usize {
        let url = self.store.nats.url();
        self.add(&url, Some(free_port()), name, api_extra)
    }

    fn add(&mut self, nats_url: &str, swarm_port: Option<u16>, name: &str, api_extra: &[&str]) -> usize {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-host-{name}-"))
            .tempdir()
            .expect("temp dir");
        let data = dir.path().to_path_buf();
        let listen = swarm_port.map(|p| format!("127.0.0.1:{p}"));
        let mut args: Vec<&str> = match &listen {
            Some(l) => vec!["--swarm-listen", l.as_str()],
            None => Vec::new(),
        };
        args.extend_from_slice(api_extra);
        let api = Api::start_on(nats_url, dir, &args);
        let mut cmd = shoal_cmd("shoal-agent");
        cmd.args(["--node-name", name, "--executor", "process"])
            .arg("--data-dir")
            .arg(data.join("agent"))
            .arg("--swarm-dir")
            .arg(data.join("swarm"))
            .process_group(0);
        let agent = Proc::spawn(&format!("agent-{name}"), cmd, &data.join("agent.log"));
        let group = ProcGroup(agent.pid().as_raw());
        self.hosts.push(Host {
            name: name.to_string(),
            swarm_port,
            group: Some(group),
            agent: Some(agent),
            api,
        });
        self.hosts.len() - 1
    }

    pub fn host(&mut self, i: usize) -> &mut Host {
        &mut self.hosts[i]
    }

    /// The manager's join token for `role`.
    pub fn token(&self, role: &str) -> String {
        self.manager
            .docker(&["swarm", "join-token", "-q", role])
            .ok()
            .stdout
            .trim()
            .to_string()
    }
}

/// How long a join, a registration or a renewal may take on a loaded machine.
pub const SLOW: Duration = Duration::from_secs(60);
