//! `docker stack` through the real docker CLI against `shoal up` with the
//! docker executor: deploy a compose file (networks, a secret, a config,
//! published ports, deploy.replicas/resources/placement/update_config/
//! restart_policy), `stack ls`, `stack services`, `stack ps` (with the label
//! and name filters the CLI sends), a second deploy that changes one service
//! and leaves the others' tasks alone, `--prune`, and `stack rm` removing
//! services, networks, secrets and configs.

use std::collections::BTreeMap;
use std::path::Path;

use shoal_tests::up::{temp_home, Up, CONVERGE};
use shoal_tests::{eventually, free_port};

/// Modelled on Docker's example-voting-app `docker-stack.yml` (its swarm
/// example), with every image replaced by the local `busybox` (no registry
/// is reachable here) and a secret and a config added.
const STACK: &str = r#"
version: "3.8"
services:
  redis:
    image: busybox:latest
    command: ["sleep", "3600"]
    networks:
      - frontend
    deploy:
      replicas: 1
      update_config:
        parallelism: 2
        delay: 10s
      restart_policy:
        condition: on-failure
  db:
    image: busybox:latest
    command: ["sh", "-c", "test -s /run/secrets/db_password && exec sleep 3600"]
    networks:
      - backend
    secrets:
      - db_password
    deploy:
      placement:
        constraints: [node.role == manager]
  vote:
    image: busybox:latest
    command: ["sh", "-c", "test -s /etc/vote.conf && exec sleep 3600"]
    ports:
      - "31500:80"
    networks:
      - frontend
    configs:
      - source: vote_conf
        target: /etc/vote.conf
    deploy:
      replicas: REPLICAS
      resources:
        limits:
          cpus: "0.2"
          memory: 64M
      update_config:
        parallelism: 2
      restart_policy:
        condition: on-failure
    stop_grace_period: 1s
networks:
  frontend:
  backend:
secrets:
  db_password:
    file: ./db_password.txt
configs:
  vote_conf:
    file: ./vote.conf
"#;

async fn until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    eventually(CONVERGE, what, || {
        let r = check();
        async move {
            if r.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            r
        }
    })
    .await
}

