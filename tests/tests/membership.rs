//! The store's real membership through the Docker CLI: three managers, each
//! a `shoal-api` with its own raft-store replica (`--store-replica`) on one
//! NATS server, as three hosts would run them, the second and third joined
//! over TLS with the manager token (`shoal_tests::hosts`).
//! - `docker node ls` shows MANAGER STATUS from the store's membership: the
//!   store leader's node `Leader`; with its replica killed, that node
//!   `Unreachable` and another `Leader`;
//! - `docker node promote` gives a worker a replica id and makes its replica
//!   a learner, which becomes a voter once it runs and has caught up;
//!   `docker node demote` removes it; a demotion that would lose quorum is
//!   refused in Docker's words;
//! - `docker swarm init --force-new-cluster` on a manager whose store was
//!   restored from a backup of one replica's data dir: its services are back,
//!   writes work, the other managers are gone, a new manager can join.

use std::time::Duration;

use shoal_shared::store::{StoreClient, StoreMembership};
use shoal_tests::api::{Api, Run};
use shoal_tests::eventually;
use shoal_tests::hosts::{Host, Hosts};

const LONG: Duration = Duration::from_secs(60);

/// Three replicas and three manager hosts, one per replica: the first
/// initialized the swarm, the others joined it over TLS with the manager
/// token (each host an API and an agent, as `swarm join` needs).
async fn three_managers() -> (Hosts, StoreClient) {
    let mut hosts = Hosts::start_replicas(3, &["--store-replica", "1"]);
    let client = hosts.store.client().await;
    hosts.store.leader(&client, &[], LONG).await;
    hosts.manager.docker(&["swarm", "init"]).ok();
    let token = hosts.token("manager");
    for r in 2..=3u64 {
        let i = hosts.add_manager_host(&format!("m{r}"), &["--store-replica", &r.to_string()]);
        hosts.hosts[i]
            .docker(&["swarm", "join", "--token", &token, &hosts.swarm_addr()])
            .ok();
    }
    (hosts, client)
}

/// The managers' APIs, the initializing one first.
fn apis<'a>(manager: &'a Api, hosts: &'a [Host]) -> Vec<&'a Api> {
    std::iter::once(manager).chain(hosts.iter().map(|h| &h.api)).collect()
}

/// `docker node ls` on `api`: node ID -> MANAGER STATUS ("" for a worker).
fn manager_status(api: &Api) -> Result<Vec<(String, String)>, String> {
    let run = api.docker(&["node", "ls", "--format", "{{.ID}} {{.ManagerStatus}}"]);
    if run.code != 0 {
        return Err(run.stderr);
    }
    Ok(run
        .lines()
        .iter()
        .map(|l| {
            let mut parts = l.splitn(2, ' ');
            let id = parts.next().unwrap_or_default().to_string();
            let status = parts.next().unwrap_or_default().trim();
            (id, status.trim_start_matches('*').trim().to_string())
        })
        .collect())
}

fn status_of(all: &[(String, String)], id: &str) -> String {
    all.iter()
        .find(|(n, _)| n == id)
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| "(absent)".into())
}

async fn membership(client: &StoreClient) -> Result<StoreMembership, String> {
    client
        .with_deadline(Duration::from_secs(2))
        .membership()
        .await
        .map_err(|e| e.to_string())
}

/// `docker service create` of a stored spec (no image lookup, no wait).
fn create_service(api: &Api, name: &str, replicas: &str) {
    api.docker(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        name,
        "--replicas",
        replicas,
        "busybox",
        "sleep",
        "60",
    ])
    .ok();
}

