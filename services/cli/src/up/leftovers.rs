//! One `shoal up` per data dir, and what a `shoal up` that was killed left
//! running on it: found by [`OWNER_ENV`] in their environment, SIGKILLed.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_shared::procfs;

use super::OWNER_ENV;

/// The held lock on `<data-dir>/up.lock`.
pub(super) type Lock = Flock<File>;

/// One `shoal up` per data dir: an exclusive lock on `<data-dir>/up.lock`
/// (released by the kernel however this process ends; children do not inherit it).
pub(super) fn lock_data_dir(dir: &Path) -> Result<Lock, String> {
    let path = dir.join("up.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot use data dir {}: {e}; choose another with --data-dir (or SHOAL_DATA_DIR)",
                dir.display()
            )
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let f: &mut File = &mut lock;
            let _ = f.set_len(0);
            let _ = f.seek(SeekFrom::Start(0));
            let _ = writeln!(f, "{}", std::process::id());
            Ok(lock)
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(format!(
                "another shoal up (pid {}) is running on {}; stop it first or choose another --data-dir",
                pid.trim(),
                dir.display()
            ))
        }
        Err((_, e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Processes of this data dir left by a `shoal up` that was killed (with
/// the lock held, no live `shoal up` owns them): SIGKILLed, awaited.
pub(super) fn stop_leftovers(dir: &Path) -> Result<(), String> {
    let mut mark = OsString::from(format!("{OWNER_ENV}="));
    mark.push(dir.as_os_str());
    let mark = mark.as_encoded_bytes().to_vec();
    let me = std::process::id() as i32;
    let find = || -> Vec<Pid> {
        procfs::pids()
            .into_iter()
            .filter(|pid| *pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mark.as_slice()))
            })
            .map(Pid::from_raw)
            .collect()
    };
    let left = find();
    if left.is_empty() {
        return Ok(());
    }
    eprintln!(
        "shoal up: stopping {} process(es) left on {} by a shoal up that did not stop cleanly",
        left.len(),
        dir.display()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = find();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let pids: Vec<String> = left.iter().map(|p| p.to_string()).collect();
            return Err(format!(
                "processes {} of a previous shoal up on {} do not die; stop them and retry",
                pids.join(" "),
                dir.display()
            ));
        }
        for p in left {
            let _ = kill(p, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