fn write_stack(dir: &Path, file: &str, body: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// `docker stack services` as `name replicas` lines, when all have converged to `want`.
fn services_are(up: &Up, want: &[&str]) -> Result<(), String> {
    let got = up.lines(&["stack", "services", "st", "--format", "{{.Name}} {{.Replicas}}"])?;
    match got == want {
        true => Ok(()),
        false => Err(format!("stack services {got:?}, want {want:?}")),
    }
}

/// Running task IDs per service name, from `docker stack ps`.
fn running_tasks(up: &Up) -> Result<BTreeMap<String, Vec<String>>, String> {
    let rows = up.lines(&[
        "stack",
        "ps",
        "st",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.ID}} {{.Name}} {{.CurrentState}}",
    ])?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        let p: Vec<&str> = r.split_whitespace().collect();
        if p.len() < 3 || p[2] != "Running" {
            return Err(format!("not all running: {r}"));
        }
        let service = p[1].rsplit_once('.').map_or(p[1], |(s, _)| s).to_string();
        out.entry(service).or_default().push(p[0].to_string());
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_file_deploys_updates_prunes_and_is_removed_as_a_stack() {
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "stacks", &data, free_port(), "docker", &[]);
    up.ready().await;
    let dir = home.path();
    std::fs::write(dir.join("db_password.txt"), "correct-horse\n").unwrap();
    std::fs::write(dir.join("vote.conf"), "listen 80\n").unwrap();
    let file = write_stack(dir, "stack.yml", &STACK.replace("REPLICAS", "2"));

    let out = up.docker(&["stack", "deploy", "-c", &file, "st"]).ok();
    for line in [
        "Creating network st_frontend",
        "Creating network st_backend",
        "Creating secret st_db_password",
        "Creating config st_vote_conf",
        "Creating service st_vote",
        "Creating service st_db",
        "Creating service st_redis",
    ] {
        assert!(out.stdout.contains(line), "{line:?} missing from {:?}", out.stdout);
    }
    assert_eq!(
        up.lines(&["stack", "ls", "--format", "{{.Name}} {{.Services}}"])
            .unwrap(),
        ["st 3"]
    );
    until("the stack's services to converge", || {
        services_are(&up, &["st_db 1/1", "st_redis 1/1", "st_vote 2/2"])
    })
    .await;
    let before = until("every task of the stack running", || {
        let t = running_tasks(&up)?;
        match t.values().map(Vec::len).sum::<usize>() {
            4 => Ok(t),
            n => Err(format!("{n} running tasks: {t:?}")),
        }
    })
    .await;
    // The label filter `stack ps` sends, and a name filter (a prefix, as Docker takes it).
    let votes = up
        .lines(&["stack", "ps", "st", "--filter", "name=st_vote", "--format", "{{.Name}}"])
        .unwrap();
    assert_eq!(votes.len(), 2, "{votes:?}");
    assert!(votes.iter().all(|n| n.starts_with("st_vote.")), "{votes:?}");
    let nets = up
        .lines(&[
            "network",
            "ls",
            "--filter",
            "label=com.docker.stack.namespace=st",
            "--format",
            "{{.Name}}",
        ])
        .unwrap();
    assert_eq!(nets, ["st_backend", "st_frontend"]);
    let spec = up
        .lines(&[
            "service",
            "inspect",
            "st_vote",
            "--format",
            "{{index .Spec.Labels \"com.docker.stack.namespace\"}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} \
             {{(index .Spec.EndpointSpec.Ports 0).PublishedPort}}",
        ])
        .unwrap();
    assert_eq!(spec, ["st 67108864 31500"]);

    // A second deploy changing one service: the others keep their tasks.
    let file = write_stack(dir, "stack.yml", &STACK.replace("REPLICAS", "3"));
    let out = up.docker(&["stack", "deploy", "-c", &file, "st"]).ok();
    assert!(out.stdout.contains("Updating service st_redis"), "{:?}", out.stdout);
    until("st_vote scaled to 3", || {
        services_are(&up, &["st_db 1/1", "st_redis 1/1", "st_vote 3/3"])
    })
    .await;
    let after = until("every task running again", || {
        let t = running_tasks(&up)?;
        match t.values().map(Vec::len).sum::<usize>() {
            5 => Ok(t),
            n => Err(format!("{n} running tasks: {t:?}")),
        }
    })
    .await;
    assert_eq!(after["st_redis"], before["st_redis"], "redis was left alone");
    assert_eq!(after["st_db"], before["st_db"], "db was left alone");

    // --prune removes a service the file no longer has.
    let without_redis = STACK.replace("REPLICAS", "3").replace(
        "  redis:\n    image: busybox:latest\n    command: [\"sleep\", \"3600\"]\n    networks:\n      - frontend\n    deploy:\n      replicas: 1\n      update_config:\n        parallelism: 2\n        delay: 10s\n      restart_policy:\n        condition: on-failure\n",
        "",
    );
    assert!(!without_redis.contains("redis"), "the test's compose edit failed");
    let file = write_stack(dir, "stack-pruned.yml", &without_redis);
    let out = up.docker(&["stack", "deploy", "--prune", "-c", &file, "st"]).ok();
    assert!(out.stdout.contains("Removing service st_redis"), "{:?}", out.stdout);
    until("st_redis gone", || services_are(&up, &["st_db 1/1", "st_vote 3/3"])).await;

    // stack rm: services, secrets, configs and networks.
    let out = up.docker(&["stack", "rm", "st"]).ok();
    for line in [
        "Removing service st_db",
        "Removing service st_vote",
        "Removing secret st_db_password",
        "Removing config st_vote_conf",
        "Removing network st_frontend",
        "Removing network st_backend",
    ] {
        assert!(out.stdout.contains(line), "{line:?} missing from {:?}", out.stdout);
    }
    assert!(
        up.lines(&["stack", "ls"]).unwrap().len() <= 1,
        "only the header is left"
    );
    assert!(up.lines(&["secret", "ls", "-q"]).unwrap().is_empty());
    assert!(up.lines(&["config", "ls", "-q"]).unwrap().is_empty());
    let nets = up
        .lines(&["network", "ls", "--filter", "label=com.docker.stack.namespace=st", "-q"])
        .unwrap();
    assert!(nets.is_empty(), "{nets:?}");
    until("the stack's tasks to be gone", || {
        let r = up.docker(&["stack", "ps", "st"]);
        match r.code != 0 && r.stderr.contains("nothing found in stack: st") {
            true => Ok(()),
            false => Err(format!("{} {}", r.stdout, r.stderr)),
        }
    })
    .await;
    up.terminate().await;
}
