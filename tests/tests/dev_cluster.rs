//! The seed's failover scenarios on the five-host dev cluster
//! (`docker-compose.dev.yml`, `ops/dev-cluster`): three managers and two
//! workers, each a node container with systemd as PID 1, its own address
//! and data volume; tasks are containers on this machine's engine. The host's
//! docker CLI drives each node's API over mutual TLS.
//!
//! One cluster serves every scenario that works today, in order (each starts
//! from a whole, converged cluster):
//! - boot: every node Ready under its host name, managers and workers by the
//!   token they joined with; a worker's API refuses manager requests;
//! - a process SIGKILLed inside a node (an agent, a store replica) is
//!   restarted by systemd and the node stays Ready; task containers stay;
//! - a worker's node container stopped: the node goes Down, its tasks run
//!   elsewhere; started again: no duplicate task running;
//! - the store leader's node container stopped: a new leader, services keep
//!   their replicas, new services can be created; started again: Ready;
//! - 2 of 3 managers stopped: a write and a read answer Docker's
//!   `raft: no elected cluster leader`; started again: everything works;
//! - every node restarted one at a time: no acknowledged service lost, each
//!   back to its replicas with no duplicates.
//!
//! Two more scenarios bring up clusters of their own: `docker node ls`
//! showing the stopped leader Unreachable (from the store's membership), and
//! `swarm init --force-new-cluster` from a backed-up manager data dir, after
//! which a fresh manager joins.
//!
//! `SHOAL_DEV_BIN_DIR` gives the nodes other binaries than the test's own
//! (stripped copies save 6 GB of disk over five debug installs).
//!
//! Every cluster is removed when its test ends, also when it fails (node
//! containers, their task containers, network, volumes).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_tests::dev::{all_nodes, poll, DevCluster, MANAGERS};

/// How long one step may take on a loaded 2-core machine (a node is marked
/// Down after 3 missed 5 s heartbeats; an election takes 3-6 s).
const STEP: Duration = Duration::from_secs(120);
const NO_LEADER: &str = "rpc error: code = Unknown desc = raft: no elected cluster leader";
const SERVICE: &str = "web";
const REPLICAS: usize = 6;

/// Every node of the cluster Ready in `docker node ls` on a manager that answers.
fn all_ready(c: &DevCluster) -> Result<(), String> {
    let m = c.any_manager()?;
    let nodes = c.nodes(m)?;
    let want: BTreeSet<&str> = all_nodes().into_iter().collect();
    let ready: BTreeSet<&str> = nodes
        .iter()
        .filter(|(_, (status, _))| status == "Ready")
        .map(|(h, _)| h.as_str())
        .collect();
    match ready == want && nodes.len() == want.len() {
        true => Ok(()),
        false => Err(format!("node ls on {m}: {nodes:?}")),
    }
}

/// `service` has `n` tasks to run, all Running and none on `down`, and `n`
/// running containers on the other nodes (containers of a stopped node
/// container keep running on the engine until its agent is back).
/// Returns the running containers (node, ID).
fn converged(c: &DevCluster, service: &str, n: usize, down: &[&str]) -> Result<Vec<(String, String)>, String> {
    let m = c.any_manager()?;
    let tasks = c.tasks(m, service)?;
    let containers: Vec<(String, String)> = c
        .running_containers(service)
        .into_iter()
        .filter(|(node, _)| !down.contains(&node.as_str()))
        .collect();
    let ok = tasks.len() == n
        && tasks
            .iter()
            .all(|(node, state)| state == "Running" && !down.contains(&node.as_str()))
        && containers.len() == n;
    match ok {
        true => Ok(containers),
        false => Err(format!(
            "tasks (node, state) {tasks:?}; running containers {containers:?}"
        )),
    }
}

/// `docker service create --detach` on any manager, until it is accepted
/// (a leader change may refuse one attempt; an attempt that committed
/// before its answer was lost makes the next one find the name taken).
fn create_service(c: &DevCluster, name: &str, replicas: usize) {
    let replicas = replicas.to_string();
    poll(STEP, &format!("service {name} created"), || {
        let m = c.any_manager()?;
        let run = c.docker(
            m,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--replicas",
                &replicas,
                "--stop-grace-period",
                "1s",
                "busybox",
                "sleep",
                "3600",
            ],
        );
        match run.code == 0 || run.stderr.contains("already exists") {
            true => Ok(()),
            false => Err(format!("{m}: {}", run.stderr.trim())),
        }
    });
}

