//! `shoal-api` configuration: flags, each also read from a `SHOAL_*` variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use shoal_shared::config::{NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// Which kind of node this API answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Take the role from this node's Node object in the store (manager until one exists).
    Auto,
    /// Serve the cluster state (the default on managers).
    Manager,
    /// Refuse cluster reads and writes with Docker's "not a swarm manager" error.
    Worker,
}

/// shoal's manager API: the swarm subset of the Docker Engine API.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-api", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// This host's node ID; when absent it is read from (or created in) `<data-dir>/node-id`.
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,

    /// This host's shoal data directory (node-id, swarm CA key, default socket).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,

    /// TCP address to listen on (`tcp://HOST:PORT`); empty to not listen on TCP.
    /// A non-loopback address needs --tls-cert and --tls-key.
    #[arg(long, env = "SHOAL_LISTEN", default_value = "tcp://127.0.0.1:2375")]
    pub listen: String,

    /// Unix socket path (default `<data-dir>/shoal.sock`); `none` to not listen on one.
    #[arg(long, env = "SHOAL_SOCKET")]
    pub socket: Option<PathBuf>,

    /// PEM certificate chain for TCP (required for a non-loopback --listen).
    #[arg(long, env = "SHOAL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TCP (required for a non-loopback --listen).
    #[arg(long, env = "SHOAL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: when given, TCP clients must present a certificate it signed
    /// (mutual TLS, as `dockerd --tlsverify`). Needs --tls-cert and --tls-key.
    #[arg(long, env = "SHOAL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// This host's raft-store replica id, on a manager (the store's own
    /// SHOAL_REPLICA_ID): maps this node to the store's membership (`docker
    /// node ls` Leader/Reachable/Unreachable) and is the replica `swarm
    /// init --force-new-cluster` restarts as a one-voter cluster.
    #[arg(long, env = "SHOAL_REPLICA_ID")]
    pub store_replica: Option<u64>,

    /// Which kind of node this API answers for.
    #[arg(long, env = "SHOAL_ROLE", value_enum, default_value = "auto")]
    pub role: Role,

    /// Address other nodes reach this one at (Docker's `--advertise-addr`), used when
    /// `swarm init`/`join` does not give one.
    #[arg(long, env = "SHOAL_ADVERTISE_ADDR", default_value = "127.0.0.1")]
    pub advertise_addr: String,

    /// Where this host, once a manager, accepts joins and certificate renewals
    /// from other hosts over TLS (`IP:PORT`, Docker's `--listen-addr`, e.g.
    /// `0.0.0.0:2377`); `none` (the default) for not at all.
    #[arg(long, env = "SHOAL_SWARM_LISTEN", default_value = "none")]
    pub swarm_listen: String,

    /// The NATS URL(s) this manager gives joining hosts (comma separated, as
    /// other hosts dial them); default: --nats-url.
    #[arg(long, env = "SHOAL_NATS_ADVERTISE")]
    pub nats_advertise: Option<String>,

    /// How long `swarm join` may take (Docker: 20 s) before it answers that the
    /// timeout was reached.
    #[arg(long, env = "SHOAL_JOIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub join_timeout_ms: u64,

    /// Under systemd: start `shoal-manager.target` when this node is
    /// promoted (writing `<data-dir>/promoted.env` with its store replica)
    /// and stop it when demoted (see `host_role`). Only on a host not
    /// configured as a manager (no SHOAL_REPLICA_ID of its own).
    #[arg(long, env = "SHOAL_MANAGE_UNITS")]
    pub manage_units: bool,

    /// Largest request body accepted, in bytes; larger ones get 413 unread.
    #[arg(long, env = "SHOAL_MAX_BODY", default_value_t = 1024 * 1024)]
    pub max_body: usize,

    /// Longest a client may take to send a request body once its headers are
    /// in, in milliseconds; a slower one gets 408 and its connection is closed.
    #[arg(long, env = "SHOAL_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// The host's Docker Engine (`unix:///PATH`), which every endpoint that is not a
    /// swarm one is passed to (containers, exec, images, volumes, local networks, ...);
    /// `none` for no engine (those endpoints then answer 503 naming it).
    #[arg(long, env = "SHOAL_ENGINE", default_value = "unix:///var/run/docker.sock")]
    pub engine: String,
}

