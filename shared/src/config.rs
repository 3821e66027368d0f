//! Configuration helpers shared by the services.
//!
//! Each service has its own `config.rs` (a clap `Parser` whose every flag also
//! reads a documented `SHOAL_*` environment variable) and embeds [`NatsArgs`].
//! Semantic checks go through [`Problems`], which reports every error at once.

use std::time::Duration;

use clap::Args;

/// How to reach NATS.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long = "nats-url", env = "SHOAL_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

impl NatsArgs {
    pub fn validate(&self, problems: &mut Problems) {
        for url in self.nats_url.split(',') {
            let url = url.trim();
            if !(url.starts_with("nats://") || url.starts_with("tls://") || url.contains(':')) {
                problems.push(format!(
                    "--nats-url / SHOAL_NATS_URL: {url:?} is not a NATS URL (want nats://HOST:PORT)"
                ));
            }
        }
    }

    /// Connects, retrying the first connection and reconnecting forever after.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        connect(&self.nats_url, name).await
    }
}

/// How a leader-only manager service (scheduler, dispatcher) learns whether it
/// may act: only while the raft-store replica on its own node leads.
#[derive(Debug, Clone, Args)]
pub struct LeadershipArgs {
    /// The raft-store replica running on this node: the service acts only while it leads.
    #[arg(long, env = "SHOAL_STORE_REPLICA", default_value_t = 1)]
    pub store_replica: u64,

    /// How often leadership is checked, in milliseconds.
    #[arg(long, env = "SHOAL_LEADER_CHECK_MS", default_value_t = 500)]
    pub leader_check_ms: u64,
}

impl LeadershipArgs {
    pub fn validate(&self, problems: &mut Problems) {
        if self.store_replica == 0 {
            problems.push("--store-replica / SHOAL_STORE_REPLICA: must be a positive integer");
        }
        if self.leader_check_ms == 0 {
            problems.push("--leader-check-ms / SHOAL_LEADER_CHECK_MS: must be at least 1");
        }
    }

    pub fn check_every(&self) -> Duration {
        Duration::from_millis(self.leader_check_ms)
    }

    /// Settings for tests: replica `store_replica`, checked every 200 ms.
    pub fn for_test(store_replica: u64) -> LeadershipArgs {
        LeadershipArgs {
            store_replica,
            leader_check_ms: 200,
        }
    }
}

/// How often a client pings its NATS server. After two unanswered pings it
/// reconnects (to another server of its list): a server whose host vanished
/// sends no FIN, and with async-nats' default (60 s) a worker would stay on a
/// dead manager's NATS for minutes.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Connects to NATS with shoal's options: the first connection is retried,
/// reconnection is unbounded, the server is pinged every [`PING_INTERVAL`],
/// and the client is named after the process.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    connect_options(name).connect(server_list(url)).await
}

/// shoal's NATS connection options (see [`connect`]), for callers that add TLS.
pub fn connect_options(name: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| Duration::from_millis((50 * attempt as u64).min(1000)))
}

/// The servers of a comma-separated URL list (`SHOAL_NATS_URL`); async-nats
/// reads a string as one URL, so a list must be given to it as a list.
pub fn server_list(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Collects configuration errors so that all are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn list(&self) -> &[String] {
        &self.0
    }

    /// Ok when there were no problems; otherwise one message listing them all.
    pub fn into_result(self, program: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut msg = format!("{program}: {} configuration error(s):", self.0.len());
        for p in &self.0 {
            msg.push_str("\n  - ");
            msg.push_str(p);
        }
        Err(msg)
    }

    /// Prints every problem and exits with status 2 when there are any.
    pub fn exit_if_any(self, program: &str) {
        if let Err(msg) = self.into_result(program) {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut p = Problems::default();
        NatsArgs {
            nats_url: "bogus".into(),
        }
        .validate(&mut p);
        p.push("--data-dir: missing");
        let msg = p.into_result("shoal-x").unwrap_err();
        assert!(msg.contains("2 configuration error(s)"), "{msg}");
        assert!(msg.contains("bogus") && msg.contains("--data-dir"), "{msg}");
        let mut ok = Problems::default();
        NatsArgs {
            nats_url: "nats://127.0.0.1:4222".into(),
        }
        .validate(&mut ok);
        assert!(ok.into_result("x").is_ok());
    }

    /// A worker's `SHOAL_NATS_URL` lists every manager's NATS: async-nats
    /// takes a list, not one comma-separated string.
    #[test]
    fn a_comma_separated_nats_url_is_a_list_of_servers() {
        use async_nats::ToServerAddrs;
        let url = "nats://10.0.0.1:4222,nats://10.0.0.2:4222, 10.0.0.3:4223";
        assert!(
            url.to_server_addrs().is_err(),
            "async-nats now reads a list from one string"
        );
        let servers: Vec<String> = server_list(url)
            .to_server_addrs()
            .expect("three servers")
            .map(|a| format!("{}:{}", a.host(), a.port()))
            .collect();
        assert_eq!(servers, ["10.0.0.1:4222", "10.0.0.2:4222", "10.0.0.3:4223"]);
        assert_eq!(server_list("nats://127.0.0.1:4222"), ["nats://127.0.0.1:4222"]);
    }
}
