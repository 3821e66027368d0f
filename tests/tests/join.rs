//! Issue 16 §1: hosts join a swarm over TLS with Docker's join tokens, the
//! way `docker swarm join` does: a manager host and joining hosts on one
//! machine, each host its own process set and data dir (see
//! `shoal_tests::hosts`), driven by the real docker CLI.

use shoal_api::certs;
use shoal_tests::eventually;
use shoal_tests::hosts::{Hosts, SLOW};

/// The whitespace-separated cells of the `docker node ls` row of `id`.
fn node_row(hosts: &Hosts, id: &str) -> Result<Vec<String>, String> {
    let ls = hosts.manager.docker(&["node", "ls"]);
    if ls.code != 0 {
        return Err(ls.stderr);
    }
    ls.lines()
        .into_iter()
        .find(|l| l.starts_with(id))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .ok_or_else(|| format!("no row for {id}:\n{}", ls.stdout))
}

fn cluster_id(hosts: &Hosts) -> String {
    hosts
        .manager
        .docker(&["info", "--format", "{{.Swarm.Cluster.ID}}"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_over_tls_with_the_worker_token_and_leave() {
    let mut hosts = Hosts::start(&[]);
    hosts
        .manager
        .docker(&["swarm", "init", "--dispatcher-heartbeat", "1s"])
        .ok();
    let worker_token = hosts.token("worker");
    let manager_token = hosts.token("manager");
    let addr = hosts.swarm_addr();
    let cid = cluster_id(&hosts);
    // The CA key stays in the store: never in an answer, never in a data dir.
    for path in ["/swarm", "/info"] {
        let r = hosts.manager.raw("GET", path, None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains(&cid) && !r.body.contains("PRIVATE KEY"),
            "{path}: {}",
            r.body
        );
    }
    assert!(!hosts.manager.dir.path().join("swarm-ca.key").exists());
    let parts: Vec<&str> = worker_token.split('-').collect();
    assert_eq!(parts.len(), 4, "{worker_token}");
    assert_eq!((parts[2].len(), parts[3].len()), (50, 25));
    assert_eq!(manager_token.split('-').nth(2), Some(parts[2]), "same CA digest");
    assert_ne!(manager_token, worker_token, "a secret per role");

    let b = hosts.add_host("host-b", &["--join-timeout-ms", "15000"]);
    let host = hosts.host(b);
    let info = host.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).ok();
    assert_eq!(info.stdout.trim(), "inactive");
    host.docker(&["node", "ls"])
        .fails_with("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\"");

    // Refused: a token that is not one, a CA that is not the manager's
    // (refused in the TLS handshake, before the token is sent), a wrong secret.
    host.docker(&["swarm", "join", "--token", "SWMTKN-1-nope", &addr])
        .fails_with("invalid join token");
    let other_ca = {
        let (_, der, _) = certs::new_root_ca().unwrap();
        certs::ca_digest(&der)
    };
    let foreign = format!("SWMTKN-1-{other_ca}-{}", parts[3]);
    host.docker(&["swarm", "join", "--token", &foreign, &addr])
        .fails_with(&format!(
            "remote CA does not match fingerprint. Expected: {}",
            certs::digest_hex(&other_ca)
        ));
    let wrong_secret = format!("SWMTKN-1-{}-{}", parts[2], "0".repeat(25));
    host.docker(&["swarm", "join", "--token", &wrong_secret, &addr])
        .fails_with("A valid join token is necessary to join this cluster");
    let ls = hosts.manager.docker(&["node", "ls", "-q"]).ok();
    assert_eq!(ls.lines().len(), 1, "no node was added: {}", ls.stdout);
    let log = hosts.manager.log();
    assert!(!log.contains("node joined"), "{log}");

    // Joined with the worker token: answered once the node is Ready.
    let host = hosts.host(b);
    let joined = host.docker(&["swarm", "join", "--token", &worker_token, &addr]).ok();
    assert!(
        joined.stdout.contains("This node joined a swarm as a worker."),
        "{}",
        joined.stdout
    );
    let bid = host.node_id();
    let row = node_row(&hosts, &bid).unwrap();
    assert_eq!(&row[2..4], ["Ready", "Active"], "{row:?}");
    // Its certificate: CN node ID, OU swarm-worker, O cluster ID, 90 days, by the swarm's CA.
    let host = hosts.host(b);
    let dir = host.swarm_dir();
    let pem = std::fs::read_to_string(dir.join("node.crt")).unwrap();
    let c = certs::cert_info(&pem).unwrap();
    assert_eq!(
        (c.node_id.as_str(), c.role_ou.as_str(), c.cluster_id.as_str()),
        (bid.as_str(), "swarm-worker", cid.as_str())
    );
    assert_eq!(
        c.not_after - c.not_before,
        90 * 86_400 + 3_600,
        "90 days (and an hour of clock skew)"
    );
    let verify = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.crt"))
        .arg(dir.join("node.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("node.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the node key is the owner's only");
    let info = host
        .docker(&["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}"])
        .ok();
    assert_eq!(info.stdout.trim(), format!("active {bid}"));
    host.docker(&["swarm", "join", "--token", &worker_token, &addr])
        .fails_with("This node is already part of a swarm.");

    // A host with no NATS server and store replica of its own cannot be a
    // manager: refused before its Node is written.
    let c_host = hosts.add_host("host-c", &["--join-timeout-ms", "15000"]);
    hosts
        .host(c_host)
        .docker(&["swarm", "join", "--token", &manager_token, &addr])
        .fails_with("can join the swarm as a worker only");
    assert_eq!(hosts.manager.docker(&["node", "ls", "-q"]).ok().lines().len(), 2);

    // After a rotation the old worker token is refused; joined nodes are unaffected.
    hosts
        .manager
        .docker(&["swarm", "join-token", "--rotate", "-q", "worker"])
        .ok();
    let new_token = hosts.token("worker");
    assert_ne!(new_token, worker_token);
    let host_c = hosts.host(c_host);
    host_c
        .docker(&["swarm", "join", "--token", &worker_token, &addr])
        .fails_with("A valid join token is necessary to join this cluster");
    host_c.docker(&["swarm", "join", "--token", &new_token, &addr]).ok();
    let cid_c = host_c.node_id();
    assert_eq!(node_row(&hosts, &cid_c).unwrap()[2], "Ready");
    assert_eq!(node_row(&hosts, &bid).unwrap()[2], "Ready");

    // A manager that cannot be reached: Docker's timeout words.
    let d = hosts.add_host("host-d", &["--join-timeout-ms", "3000"]);
    let nobody = format!("127.0.0.1:{}", shoal_tests::free_port());
    hosts
        .host(d)
        .docker(&["swarm", "join", "--token", &new_token, &nobody])
        .fails_with("Timeout was reached before node joined.");

    // The worker leaves: its agent stops, its node goes Down and can be removed.
    let host = hosts.host(b);
    let left = host.docker(&["swarm", "leave"]).ok();
    assert!(left.stdout.contains("Node left the swarm."), "{}", left.stdout);
    assert!(!host.swarm_dir().join("node.key").exists());
    let info = host.docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).ok();
    assert_eq!(info.stdout.trim(), "inactive");
    eventually(SLOW, "host-b's agent to stop", || {
        let running = hosts.hosts[b].agent.as_mut().is_some_and(|a| !a.exited());
        async move {
            if running {
                Err("running".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
    eventually(SLOW, "host-b's node to go Down", || {
        let r = node_row(&hosts, &bid);
        async move {
            match r {
                Ok(row) if row[2] == "Down" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    hosts.manager.docker(&["node", "rm", &bid]).ok();
    assert!(node_row(&hosts, &bid).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_renew_between_half_and_four_fifths_of_their_life() {
    let mut hosts = Hosts::start(&[]);
    hosts.manager.docker(&["swarm", "init"]).ok();
    hosts.manager.docker(&["swarm", "update", "--cert-expiry", "20s"]).ok();
    let token = hosts.token("worker");
    let addr = hosts.swarm_addr();
    let b = hosts.add_host("host-b", &[]);
    hosts.host(b).docker(&["swarm", "join", "--token", &token, &addr]).ok();
    let host = hosts.host(b);
    let bid = host.node_id();
    let cert = host.swarm_dir().join("node.crt");
    let first = certs::cert_info(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    // 20 s of validity, backdated by a tenth of it (clock skew).
    assert_eq!(first.not_after - first.not_before, 22, "{first:?}");
    let agent_pid = host.agent.as_ref().unwrap().pid();
    let api_pid = host.api.proc.pid();
    let mut renewals = Vec::new();
    for round in 0..2 {
        let seen = renewals.last().cloned().unwrap_or(first.clone());
        let next = eventually(SLOW, &format!("renewal {round}"), || {
            let now = std::fs::read_to_string(&cert)
                .ok()
                .and_then(|p| certs::cert_info(&p).ok());
            let seen = seen.clone();
            async move {
                match now {
                    Some(c) if c.not_after != seen.not_after => Ok(c),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        let renewed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let life = seen.not_after - seen.not_before;
        // Renewed between 50 % and 80 % of the old certificate's life (1 s of polling slack).
        assert!(
            renewed_at >= seen.not_before + life / 2 && renewed_at <= seen.not_before + life * 8 / 10 + 3,
            "renewed at {renewed_at}, old certificate {seen:?}"
        );
        assert_eq!(
            (next.node_id.as_str(), next.role_ou.as_str()),
            (bid.as_str(), "swarm-worker")
        );
        renewals.push(next);
    }
    // No restart, and the node kept working.
    let host = hosts.host(b);
    assert!(host.agent_running());
    assert_eq!(host.agent.as_ref().unwrap().pid(), agent_pid);
    assert!(!host.api.proc.exited());
    assert_eq!(host.api.proc.pid(), api_pid);
    let log = host.api.log();
    assert!(log.contains("node certificate renewed"), "{log}");
    let row = node_row(&hosts, &bid).unwrap();
    assert_eq!(row[2], "Ready", "{row:?}");
}

/// The `docker swarm join` answer's JSON file `state.json` of a host.
fn membership(host: &shoal_tests::hosts::Host) -> serde_json::Value {
    let text = std::fs::read_to_string(host.swarm_dir().join("state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The strings of a JSON array, sorted (the managers come in store order).
fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_joins_as_a_manager_with_the_manager_token_and_serves_joins() {
    let mut hosts = Hosts::start(&[]);
    hosts
        .manager
        .docker(&["swarm", "init", "--dispatcher-heartbeat", "1s"])
        .ok();
    let manager_token = hosts.token("manager");
    let worker_token = hosts.token("worker");
    let addr = hosts.swarm_addr();
    let cid = cluster_id(&hosts);
    // mgr-b advertises its NATS (the store's) under another name, so that
    // hosts get a list of URLs to connect with.
    let nats = hosts.store.nats.url();
    let alias = nats.replace("127.0.0.1", "localhost");
    // A secret makes the first manager's secrets key.
    let pw = hosts.manager.dir.path().join("pw");
    std::fs::write(&pw, "hunter2").unwrap();
    hosts
        .manager
        .docker(&["secret", "create", "pw", pw.to_str().unwrap()])
        .ok();
    let m = hosts.add_manager_host("mgr-b", &["--join-timeout-ms", "15000", "--nats-advertise", &alias]);
    let host = hosts.host(m);
    // Before the join it shares the store but is no manager of the swarm.
    host.docker(&["node", "ls"])
        .fails_with("This node is not a swarm manager.");
    let joined = host.docker(&["swarm", "join", "--token", &manager_token, &addr]).ok();
    assert!(
        joined.stdout.contains("This node joined a swarm as a manager."),
        "{}",
        joined.stdout
    );
    // It got the managers' secrets key with the join (both can open every secret).
    let key_of = |dir: &std::path::Path| std::fs::read(dir.join("secrets.key")).expect("a secrets key");
    let first_key = key_of(hosts.manager.dir.path());
    let host = hosts.host(m);
    assert_eq!(key_of(host.api.dir.path()), first_key, "one key for all managers");
    let mid = host.node_id();
    let mgr_b_addr = host.swarm_addr();
    // Its certificate names it a manager of this cluster.
    let pem = std::fs::read_to_string(host.swarm_dir().join("node.crt")).unwrap();
    let c = certs::cert_info(&pem).unwrap();
    assert_eq!(
        (c.node_id.as_str(), c.role_ou.as_str(), c.cluster_id.as_str()),
        (mid.as_str(), "swarm-manager", cid.as_str())
    );
    // It knows where the managers' NATS servers and swarm ports are.
    let state = membership(host);
    assert_eq!(state["role"], "manager", "{state}");
    assert_eq!(
        state["nats_urls"],
        serde_json::json!([alias, nats]),
        "its own first: {state}"
    );
    assert_eq!(
        sorted(&state["managers"]),
        sorted(&serde_json::json!([addr, mgr_b_addr])),
        "{state}"
    );
    // Registered as a manager, reachable at its swarm port; `node ls` works on it.
    let row = node_row(&hosts, &mid).unwrap();
    assert_eq!(&row[2..5], ["Ready", "Active", "Reachable"], "{row:?}");
    let host = hosts.host(m);
    let ls = host.docker(&["node", "ls", "-q"]).ok();
    assert_eq!(ls.lines().len(), 2, "{}", ls.stdout);
    let inspect = host
        .docker(&["node", "inspect", "self", "--format", "{{json .ManagerStatus}}"])
        .ok();
    assert!(
        inspect.stdout.contains(&mgr_b_addr) && !inspect.stdout.contains("NATS"),
        "the NATS URLs stay in the store: {}",
        inspect.stdout
    );

    // A worker joins through the new manager's swarm port and learns both managers.
    let w = hosts.add_host("host-w", &["--join-timeout-ms", "15000"]);
    hosts
        .host(w)
        .docker(&["swarm", "join", "--token", &worker_token, &mgr_b_addr])
        .ok();
    let w_state = membership(hosts.host(w));
    assert_eq!(w_state["role"], "worker", "{w_state}");
    assert_eq!(
        sorted(&w_state["managers"]),
        sorted(&serde_json::json!([addr, mgr_b_addr])),
        "{w_state}"
    );
    assert_eq!(
        w_state["nats_urls"],
        serde_json::json!([alias, nats]),
        "the answering manager's first: {w_state}"
    );
    let wid = hosts.host(w).node_id();
    assert_eq!(node_row(&hosts, &wid).unwrap()[2], "Ready");

    // Rotating the manager token on the new manager: the old one is refused
    // for new joins, the joined manager keeps working.
    let host = hosts.host(m);
    let rotated = host
        .docker(&["swarm", "join-token", "--rotate", "-q", "manager"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_ne!(rotated, manager_token);
    assert_eq!(hosts.token("manager"), rotated);
    assert_eq!(hosts.token("worker"), worker_token, "the worker token is not rotated");
    let c = hosts.add_manager_host("mgr-c", &["--join-timeout-ms", "15000"]);
    hosts
        .host(c)
        .docker(&["swarm", "join", "--token", &manager_token, &addr])
        .fails_with("A valid join token is necessary to join this cluster");
    assert_eq!(hosts.host(m).docker(&["node", "ls", "-q"]).ok().lines().len(), 3);
    hosts
        .host(c)
        .docker(&["swarm", "join", "--token", &rotated, &mgr_b_addr])
        .ok();
    let cid_c = hosts.host(c).node_id();
    assert_eq!(
        &node_row(&hosts, &cid_c).unwrap()[2..5],
        ["Ready", "Active", "Reachable"]
    );
}
