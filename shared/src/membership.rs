//! A host's membership of a swarm, as kept on its disk: `<data-dir>/swarm/`.
//!
//! `shoal-api` writes it when `swarm init` or `swarm join` succeeds and
//! removes it on `swarm leave`; every other shoal process of a joined host
//! (the agent) reads it to know where the managers' NATS servers are and
//! which node it is. Files:
//!
//! - `state.json`: [`Membership`] (cluster, node, role, NATS URLs, managers' swarm addresses);
//! - `node.crt`, `node.key`: this node's certificate (CN node ID, OU role, O cluster ID) and key;
//! - `ca.crt`: the swarm's root CA certificate.
//!
//! Files are replaced by writing a temporary file and renaming it, so a
//! reader never sees half a file (certificates renew while processes run).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";
pub const CA_CERT: &str = "ca.crt";

/// What a host knows of the swarm it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub cluster_id: String,
    pub node_id: String,
    /// `manager` or `worker` (the role the node certificate was issued for).
    pub role: String,
    /// The managers' NATS servers, as clients on this host dial them.
    pub nats_urls: Vec<String>,
    /// The managers' swarm addresses (`HOST:PORT`: join, certificate renewal).
    pub managers: Vec<String>,
}

impl Membership {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The membership kept in `dir`, if this host is in a swarm.
    pub fn read(dir: &Path) -> Option<Membership> {
        let text = std::fs::read_to_string(Membership::path(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_file(dir, STATE_FILE, text.as_bytes(), 0o644)
    }

    /// The NATS URLs as one comma-separated string (what `--nats-url` takes).
    pub fn nats_url(&self) -> String {
        self.nats_urls.join(",")
    }
}

/// Writes `dir/name` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_file(dir: &Path, name: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Removes the membership (state and identity) kept in `dir`.
pub fn forget(dir: &Path) -> std::io::Result<()> {
    for name in [STATE_FILE, NODE_CERT, NODE_KEY, CA_CERT] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Waits until this host is in a swarm (`dir` holds a membership), checking
/// every `every`, and returns it.
pub async fn wait_joined(dir: &Path, every: Duration) -> Membership {
    let mut said = false;
    loop {
        if let Some(m) = Membership::read(dir) {
            return m;
        }
        if !said {
            tracing::info!(dir = %dir.display(), "this host is not in a swarm yet: waiting for `docker swarm join`");
            said = true;
        }
        tokio::time::sleep(every).await;
    }
}

/// Connects to the managers' NATS servers named in the membership (see
/// [`connect_options`]).
pub async fn connect(
    dir: &Path,
    membership: &Membership,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    // A list, not the joined string: async-nats reads a string as one URL.
    connect_options(dir, membership, name)
        .connect(membership.nats_urls.clone())
        .await
}

/// shoal's connection options for a joined host: the node's certificate
/// when the URLs are `tls://` (the managers' servers map it to the node's
/// permissions, `nats_auth`), and replies under the node's own inbox prefix
/// (a worker may read no other).
pub fn connect_options(dir: &Path, membership: &Membership, name: &str) -> async_nats::ConnectOptions {
    let mut opts =
        crate::config::connect_options(name).custom_inbox_prefix(crate::nats_auth::inbox_prefix(&membership.node_id));
    if membership.nats_urls.iter().any(|u| u.starts_with("tls://")) {
        opts = opts
            .add_root_certificates(dir.join(CA_CERT))
            .add_client_certificate(dir.join(NODE_CERT), dir.join(NODE_KEY));
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_written_read_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("swarm");
        assert_eq!(Membership::read(&d), None);
        let m = Membership {
            cluster_id: "c".into(),
            node_id: "n".into(),
            role: "worker".into(),
            nats_urls: vec!["nats://127.0.0.1:4222".into(), "nats://127.0.0.1:4223".into()],
            managers: vec!["127.0.0.1:2377".into()],
        };
        m.write(&d).unwrap();
        write_file(&d, NODE_KEY, b"key", 0o600).unwrap();
        assert_eq!(Membership::read(&d), Some(m.clone()));
        assert_eq!(m.nats_url(), "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(NODE_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        forget(&d).unwrap();
        assert_eq!(Membership::read(&d), None);
        assert!(!d.join(NODE_KEY).exists());
        forget(&d).unwrap();
    }
}
