//! Secrets and configs through the real docker CLI against `shoal up` with
//! the docker executor: create (file, stdin), ls, inspect, rm; refusals in
//! Docker's words; `service create/update --secret/--config` reaching real
//! containers as files with their owner and mode, on a tmpfs; and secret
//! data found in the clear nowhere but on the one node that runs the task
//! (not in the store's files, the logs, `inspect`, or any other NATS message).

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use futures::StreamExt;
use shoal_shared::dispatch::AgentRequest;
use shoal_shared::{envelope, subjects};
use shoal_tests::up::{engine, temp_home, Up, CONVERGE};
use shoal_tests::{eventually, free_port};

/// Polls a docker-CLI check at a pace the engine can bear.
async fn until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    eventually(CONVERGE, what, || {
        let r = check();
        async move {
            if r.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            r
        }
    })
    .await
}

/// The running container of a service on the engine, with its node ID.
fn running_container(up: &Up, service: &str) -> Result<(String, String), String> {
    let rows = up.containers(
        "{{.ID}} {{.State}} {{.Label \"com.docker.swarm.service.name\"}} {{.Label \"com.docker.swarm.node.id\"}}",
    );
    rows.iter()
        .find_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.len() == 4 && p[1] == "running" && p[2] == service).then(|| (p[0].to_string(), p[3].to_string()))
        })
        .ok_or_else(|| format!("no running container of {service}: {rows:?}"))
}

