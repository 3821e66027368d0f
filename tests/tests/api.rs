//! shoal-api as a real process on a real store, driven by the real docker
//! CLI (28.x): the swarm/node/service/network flow of the seed walkthrough,
//! Docker's error words and status codes, a worker-role API, no quorum, TLS
//! off loopback, and a flood of bad requests that must not hurt the process.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_shared::model::{Service, Task, TaskState};
use shoal_shared::store::ListFilter;
use shoal_tests::api::{raw_request, single_manager, Api, Run};
use shoal_tests::hosts::Hosts;
use shoal_tests::{eventually, StoreCluster};

const NOT_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster \
                           state. Please run this command on a manager node or promote the current node to a manager.";

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// The whitespace-separated cells of the table row whose first cell starts with `first`.
fn row<'a>(run: &'a Run, first: &str) -> Vec<&'a str> {
    run.lines()
        .into_iter()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no row starting with {first:?} in:\n{}", run.stdout))
        .split_whitespace()
        .collect()
}

fn init(api: &Api) -> Run {
    api.docker(&["swarm", "init"]).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_swarm_init_info_and_nodes() {
    let (_store, api) = single_manager();
    let id = api.node_id();

    // Before init: Docker's words, and the ping header says inactive.
    api.docker(&["node", "ls"])
        .fails_with("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\"");
    api.docker(&["swarm", "join-token", "worker"])
        .fails_with("This node is not part of a swarm");
    let info = api.docker(&["info"]).ok();
    assert!(info.stdout.contains("Swarm: inactive"), "{}", info.stdout);
    let ping = api.raw("GET", "/_ping", None);
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert_eq!(ping.header("Swarm"), Some("inactive"));
    assert_eq!(ping.header("Api-Version"), Some("1.50"));
    assert_eq!(ping.header("Ostype"), Some("linux"));

    let out = init(&api);
    assert!(
        out.stdout
            .contains(&format!("Swarm initialized: current node ({id}) is now a manager.")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("docker swarm join --token SWMTKN-1-"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("127.0.0.1:2377"), "{}", out.stdout);

    api.docker(&["swarm", "init"]).fails_with(
        "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.",
    );

    let head = api.raw("HEAD", "/v1.50/_ping", None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Swarm"), Some("active/manager"));

    let info = api.docker(&["info"]).ok();
    for needle in [
        "Swarm: active".to_string(),
        format!("NodeID: {id}"),
        "Is Manager: true".into(),
        "Managers: 1".into(),
        "Nodes: 1".into(),
        "Task History Retention Limit: 5".into(),
        "Snapshot Interval: 10000".into(),
        "Heartbeat Tick: 1".into(),
        "Election Tick: 3".into(),
        "Heartbeat Period: 5 seconds".into(),
        "Expiry Duration: 3 months".into(),
        "Node Address: 127.0.0.1".into(),
    ] {
        assert!(
            info.stdout.contains(&needle),
            "docker info lacks {needle:?}:\n{}",
            info.stdout
        );
    }

    let ls = api.docker(&["node", "ls"]).ok();
    let header: Vec<&str> = ls.lines()[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER",
            "STATUS",
            "ENGINE",
            "VERSION"
        ]
    );
    let cells = row(&ls, &id);
    assert_eq!(cells[1], "*", "the current node is marked: {cells:?}");
    assert_eq!(&cells[3..6], ["Ready", "Active", "Leader"], "{cells:?}");

    let pretty = api.docker(&["node", "inspect", "self", "--pretty"]).ok();
    for needle in [
        format!("ID:\t\t\t{id}"),
        "State:\t\t\tReady".into(),
        "Leader:\t\tYes".into(),
        "Address:\t\t127.0.0.1:2377".into(),
        "Operating System:\tlinux".into(),
    ] {
        assert!(pretty.stdout.contains(&needle), "lacks {needle:?}:\n{}", pretty.stdout);
    }

    let node = json_of(&api.docker(&["node", "inspect", "self"]).ok());
    let node = &node[0];
    assert_eq!(node["ID"], json!(id));
    assert_eq!(node["Spec"]["Role"], "manager");
    assert!(
        node["Spec"].get("Membership").is_none(),
        "store-only field leaked: {node}"
    );
    assert_eq!(node["ManagerStatus"]["Leader"], true);
    let tls = &node["Description"]["TLSInfo"];
    assert!(
        tls["CertIssuerSubject"].as_str().is_some_and(|s| !s.is_empty()),
        "{tls}"
    );
    assert!(
        tls["CertIssuerPublicKey"].as_str().is_some_and(|s| !s.is_empty()),
        "{tls}"
    );
    assert!(node["Description"]["Resources"]["NanoCPUs"].as_i64().unwrap() >= 1_000_000_000);
    assert!(node["Description"]["Resources"]["MemoryBytes"].as_i64().unwrap() > 0);

    // Lookup by ID prefix and hostname; filters.
    let hostname = node["Description"]["Hostname"].as_str().unwrap().to_string();
    let by_prefix = json_of(&api.docker(&["node", "inspect", &id[..5]]).ok());
    assert_eq!(by_prefix[0]["ID"], json!(id));
    let by_name = json_of(&api.docker(&["node", "inspect", &hostname]).ok());
    assert_eq!(by_name[0]["ID"], json!(id));
    let workers = api.docker(&["node", "ls", "-q", "-f", "role=worker"]).ok();
    assert!(workers.lines().is_empty(), "{}", workers.stdout);
    let managers = api.docker(&["node", "ls", "-q", "-f", "role=manager"]).ok();
    assert_eq!(managers.lines(), [id.as_str()]);

    // Tokens: join-token prints what /swarm holds; rotation changes it.
    let worker = api
        .docker(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let parts: Vec<&str> = worker.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[2].len(), parts[3].len()),
        ("SWMTKN", "1", 50, 25)
    );
    let swarm = api.raw("GET", "/v1.50/swarm", None).json();
    assert_eq!(swarm["JoinTokens"]["Worker"], json!(worker));
    assert!(swarm["TLSInfo"]["TrustRoot"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    api.docker(&["swarm", "join-token", "--rotate", "worker"]).ok();
    let rotated = api
        .docker(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_ne!(rotated, worker);
    assert_eq!(rotated.split('-').nth(2), Some(parts[2]), "same CA, same digest");

    // swarm update goes through with the version it read.
    api.docker(&["swarm", "update", "--task-history-limit", "10"]).ok();
    let info = api.docker(&["info"]).ok();
    assert!(
        info.stdout.contains("Task History Retention Limit: 10"),
        "{}",
        info.stdout
    );

    // Node update: labels and availability, with ?version=.
    api.docker(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        "self",
    ])
    .ok();
    let ls = api.docker(&["node", "ls"]).ok();
    assert_eq!(row(&ls, &id)[4], "Drain");
    let labelled = api.docker(&["node", "ls", "-q", "-f", "node.label=zone=a"]).ok();
    assert_eq!(labelled.lines(), [id.as_str()]);
    api.docker(&["node", "demote", "self"])
        .fails_with("attempting to demote the last manager of the swarm");
    api.docker(&["node", "rm", &id]).fails_with("is a cluster manager");
    api.docker(&["node", "inspect", "nope"])
        .fails_with("node nope not found");

    // The unix socket serves the same API, to the docker CLI too.
    let unix = format!("unix://{}", api.socket().display());
    let ls = api.docker_host(&unix, &["node", "ls", "-q"]).ok();
    assert_eq!(ls.lines(), [id.as_str()]);
    let ping = api
        .unix_client()
        .raw("GET", "/v1.50/_ping", &[], None)
        .expect("unix socket");
    let text = String::from_utf8_lossy(&ping.body);
    assert_eq!((ping.status, text.as_ref()), (200, "OK"), "{ping:?}");
    assert_eq!(ping.header("Swarm"), Some("active/manager"), "{ping:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_service_and_network_flow() {
    let (store, api) = single_manager();
    init(&api);
    let id = api.node_id();

    let created = api
        .docker(&[
            "service",
            "create",
            "-d",
            "--name",
            "ping_con",
            "busybox",
            "ping",
            "example.com",
        ])
        .ok();
    let svc_id = created.stdout.trim().to_string();
    assert!(shoal_shared::id::is_id(&svc_id), "{}", created.stdout);

    let ls = api.docker(&["service", "ls"]).ok();
    let header: Vec<&str> = ls.lines()[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    assert_eq!(
        row(&ls, &svc_id[..12]),
        [&svc_id[..12], "ping_con", "replicated", "0/1", "busybox:latest"]
    );

    let inspect = json_of(&api.docker(&["service", "inspect", "ping_con"]).ok());
    let spec = &inspect[0]["Spec"];
    assert_eq!(inspect[0]["ID"], json!(svc_id));
    assert_eq!(spec["Name"], "ping_con");
    assert_eq!(spec["TaskTemplate"]["ContainerSpec"]["Image"], "busybox:latest");
    assert_eq!(
        spec["TaskTemplate"]["ContainerSpec"]["Args"],
        json!(["ping", "example.com"])
    );
    assert_eq!(
        spec["TaskTemplate"]["RestartPolicy"],
        json!({"Condition": "any", "Delay": 5_000_000_000i64, "MaxAttempts": 0})
    );
    let uc = &spec["UpdateConfig"];
    assert_eq!(
        (&uc["Parallelism"], &uc["FailureAction"], &uc["Monitor"], &uc["Order"]),
        (
            &json!(1),
            &json!("pause"),
            &json!(5_000_000_000i64),
            &json!("stop-first")
        )
    );
    assert_eq!(spec["Mode"], json!({"Replicated": {"Replicas": 1}}));
    assert_eq!(spec["EndpointSpec"]["Mode"], "vip");

    let pretty = api.docker(&["service", "inspect", "--pretty", "ping_con"]).ok();
    for needle in [
        "Name:\t\tping_con",
        "Service Mode:\tReplicated",
        " Replicas:\t1",
        "Image:\t\tbusybox:latest",
        "Args:\t\tping example.com",
        "Endpoint Mode:\tvip",
    ] {
        assert!(pretty.stdout.contains(needle), "lacks {needle:?}:\n{}", pretty.stdout);
    }
    let replicas = |api: &Api| {
        api.docker(&[
            "service",
            "inspect",
            "--format={{.Spec.Mode.Replicated.Replicas}}",
            "ping_con",
        ])
        .ok()
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(replicas(&api), "1");

    // Scale and update (-d: no scheduler runs in this test, so nothing converges).
    let scaled = api.docker(&["service", "scale", "-d", "ping_con=3"]).ok();
    assert!(scaled.stdout.contains("ping_con scaled to 3"), "{}", scaled.stdout);
    assert_eq!(replicas(&api), "3");
    api.docker(&["service", "update", "-d", "--replicas=4", "ping_con"])
        .ok();
    assert_eq!(replicas(&api), "4");
    api.docker(&["service", "update", "-d", "--image", "busybox:1.36", "ping_con"])
        .ok();
    api.docker(&[
        "service",
        "update",
        "-d",
        "--env-add",
        "A=1",
        "--limit-memory",
        "64M",
        "--constraint-add",
        "node.role==manager",
        "ping_con",
    ])
    .ok();
    let s = json_of(&api.docker(&["service", "inspect", "ping_con"]).ok());
    let tt = &s[0]["Spec"]["TaskTemplate"];
    assert_eq!(tt["ContainerSpec"]["Image"], "busybox:1.36");
    assert_eq!(tt["ContainerSpec"]["Env"], json!(["A=1"]));
    assert_eq!(tt["Resources"]["Limits"]["MemoryBytes"], 67_108_864);
    assert_eq!(tt["Placement"]["Constraints"], json!(["node.role==manager"]));
    assert_eq!(s[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 4);
    assert_eq!(
        s[0]["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "busybox:1.36"
    );
    assert!(s[0]["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]
        .get("Env")
        .is_none());

    // rollback=previous swaps back to the previous spec.
    api.docker(&["service", "rollback", "-d", "ping_con"]).ok();
    let s = json_of(&api.docker(&["service", "inspect", "ping_con"]).ok());
    assert!(
        s[0]["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env").is_none(),
        "{}",
        s[0]
    );

    // A task written into the store (as the scheduler will) shows in ps and in the replica count.
    let client = store.client().await;
    let svc: Service = client.get(&svc_id).await.unwrap().unwrap();
    let mut task = Task::new(
        shoal_shared::id::new_id(),
        svc_id.clone(),
        svc.spec.task_template.clone(),
    );
    task.slot = Some(1);
    task.node_id = id.clone();
    task.status.state = TaskState::Running;
    task.status.message = "started".into();
    task.status.timestamp = svc.meta.created_at;
    client.create(&task).await.unwrap();
    let ls = api.docker(&["service", "ls"]).ok();
    assert_eq!(row(&ls, &svc_id[..12])[3], "1/4", "{}", ls.stdout);
    let ps = api.docker(&["service", "ps", "ping_con"]).ok();
    let cells = row(&ps, &task.meta.id[..12]);
    assert_eq!(&cells[1..3], ["ping_con.1", "busybox:1.36"], "{}", ps.stdout);
    assert_eq!(cells[4..6], ["Running", "Running"], "{}", ps.stdout);
    let shutdown = api
        .docker(&["service", "ps", "-q", "-f", "desired-state=shutdown", "ping_con"])
        .ok();
    assert!(shutdown.lines().is_empty(), "{}", shutdown.stdout);
    let t = json_of(&api.docker(&["inspect", "--type", "task", &task.meta.id]).ok());
    assert_eq!(t[0]["ServiceID"], json!(svc_id));
    let up = api.raw(
        "GET",
        &format!(
            "/v1.50/tasks?filters={}",
            urlencode(&format!(
                r#"{{"service":{{"{svc_id}":true}},"_up-to-date":{{"true":true}}}}"#
            ))
        ),
        None,
    );
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.json().as_array().map(Vec::len), Some(1), "{}", up.body);

    // Global mode and list filters.
    api.docker(&[
        "service", "create", "-d", "--mode", "global", "--name", "glob", "busybox", "top",
    ])
    .ok();
    let global = api.docker(&["service", "ls", "-f", "mode=global"]).ok();
    assert_eq!(global.lines().len(), 2, "{}", global.stdout);
    let cells: Vec<&str> = global.lines()[1].split_whitespace().collect();
    assert_eq!(cells[1..3], ["glob", "global"], "{}", global.stdout);
    let named = api.docker(&["service", "ls", "-q", "-f", "name=ping"]).ok();
    assert_eq!(named.lines(), [&svc_id[..12]]);

    // Networks.
    let net_id = api
        .docker(&["network", "create", "--driver", "overlay", "my-network"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let nets = api.docker(&["network", "ls"]).ok();
    let header: Vec<&str> = nets.lines()[0].split_whitespace().collect();
    assert_eq!(header, ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]);
    assert_eq!(row(&nets, &net_id[..12])[1..], ["my-network", "overlay", "swarm"]);
    assert!(nets.stdout.contains("ingress"), "{}", nets.stdout);
    let n = json_of(&api.docker(&["network", "inspect", "my-network"]).ok());
    assert_eq!(
        (&n[0]["Name"], &n[0]["Id"], &n[0]["Scope"], &n[0]["Driver"]),
        (&json!("my-network"), &json!(net_id), &json!("swarm"), &json!("overlay"))
    );
    api.docker(&["network", "create", "--driver", "overlay", "my-network"])
        .fails_with("already exists");
    // A bridge network is the host engine's (issue 15 §6): created, seen and removed through shoal.
    let bridgy = format!("bridgy-{}", std::process::id());
    api.docker(&["network", "create", &bridgy]).ok();
    let scope = api.docker(&["network", "inspect", &bridgy, "--format", "{{.Scope}}"]);
    api.docker(&["network", "rm", &bridgy]).ok();
    assert_eq!(scope.ok().stdout.trim(), "local");
    // A service on the network: the network is in use; attaching to ingress is refused.
    api.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--network",
        "my-network",
        "-p",
        "8080:80",
        "busybox",
    ])
    .ok();
    let web = json_of(&api.docker(&["service", "inspect", "web"]).ok());
    assert_eq!(web[0]["Spec"]["TaskTemplate"]["Networks"][0]["Target"], json!(net_id));
    assert_eq!(web[0]["Endpoint"]["Ports"][0]["PublishedPort"], 8080);
    let ls = api.docker(&["service", "ls", "-f", "name=web"]).ok();
    assert!(ls.stdout.contains("*:8080->80/tcp"), "{}", ls.stdout);
    api.docker(&["service", "create", "-d", "--name", "web2", "-p", "8080:81", "busybox"])
        .fails_with("port '8080' is already in use by service 'web'");
    api.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web3",
        "--network",
        "ingress",
        "busybox",
    ])
    .fails_with("service cannot be explicitly attached to the ingress network");
    let web_id = web[0]["ID"].as_str().unwrap().to_string();
    api.docker(&["network", "rm", "my-network"])
        .fails_with(&format!("network {net_id} is in use by service {web_id}"));
    api.docker(&["service", "rm", "web"]).ok();
    let rm = api.docker(&["network", "rm", "my-network"]).ok();
    assert_eq!(rm.stdout.trim(), "my-network");
    api.docker(&["network", "inspect", "my-network"])
        .fails_with("not found");

    // Error words.
    api.docker(&["service", "create", "-d", "--name", "ping_con", "busybox"])
        .fails_with("name conflicts with an existing object");
    api.docker(&["service", "inspect", "nope"])
        .fails_with("no such service: nope");
    api.docker(&["service", "rm", "nope"])
        .fails_with("service nope not found");
    api.docker(&["service", "scale", "-d", "nope=2"])
        .fails_with("service nope not found");

    let rm = api.docker(&["service", "rm", "ping_con", "glob"]).ok();
    assert_eq!(rm.lines(), ["ping_con", "glob"]);
    let ls = api.docker(&["service", "ls", "-q"]).ok();
    assert!(ls.lines().is_empty(), "{}", ls.stdout);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn post(api: &Api, path: &str, body: &str) -> (u16, String) {
    let r = api.raw("POST", path, Some(body.as_bytes()));
    let msg = if r.body.is_empty() {
        String::new()
    } else {
        r.json()["message"].as_str().unwrap_or_default().to_string()
    };
    (r.status, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_and_stale_versions_get_dockers_errors() {
    let (_store, api) = single_manager();
    init(&api);
    let (status, msg) = post(
        &api,
        "/v1.50/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"Mode":{"Replicated":{"Replicas":-1}}}"#,
    );
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("Mode.Replicated.Replicas"), "{msg}");

    let (status, msg) = post(
        &api,
        "/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":""}}}"#,
    );
    assert_eq!(status, 400);
    assert!(msg.contains("TaskTemplate.ContainerSpec.Image"), "{msg}");

    let (status, msg) = post(
        &api,
        "/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"Mode":{"Sometimes":{}}}"#,
    );
    assert_eq!(status, 400);
    assert!(msg.contains("unknown mode"), "{msg}");

    let (status, msg) = post(
        &api,
        "/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b"},"RestartPolicy":{"Delay":"5s"}}}"#,
    );
    assert_eq!(status, 400);
    assert!(msg.contains("TaskTemplate.RestartPolicy.Delay"), "{msg}");

    let (status, msg) = post(
        &api,
        "/services/create",
        r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b"}}}"#,
    );
    assert_eq!(status, 201, "{msg}");
    let svc = api.raw("GET", "/services/web", None).json();
    let v = svc["Version"]["Index"].as_u64().unwrap();
    let body = serde_json::to_string(&svc["Spec"]).unwrap();
    let (status, msg) = post(&api, &format!("/services/web/update?version={}", v - 1), &body);
    assert_eq!(
        (status, msg.as_str()),
        (500, "rpc error: code = Unknown desc = update out of sequence")
    );
    let (status, msg) = post(&api, &format!("/services/web/update?version={v}"), &body);
    assert_eq!(status, 200, "{msg}");

    // Swarm and node updates check the version they were read at, too.
    let swarm = api.raw("GET", "/v1.50/swarm", None).json();
    let sv = swarm["Version"]["Index"].as_u64().unwrap();
    let spec = serde_json::to_string(&swarm["Spec"]).unwrap();
    let (status, msg) = post(&api, &format!("/v1.50/swarm/update?version={}", sv + 100), &spec);
    assert_eq!(
        (status, msg.as_str()),
        (500, "rpc error: code = Unknown desc = update out of sequence")
    );
    let node = api.raw("GET", "/v1.50/nodes/self", None).json();
    let nv = node["Version"]["Index"].as_u64().unwrap();
    let spec = serde_json::to_string(&node["Spec"]).unwrap();
    let (status, msg) = post(&api, &format!("/v1.50/nodes/self/update?version={}", nv - 1), &spec);
    assert_eq!(
        (status, msg.as_str()),
        (500, "rpc error: code = Unknown desc = update out of sequence")
    );
    let (status, msg) = post(&api, &format!("/v1.50/nodes/self/update?version={nv}"), &spec);
    assert_eq!(status, 200, "{msg}");
    let (status, msg) = post(&api, "/v1.50/nodes/self/update", &spec);
    assert_eq!(status, 400);
    assert!(msg.contains("version"), "{msg}");

    let r = api.raw("GET", "/v1.50/services/nope", None);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (404, json!("service nope not found"))
    );
    let r = api.raw("GET", "/v1.50/nodes/nope", None);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (404, json!("node nope not found"))
    );
    let r = api.raw(
        "GET",
        "/v1.50/tasks?filters=%7B%22bogus%22%3A%7B%22x%22%3Atrue%7D%7D",
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = api.raw("GET", "/v1.50/no/such/path", None);
    assert_eq!(r.status, 404);
    let r = api.raw("GET", "/distribution/library/busybox:latest/json", None);
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("busybox"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_the_api_stays_up() {
    let (_store, mut api) = single_manager();
    init(&api);
    let bad: [(&str, &str); 4] = [
        ("/v1.50/services/create", "{not json"),
        ("/v1.50/services/create", r#"{"Name": 5}"#),
        ("/v1.50/networks/create", r#"{"Name": ["x"], "Driver": "overlay"}"#),
        ("/v1.50/swarm/update?version=x", "[]"),
    ];
    for i in 0..3000 {
        let (path, body) = bad[i % bad.len()];
        let r = api.raw("POST", path, Some(body.as_bytes()));
        assert!((400..500).contains(&r.status), "{path} {body}: {} {}", r.status, r.body);
        assert!(
            !r.json()["message"].as_str().unwrap_or_default().is_empty(),
            "{}",
            r.body
        );
        if i % 100 == 0 {
            // A body over the limit is refused from its declared length, unread.
            let r = raw_request(
                api.port,
                "POST",
                "/v1.50/services/create",
                None,
                &[("Content-Length", "50000000"), ("Content-Type", "application/json")],
            )
            .unwrap();
            assert_eq!(r.status, 413, "{}", r.body);
            assert!(r.json()["message"].as_str().unwrap().contains("larger than the limit"));
        }
    }
    // A streamed (chunked) body, with no declared length, is cut off at the limit.
    let chunk = "x".repeat(256 * 1024);
    let mut chunked = String::new();
    for _ in 0..8 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let r = raw_request(
        api.port,
        "POST",
        "/v1.50/services/create",
        Some(chunked.as_bytes()),
        &[("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")],
    )
    .unwrap();
    assert_eq!(r.status, 413);
    let (status, msg) = post(
        &api,
        "/v1.50/services/create",
        r#"{"Name":"after","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#,
    );
    assert_eq!(status, 201, "{msg}");
    assert!(!api.proc.exited(), "shoal-api must stay up");
    api.docker(&["service", "inspect", "after"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_apis_answer_not_a_swarm_manager() {
    let mut hosts = Hosts::start(&[]);
    hosts
        .manager
        .docker(&["swarm", "init", "--dispatcher-heartbeat", "1s"])
        .ok();
    let token = hosts.token("worker");
    let addr = hosts.swarm_addr();

    // A second host's API joins with the worker token; its node is a worker.
    let w = hosts.add_host("worker", &[]);
    let worker = &hosts.hosts[w].api;
    worker
        .docker(&["node", "ls"])
        .fails_with("This node is not a swarm manager.");
    worker
        .docker(&["swarm", "join", "--token", "SWMTKN-1-bogus", &addr])
        .fails_with("invalid join token");
    let joined = worker.docker(&["swarm", "join", "--token", &token, &addr]).ok();
    assert!(
        joined.stdout.contains("This node joined a swarm as a worker."),
        "{}",
        joined.stdout
    );
    worker.docker(&["node", "ls"]).fails_with(NOT_MANAGER);
    worker.docker(&["service", "ls"]).fails_with(NOT_MANAGER);
    worker.docker(&["network", "create", "-d", "overlay", "n"]).fails_with(
        "Cannot create a multi-host network from a worker node. Please create the network from a manager node.",
    );
    assert_eq!(worker.raw("GET", "/_ping", None).header("Swarm"), Some("active/worker"));
    let info = worker.docker(&["info"]).ok();
    assert!(info.stdout.contains("Is Manager: false"), "{}", info.stdout);

    let manager = &hosts.manager;
    let ls = manager.docker(&["node", "ls"]).ok();
    assert_eq!(ls.lines().len(), 3, "{}", ls.stdout);
    let wid = worker.node_id();
    let cells = row(&ls, &wid);
    assert_eq!(&cells[2..4], ["Ready", "Active"], "{}", ls.stdout);
    assert!(
        !cells.iter().any(|c| ["Leader", "Reachable", "Unreachable"].contains(c)),
        "a worker has no manager status: {}",
        ls.stdout
    );
    manager
        .docker(&["node", "rm", &wid])
        .fails_with("is not down and can't be removed");

    // Promote then demote through the manager.
    manager.docker(&["node", "promote", &wid]).ok();
    let ls = manager.docker(&["node", "ls"]).ok();
    assert_eq!(row(&ls, &wid)[4], "Reachable", "{}", ls.stdout);
    assert_eq!(
        worker.raw("GET", "/_ping", None).header("Swarm"),
        Some("active/manager")
    );
    manager.docker(&["node", "demote", &wid]).ok();
    worker.docker(&["node", "ls"]).fails_with(NOT_MANAGER);

    // A forced worker-role API answers the same, without a node of its own.
    let forced = Api::start(&hosts.store, &["--role", "worker"]);
    forced.docker(&["service", "ls"]).fails_with(NOT_MANAGER);

    // The worker leaves: its node goes Down (as in Docker), then the manager removes it.
    worker.docker(&["swarm", "leave"]).ok();
    eventually(Duration::from_secs(60), "the worker's node to go Down", || {
        let ls = manager.docker(&["node", "ls"]);
        let wid = wid.clone();
        async move {
            match ls.lines().into_iter().find(|l| l.starts_with(&wid)) {
                Some(l) if l.contains(" Down ") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    manager.docker(&["node", "rm", &wid]).ok();
    let ls = manager.docker(&["node", "ls", "-q"]).ok();
    assert_eq!(ls.lines(), [manager.node_id().as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_the_api_answers_raft_no_leader_and_recovers() {
    let (mut store, api) = single_manager();
    init(&api);
    store.kill(1);
    let r = api.raw("GET", "/v1.50/nodes", None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.json()["message"],
        "rpc error: code = Unknown desc = raft: no elected cluster leader"
    );
    api.docker(&["node", "ls"])
        .fails_with("raft: no elected cluster leader");
    store.restart(1);
    eventually(Duration::from_secs(30), "the API to answer again", || async {
        let r = api.raw("GET", "/v1.50/nodes", None);
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    })
    .await;
}

#[test]
fn tcp_off_loopback_requires_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = shoal_tests::free_port();
    let out = std::process::Command::new(shoal_tests::bin("shoal-api"))
        .env_clear()
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--nats-url",
            "nats://127.0.0.1:1",
            "--listen",
            &format!("tcp://0.0.0.0:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a loopback address"), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_when_given_a_certificate() {
    let store = StoreCluster::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let gen = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let port = shoal_tests::free_port();
    let data = dir.path().join("data");
    let mut cmd = std::process::Command::new(shoal_tests::bin("shoal-api"));
    cmd.env_clear()
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--nats-url",
            &store.nats.url(),
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let _api = shoal_tests::Proc::spawn("shoal-api", cmd, &dir.path().join("api.log"));
    let body = eventually(Duration::from_secs(20), "a TLS answer", || async {
        let out = std::process::Command::new("curl")
            .args(["-sk", &format!("https://127.0.0.1:{port}/_ping")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body == "OK" {
            Ok(body)
        } else {
            Err(format!(
                "{:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await;
    assert_eq!(body, "OK");
    // Plain HTTP on the TLS port is not answered as HTTP.
    let plain = raw_request(port, "GET", "/_ping", None, &[]);
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_swarm_erases_it_and_init_works_again() {
    let (store, api) = single_manager();
    init(&api);
    api.docker(&["service", "create", "-d", "--name", "s", "busybox"]).ok();
    api.docker(&["swarm", "leave"])
        .fails_with("Use `--force` to ignore this message.");
    api.docker(&["swarm", "leave", "--force"]).ok();
    api.docker(&["node", "ls"])
        .fails_with("This node is not a swarm manager. Use \"docker swarm init\"");
    let services: Vec<Service> = store.client().await.list(ListFilter::default()).await.unwrap();
    assert!(services.is_empty(), "the last manager leaving erases the swarm");
    init(&api);
    let ls = api.docker(&["service", "ls", "-q"]).ok();
    assert!(ls.lines().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_promotes_a_node_its_agent_registered_before_the_swarm_existed() {
    let (store, api) = single_manager();
    let id = api.node_id();
    // As the dispatcher writes it when this host's agent registers first.
    let mut pre = shoal_shared::model::Node::new(id.clone(), "agent-host", shoal_shared::model::NodeRole::Worker);
    pre.status.state = shoal_shared::model::NodeState::Ready;
    pre.status.addr = "127.0.0.1".into();
    store.client().await.create(&pre).await.unwrap();
    api.docker(&["node", "ls"])
        .fails_with("This node is not a swarm manager. Use \"docker swarm init\"");

    init(&api);
    let ls = api.docker(&["node", "ls"]).ok();
    let cells = row(&ls, &id);
    assert_eq!(
        &cells[1..],
        ["*", "agent-host", "Ready", "Active", "Leader"],
        "{}",
        ls.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_signed_by_the_ca() {
    let store = StoreCluster::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA, and a server and a client certificate it signed.
    let script = "set -e
        EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
        openssl req -x509 $EC -subj /CN=test-ca -days 2 -keyout ca.key -out ca.pem
        openssl req $EC -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > srv.ext
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile srv.ext -out srv.pem
        openssl req $EC -subj /CN=client -keyout client.key -out client.csr
        echo extendedKeyUsage=clientAuth > client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext \\
            -out client.pem";
    let out = std::process::Command::new("sh")
        .current_dir(d)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = shoal_tests::free_port();
    let mut cmd = std::process::Command::new(shoal_tests::bin("shoal-api"));
    cmd.env_clear()
        .arg("--data-dir")
        .arg(d.join("data"))
        .args([
            "--nats-url",
            &store.nats.url(),
            "--listen",
            &format!("tcp://127.0.0.1:{port}"),
        ])
        .args(["--tls-cert", "srv.pem", "--tls-key", "srv.key", "--tls-ca", "ca.pem"])
        .current_dir(d);
    let _api = shoal_tests::Proc::spawn("shoal-api", cmd, &d.join("api.log"));
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .current_dir(d)
            .args(["-sk", "--max-time", "5"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}/_ping"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let with_cert = eventually(Duration::from_secs(20), "a mutual-TLS answer", || async {
        match curl(&["--cert", "client.pem", "--key", "client.key"]) {
            (Some(0), body) if body == "OK" => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(with_cert, "OK");
    let (code, body) = curl(&[]);
    assert_ne!(code, Some(0), "a client without a certificate must be refused: {body}");
    // A self-signed client certificate is refused.
    let out = std::process::Command::new("sh")
        .current_dir(d)
        .args([
            "-c",
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=x \
                      -days 2 -keyout other.key -out other.pem",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (code, body) = curl(&["--cert", "other.pem", "--key", "other.key"]);
    assert_ne!(
        code,
        Some(0),
        "a certificate the CA did not sign must be refused: {body}"
    );

    // The shoal CLI speaks mutual TLS with docker's flags.
    let p = |f: &str| d.join(f).display().to_string();
    let host = format!("tcp://127.0.0.1:{port}");
    let shoal = |extra: &[String], args: &[&str]| {
        let out = std::process::Command::new(shoal_tests::bin("shoal"))
            .env_clear()
            .args(["--host", &host])
            .args(extra)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tls = [
        "--tlscacert".to_string(),
        p("ca.pem"),
        "--tlscert".into(),
        p("client.pem"),
        "--tlskey".into(),
        p("client.key"),
    ];
    let (code, out, err) = shoal(&tls, &["swarm", "init"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("Swarm initialized: current node ("), "{out}");
    let (code, out, err) = shoal(&tls, &["node", "ls", "-q"]);
    assert_eq!((code, out.lines().count()), (Some(0), 1), "{out} {err}");
    let (code, _, err) = shoal(&tls[..2], &["node", "ls", "-q"]);
    assert_ne!(code, Some(0), "no client certificate: must fail");
    assert!(!err.is_empty());
}

// ---------------------------------------------------------------- issue 14: reliability defects

/// Replicas of a service, as `docker service inspect` reports them.
fn replicas_of(api: &Api, service: &str) -> String {
    api.docker(&[
        "service",
        "inspect",
        "--format={{.Spec.Mode.Replicated.Replicas}}",
        service,
    ])
    .ok()
    .stdout
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_replica_counts_are_refused_and_the_service_keeps_its_count() {
    let (_store, api) = single_manager();
    init(&api);
    let max = "more than the maximum of 100000";
    api.docker(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        "big",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    let scaled = api
        .docker(&["service", "scale", "-d", "big=9223372036854775807"])
        .fails_with(max);
    assert!(!scaled.stdout.contains("scaled to"), "{}", scaled.stdout);
    assert_eq!(replicas_of(&api, "big"), "2");
    api.docker(&["service", "update", "-d", "--replicas", "100001", "big"])
        .fails_with(max);
    assert_eq!(replicas_of(&api, "big"), "2");
    // The maximum itself is accepted.
    api.docker(&["service", "scale", "-d", "big=100000"]).ok();
    assert_eq!(replicas_of(&api, "big"), "100000");
    api.docker(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        "bigger",
        "--replicas",
        "100001",
        "busybox",
    ])
    .fails_with(max);
    api.docker(&["service", "inspect", "bigger"])
        .fails_with("no such service: bigger");
}

/// Open file descriptors of a process.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_get_408_and_their_connections_are_released() {
    let store = StoreCluster::start(1, &[]);
    let api = Api::start(&store, &["--body-timeout-ms", "1000"]);
    init(&api);
    let pid = api.proc.pid().as_raw();
    let before = open_fds(pid);
    // Clients that send headers and a few bytes of their body, then nothing
    // (and never close): declared lengths and chunked bodies, on endpoints
    // that read the body. Raw sockets, not the CLI's client: a client sends a
    // whole request and reads its answer at once, these hold a half-sent
    // request open and check that the server closes the connection.
    let n = 60;
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..n {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let path = ["/v1.50/services/create", "/v1.50/networks/create", "/swarm/init"][i % 3];
        let head = if i % 2 == 0 {
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"Na")
        } else {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: \
                 chunked\r\n\r\n4\r\n{{\"Na\r\n"
            )
        };
        s.write_all(head.as_bytes()).unwrap();
        clients.push(s);
    }
    eventually(
        Duration::from_secs(10),
        "the API to hold the trickling connections",
        || async {
            let now = open_fds(pid);
            if now >= before + n / 2 {
                Ok(())
            } else {
                Err(format!("{now} fds, {before} before"))
            }
        },
    )
    .await;
    // Each gets 408 within a bound, then the server closes the connection.
    for (i, s) in clients.iter_mut().enumerate() {
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            read.is_ok(),
            "client {i}: connection not closed by the server: {read:?}, got {text:?}"
        );
        assert!(text.starts_with("HTTP/1.1 408"), "client {i}: {text:?}");
        assert!(
            text.contains("request body not received in time"),
            "client {i}: {text:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "408s took {:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(10), "the API's fds to be released", || async {
        let now = open_fds(pid);
        if now <= before + 2 {
            Ok(())
        } else {
            Err(format!("{now} fds, {before} before"))
        }
    })
    .await;
    drop(clients);
    // An endpoint that reads no body answers at once, and a body left
    // trickling does not keep the connection open after the answer.
    for head in [
        "GET /v1.50/services HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab",
        "GET /_ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(read.is_ok(), "{head:?}: connection left open: {read:?}, got {text:?}");
        assert!(text.starts_with("HTTP/1.1 200"), "{head:?}: {text:?}");
    }
    // A body that arrives in time is still read.
    let (status, msg) = post(
        &api,
        "/v1.50/services/create",
        r#"{"Name":"after","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#,
    );
    assert_eq!(status, 201, "{msg}");
}

/// A raw request with a body and exactly these headers (no defaults added).
fn raw_with(api: &Api, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let len = body.len().to_string();
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    h.push(("Content-Length", &len));
    let r = raw_request(api.port, method, path, Some(body.as_bytes()), &h).unwrap();
    let msg = serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_default();
    (r.status, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_in_dockers_words() {
    let (_store, api) = single_manager();
    init(&api);
    let spec =
        |extra: &str| format!(r#"{{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"busybox"}}{extra}}}}}"#);
    let svc =
        |extra: &str| format!(r#"{{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"busybox"}}}}{extra}}}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            // Name, Labels, TaskTemplate by position: once accepted as a spec.
            r#"["w", {}, {"ContainerSpec": {"Image": "busybox"}}]"#.to_string(),
            "cannot unmarshal array into an object",
        ),
        (
            spec(r#","Resources":{"Limits":{"NanoCPUs":-1}}"#),
            "rpc error: code = InvalidArgument desc = invalid cpu value -1e-09: Must be at least 0.001",
        ),
        (
            spec(r#","Resources":{"Limits":{"MemoryBytes":-1}}"#),
            "rpc error: code = InvalidArgument desc = invalid memory value -1: Must be at least 4MiB",
        ),
        (
            svc(r#","UpdateConfig":{"MaxFailureRatio":2.5}"#),
            "rpc error: code = InvalidArgument desc = TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1",
        ),
        (
            svc(r#","RollbackConfig":{"MaxFailureRatio":-0.5}"#),
            "TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1",
        ),
        (
            svc(r#","EndpointSpec":{"Ports":[{"TargetPort":80,"PublishedPort":70000}]}"#),
            "invalid published port 70000",
        ),
        (
            svc(r#","EndpointSpec":{"Ports":[{"TargetPort":0,"PublishedPort":8080}]}"#),
            "invalid target port 0",
        ),
        (
            svc(r#","EndpointSpec":{"Ports":[{"TargetPort":80,"PublishedPort":8080},{"TargetPort":81,"PublishedPort":8080}]}"#),
            "rpc error: code = InvalidArgument desc = EndpointSpec: duplicate published ports provided",
        ),
    ];
    for (body, want) in &cases {
        let (status, msg) = post(&api, "/v1.50/services/create", body);
        assert_eq!(status, 400, "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg:?} lacks {want:?}");
    }
    let ls = api.docker(&["service", "ls", "-q"]).ok();
    assert!(ls.lines().is_empty(), "nothing was created: {}", ls.stdout);

    // Unnamed services are named, as Docker names them: adjective_surname.
    let unnamed = r#"{"TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#;
    let mut names = Vec::new();
    for _ in 0..2 {
        let r = api.raw("POST", "/v1.50/services/create", Some(unnamed.as_bytes()));
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["ID"].as_str().unwrap().to_string();
        let name = api.raw("GET", &format!("/v1.50/services/{id}"), None).json()["Spec"]["Name"]
            .as_str()
            .unwrap()
            .to_string();
        let (adjective, surname) = name.split_once('_').unwrap_or_else(|| panic!("name {name:?}"));
        assert!(
            !adjective.is_empty() && !surname.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        names.push(name);
    }
    let ls = api.docker(&["service", "ls", "--format", "{{.Name}}"]).ok();
    let mut listed: Vec<&str> = ls.lines();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);

    // Networks: Docker's IPAM checks.
    let (status, msg) = post(
        &api,
        "/v1.50/networks/create",
        r#"{"Name":"n","Driver":"overlay","IPAM":{"Config":[{"Subnet":"999.1.1.1/99","Gateway":"zz"}]}}"#,
    );
    assert_eq!(
        (status, msg.as_str()),
        (
            400,
            "invalid network config:\ninvalid subnet 999.1.1.1/99: invalid CIDR block notation"
        )
    );
    let (status, msg) = post(
        &api,
        "/v1.50/networks/create",
        r#"{"Name":"n","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.8.0.1"}]}}"#,
    );
    assert_eq!(
        (status, msg.as_str()),
        (
            400,
            "invalid network config:\ninvalid gateway 10.8.0.1: parent subnet 10.9.0.0/24 doesn't contain this address"
        )
    );
    api.docker(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.9.0.0/24",
        "--gateway",
        "10.9.0.1",
        "n",
    ])
    .ok();

    // JSON endpoints want JSON.
    let (status, msg) = raw_with(
        &api,
        "POST",
        "/v1.50/services/create",
        unnamed,
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(
        (status, msg.as_str()),
        (
            400,
            "unsupported Content-Type header (text/plain): must be 'application/json'"
        )
    );
    let (status, msg) = raw_with(&api, "POST", "/v1.50/networks/create", "{}", &[]);
    assert_eq!(
        (status, msg.as_str()),
        (400, "malformed Content-Type header (): mime: no media type")
    );
    let (status, _) = raw_with(
        &api,
        "POST",
        "/v1.50/networks/create",
        r#"{"Name":"m","Driver":"overlay"}"#,
        &[("Content-Type", "application/json; charset=utf-8")],
    );
    assert_eq!(status, 201);

    // API versions: too new, too old, not a version.
    let r = api.raw("GET", "/v9.99/services", None);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (
            400,
            json!("client version 9.99 is too new. Maximum supported API version is 1.50")
        )
    );
    let r = api.raw("GET", "/v1.12/services", None);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (
            400,
            json!(
                "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to \
                 a newer version"
            )
        )
    );
    let r = api.raw("GET", "/vabc/services", None);
    assert_eq!((r.status, r.json()["message"].clone()), (404, json!("page not found")));
    for ok in ["/v1.24/services", "/v1.50/services", "/services"] {
        assert_eq!(api.raw("GET", ok, None).status, 200, "{ok}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_methods_and_long_names_get_dockers_answers() {
    let (_store, api) = single_manager();
    init(&api);
    let get = |path: &str, filters: &str| {
        let r = api.raw("GET", &format!("{path}?filters={}", urlencode(filters)), None);
        let msg = if r.status == 200 {
            String::new()
        } else {
            r.json()["message"].as_str().unwrap_or_default().to_string()
        };
        (r.status, msg)
    };
    let cases: [(&str, &str, u16, &str); 10] = [
        (
            "/v1.50/nodes",
            r#"{"role":{"bogus":true}}"#,
            400,
            "Invalid role filter: 'bogus'",
        ),
        (
            "/v1.50/nodes",
            r#"{"membership":{"x":true}}"#,
            400,
            "Invalid membership filter: 'x'",
        ),
        ("/v1.50/nodes", r#"{"foo":{"x":true}}"#, 400, "invalid filter 'foo'"),
        ("/v1.50/nodes", r#"{"name":{"x":"yes"}}"#, 400, "invalid filter"),
        ("/v1.50/nodes", r#"{"role":{"manager":true}}"#, 200, ""),
        ("/v1.50/services", r#"{"name":["x"]}"#, 200, ""),
        ("/v1.50/services", r#"{"name":"x"}"#, 400, "invalid filter"),
        (
            "/v1.50/tasks",
            r#"{"desired-state":{"bogus":true}}"#,
            400,
            "Invalid desired-state filter: 'bogus'",
        ),
        (
            "/v1.50/networks",
            r#"{"type":{"bogus":true}}"#,
            400,
            "invalid filter: 'type'='bogus'",
        ),
        (
            "/v1.50/networks",
            r#"{"dangling":{"maybe":true}}"#,
            400,
            "invalid value for filter 'dangling'",
        ),
    ];
    for (path, filters, status, msg) in cases {
        let (s, m) = get(path, filters);
        assert_eq!(s, status, "{path} {filters}: {m}");
        assert!(m.starts_with(msg), "{path} {filters}: {m:?}, want {msg:?}");
    }
    api.docker(&["node", "ls", "--filter", "role=bogus"])
        .fails_with("Invalid role filter: 'bogus'");
    let ls = api.docker(&["node", "ls", "-q", "--filter", "role=manager"]).ok();
    assert_eq!(ls.lines(), [api.node_id().as_str()]);

    // A known path with a method it does not take: Docker's 404.
    // (`GET /services/create` is not one: like Docker, it inspects a service named "create".)
    for (method, path) in [
        ("DELETE", "/swarm"),
        ("PUT", "/v1.50/nodes"),
        ("POST", "/v1.50/tasks"),
        ("GET", "/v1.50/swarm/init"),
    ] {
        let r = api.raw(method, path, None);
        assert_eq!(
            (r.status, r.json()["message"].clone()),
            (404, json!("page not found")),
            "{method} {path}"
        );
    }

    // A 1 MB invalid name is quoted clipped, not echoed whole.
    let name = "x".repeat(1_000_000);
    let (status, msg) = post(
        &api,
        "/v1.50/services/create",
        &format!(r#"{{"Name":"{name}!","TaskTemplate":{{"ContainerSpec":{{"Image":"busybox"}}}}}}"#),
    );
    assert_eq!(status, 400);
    assert!(
        msg.len() < 300 && msg.contains(&format!("{}...", "x".repeat(64))),
        "{} bytes",
        msg.len()
    );
    let r = api.raw("GET", &format!("/v1.50/services/{}", "y".repeat(20_000)), None);
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 300, "{} bytes", r.body.len());
}