fn prop(c: &DevCluster, node: &str, unit: &str, prop: &str) -> String {
    c.exec(node, &["systemctl", "show", "-p", prop, "--value", unit])
        .stdout
        .trim()
        .to_string()
}

/// SIGKILLs `unit`'s processes on `node` through systemd; waits until
/// systemd has started it again (a new MainPID, active).
fn kill_and_see_restarted(c: &DevCluster, node: &str, unit: &str) {
    let pid = prop(c, node, unit, "MainPID");
    assert!(pid != "0" && !pid.is_empty(), "{unit} on {node} has no MainPID");
    c.exec(node, &["systemctl", "kill", "-s", "KILL", unit]).ok();
    poll(STEP, &format!("systemd to restart {unit} on {node}"), || {
        let now = prop(c, node, unit, "MainPID");
        let state = c
            .exec(node, &["systemctl", "is-active", unit])
            .stdout
            .trim()
            .to_string();
        match now != pid && now != "0" && state == "active" {
            true => Ok(()),
            false => Err(format!("MainPID {now} (was {pid}), {state}")),
        }
    });
}

fn manager_of(replica: u64) -> &'static str {
    MANAGERS[(replica - 1) as usize]
}

#[test]
fn five_hosts_survive_the_seeds_failures() {
    let mut c = DevCluster::up();
    let last = c.up_stdout.trim().lines().last().unwrap_or("").to_string();
    assert_eq!(
        last,
        format!("DOCKER_HOST=tcp://{}:2376", c.ip("manager1")),
        "up's last line"
    );

    // Boot: every node Ready under its host name; the managers joined with
    // the manager token, the workers with the worker token.
    poll(STEP, "every node Ready", || all_ready(&c));
    let nodes = c.nodes("manager2").expect("node ls on manager2");
    for m in MANAGERS {
        let status = &nodes[m].1;
        assert!(status == "Leader" || status == "Reachable", "{m}: {nodes:?}");
    }
    for w in ["worker1", "worker2"] {
        assert_eq!(nodes[w].1, "", "{w} is a worker: {nodes:?}");
        let hostname = c.exec(w, &["hostname"]).stdout;
        assert_eq!(hostname.trim(), w);
    }
    c.docker("worker1", &["node", "ls"])
        .fails_with("This node is not a swarm manager.");
    let info = c
        .docker(
            "worker2",
            &[
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
            ],
        )
        .ok();
    assert_eq!(info.stdout.trim(), "active false");

    // A replicated service spread over the five hosts, each task a container
    // on the engine labelled with the node it runs on.
    create_service(&c, SERVICE, REPLICAS);
    let placed = poll(STEP, "web converged", || converged(&c, SERVICE, REPLICAS, &[]));
    let on: BTreeSet<&str> = placed.iter().map(|(n, _)| n.as_str()).collect();
    assert!(on.len() >= 4, "6 tasks on 5 nodes spread over {on:?}");

    // SIGKILL of a process inside a node: systemd restarts it, the node
    // stays Ready and the tasks keep their containers.
    let leader = poll(STEP, "a store leader", || c.store_leader());
    let follower = (1..=3).find(|r| *r != leader).expect("a follower");
    kill_and_see_restarted(&c, "worker1", "shoal-agent.service");
    kill_and_see_restarted(&c, manager_of(follower), "shoal-raft-store.service");
    poll(STEP, "every node Ready after the kills", || all_ready(&c));
    poll(STEP, "the follower's replica back", || {
        c.store_status(follower)?
            .leader
            .map(|_| ())
            .ok_or("no leader".to_string())
    });
    let after = poll(STEP, "web converged after the kills", || {
        converged(&c, SERVICE, REPLICAS, &[])
    });
    assert_eq!(after, placed, "task containers changed though no task failed");

    // A worker's node container stopped: Down, its tasks run elsewhere.
    let worker = "worker2";
    assert!(on.contains(worker), "{worker} runs no web task: {placed:?}");
    c.stop(worker);
    poll(STEP, &format!("{worker} Down"), || {
        let m = c.any_manager()?;
        let nodes = c.nodes(m)?;
        match nodes.get(worker).map(|(s, _)| s.as_str()) {
            Some("Down") => Ok(()),
            _ => Err(format!("{nodes:?}")),
        }
    });
    poll(STEP, &format!("web running without {worker}"), || {
        converged(&c, SERVICE, REPLICAS, &[worker])
    });
    // Started again: its agent stops the replaced tasks' containers.
    c.start(worker);
    poll(STEP, "every node Ready with the worker back", || all_ready(&c));
    poll(STEP, "web without duplicates once the worker is back", || {
        converged(&c, SERVICE, REPLICAS, &[])
    });

    // The store leader's node container stopped: a new leader, services keep
    // their replicas, new services can be created.
    let leader = poll(STEP, "a store leader", || c.store_leader());
    let old = manager_of(leader);
    c.stop(old);
    let new = poll(STEP, "a new store leader", || match c.store_leader()? {
        l if l != leader => Ok(l),
        l => Err(format!("still {l}")),
    });
    eprintln!("store leader {leader} ({old}) stopped, new leader {new}");
    poll(STEP, &format!("web running without {old}"), || {
        converged(&c, SERVICE, REPLICAS, &[old])
    });
    create_service(&c, "after-leader", 1);
    poll(STEP, "after-leader running", || {
        converged(&c, "after-leader", 1, &[old])
    });
    c.start(old);
    poll(STEP, "every node Ready with the old leader back", || all_ready(&c));
    poll(STEP, "web without duplicates once the old leader is back", || {
        converged(&c, SERVICE, REPLICAS, &[])
    });

    // Two of three managers stopped: writes and reads answer Docker's words.
    let leader = poll(STEP, "a store leader", || c.store_leader());
    let other = (1..=3).find(|r| *r != leader).expect("another replica");
    let left = (1..=3).find(|r| *r != leader && *r != other).expect("a third replica");
    let (a, b, r) = (manager_of(leader), manager_of(other), manager_of(left));
    c.stop(a);
    c.stop(b);
    let started = Instant::now();
    let write = c.docker(
        r,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "no-quorum",
            "busybox",
            "sleep",
            "1",
        ],
    );
    let took = started.elapsed();
    eprintln!("a write without quorum answered in {took:?}: {}", write.stderr.trim());
    write.fails_with(NO_LEADER);
    // The store client's deadline is 4.8 s; the seed asks for 5 s (this took
    // 10 s while the CLI's image lookup paid a deadline of its own first).
    assert!(took < Duration::from_secs(8), "a write without quorum took {took:?}");
    c.docker(r, &["node", "ls"]).fails_with(NO_LEADER);
    c.start(a);
    c.start(b);
    poll(STEP, "every node Ready after quorum is back", || all_ready(&c));
    create_service(&c, "after-quorum", 1);
    poll(STEP, "after-quorum running", || converged(&c, "after-quorum", 1, &[]));
    poll(STEP, "web converged after quorum is back", || {
        converged(&c, SERVICE, REPLICAS, &[])
    });
    let ls = c
        .docker(
            c.any_manager().expect("a manager"),
            &["service", "ls", "--format", "{{.Name}}"],
        )
        .ok();
    assert!(
        !ls.stdout.contains("no-quorum"),
        "a refused write was applied: {}",
        ls.stdout
    );

    // Every node restarted, one at a time: no acknowledged service lost.
    let mut acknowledged = vec![
        (SERVICE.to_string(), REPLICAS),
        ("after-leader".to_string(), 1),
        ("after-quorum".to_string(), 1),
    ];
    for node in all_nodes() {
        let name = format!("ack-{node}");
        create_service(&c, &name, 1);
        acknowledged.push((name, 1));
        c.restart(node);
        poll(STEP, &format!("{node} back: agent active, every node Ready"), || {
            let agent = c.exec(node, &["systemctl", "is-active", "shoal-agent.service"]).stdout;
            if agent.trim() != "active" {
                return Err(format!("agent {}", agent.trim()));
            }
            all_ready(&c)
        });
        if MANAGERS.contains(&node) {
            // Its replica follows a leader again before the next one goes.
            poll(STEP, &format!("{node}'s replica back"), || c.store_leader());
        }
    }
    let m = c.any_manager().expect("a manager");
    let ls = c.docker(m, &["service", "ls", "--format", "{{.Name}}"]).ok();
    let listed: BTreeSet<&str> = ls.lines().into_iter().collect();
    for (name, replicas) in &acknowledged {
        assert!(listed.contains(name.as_str()), "{name} lost: {listed:?}");
        poll(STEP, &format!("{name} back to {replicas}"), || {
            converged(&c, name, *replicas, &[])
        });
    }
}