/// `docker exec` on the engine itself (the container is the node's).
fn exec(container: &str, cmd: &str) -> String {
    engine(&["exec", container, "sh", "-c", cmd])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// Every file under `dir` whose bytes contain one of `needles`.
fn files_containing(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if needles.iter().any(|n| bytes.windows(n.len()).any(|w| w == *n)) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_configs_reach_containers_as_files_and_nowhere_else_in_the_clear() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(
        home.path(),
        "secrets",
        &data,
        free_port(),
        "docker",
        &["--extra-agents", "1"],
    );
    up.ready().await;
    assert!(up.output().contains("shoal up: executor: docker"), "{}", up.output());

    // Every NATS message from here on, to find where the secret travels.
    let url = up
        .output()
        .lines()
        .find_map(|l| l.strip_prefix("shoal up: NATS on "))
        .expect("NATS url line")
        .to_string();
    let nats = async_nats::connect(url).await.expect("connect to NATS");
    let mut all = nats.subscribe(">").await.expect("subscribe");
    nats.flush().await.expect("flush");
    let secret = format!("s3cr3t-{}", shoal_shared::id::new_id());
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret.as_bytes());
    let needles: Vec<Vec<u8>> = vec![secret.clone().into_bytes(), b64.clone().into_bytes()];
    // Subjects that carried the data, named by the node they reach: an
    // assignment subject as it is, an inbox by the node whose request (a
    // `Sync` answered with the full set) it answers.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let (sink, watch_needles) = (seen.clone(), needles.clone());
    let watch = tokio::spawn(async move {
        let _keep = nats;
        let mut asked_by = std::collections::HashMap::new();
        while let Some(m) = all.next().await {
            if m.subject.as_str() == subjects::dispatcher_requests() {
                if let (Some(reply), Ok(req)) = (m.reply.as_ref(), envelope::decode::<AgentRequest>(&m.payload)) {
                    asked_by.insert(reply.to_string(), req.node_id().to_string());
                }
            }
            if watch_needles
                .iter()
                .any(|n| m.payload.windows(n.len()).any(|w| w == n.as_slice()))
            {
                let to = match asked_by.get(m.subject.as_str()) {
                    Some(node) => format!("reply to {node}"),
                    None => m.subject.to_string(),
                };
                sink.lock().unwrap().insert(to);
            }
        }
    });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _watch = Abort(watch);

    // create: from a file (with a label) and from stdin.
    let file = home.path().join("pw.txt");
    std::fs::write(&file, &secret).unwrap();
    let file = file.to_str().unwrap();
    let id = up
        .docker(&["secret", "create", "--label", "env=test", "db_pw", file])
        .ok();
    assert_eq!(
        id.stdout.trim().len(),
        25,
        "secret create prints the ID: {:?}",
        id.stdout
    );
    up.docker_stdin(&["secret", "create", "from_stdin", "-"], b"other-secret\n")
        .ok();
    up.docker(&["secret", "create", "db_pw", file])
        .fails_with("rpc error: code = AlreadyExists desc = secret db_pw already exists");
    up.docker(&["secret", "create", "--template-driver", "mustache", "tmpl", file])
        .fails_with("unrecognized template type mustache");
    up.docker(&["secret", "create", "bad_", file]).fails_with(
        "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
    );

    // ls, filters, inspect: never the data.
    let names = up.lines(&["secret", "ls", "--format", "{{.Name}}"]).unwrap();
    assert_eq!(names, ["db_pw", "from_stdin"]);
    let labelled = up.lines(&["secret", "ls", "--filter", "label=env=test", "-q"]).unwrap();
    assert_eq!(labelled, [id.stdout.trim().to_string()]);
    let inspect = up.docker(&["secret", "inspect", "db_pw"]).ok();
    let v: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(v[0]["Spec"]["Name"], "db_pw");
    assert_eq!(v[0]["Spec"]["Labels"]["env"], "test");
    assert!(v[0]["Spec"].get("Data").is_none(), "{}", inspect.stdout);
    assert!(!inspect.stdout.contains(&secret) && !inspect.stdout.contains(&b64));

    // configs: data shown as given.
    let conf = home.path().join("app.conf");
    std::fs::write(&conf, "listen 8080\n").unwrap();
    up.docker(&["config", "create", "app.conf", conf.to_str().unwrap()])
        .ok();
    let shown = up
        .lines(&["config", "inspect", "--format", "{{json .Spec.Data}}", "app.conf"])
        .unwrap();
    assert_eq!(shown, ["\"bGlzdGVuIDgwODAK\""]);
    up.docker(&["config", "create", "app.conf", conf.to_str().unwrap()])
        .fails_with("config app.conf already exists");
    // A templated config, expanded per task by the agent (as SwarmKit's does).
    let tmpl = home.path().join("tmpl.conf");
    std::fs::write(
        &tmpl,
        r#"svc={{.Service.Name}} slot={{.Task.Slot}} node={{.Node.Hostname}} env={{env "GREETING"}} stdin={{secret "from_stdin"}}"#,
    )
    .unwrap();
    up.docker(&[
        "config",
        "create",
        "--template-driver",
        "golang",
        "tmpl.conf",
        tmpl.to_str().unwrap(),
    ])
    .ok();
    let driver = up
        .lines(&[
            "config",
            "inspect",
            "--format",
            "{{.Spec.Templating.Name}}",
            "tmpl.conf",
        ])
        .unwrap();
    assert_eq!(driver, ["golang"]);

    // A service using both, owner and mode as asked.
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "sec",
        "--stop-grace-period",
        "1s",
        "--secret",
        "source=db_pw,target=pw,uid=1000,gid=1001,mode=0400",
        "--secret",
        "from_stdin",
        "--config",
        "source=app.conf,target=/etc/app.conf,mode=0440",
        "--config",
        "source=tmpl.conf,target=/etc/tmpl.conf",
        "--env",
        "GREETING=hi",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    up.docker(&[
        "service", "create", "-d", "--name", "bad", "--secret", "nope", "busybox",
    ])
    .fails_with("secret not found: nope");
    let (cid, node) = until("a running container of sec", || running_container(&up, "sec")).await;
    assert_eq!(exec(&cid, "cat /run/secrets/pw"), secret);
    assert_eq!(exec(&cid, "stat -c '%u %g %a' /run/secrets/pw"), "1000 1001 400");
    assert_eq!(exec(&cid, "cat /run/secrets/from_stdin"), "other-secret");
    assert_eq!(exec(&cid, "stat -c '%u %g %a' /run/secrets/from_stdin"), "0 0 444");
    assert_eq!(exec(&cid, "cat /etc/app.conf"), "listen 8080");
    let hostname = up
        .lines(&["node", "inspect", "--format", "{{.Description.Hostname}}", &node])
        .unwrap()
        .join("");
    assert_eq!(
        exec(&cid, "cat /etc/tmpl.conf"),
        format!("svc=sec slot=1 node={hostname} env=hi stdin=other-secret")
    );
    assert_eq!(exec(&cid, "stat -c '%u %g %a' /etc/app.conf"), "0 0 440");
    // The secret's file is on a tmpfs (its bind mount shows the source's file system).
    assert_eq!(
        exec(&cid, "awk '$2 == \"/run/secrets/pw\" {print $3}' /proc/mounts"),
        "tmpfs"
    );
    assert_eq!(
        exec(
            &cid,
            "echo x 2>/dev/null > /run/secrets/pw && echo writable || echo read-only"
        ),
        "read-only"
    );

    // In use: removal refused in Docker's words.
    up.docker(&["secret", "rm", "db_pw"])
        .fails_with("rpc error: code = InvalidArgument desc = secret 'db_pw' is in use by the following service: sec");
    up.docker(&["config", "rm", "app.conf"])
        .fails_with("config 'app.conf' is in use by the following service: sec");

    // At rest and in transit: only the assignment of the node running the task carries it.
    let hits = files_containing(&data, &[needles[0].as_slice(), needles[1].as_slice()]);
    assert!(hits.is_empty(), "secret data in the clear in {hits:?}");
    let svc = up.docker(&["service", "inspect", "sec"]).ok();
    assert!(!svc.stdout.contains(&secret) && !svc.stdout.contains(&b64));
    let carriers = seen.lock().unwrap().clone();
    let allowed = BTreeSet::from([format!("shoal.dispatch.node.{node}"), format!("reply to {node}")]);
    assert!(
        !carriers.is_empty() && carriers.is_subset(&allowed),
        "NATS subjects that carried the secret: {carriers:?}, allowed {allowed:?}"
    );

    // Rotation as with Docker: drop the secret from the service, then remove it.
    up.docker(&["service", "update", "-d", "--secret-rm", "db_pw", "sec"])
        .ok();
    until("sec's new container without the secret", || {
        let (c, _) = running_container(&up, "sec")?;
        let r = engine(&["exec", &c, "sh", "-c", "ls /run/secrets"]);
        match r.code == 0 && r.stdout.trim() == "from_stdin" {
            true => Ok(()),
            false => Err(format!("{c}: {:?} {:?}", r.stdout, r.stderr)),
        }
    })
    .await;
    up.docker(&["secret", "rm", "db_pw"]).ok();
    assert_eq!(
        up.lines(&["secret", "ls", "--format", "{{.Name}}"]).unwrap(),
        ["from_stdin"]
    );

    // Removing the service removes its containers and, with them, the files on the tmpfs.
    up.docker(&["service", "rm", "sec"]).ok();
    let dirs: Vec<_> = up
        .node_ids()
        .iter()
        .map(|n| Path::new("/dev/shm/shoal").join(n))
        .collect();
    until("the task files to be removed", || {
        let left: Vec<String> = dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|e| e.flatten().map(|e| e.path().display().to_string()))
            .collect();
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("left: {left:?}")),
        }
    })
    .await;
    up.docker(&["secret", "rm", "from_stdin"]).ok();
    up.docker(&["config", "rm", "app.conf"]).ok();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    up.terminate().await;
}
