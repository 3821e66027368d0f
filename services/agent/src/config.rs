//! `shoal-agent` configuration: flags, each also read from a `SHOAL_*` variable.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use shoal_shared::config::{NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// How the agent runs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// The task's command runs as a child process of the agent.
    Process,
    /// Docker containers on the node's engine (`DOCKER_HOST` or the local socket).
    Docker,
}

/// shoal's node agent.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-agent", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// The node's name (its hostname as the swarm sees it).
    #[arg(long, env = "SHOAL_NODE_NAME")]
    pub node_name: String,

    /// Directory for the agent's task database and the host's `node-id`.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: PathBuf,

    /// This host's node ID; read from (or created in) `<data-dir>/node-id` when not given.
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,

    /// How tasks are run.
    #[arg(long, env = "SHOAL_EXECUTOR", value_enum, default_value = "process")]
    pub executor: ExecutorKind,

    /// Engine labels (`key=value`), repeatable.
    #[arg(long = "label", env = "SHOAL_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// CPU capacity to report, in nano CPUs (default: the machine's CPUs).
    #[arg(long, env = "SHOAL_NANO_CPUS")]
    pub nano_cpus: Option<i64>,

    /// Memory capacity to report, in bytes (default: the machine's memory).
    #[arg(long, env = "SHOAL_MEMORY_BYTES")]
    pub memory_bytes: Option<i64>,

    /// Where the files of secrets and configs are written for the containers
    /// that use them; must be on a tmpfs (default: `/dev/shm/shoal/<node-id>`).
    #[arg(long, env = "SHOAL_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// The host's swarm membership directory (`<api data dir>/swarm`, written by
    /// `swarm join`). When given, the agent waits until the host has joined,
    /// then takes its node ID and the managers' NATS URLs (and, for `tls://`
    /// URLs, the node certificate) from it instead of --nats-url / --node-id,
    /// and exits when the host leaves the swarm.
    #[arg(long, env = "SHOAL_SWARM_DIR")]
    pub swarm_dir: Option<PathBuf>,

    /// Realize overlay networks on this host (bridges, VXLAN devices, task
    /// interfaces; needs CAP_NET_ADMIN and CAP_SYS_ADMIN). Off: tasks run
    /// without their overlay networks.
    #[arg(long, env = "SHOAL_OVERLAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub overlay: bool,

    /// The image of docker tasks' network sandboxes (it must have `sleep`).
    #[arg(long, env = "SHOAL_SANDBOX_IMAGE", default_value = crate::sandbox::DEFAULT_IMAGE)]
    pub sandbox_image: String,

    /// This host's address as other hosts reach it (VXLAN's underlay; a
    /// port, as the API's variable may carry, is ignored); default: the
    /// address the NATS server sees the agent's connection come from.
    #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
}

impl Config {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        if self.swarm_dir.is_none() {
            self.nats.validate(&mut p);
        }
        self.metrics.validate(&mut p);
        if self.node_name.trim().is_empty() {
            p.push("--node-name / SHOAL_NODE_NAME: must not be empty");
        }
        if let Some(a) = &self.advertise_addr {
            if self.advertise_ip().is_none() {
                p.push(format!(
                    "--advertise-addr / SHOAL_ADVERTISE_ADDR: {a:?} is not an IP address"
                ));
            }
        }
        for l in &self.labels {
            if !l.contains('=') {
                p.push(format!("--label / SHOAL_LABELS: {l:?} is not key=value"));
            }
        }
        if let Some(id) = &self.node_id {
            if !shoal_shared::id::is_id(id) {
                p.push(format!("--node-id / SHOAL_NODE_ID: {id:?} is not a node ID"));
            }
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            p.push(format!(
                "--data-dir / SHOAL_DATA_DIR: cannot create {}: {e}",
                self.data_dir.display()
            ));
        }
        p.into_result("shoal-agent")
    }

    /// The address of `--advertise-addr`, without a port.
    pub fn advertise_ip(&self) -> Option<std::net::IpAddr> {
        let a = self.advertise_addr.as_deref()?.trim();
        a.parse()
            .ok()
            .or_else(|| a.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
    }

    /// The node ID: the flag, else `<data-dir>/node-id` (created on first start).
    pub fn resolve_node_id(&self) -> std::io::Result<String> {
        if let Some(id) = &self.node_id {
            return Ok(id.clone());
        }
        let path = self.data_dir.join("node-id");
        match std::fs::read_to_string(&path) {
            Ok(s) if shoal_shared::id::is_id(s.trim()) => Ok(s.trim().to_string()),
            _ => {
                let id = shoal_shared::id::new_id();
                std::fs::write(&path, format!("{id}\n"))?;
                Ok(id)
            }
        }
    }

    /// A working configuration for tests.
    pub fn for_test(nats_url: &str, node_name: &str, data_dir: PathBuf) -> Config {
        Config {
            nats: NatsArgs {
                nats_url: nats_url.to_string(),
            },
            metrics: MetricsArgs::default(),
            node_name: node_name.to_string(),
            data_dir,
            node_id: None,
            executor: ExecutorKind::Process,
            labels: Vec::new(),
            nano_cpus: None,
            memory_bytes: None,
            secrets_dir: None,
            swarm_dir: None,
            overlay: false,
            sandbox_image: crate::sandbox::DEFAULT_IMAGE.to_string(),
            advertise_addr: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together_and_the_node_id_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::for_test("bogus", " ", dir.path().join("d"));
        c.labels = vec!["nolabel".into()];
        c.node_id = Some("not-an-id".into());
        let msg = c.validate().unwrap_err();
        for needle in ["--node-name", "--node-id", "--label", "bogus"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        let ok = Config::for_test("nats://127.0.0.1:4222", "n1", dir.path().join("d"));
        ok.validate().unwrap();
        let id = ok.resolve_node_id().unwrap();
        assert!(shoal_shared::id::is_id(&id));
        assert_eq!(ok.resolve_node_id().unwrap(), id, "the node ID is kept in the data dir");
    }
}