impl Config {
    /// The TCP address to bind, if any (`tcp://` prefix optional).
    pub fn tcp_addr(&self) -> Result<Option<SocketAddr>, String> {
        let s = self.listen.trim();
        if s.is_empty() || s == "none" {
            return Ok(None);
        }
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        s.parse::<SocketAddr>()
            .map(Some)
            .map_err(|e| format!("--listen / SHOAL_LISTEN: {:?} is not tcp://IP:PORT: {e}", self.listen))
    }

    /// The unix socket path, if any.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.socket {
            Some(p) if p.as_os_str() == "none" || p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(self.data_dir.join("shoal.sock")),
        }
    }

    /// The swarm listener's address, if any.
    pub fn swarm_addr(&self) -> Result<Option<SocketAddr>, String> {
        let s = self.swarm_listen.trim();
        if s.is_empty() || s == "none" {
            return Ok(None);
        }
        s.parse::<SocketAddr>().map(Some).map_err(|e| {
            format!(
                "--swarm-listen / SHOAL_SWARM_LISTEN: {:?} is not IP:PORT: {e}",
                self.swarm_listen
            )
        })
    }

    /// Whether this host's API has no NATS of its own: it reaches the
    /// managers' NATS servers once it has joined (`--nats-url none`).
    pub fn nats_from_membership(&self) -> bool {
        matches!(self.nats.nats_url.trim(), "none" | "")
    }

    /// This host's swarm membership directory (`<data-dir>/swarm`).
    pub fn swarm_dir(&self) -> PathBuf {
        self.data_dir.join("swarm")
    }

    /// The NATS URLs given to joining hosts.
    pub fn nats_advertise_urls(&self) -> Vec<String> {
        self.nats_advertise
            .as_deref()
            .unwrap_or(&self.nats.nats_url)
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty() && u != "none")
            .collect()
    }

    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        if !self.nats_from_membership() {
            self.nats.validate(&mut p);
        }
        self.metrics.validate(&mut p);
        if let Err(e) = self.swarm_addr() {
            p.push(e);
        }
        if self.join_timeout_ms == 0 {
            p.push("--join-timeout-ms / SHOAL_JOIN_TIMEOUT_MS: must be at least 1");
        }
        match self.tcp_addr() {
            Err(e) => p.push(e),
            Ok(Some(addr)) if !addr.ip().is_loopback() && (self.tls_cert.is_none() || self.tls_key.is_none()) => {
                p.push(format!(
                    "--listen / SHOAL_LISTEN: {addr} is not a loopback address: plain HTTP is only served on \
                     loopback; give --tls-cert and --tls-key to serve TLS"
                ));
            }
            Ok(_) => {}
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            p.push("--tls-cert / --tls-key: give both or neither");
        }
        if self.tls_ca.is_some() && self.tls_cert.is_none() {
            p.push("--tls-ca / SHOAL_TLS_CA: needs --tls-cert and --tls-key");
        }
        for f in [&self.tls_cert, &self.tls_key, &self.tls_ca].into_iter().flatten() {
            if !f.is_file() {
                p.push(format!("TLS file {} does not exist", f.display()));
            }
        }
        if let Some(id) = &self.node_id {
            if !shoal_shared::id::is_id(id) {
                p.push(format!(
                    "--node-id / SHOAL_NODE_ID: {id:?} is not 25 lowercase base36 characters"
                ));
            }
        }
        if self.advertise_addr.parse::<IpAddr>().is_err() {
            p.push(format!(
                "--advertise-addr / SHOAL_ADVERTISE_ADDR: {:?} is not an IP address",
                self.advertise_addr
            ));
        }
        if self.store_replica == Some(0) {
            p.push("--store-replica / SHOAL_REPLICA_ID: must be a positive integer");
        }
        if self.body_timeout_ms == 0 || self.body_timeout_ms > 3_600_000 {
            p.push("--body-timeout-ms / SHOAL_BODY_TIMEOUT_MS: must be between 1 and 3600000");
        }
        if self.max_body < 1024 {
            p.push("--max-body / SHOAL_MAX_BODY: must be at least 1024");
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            p.push(format!(
                "--data-dir / SHOAL_DATA_DIR: cannot create {}: {e}",
                self.data_dir.display()
            ));
        }
        let engine = self.engine.trim();
        if !(engine == "none" || engine.starts_with("unix:///") || engine.starts_with('/')) {
            p.push(format!(
                "--engine / SHOAL_ENGINE: {engine:?} is not unix:///PATH (or none)"
            ));
        }
        if self.tcp_addr().ok().flatten().is_none() && self.socket_path().is_none() {
            p.push("nothing to listen on: give --listen or --socket");
        }
        p.into_result("shoal-api")
    }

    /// This host's node ID: the flag, else the `node-id` file (created when missing).
    pub fn resolve_node_id(&self) -> anyhow::Result<String> {
        if let Some(id) = &self.node_id {
            return Ok(id.clone());
        }
        let path = self.data_dir.join("node-id");
        match std::fs::read_to_string(&path) {
            Ok(s) if shoal_shared::id::is_id(s.trim()) => Ok(s.trim().to_string()),
            Ok(s) => anyhow::bail!("{} holds {:?}, not a node ID", path.display(), s.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = shoal_shared::id::new_id();
                std::fs::write(&path, format!("{id}\n"))?;
                Ok(id)
            }
            Err(e) => Err(anyhow::anyhow!("read {}: {e}", path.display())),
        }
    }

    /// A working configuration for tests: loopback TCP on `port`, socket in `data_dir`.
    pub fn for_test(data_dir: PathBuf, nats_url: &str, port: u16) -> Config {
        Config {
            nats: NatsArgs {
                nats_url: nats_url.to_string(),
            },
            metrics: MetricsArgs::default(),
            node_id: None,
            store_replica: None,
            data_dir,
            listen: format!("tcp://127.0.0.1:{port}"),
            socket: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            role: Role::Auto,
            advertise_addr: "127.0.0.1".into(),
            swarm_listen: "none".into(),
            nats_advertise: None,
            join_timeout_ms: 20_000,
            manage_units: false,
            max_body: 1024 * 1024,
            body_timeout_ms: 10_000,
            engine: "none".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_tcp_without_tls_is_refused_with_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::for_test(dir.path().join("d"), "bogus", 2375);
        c.listen = "tcp://0.0.0.0:2376".into();
        c.node_id = Some("NOPE".into());
        c.tls_ca = Some(dir.path().join("missing-ca.pem"));
        let msg = c.validate().unwrap_err();
        for needle in [
            "not a loopback address",
            "--tls-cert",
            "NOPE",
            "bogus",
            "--tls-ca / SHOAL_TLS_CA: needs",
            "missing-ca.pem does not exist",
        ] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        let ok = Config::for_test(dir.path().join("d"), "nats://127.0.0.1:4222", 2375);
        ok.validate().unwrap();
        assert_eq!(ok.socket_path(), Some(dir.path().join("d").join("shoal.sock")));
    }

    #[test]
    fn node_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::for_test(dir.path().to_path_buf(), "nats://127.0.0.1:4222", 1);
        let a = c.resolve_node_id().unwrap();
        let b = c.resolve_node_id().unwrap();
        assert_eq!(a, b);
        assert!(shoal_shared::id::is_id(&a));
    }

    #[test]
    fn flags_parse_with_defaults() {
        let c = Config::try_parse_from(["shoal-api", "--data-dir", "/tmp/x", "--role", "worker"]).unwrap();
        assert_eq!(c.role, Role::Worker);
        assert_eq!(c.tcp_addr().unwrap(), Some("127.0.0.1:2375".parse().unwrap()));
    }
}
