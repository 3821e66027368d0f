//! `shoal-dns` configuration: flags, each also read from a `SHOAL_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use shoal_shared::config::{NatsArgs, Problems};
use shoal_shared::metrics::MetricsArgs;

/// shoal's per-host DNS server: answers service, task and alias names from
/// this node's network view, scoped to the asker's networks; forwards the rest.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-dns", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// This host's node ID (from `<data-dir>/node-id`): whose network view to follow.
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,

    /// The host's swarm membership directory (`<api data dir>/swarm`, written by
    /// `swarm join`). When given, shoal-dns waits until the host has joined and
    /// takes its node ID and the managers' NATS URLs from it.
    #[arg(long, env = "SHOAL_SWARM_DIR")]
    pub swarm_dir: Option<PathBuf>,

    /// The port served on each of this host's own network addresses.
    #[arg(long, env = "SHOAL_DNS_PORT", default_value_t = 53)]
    pub port: u16,

    /// Also serve on this address (IP:PORT, UDP and TCP; repeatable, or
    /// comma separated in SHOAL_DNS_LISTEN). A query asked there from an
    /// address that is no task's is answered from every network of the view.
    #[arg(long = "listen", env = "SHOAL_DNS_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,

    /// Upstream resolvers for names outside the cluster (IP or IP:PORT;
    /// repeatable). Default: the nameservers of --resolv-conf.
    #[arg(long = "upstream", env = "SHOAL_DNS_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,

    /// Where the host's upstream resolvers are read from when --upstream is not given.
    #[arg(long, env = "SHOAL_DNS_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// How long one upstream has to answer before the next is tried, in milliseconds.
    #[arg(long, env = "SHOAL_DNS_UPSTREAM_TIMEOUT_MS", default_value_t = 2000)]
    pub upstream_timeout_ms: u64,
}

/// Docker's embedded server asks at most three external servers.
pub const MAX_UPSTREAMS: usize = 3;

impl Config {
    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Problems::default();
        if self.swarm_dir.is_none() {
            self.nats.validate(&mut p);
            match &self.node_id {
                None => p.push("--node-id / SHOAL_NODE_ID: required (or --swarm-dir)"),
                Some(id) if !shoal_shared::id::is_id(id) => {
                    p.push(format!("--node-id / SHOAL_NODE_ID: {id:?} is not a node ID"))
                }
                _ => {}
            }
        }
        self.metrics.validate(&mut p);
        for l in &self.listen {
            if l.parse::<SocketAddr>().is_err() {
                p.push(format!("--listen / SHOAL_DNS_LISTEN: {l:?} is not an IP:PORT address"));
            }
        }
        for u in &self.upstream {
            if parse_upstream(u).is_none() {
                p.push(format!(
                    "--upstream / SHOAL_DNS_UPSTREAM: {u:?} is not an IP or IP:PORT"
                ));
            }
        }
        if self.upstream_timeout_ms == 0 {
            p.push("--upstream-timeout-ms / SHOAL_DNS_UPSTREAM_TIMEOUT_MS: must be at least 1");
        }
        p.into_result("shoal-dns")
    }

    /// The extra listening addresses (validated).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen.iter().filter_map(|l| l.parse().ok()).collect()
    }

    /// The upstream resolvers: `--upstream`, else the nameservers of
    /// `--resolv-conf` (port 53), at most [`MAX_UPSTREAMS`].
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = if self.upstream.is_empty() {
            match std::fs::read(&self.resolv_conf) {
                Ok(bytes) => resolv_conf::Config::parse(&bytes)
                    .map(|c| c.nameservers.iter().map(|n| SocketAddr::new(n.into(), 53)).collect())
                    .unwrap_or_else(|e| {
                        tracing::warn!(file = %self.resolv_conf.display(), error = %e, "cannot parse the host's resolv.conf: no upstream resolvers");
                        Vec::new()
                    }),
                Err(e) => {
                    tracing::warn!(file = %self.resolv_conf.display(), error = %e, "cannot read the host's resolv.conf: no upstream resolvers");
                    Vec::new()
                }
            }
        } else {
            self.upstream.iter().filter_map(|u| parse_upstream(u)).collect()
        };
        out.truncate(MAX_UPSTREAMS);
        out
    }

    /// A working configuration for tests.
    pub fn for_test(nats_url: &str, node_id: &str) -> Config {
        Config {
            nats: NatsArgs {
                nats_url: nats_url.to_string(),
            },
            metrics: MetricsArgs::default(),
            node_id: Some(node_id.to_string()),
            swarm_dir: None,
            port: 53,
            listen: Vec::new(),
            upstream: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            upstream_timeout_ms: 2000,
        }
    }
}

/// `IP` (port 53) or `IP:PORT`.
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together() {
        let mut c = Config::for_test("bogus", "x");
        c.listen = vec!["nope".into()];
        c.upstream = vec!["1.2.3.4:53".into(), "what".into()];
        c.upstream_timeout_ms = 0;
        let msg = c.validate().unwrap_err();
        for needle in ["bogus", "--node-id", "\"nope\"", "\"what\"", "--upstream-timeout-ms"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        let id = shoal_shared::id::new_id();
        Config::for_test("nats://127.0.0.1:4222", &id).validate().unwrap();
    }

    #[test]
    fn upstreams_come_from_the_flag_or_resolv_conf() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("resolv.conf");
        std::fs::write(
            &rc,
            "# comment\nsearch example.org\nnameserver 10.1.1.1\nnameserver 10.1.1.2\nnameserver 10.1.1.3\nnameserver 10.1.1.4\noptions ndots:0\n",
        )
        .unwrap();
        let mut c = Config::for_test("nats://127.0.0.1:4222", "x");
        c.resolv_conf = rc;
        let got = c.upstreams();
        assert_eq!(
            got,
            ["10.1.1.1:53", "10.1.1.2:53", "10.1.1.3:53"]
                .map(|s| s.parse::<SocketAddr>().unwrap())
                .to_vec()
        );
        c.upstream = vec!["127.0.0.1:5353".into(), "10.9.9.9".into()];
        assert_eq!(
            c.upstreams(),
            ["127.0.0.1:5353", "10.9.9.9:53"]
                .map(|s| s.parse::<SocketAddr>().unwrap())
                .to_vec()
        );
    }
}
