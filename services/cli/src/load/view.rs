//! What `shoal load dns` and `shoal load ingress` share: a host process of
//! the cluster's kind started by the tool (found next to `shoal`, as
//! `shoal load agent` finds `shoal-agent`), with a node ID of its own, and
//! the dispatcher's part for that node played by the tool: the network view
//! the component follows (`netview::follow`) is scripted.
//!
//! The cluster's own dispatcher answers view requests for any node ID, with
//! an empty view for a node it does not know; the scripted view carries
//! [`SCRIPTED_VERSION`], newer than any such answer, and is pushed on the
//! node's view subject every second, so the component keeps the script
//! whichever answer it heard first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use shoal_shared::envelope::{self, Reply};
use shoal_shared::netview::{NetView, NetViewRequest};
use shoal_shared::subjects;

use super::Ctx;

/// The version of a scripted view: above every position a store reaches.
pub const SCRIPTED_VERSION: u64 = 1 << 62;

/// Answers view requests for the script's node and pushes the view, until dropped.
pub struct ScriptedView {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ScriptedView {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ScriptedView {
    pub async fn serve(ctx: &Ctx, mut view: NetView) -> Result<ScriptedView, String> {
        view.version = SCRIPTED_VERSION;
        let node = view.node_id.clone();
        let payload = envelope::encode(&Reply::Ok(view));
        let mut requests = ctx
            .nats
            .subscribe(subjects::net_requests())
            .await
            .map_err(|e| format!("subscribing to view requests: {e}"))?;
        let (nats, answer, own) = (ctx.nats.clone(), payload.clone(), node.clone());
        let answering = tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let Some(reply) = msg.reply else { continue };
                let ours = envelope::decode::<NetViewRequest>(&msg.payload).is_ok_and(|r| r.node_id == own);
                if ours {
                    let _ = nats.publish(reply, answer.clone()).await;
                }
            }
        });
        let nats = ctx.nats.clone();
        let pushing = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let _ = nats.publish(subjects::net_view(&node), payload.clone()).await;
            }
        });
        ctx.nats
            .flush()
            .await
            .map_err(|e| format!("subscribing to view requests: {e}"))?;
        Ok(ScriptedView {
            tasks: vec![answering, pushing],
        })
    }
}

/// A host process of the cluster's (`shoal-dns`, `shoal-ingress`) that the
/// tool started; killed when dropped, its log directory removed.
pub struct Sibling {
    pub name: &'static str,
    pub dir: PathBuf,
    child: tokio::process::Child,
}

impl Drop for Sibling {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sibling {
    /// Starts `name` (installed next to `shoal`) with `args`, connected to
    /// the run's NATS as node `node_id`; its log goes to a temporary directory.
    pub fn start(ctx: &Ctx, name: &'static str, node_id: &str, args: &[String]) -> Result<Sibling, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))?;
        let bin = exe.parent().unwrap_or(std::path::Path::new(".")).join(name);
        if !bin.is_file() {
            return Err(format!("{} not found (it is installed next to shoal)", bin.display()));
        }
        let dir = std::env::temp_dir().join(ctx.name(name));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("log")).map_err(|e| format!("{name} log: {e}"))?;
        let child = tokio::process::Command::new(&bin)
            .args(["--nats-url", &ctx.nats_url, "--node-id", node_id])
            .args(args)
            .env("SHOAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Sibling { name, dir, child })
    }

    /// Stops the process and waits for it (dropping it only kills it).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Fails with the process's log when it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}): {}",
                self.name,
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default().trim()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

/// A free TCP port on `ip` (probed; the caller binds it soon after).
pub fn free_tcp_port(ip: std::net::IpAddr) -> Result<u16, String> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on {ip}: {e}"))
}

/// A free UDP port on `ip` (probed).
pub fn free_udp_port(ip: std::net::IpAddr) -> Result<u16, String> {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on {ip}: {e}"))
}