#[test]
fn the_stopped_leader_shows_unreachable_and_another_manager_leader() {
    let mut c = DevCluster::up();
    poll(STEP, "every node Ready", || all_ready(&c));
    let leader = poll(STEP, "a store leader", || c.store_leader());
    let old = manager_of(leader);
    c.stop(old);
    let new = poll(STEP, "a new store leader", || match c.store_leader()? {
        l if l != leader => Ok(l),
        l => Err(format!("still {l}")),
    });
    let via = manager_of(new);
    poll(STEP, "node ls: the old leader Unreachable, the new one Leader", || {
        let nodes = c.nodes(via)?;
        let status = |n: &str| nodes.get(n).map(|(_, m)| m.clone()).unwrap_or_default();
        match (status(old).as_str(), status(via).as_str()) {
            ("Unreachable", "Leader") => Ok(()),
            _ => Err(format!("{nodes:?}")),
        }
    });
}

#[test]
fn force_new_cluster_brings_back_a_backed_up_managers_services() {
    let c = DevCluster::up();
    poll(STEP, "every node Ready", || all_ready(&c));
    create_service(&c, "kept", 2);
    poll(STEP, "kept running", || converged(&c, "kept", 2, &[]));
    let before = spec_of(&c, "kept").expect("kept's spec");

    // Back up manager1's data dir (its store stopped, so the copy is consistent).
    c.exec("manager1", &["systemctl", "stop", "shoal-raft-store.service"])
        .ok();
    c.exec(
        "manager1",
        &["tar", "-C", "/var/lib/shoal", "-cf", "/root/backup.tar", "store"],
    )
    .ok();
    c.exec("manager1", &["systemctl", "start", "shoal-raft-store.service"])
        .ok();

    // Destroy the cluster: the other managers gone, manager1's store lost.
    c.stop("manager2");
    c.stop("manager3");
    c.exec("manager1", &["systemctl", "stop", "shoal-manager.target"]).ok();
    c.exec(
        "manager1",
        &[
            "sh",
            "-c",
            "rm -rf /var/lib/shoal/store && tar -C /var/lib/shoal -xf /root/backup.tar",
        ],
    )
    .ok();
    c.exec("manager1", &["systemctl", "start", "shoal-manager.target"]).ok();

    // Restore on manager1 alone.
    poll(STEP, "swarm init --force-new-cluster", || {
        let run = c.docker("manager1", &["swarm", "init", "--force-new-cluster"]);
        match run.code {
            0 => Ok(()),
            _ => Err(run.stderr),
        }
    });
    poll(STEP, "kept's spec back", || match spec_of(&c, "kept") {
        Ok(s) if s == before => Ok(()),
        other => Err(format!("{other:?}")),
    });
    poll(STEP, "manager2 and manager3 no longer managers", || {
        let nodes = c.nodes("manager1")?;
        let gone = ["manager2", "manager3"]
            .iter()
            .all(|m| nodes.get(*m).is_none_or(|(_, status)| status.is_empty()));
        match gone && nodes.get("manager1").map(|(_, s)| s.as_str()) == Some("Leader") {
            true => Ok(()),
            false => Err(format!("{nodes:?}")),
        }
    });
    poll(STEP, "kept running again", || {
        converged(&c, "kept", 2, &["manager2", "manager3"])
    });

    // A new manager can join: manager2 as a fresh host.
    let token = c.docker("manager1", &["swarm", "join-token", "-q", "manager"]).ok();
    c.start("manager2");
    poll(STEP, "manager2 booted", || {
        let state = c.exec("manager2", &["systemctl", "is-system-running"]).stdout;
        match state.trim() {
            "running" | "degraded" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    c.exec(
        "manager2",
        &["systemctl", "stop", "shoal-manager.target", "shoal-worker.target"],
    )
    .ok();
    c.exec(
        "manager2",
        &[
            "sh",
            "-c",
            "rm -rf /var/lib/shoal/store /var/lib/shoal/agent /var/lib/shoal/swarm",
        ],
    )
    .ok();
    // Its node ID is kept in /etc/shoal/shoal.env: its old Node object (a
    // worker since the forced cluster) goes first, or the join would find
    // this node already in the swarm.
    c.docker("manager1", &["node", "rm", "--force", "manager2"]).ok();
    // Its agent waits for the join (SHOAL_SWARM_DIR); the join answers once it registered.
    c.exec("manager2", &["systemctl", "start", "shoal-manager.target"]).ok();
    poll(STEP, "manager2's API, not in a swarm", || {
        let info = c.docker("manager2", &["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        match (info.code, info.stdout.trim()) {
            (0, "inactive") => Ok(()),
            _ => Err(format!("{} {}", info.stdout.trim(), info.stderr.trim())),
        }
    });
    c.docker(
        "manager2",
        &[
            "swarm",
            "join",
            "--token",
            token.stdout.trim(),
            &format!("{}:2377", c.ip("manager1")),
        ],
    )
    .ok();
    poll(STEP, "manager2 Reachable", || {
        let nodes = c.nodes("manager1")?;
        match nodes.get("manager2").map(|(s, m)| (s.as_str(), m.as_str())) {
            Some(("Ready", "Reachable")) => Ok(()),
            _ => Err(format!("{nodes:?}")),
        }
    });
}

/// A service's spec as `docker service inspect` prints it.
fn spec_of(c: &DevCluster, service: &str) -> Result<String, String> {
    let m = c.any_manager()?;
    let run = c.docker(m, &["service", "inspect", "--format", "{{json .Spec}}", service]);
    match run.code {
        0 => Ok(run.stdout.trim().to_string()),
        _ => Err(run.stderr),
    }
}

/// `docker node promote worker1`: its API starts the manager units, its new
/// store replica becomes a voter and the node shows Reachable; `docker node
/// demote worker1` reverses it (replica out of the store, units stopped).
#[test]
fn promotion_starts_a_workers_manager_processes_and_demotion_stops_them() {
    let mut c = DevCluster::up();
    poll(STEP, "every node Ready", || all_ready(&c));
    let voters = |c: &mut DevCluster| -> Result<Vec<u64>, String> {
        let store = c.store().with_deadline(Duration::from_secs(2));
        let m = c.block_on(store.membership()).map_err(|e| e.message)?;
        Ok(m.members.iter().filter(|m| m.voter).map(|m| m.replica).collect())
    };
    let before = poll(STEP, "the store's voters", || voters(&mut c));
    assert_eq!(before, [1, 2, 3]);
    let active = |c: &DevCluster, unit: &str| {
        c.exec("worker1", &["systemctl", "is-active", unit])
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(active(&c, "shoal-raft-store.service"), "inactive");

    c.docker("manager1", &["node", "promote", "worker1"]).ok();
    poll(STEP, "worker1 Reachable, its replica a voter", || {
        let nodes = c.nodes("manager2")?;
        let status = nodes.get("worker1").map(|(_, m)| m.clone()).unwrap_or_default();
        let v = voters(&mut c)?;
        match (status.as_str(), v.len()) {
            ("Reachable", 4) => Ok(()),
            _ => Err(format!("worker1 {status:?}, voters {v:?}")),
        }
    });
    for unit in [
        "shoal-raft-store.service",
        "shoal-scheduler.service",
        "shoal-dispatcher.service",
    ] {
        assert_eq!(active(&c, unit), "active", "{unit} on the promoted worker1");
    }
    // The new manager answers manager requests.
    c.docker("worker1", &["node", "ls"]).ok();

    c.docker("manager1", &["node", "demote", "worker1"]).ok();
    poll(
        STEP,
        "worker1 a worker again, its replica gone, its units stopped",
        || {
            let nodes = c.nodes("manager2")?;
            let status = nodes.get("worker1").map(|(_, m)| m.clone()).unwrap_or_default();
            let v = voters(&mut c)?;
            let store = active(&c, "shoal-raft-store.service");
            match (status.as_str(), v == before, store.as_str()) {
                ("", true, "inactive") => Ok(()),
                _ => Err(format!("worker1 {status:?}, voters {v:?}, raft-store {store}")),
            }
        },
    );
    poll(STEP, "every node Ready after the demotion", || all_ready(&c));
}
