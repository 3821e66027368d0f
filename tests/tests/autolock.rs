//! Autolock through the real docker CLI against `shoal up` (docker
//! executor): `swarm init --autolock` prints the unlock key; a restarted
//! API and dispatcher stay locked (Docker's words on every manager request)
//! until `docker swarm unlock` gives the key; a wrong key is refused; once
//! unlocked, a new task still gets its secret (the dispatcher received the
//! key from the API); `unlock-key --rotate` replaces the key; `swarm update
//! --autolock=false` leaves a restarted manager unlocked.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_tests::free_port;
use shoal_tests::up::{engine, temp_home, until, Up};

const LOCKED: &str =
    "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";

/// The `SWMKEY-1-...` word of a CLI output.
fn key_in(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {out:?}"))
        .to_string()
}

/// SIGKILLs this host's API and dispatcher (shoal up starts them again) and
/// waits until the new API answers.
async fn restart_manager_processes(up: &Up) {
    let old: Vec<i32> = ["shoal-api", "shoal-dispatcher"]
        .iter()
        .map(|p| up.pid_of(p, None).unwrap_or_else(|| panic!("{p} runs")))
        .collect();
    for pid in &old {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    until("the API and dispatcher to be restarted", || {
        let now: Vec<Option<i32>> = ["shoal-api", "shoal-dispatcher"]
            .iter()
            .map(|p| up.pid_of(p, None))
            .collect();
        let fresh = now.iter().zip(&old).all(|(n, o)| n.is_some_and(|n| n != *o));
        let r = up.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        match fresh && r.code == 0 {
            true => Ok(r.stdout.trim().to_string()),
            false => Err(format!("{now:?} {}", r.stderr)),
        }
    })
    .await;
}

fn node_state(up: &Up) -> String {
    up.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// What `cat /run/secrets/pw` prints in each running container of `web`.
fn secret_files(up: &Up) -> Vec<String> {
    up.containers("{{.ID}} {{.State}} {{.Label \"com.docker.swarm.service.name\"}}")
        .iter()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.len() == 3 && p[1] == "running" && p[2] == "web").then(|| p[0].to_string())
        })
        .map(|c| {
            engine(&["exec", &c, "cat", "/run/secrets/pw"])
                .stdout
                .trim()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_manager_refuses_until_unlocked_with_its_key() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "autolock", &data, free_port(), "docker", &["--no-init"]);
    up.ready().await;

    let init = up.docker(&["swarm", "init", "--autolock"]).ok();
    assert!(
        init.stdout.contains("To unlock a swarm manager after it restarts"),
        "{}",
        init.stdout
    );
    let key = key_in(&init.stdout);
    assert_eq!(up.docker(&["swarm", "unlock-key", "-q"]).ok().stdout.trim(), key);
    let spec = up
        .docker(&[
            "info",
            "--format",
            "{{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}",
        ])
        .ok();
    assert_eq!(spec.stdout.trim(), "true");
    // The key file holds the secrets key sealed, not in the clear.
    let file = std::fs::read_to_string(data.join("secrets.key")).unwrap();
    assert!(file.trim_start().starts_with('{'), "{file}");

    up.docker_stdin(&["secret", "create", "pw", "-"], b"hunter2-autolock")
        .ok();
    up.docker(&[
        "service", "create", "--detach", "--name", "web", "--secret", "pw", "busybox", "sleep", "3600",
    ])
    .ok();
    until("web's task to read its secret", || {
        let files = secret_files(&up);
        match files == ["hunter2-autolock"] {
            true => Ok(()),
            false => Err(format!("{files:?}")),
        }
    })
    .await;

    // A restarted manager is locked: Docker's words on every manager request.
    restart_manager_processes(&up).await;
    assert_eq!(node_state(&up), "locked");
    up.docker(&["secret", "ls"]).fails_with(LOCKED);
    up.docker(&["service", "ls"]).fails_with(LOCKED);
    up.docker(&["swarm", "unlock-key"]).fails_with(LOCKED);
    up.docker(&["swarm", "leave"])
        .fails_with("Swarm is encrypted and locked. Please unlock it first or use `--force`");

    // A wrong key, a malformed one, then the right one (read from stdin, as the CLI does).
    let wrong = "SWMKEY-1-".to_string() + &"A".repeat(43);
    up.docker_stdin(&["swarm", "unlock"], format!("{wrong}\n").as_bytes())
        .fails_with("swarm could not be unlocked: invalid key provided");
    up.docker_stdin(&["swarm", "unlock"], b"not-a-key\n")
        .fails_with("invalid key string");
    assert_eq!(node_state(&up), "locked");
    up.docker_stdin(&["swarm", "unlock"], format!("{key}\n").as_bytes())
        .ok();
    assert_eq!(node_state(&up), "active");
    up.docker_stdin(&["swarm", "unlock"], format!("{key}\n").as_bytes())
        .fails_with("swarm is not locked");
    assert_eq!(up.lines(&["secret", "ls", "--format", "{{.Name}}"]).unwrap(), ["pw"]);
    // The restarted dispatcher got the key from the API: a new task gets the secret.
    up.docker(&["service", "scale", "--detach", "web=2"]).ok();
    until("both of web's tasks to read their secret", || {
        let files = secret_files(&up);
        match files == ["hunter2-autolock", "hunter2-autolock"] {
            true => Ok(()),
            false => Err(format!("{files:?}")),
        }
    })
    .await;

    // Rotation: the old key no longer unlocks, the new one does.
    let rotated = up.docker(&["swarm", "unlock-key", "--rotate"]).ok();
    assert!(
        rotated.stdout.contains("Successfully rotated manager unlock key."),
        "{}",
        rotated.stdout
    );
    let new_key = key_in(&rotated.stdout);
    assert_ne!(new_key, key);
    restart_manager_processes(&up).await;
    assert_eq!(node_state(&up), "locked");
    up.docker_stdin(&["swarm", "unlock"], format!("{key}\n").as_bytes())
        .fails_with("swarm could not be unlocked: invalid key provided");
    up.docker_stdin(&["swarm", "unlock"], format!("{new_key}\n").as_bytes())
        .ok();
    assert_eq!(node_state(&up), "active");

    // Autolock off: the key file is in the clear again and a restart is not locked.
    up.docker(&["swarm", "update", "--autolock=false"]).ok();
    up.docker(&["swarm", "unlock-key"]).fails_with("no unlock key is set");
    restart_manager_processes(&up).await;
    assert_eq!(node_state(&up), "active");
    assert_eq!(up.lines(&["secret", "ls", "--format", "{{.Name}}"]).unwrap(), ["pw"]);
    up.docker(&["swarm", "update", "--autolock=true"]).ok();
    assert!(up
        .docker(&["swarm", "unlock-key", "-q"])
        .ok()
        .stdout
        .starts_with("SWMKEY-1-"));
    up.docker(&["service", "rm", "web"]).ok();
}
