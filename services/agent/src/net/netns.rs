//! Network namespaces by file: doing netlink work inside one (a thread that
//! joins it and runs its own small runtime, so no thread of the agent's
//! runtime ever changes namespace), and the process executor's own
//! namespaces, bind-mounted at `<data-dir>/netns/<task-id>`.

use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use super::link::Netlink;

/// Runs `work` with a netlink connection opened inside the namespace at
/// `netns`, on a thread of its own that ends with it.
pub async fn run_in<F, Fut, T>(netns: &Path, work: F) -> Result<T, String>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    run_in_both(netns, move |_, nl| work(nl)).await
}

/// Like [`run_in`], with a second connection opened in the calling
/// thread's namespace first (a socket stays in the namespace it was made in).
pub async fn run_in_both<F, Fut, T>(netns: &Path, work: F) -> Result<T, String>
where
    F: FnOnce(Netlink, Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let res = (|| {
                let file = std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?;
                rt.block_on(async move {
                    let here = Netlink::connect()?;
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("joining {}: {e}", path.display()))?;
                    let there = Netlink::connect()?;
                    Ok(work(here, there).await)
                })
            })();
            let _ = tx.send(res);
        })
        .map_err(|e| format!("thread: {e}"))?;
    rx.await.map_err(|_| "the namespace thread died".to_string())?
}

/// Where the process executor keeps its tasks' namespaces.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("netns")
}

/// Makes a new network namespace and keeps it at `path` (a bind mount of
/// the namespace onto an empty file), as `ip netns add` does.
pub fn create(path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    if is_mounted(path) {
        return Ok(());
    }
    std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let target = path.to_path_buf();
    std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("new network namespace: {e}"))?;
        let tid = nix::unistd::gettid();
        let me = format!("/proc/self/task/{tid}/ns/net");
        nix::mount::mount(
            Some(me.as_str()),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("binding the namespace to {}: {e}", target.display()))
    })
    .join()
    .map_err(|_| "the namespace thread died".to_string())?
}

/// Removes a namespace made by [`create`] (its file unmounted and deleted).
pub fn remove(path: &Path) {
    if is_mounted(path) {
        if let Err(e) = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %path.display(), error = %e, "unmounting a task's network namespace failed");
        }
    }
    let _ = std::fs::remove_file(path);
}

/// Whether something is mounted at `path` (from `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}
