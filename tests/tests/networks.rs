//! Overlay networks and their addresses (issue 11 §1, the manager side),
//! through the real docker CLI against `shoal up` (process executor): the
//! subnets the allocator carves from the default address pool, service VIPs
//! (`Endpoint.VirtualIPs`), task addresses (`NetworksAttachments`), Docker's
//! errors, `--network-add/--network-rm`, and no address handed out twice
//! across a scheduler restart.

use std::collections::BTreeSet;

use futures::StreamExt;
use serde_json::{json, Value};
use shoal_shared::netview::{EndpointOwner, NetView, NetViewRequest};
use shoal_tests::api::raw_request;
use shoal_tests::eventually;
use shoal_tests::free_port;
use shoal_tests::up::{temp_home, Up, CONVERGE};

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `docker <object> inspect` of one object, as JSON (`Err` while it fails).
fn inspect(up: &Up, args: &[&str]) -> Result<Value, String> {
    let r = up.docker(args);
    match r.code {
        0 => Ok(json_of(&r.stdout)[0].clone()),
        _ => Err(r.stderr),
    }
}

/// Polls until the network has its subnet, then returns its inspect output.
async fn allocated(up: &Up, name: &str) -> Value {
    eventually(CONVERGE, &format!("network {name} to get its subnet"), || {
        let n = inspect(up, &["network", "inspect", name]);
        async move {
            let n = n?;
            match n["IPAM"]["Config"].as_array().map(Vec::len) {
                Some(1) => Ok(n),
                _ => Err(n.to_string()),
            }
        }
    })
    .await
}

/// The service's `Endpoint.VirtualIPs` as (network ID, address) once they
/// are on the networks `want` (IDs, in order).
async fn vips(up: &Up, service: &str, want: &[&str]) -> Vec<(String, String)> {
    eventually(CONVERGE, &format!("{service} to have VIPs on {want:?}"), || {
        let s = inspect(up, &["service", "inspect", service]);
        async move {
            let s = s?;
            let v: Vec<(String, String)> = s["Endpoint"]["VirtualIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    (
                        v["NetworkID"].as_str().unwrap_or("").into(),
                        v["Addr"].as_str().unwrap_or("").into(),
                    )
                })
                .collect();
            match v.iter().map(|(n, _)| n.as_str()).eq(want.iter().copied()) {
                true => Ok(v),
                false => Err(s["Endpoint"].to_string()),
            }
        }
    })
    .await
}

/// The running tasks of a service, as `docker inspect --type task` shows
/// them, once there are `want` and each is attached to `networks` (IDs, in order).
async fn running_tasks(up: &Up, service: &str, want: usize, networks: &[&str]) -> Vec<Value> {
    eventually(
        CONVERGE,
        &format!("{want} running tasks of {service} on {networks:?}"),
        || {
            let ids = up.lines(&[
                "service",
                "ps",
                service,
                "-q",
                "--no-trunc",
                "-f",
                "desired-state=running",
            ]);
            let tasks: Result<Vec<Value>, String> = ids.and_then(|ids| {
                ids.iter()
                    .map(|id| inspect(up, &["inspect", "--type", "task", id]))
                    .collect()
            });
            async move {
                let tasks = tasks?;
                let ok = tasks.len() == want
                    && tasks.iter().all(|t| {
                        let on: Vec<&str> = t["NetworksAttachments"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| a["Network"]["ID"].as_str().unwrap_or(""))
                            .collect();
                        t["Status"]["State"] == "running" && on == networks
                    });
                match ok {
                    true => Ok(tasks),
                    false => Err(json!(tasks
                        .iter()
                        .map(|t| json!([t["Status"]["State"], t["NetworksAttachments"]]))
                        .collect::<Vec<_>>())
                    .to_string()),
                }
            }
        },
    )
    .await
}