fn expect(run: Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(needle), "{needle:?} not in {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ls_shows_the_stores_leader_and_an_unreachable_manager() {
    let (mut hosts, client) = three_managers().await;
    let Hosts {
        store,
        manager,
        hosts: joined,
        ..
    } = &mut hosts;
    let apis = apis(manager, joined);
    let ids: Vec<String> = apis.iter().map(|a| a.node_id()).collect();
    let leader = store.leader(&client, &[], LONG).await;
    let li = (leader - 1) as usize;
    eventually(
        LONG,
        "node ls: the store leader's node Leader, the others Reachable",
        || async {
            let all = manager_status(apis[0])?;
            let want: Vec<String> = (0..3)
                .map(|i| if i == li { "Leader" } else { "Reachable" }.to_string())
                .collect();
            let got: Vec<String> = ids.iter().map(|id| status_of(&all, id)).collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    let inspect = apis[0]
        .docker(&["node", "inspect", &ids[li], "--format", "{{json .ManagerStatus}}"])
        .ok();
    assert!(inspect.stdout.contains(r#""Leader":true"#), "{}", inspect.stdout);
    assert!(
        !inspect.stdout.contains("RaftID"),
        "store-only field shown: {}",
        inspect.stdout
    );

    // The leader's replica dies: its node is Unreachable, another Leader.
    store.kill(leader);
    let via = &apis[(li + 1) % 3];
    eventually(LONG, "node ls: the old leader Unreachable, another Leader", || async {
        let all = manager_status(via)?;
        let got: Vec<String> = ids.iter().map(|id| status_of(&all, id)).collect();
        let others_lead = got.iter().filter(|s| *s == "Leader").count() == 1;
        if got[li] == "Unreachable" && others_lead {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let inspect = via
        .docker(&[
            "node",
            "inspect",
            &ids[li],
            "--format",
            "{{.ManagerStatus.Reachability}}",
        ])
        .ok();
    assert_eq!(inspect.stdout.trim(), "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_adds_a_replica_as_learner_then_voter_and_demote_removes_it() {
    let (mut hosts, client) = three_managers().await;
    let w = hosts.add_host("w", &[]);
    let token = hosts.token("worker");
    hosts.hosts[w]
        .docker(&["swarm", "join", "--token", &token, &hosts.swarm_addr()])
        .ok();
    let wid = hosts.hosts[w].node_id();
    let Hosts {
        store,
        manager,
        hosts: joined,
        ..
    } = &mut hosts;
    let apis = apis(manager, &joined[..2]);

    // Promoted: its replica (the next free id, 4) is a learner until it runs.
    apis[0].docker(&["node", "promote", &wid]).ok();
    let m = membership(&client).await.unwrap();
    let four = m.member(4).unwrap_or_else(|| panic!("replica 4 not a member: {m:?}"));
    assert!(!four.voter, "a voter before it ever ran: {m:?}");
    let ls = manager_status(apis[0]).unwrap();
    assert_ne!(status_of(&ls, &wid), "Reachable", "{ls:?}");

    // Its host's manager processes start (the agent's hook, here the test):
    // the replica catches up and the leader makes it a voter.
    store.start_joiner(4);
    eventually(LONG, "replica 4 a reachable voter", || async {
        let m = membership(&client).await?;
        match m.member(4) {
            Some(s) if s.voter && s.reachable => Ok(()),
            _ => Err(format!("{m:?}")),
        }
    })
    .await;
    eventually(LONG, "the promoted node Reachable", || async {
        let ls = manager_status(apis[1])?;
        match status_of(&ls, &wid).as_str() {
            "Reachable" | "Leader" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;

    // Demoted: no longer a member, no manager status.
    apis[0].docker(&["node", "demote", &wid]).ok();
    let m = membership(&client).await.unwrap();
    assert!(m.member(4).is_none(), "{m:?}");
    assert_eq!(status_of(&manager_status(apis[0]).unwrap(), &wid), "");

    // With one of three voters down, removing another would lose quorum.
    let leader = store.leader(&client, &[], LONG).await;
    let down = if leader == 1 { 2 } else { 1 };
    let target = [1u64, 2, 3].into_iter().find(|r| *r != leader && *r != down).unwrap();
    store.kill(down);
    eventually(LONG, "the killed replica unreachable", || async {
        let m = membership(&client).await?;
        match m.member(down) {
            Some(s) if !s.reachable => Ok(()),
            _ => Err(format!("{m:?}")),
        }
    })
    .await;
    let via = &apis[(leader - 1) as usize];
    expect(
        via.docker(&["node", "demote", &apis[(target - 1) as usize].node_id()]),
        1,
        "rpc error: code = FailedPrecondition desc = can't remove member from the raft: this would result in a loss \
         of quorum",
    );
    let m = membership(&client).await.unwrap();
    assert_eq!(m.members.iter().filter(|s| s.voter).count(), 3, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_restores_a_backed_up_managers_swarm() {
    let (mut hosts, _client) = three_managers().await;
    let Hosts {
        store,
        manager,
        hosts: joined,
        ..
    } = &mut hosts;
    let apis = apis(manager, joined);
    for name in ["kept", "also"] {
        create_service(apis[0], name, "2");
    }
    let spec = |api: &Api, name: &str| {
        api.docker(&["service", "inspect", "--format", "{{json .Spec}}", name])
            .ok()
            .stdout
    };
    let before = spec(apis[0], "kept");

    // Every manager stops; replica 1's data dir is backed up, then the
    // cluster is destroyed and the backup restored on its host alone.
    for r in 1..=3 {
        store.kill(r);
    }
    let backup = store.dir.path().join("backup");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(store.data_dir(1))
        .arg(&backup)
        .status()
        .unwrap();
    assert!(cp.success());
    for r in 1..=3 {
        std::fs::remove_dir_all(store.data_dir(r)).unwrap();
    }
    std::fs::rename(&backup, store.data_dir(1)).unwrap();
    store.restart(1);
    let ls = apis[0].docker(&["service", "ls"]);
    assert_ne!(ls.code, 0, "no quorum before the forced cluster: {}", ls.stdout);

    let out = apis[0].docker(&["swarm", "init", "--force-new-cluster"]).ok();
    assert!(out.stdout.contains(&apis[0].node_id()), "{}", out.stdout);
    assert_eq!(spec(apis[0], "kept"), before);
    apis[0].docker(&["service", "inspect", "also"]).ok();
    create_service(apis[0], "new", "1");
    let ls = manager_status(apis[0]).unwrap();
    assert_eq!(status_of(&ls, &apis[0].node_id()), "Leader", "{ls:?}");
    for gone in &apis[1..] {
        assert_eq!(status_of(&ls, &gone.node_id()), "", "{ls:?}");
    }

    // A new manager joins: its replica (a fresh one) becomes a voter.
    store.start_joiner(5);
    let fresh = hosts.add_manager_host("m5", &["--store-replica", "5"]);
    let token = hosts.token("manager");
    hosts.hosts[fresh]
        .docker(&["swarm", "join", "--token", &token, &hosts.swarm_addr()])
        .ok();
    let fresh = hosts.hosts[fresh].node_id();
    eventually(LONG, "the new manager Reachable", || async {
        let ls = manager_status(&hosts.manager)?;
        match status_of(&ls, &fresh).as_str() {
            "Reachable" => Ok(()),
            other => Err(format!("{other}: {ls:?}")),
        }
    })
    .await;
}