/// Every task address (`10.0.1.3/24`) of these tasks.
fn task_addresses(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .flat_map(|t| t["NetworksAttachments"].as_array().cloned().unwrap_or_default())
        .flat_map(|a| a["Addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect()
}

fn ipam(n: &Value) -> (String, String) {
    let c = &n["IPAM"]["Config"][0];
    (
        c["Subnet"].as_str().unwrap_or("").into(),
        c["Gateway"].as_str().unwrap_or("").into(),
    )
}

/// `docker info`'s default address pool and subnet size.
fn pool_info(up: &Up) -> String {
    let info = up.docker(&[
        "info",
        "--format",
        "{{json .Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.SubnetSize}}",
    ]);
    info.ok().stdout.trim().to_string()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

fn start(home: &std::path::Path, name: &str) -> Up {
    let data = home.join("data");
    Up::start(home, name, &data, free_port(), "process", &["--no-init"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_networks_vips_and_task_addresses() {
    let home = temp_home();
    let mut up = start(home.path(), "overlay");
    up.ready().await;
    up.docker(&["swarm", "init"]).ok();

    // ingress: the default pool's first /24, VXLAN ID 4096, as Docker.
    let ingress = allocated(&up, "ingress").await;
    assert_eq!(ipam(&ingress), pair("10.0.0.0/24", "10.0.0.1"));
    assert_eq!(ingress["Ingress"], true);
    assert_eq!(
        ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4096"
    );
    let ingress_id = ingress["Id"].as_str().unwrap().to_string();
    assert_eq!(pool_info(&up), r#"["10.0.0.0/8"] 24"#);

    // A network without --subnet: the next /24.
    let backend_id = up
        .docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--opt",
            "encrypted",
            "backend",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let backend = allocated(&up, "backend").await;
    assert_eq!(ipam(&backend), pair("10.0.1.0/24", "10.0.1.1"));
    assert_eq!(backend["Id"], json!(backend_id));
    assert_eq!(backend["Attachable"], true);
    assert_eq!(backend["Options"]["encrypted"], "");
    assert_eq!(
        backend["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4097"
    );
    // Docker's words: a taken subnet, a taken name.
    up.docker(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.0.1.128/25",
        "clash",
    ])
    .fails_with("invalid pool request: Pool overlaps with other one on this address space");
    up.docker(&["network", "create", "-d", "overlay", "backend"])
        .fails_with("network with name backend already exists");
    // --subnet and --gateway as given.
    let other_id = up
        .docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.99.0.0/24",
            "--gateway",
            "10.99.0.254",
            "other",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(
        ipam(&allocated(&up, "other").await),
        pair("10.99.0.0/24", "10.99.0.254")
    );
    let ls = up
        .docker(&["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"])
        .ok();
    for n in ["ingress", "backend", "other"] {
        assert!(ls.stdout.contains(&format!("{n} overlay swarm")), "{}", ls.stdout);
    }

    // A published service on backend: a VIP on ingress first, then on backend;
    // each task an address on both, none of them a VIP, a gateway or taken twice.
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "backend",
        "-p",
        "8080:80",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    let web_vips = vips(&up, "web", &[&ingress_id, &backend_id]).await;
    assert_eq!(
        web_vips,
        [pair(&ingress_id, "10.0.0.2/24"), pair(&backend_id, "10.0.1.2/24")]
    );
    let web = running_tasks(&up, "web", 2, &[&ingress_id, &backend_id]).await;
    let t = &web[0]["NetworksAttachments"][1];
    assert_eq!(t["Network"]["Spec"]["Name"], "backend");
    assert_eq!(t["Network"]["IPAMOptions"]["Configs"][0]["Subnet"], "10.0.1.0/24");
    // dnsrr: no VIP, still an address.
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "rr",
        "--endpoint-mode",
        "dnsrr",
        "--network",
        "backend",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    let rr = running_tasks(&up, "rr", 1, &[&backend_id]).await;
    assert!(inspect(&up, &["service", "inspect", "rr"]).unwrap()["Endpoint"]["VirtualIPs"].is_null());
    let mut given: Vec<String> = task_addresses(&web)
        .into_iter()
        .chain(task_addresses(&rr))
        .chain(web_vips.iter().map(|(_, a)| a.clone()))
        .collect();
    let unique: BTreeSet<String> = given.iter().cloned().collect();
    assert_eq!(unique.len(), given.len(), "{given:?}");
    for bad in [
        "10.0.0.0/24",
        "10.0.0.1/24",
        "10.0.0.255/24",
        "10.0.1.0/24",
        "10.0.1.1/24",
        "10.0.1.255/24",
    ] {
        assert!(!unique.contains(bad), "{bad} handed out: {given:?}");
    }

    // In use: refused in SwarmKit's words, naming one of its services by ID.
    let id_of = |name: &str| {
        inspect(&up, &["service", "inspect", name]).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let users = [id_of("web"), id_of("rr")];
    let refused = up
        .docker(&["network", "rm", "backend"])
        .fails_with(&format!("network {backend_id} is in use by service "));
    assert!(
        users.iter().any(|id| refused.stderr.contains(id.as_str())),
        "{}",
        refused.stderr
    );

    // The scheduler restarts (shoal up starts it again): what it gave is kept,
    // and what it gives next is new.
    let scheduler = up.pid_of("shoal-scheduler", None).expect("scheduler pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(scheduler), nix::sys::signal::Signal::SIGKILL).unwrap();
    eventually(CONVERGE, "a new scheduler", || {
        let pid = up.pid_of("shoal-scheduler", None);
        async move {
            match pid {
                Some(p) if p != scheduler => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    up.docker(&["service", "scale", "-d", "web=4"]).ok();
    let web4 = running_tasks(&up, "web", 4, &[&ingress_id, &backend_id]).await;
    assert_eq!(vips(&up, "web", &[&ingress_id, &backend_id]).await, web_vips);
    let before: BTreeSet<String> = task_addresses(&web).into_iter().collect();
    let now: Vec<String> = task_addresses(&web4);
    assert!(before.iter().all(|a| now.contains(a)), "kept: {before:?} in {now:?}");
    given = now
        .into_iter()
        .chain(task_addresses(&rr))
        .chain(web_vips.iter().map(|(_, a)| a.clone()))
        .collect();
    let unique: BTreeSet<String> = given.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        given.len(),
        "an address given twice after the restart: {given:?}"
    );

    // --network-rm / --network-add: the VIP on backend goes, one on other comes,
    // tasks are replaced onto the new network.
    up.docker(&[
        "service",
        "update",
        "-d",
        "--network-rm",
        "backend",
        "--network-add",
        "other",
        "--update-parallelism",
        "0",
        "web",
    ])
    .ok();
    let moved = vips(&up, "web", &[&ingress_id, &other_id]).await;
    assert_eq!(moved[0], web_vips[0], "the ingress VIP stays");
    assert_eq!(moved[1].0, other_id);
    assert!(
        moved[1].1.starts_with("10.99.0.") && moved[1].1.ends_with("/24"),
        "{moved:?}"
    );
    let replaced = running_tasks(&up, "web", 4, &[&ingress_id, &other_id]).await;
    assert!(task_addresses(&replaced).iter().any(|a| a.starts_with("10.99.0.")));

    // Once nothing uses backend it goes.
    up.docker(&["service", "rm", "rr"]).ok();
    eventually(CONVERGE, "backend to be removed", || {
        let r = up.docker(&["network", "rm", "backend"]);
        async move {
            match r.code {
                0 => Ok(()),
                _ => Err(r.stderr),
            }
        }
    })
    .await;
    up.docker(&["service", "rm", "web"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_init_default_addr_pool_is_honoured() {
    let home = temp_home();
    let mut up = start(home.path(), "addr-pool");
    up.ready().await;
    // The daemon's checks behind the CLI's own.
    let bad = raw_request(
        up.port,
        "POST",
        "/swarm/init",
        Some(br#"{"ListenAddr":"0.0.0.0:2377","DefaultAddrPool":["10.20.0.0/16"],"SubnetSize":30}"#),
        &[("Content-Type", "application/json")],
    )
    .unwrap();
    assert_eq!(
        (bad.status, bad.json()["message"].clone()),
        (400, json!("subnet size is out of range: 30"))
    );
    up.docker(&[
        "swarm",
        "init",
        "--default-addr-pool",
        "10.20.0.0/16",
        "--default-addr-pool-mask-length",
        "26",
    ])
    .ok();
    assert_eq!(pool_info(&up), r#"["10.20.0.0/16"] 26"#);
    let swarm = raw_request(up.port, "GET", "/swarm", None, &[]).unwrap().json();
    assert_eq!(
        (&swarm["DefaultAddrPool"], &swarm["SubnetSize"]),
        (&json!(["10.20.0.0/16"]), &json!(26))
    );
    assert_eq!(
        ipam(&allocated(&up, "ingress").await),
        pair("10.20.0.0/26", "10.20.0.1")
    );
    up.docker(&["network", "create", "-d", "overlay", "n1"]).ok();
    assert_eq!(ipam(&allocated(&up, "n1").await), pair("10.20.0.64/26", "10.20.0.65"));
}

/// `-p 80` without a published port gets one from 30000 up, and keeps it
/// across `service update`s that keep the port (as Docker does), including
/// one that changes nothing of the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_assigned_published_port_survives_updates() {
    let home = temp_home();
    let mut up = start(home.path(), "auto-port");
    up.ready().await;
    up.docker(&["swarm", "init"]).ok();
    up.docker(&[
        "service", "create", "-d", "--name", "auto", "-p", "80", "busybox", "sleep", "3600",
    ])
    .ok();
    let published = |up: &Up| -> Result<u64, String> {
        let s = inspect(up, &["service", "inspect", "auto"])?;
        s["Endpoint"]["Ports"][0]["PublishedPort"]
            .as_u64()
            .filter(|p| *p >= 30000)
            .ok_or_else(|| format!("no published port yet: {}", s["Endpoint"]))
    };
    let first = eventually(CONVERGE, "a port from 30000 up", || {
        let p = published(&up);
        async move { p }
    })
    .await;
    // An update that keeps the endpoint, then one that adds a port: each
    // settles (the service's update completes) with the first port kept.
    for args in [
        &["service", "update", "-d", "--env-add", "X=1", "auto"][..],
        &["service", "update", "-d", "--publish-add", "81", "auto"][..],
    ] {
        up.docker(args).ok();
        let ports = eventually(CONVERGE, "the update done and every port numbered", || {
            let s = inspect(&up, &["service", "inspect", "auto"]);
            async move {
                let s = s?;
                let state = s["UpdateStatus"]["State"].as_str().unwrap_or("none").to_string();
                let ports: Vec<(u64, u64)> = s["Endpoint"]["Ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p["TargetPort"].as_u64().unwrap_or(0),
                            p["PublishedPort"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect();
                let want = s["Spec"]["EndpointSpec"]["Ports"].as_array().map_or(0, Vec::len);
                // An endpoint-only change rolls no task (no update status).
                let settled = state == "completed" || state == "none";
                match settled && ports.len() == want && ports.iter().all(|(_, p)| *p >= 30000) {
                    true => Ok(ports),
                    false => Err(format!("update {state}, ports {ports:?} of {want}")),
                }
            }
        })
        .await;
        assert!(
            ports.contains(&(80, first)),
            "{args:?}: port 80 kept {first}: {ports:?}"
        );
    }
    up.docker(&["service", "rm", "auto"]).ok();
}

/// Asks the acting dispatcher for a node's network view.
async fn view_of(nats: &async_nats::Client, node: &str) -> Result<NetView, String> {
    let req = NetViewRequest { node_id: node.into() };
    let subject = shoal_shared::subjects::net_requests();
    shoal_shared::envelope::request(nats, subject, &req, std::time::Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())
}

/// The task endpoints of a view on a network: (address, task name, serving).
fn task_endpoints(v: &NetView, network: &str) -> Vec<(String, String, bool)> {
    v.endpoints
        .iter()
        .filter(|e| e.network_id == network)
        .filter_map(|e| match &e.owner {
            EndpointOwner::Task { task_name, serving, .. } => Some((e.addr.clone(), task_name.clone(), *serving)),
            EndpointOwner::Node => None,
        })
        .collect()
}

/// Issue 11: the dispatcher tells each host what it needs of the networks
/// its tasks use (`shoal.net.req`, and whole views pushed on
/// `shoal.net.node.<id>` when they change): the networks with their VNI,
/// the host's own address on each, every task endpoint with its name and
/// whether it serves, the services' VIPs; a host whose tasks left a network
/// stops seeing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_is_sent_the_view_of_its_networks() {
    let home = temp_home();
    let mut up = start(home.path(), "netview");
    up.ready().await;
    up.docker(&["swarm", "init"]).ok();
    let nats = async_nats::connect(up.nats_url()).await.expect("connect to NATS");
    let node = up.node_ids().into_iter().next().expect("one node");
    let mut pushed = nats
        .subscribe(shoal_shared::subjects::net_view(&node))
        .await
        .expect("subscribe");
    let ingress_id = allocated(&up, "ingress").await["Id"].as_str().unwrap().to_string();
    // Every host takes part in ingress, with an address of its own from the top.
    let v = eventually(CONVERGE, "the node's view to hold ingress", || {
        let f = view_of(&nats, &node);
        let ingress_id = ingress_id.clone();
        async move {
            let v = f.await?;
            match v.own_endpoint(&ingress_id) {
                Some(_) => Ok(v),
                None => Err(format!("{v:?}")),
            }
        }
    })
    .await;
    assert_eq!(v.own_endpoint(&ingress_id).unwrap().addr, "10.0.0.254/24");
    assert_eq!(v.network(&ingress_id).unwrap().vni, 4096);
    assert!(v.network(&ingress_id).unwrap().ingress);

    let backend_id = up
        .docker(&["network", "create", "-d", "overlay", "backend"])
        .ok()
        .stdout
        .trim()
        .to_string();
    allocated(&up, "backend").await;
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "backend",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    let tasks = running_tasks(&up, "web", 2, &[&backend_id]).await;
    let mut addrs = task_addresses(&tasks);
    addrs.sort();
    let web_vip = vips(&up, "web", &[&backend_id]).await[0].1.clone();
    // The pushed views converge on two serving tasks on backend.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut last = String::from("no view pushed");
    let pushed_view = loop {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, pushed.next()).await else {
            panic!("no pushed view with both tasks serving in time; last: {last}");
        };
        let v: NetView = shoal_shared::envelope::decode(&msg.payload).expect("a view");
        let endpoints = task_endpoints(&v, &backend_id);
        if endpoints.iter().filter(|e| e.2).count() == 2 {
            break v;
        }
        last = format!("{endpoints:?}");
    };
    let mut seen: Vec<String> = task_endpoints(&pushed_view, &backend_id)
        .into_iter()
        .map(|e| e.0)
        .collect();
    seen.sort();
    assert_eq!(seen, addrs);
    assert!(task_endpoints(&pushed_view, &backend_id)
        .iter()
        .all(|e| e.1.starts_with("web.") && e.1.split('.').count() == 3));
    let own = pushed_view
        .own_endpoint(&backend_id)
        .expect("the host's own address on backend");
    assert!(!addrs.contains(&own.addr) && own.addr != web_vip, "{own:?}");
    let web = pushed_view
        .services
        .iter()
        .find(|s| s.name == "web")
        .expect("web in the view");
    assert_eq!(web.vips, [(backend_id.clone(), web_vip.clone())]);
    assert!(pushed_view.version > v.version);
    assert!(pushed_view.nodes.iter().any(|n| n.id == node && n.ready));

    // What every network consumer on a host runs: it gets the current view
    // at once, then the pushed ones.
    let mut followed = shoal_shared::netview::follow(nats.clone(), node.clone());
    let first = tokio::time::timeout(CONVERGE, followed.recv())
        .await
        .expect("a view")
        .expect("open");
    assert!(first.version >= pushed_view.version);
    assert_eq!(task_endpoints(&first, &backend_id).len(), 2);

    // Scaled to 0: once its tasks ended the host leaves backend.
    up.docker(&["service", "scale", "-d", "web=0"]).ok();
    eventually(CONVERGE, "backend to leave the node's view", || {
        let f = view_of(&nats, &node);
        let backend_id = backend_id.clone();
        let ingress_id = ingress_id.clone();
        async move {
            let v = f.await?;
            match v.network(&backend_id).is_none() && v.network(&ingress_id).is_some() {
                true => Ok(()),
                false => Err(format!("{:?}", task_endpoints(&v, &backend_id))),
            }
        }
    })
    .await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let v = tokio::time::timeout_at(deadline, followed.recv())
            .await
            .expect("the follower to see backend go")
            .expect("open");
        if v.network(&backend_id).is_none() {
            break;
        }
    }
    up.terminate().await;
}

/// Continues a stopped process when dropped (also when the test fails).
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// docker-py's `test_update_retains_networks` (marked flaky there, as Swarm
/// refuses it when its allocator wrote the service in between): an update
/// naming the version the client read, from before the scheduler gave the
/// service its VIP, goes in; one that did not read the current spec is
/// still "out of sequence".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_not_out_of_sequence_for_the_schedulers_own_writes() {
    let home = temp_home();
    let mut up = start(home.path(), "sequence");
    up.ready().await;
    up.docker(&["swarm", "init"]).ok();
    up.docker(&["network", "create", "-d", "overlay", "front"]).ok();
    let front = allocated(&up, "front").await["Id"].as_str().unwrap().to_string();

    // The scheduler holds still while the service is created: its version
    // is then the spec's.
    let scheduler = up.pid_of("shoal-scheduler", None).expect("shoal up's scheduler");
    let held = Stopped::stop(scheduler);
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "seq",
        "--network",
        "front",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    let created = inspect(&up, &["service", "inspect", "seq"]).unwrap();
    let read = created["Version"]["Index"].as_u64().unwrap();
    assert!(created["Endpoint"]["VirtualIPs"].is_null(), "{}", created["Endpoint"]);
    drop(held);
    let vips = vips(&up, "seq", &[&front]).await;
    let allocated_at = inspect(&up, &["service", "inspect", "seq"]).unwrap()["Version"]["Index"]
        .as_u64()
        .unwrap();
    assert!(
        allocated_at > read,
        "the scheduler wrote the service: {allocated_at} > {read}"
    );

    let update = |version: u64, cmd: &str| {
        let mut spec = created["Spec"].clone();
        spec["TaskTemplate"]["ContainerSpec"]["Args"] = json!(["sleep", cmd]);
        raw_request(
            up.port,
            "POST",
            &format!("/v1.41/services/seq/update?version={version}"),
            Some(spec.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        )
        .unwrap()
    };
    let r = update(read, "600");
    assert_eq!(r.status, 200, "{}", r.body);
    let s = inspect(&up, &["service", "inspect", "seq"]).unwrap();
    assert_eq!(
        s["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"],
        json!(["sleep", "600"])
    );
    assert_eq!(
        s["Spec"]["TaskTemplate"]["Networks"][0]["Target"],
        created["Spec"]["TaskTemplate"]["Networks"][0]["Target"]
    );
    assert!(s.get("SpecVersion").is_none(), "not shown: {s}");
    let kept = s["Endpoint"]["VirtualIPs"].as_array().unwrap();
    assert_eq!(kept[0]["Addr"], json!(vips[0].1), "the VIP stays");

    // The spec changed after those versions were read: refused, in Swarm's words.
    for stale in [read, allocated_at] {
        let r = update(stale, "900");
        assert_eq!(r.status, 500, "{stale}: {}", r.body);
        assert!(r.body.contains("update out of sequence"), "{}", r.body);
    }
    let s = inspect(&up, &["service", "inspect", "seq"]).unwrap();
    assert_eq!(
        s["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"],
        json!(["sleep", "600"])
    );
    up.docker(&["service", "rm", "seq"]).ok();
}
