//! The `shoal` command against a real shoal-api (over its unix socket),
//! its output compared with the real docker CLI's for the same commands
//! on the same swarm.

use serde_json::Value;
use shoal_shared::model::{Service, TaskState};
use shoal_tests::api::{single_manager, Api, Run};
use shoal_tests::hosts::Hosts;

/// Runs the same command with docker (TCP) and shoal (unix socket); asserts
/// the same exit status and stdout, and returns shoal's run.
fn same(api: &Api, args: &[&str]) -> Run {
    let d = api.docker(args);
    let s = api.shoal(args);
    assert_eq!(
        (d.code, s.code),
        (0, 0),
        "{args:?} failed: docker stderr={:?} shoal stderr={:?}",
        d.stderr,
        s.stderr
    );
    assert_eq!(s.stdout, d.stdout, "{args:?}: shoal's output differs from docker's");
    s
}

/// Both fail, with the same error text.
fn same_error(api: &Api, args: &[&str]) -> String {
    let d = api.docker(args);
    let s = api.shoal(args);
    assert_ne!(d.code, 0, "docker {args:?} should fail: {}", d.stdout);
    assert_ne!(s.code, 0, "shoal {args:?} should fail: {}", s.stdout);
    assert_eq!(s.stderr.trim(), d.stderr.trim(), "{args:?}: error text differs");
    s.stderr
}

/// Every leaf of `sub` is in `sup` with the same value (docker adds Go zero values).
fn assert_subset(sub: &Value, sup: &Value, path: &str) {
    match (sub, sup) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let other = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing from docker's output"));
                assert_subset(v, other, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: lengths differ");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_subset(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::String(a), Value::String(b)) => assert_eq!(go_time(a), go_time(b), "{path}"),
        (Value::Number(a), Value::Number(b)) => assert_eq!(a.as_f64(), b.as_f64(), "{path}"),
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

/// Go writes RFC 3339 times without trailing zeros in the fraction; compare them that way.
fn go_time(s: &str) -> String {
    match s.strip_suffix('Z').and_then(|t| t.split_once('.')) {
        Some((secs, frac)) if frac.bytes().all(|b| b.is_ascii_digit()) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{frac}Z")
            }
        }
        _ => s.to_string(),
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// The `Swarm:` block of `docker info`, de-indented by one level.
fn docker_info_swarm_block(out: &str) -> String {
    let mut block = String::new();
    let mut inside = false;
    for line in out.lines() {
        if line.starts_with(" Swarm:") {
            inside = true;
        } else if inside && !line.starts_with("  ") {
            break;
        }
        if inside {
            block.push_str(&line[1..]);
            block.push('\n');
        }
    }
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_cli_output_matches_the_docker_cli() {
    let (store, api) = single_manager();
    let id = api.node_id();

    same_error(&api, &["node", "ls"]);
    let init = api.shoal(&["swarm", "init"]).ok();
    let join = api.docker(&["swarm", "join-token", "worker"]).ok().stdout;
    let expected = format!(
        "Swarm initialized: current node ({id}) is now a manager.\n\n{join}To add a manager to this swarm, run \
         'docker swarm join-token manager' and follow the instructions.\n\n"
    );
    assert_eq!(init.stdout.replace("shoal swarm", "docker swarm"), expected);
    same_error(&api, &["swarm", "init"]);
    for role in ["worker", "manager"] {
        let d = api.docker(&["swarm", "join-token", role]).ok();
        let s = api.shoal(&["swarm", "join-token", role]).ok();
        assert_eq!(s.stdout.replace("shoal swarm join", "docker swarm join"), d.stdout);
        same(&api, &["swarm", "join-token", "-q", role]);
    }

    let info = api.shoal(&["info"]).ok();
    assert_eq!(info.stdout, docker_info_swarm_block(&api.docker(&["info"]).ok().stdout));

    same(&api, &["node", "ls"]);
    same(&api, &["node", "ls", "-q"]);
    same(&api, &["node", "ls", "-f", "role=manager"]);
    same(
        &api,
        &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"],
    );
    same(&api, &["node", "inspect", "self", "--pretty"]);
    same(
        &api,
        &[
            "node",
            "inspect",
            "--format",
            "{{.Spec.Role}} {{.Status.State}}",
            "self",
        ],
    );
    assert_subset(
        &json(&api.shoal(&["node", "inspect", "self"]).ok()),
        &json(&api.docker(&["node", "inspect", "self"]).ok()),
        "",
    );

    // Services, created through shoal.
    let created = api
        .shoal(&[
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
    same(&api, &["service", "ls"]);
    same(&api, &["service", "ls", "-q"]);
    same(&api, &["service", "ls", "-f", "name=ping"]);
    same(&api, &["service", "inspect", "--pretty", "ping_con"]);
    let r = same(
        &api,
        &[
            "service",
            "inspect",
            "--format={{.Spec.Mode.Replicated.Replicas}}",
            "ping_con",
        ],
    );
    assert_eq!(r.stdout, "1\n");
    same(
        &api,
        &["service", "inspect", "--format", "{{json .Spec.Mode}}", "ping_con"],
    );
    assert_subset(
        &json(&api.shoal(&["service", "inspect", "ping_con"]).ok()),
        &json(&api.docker(&["service", "inspect", "ping_con"]).ok()),
        "",
    );

    let scaled = api.shoal(&["service", "scale", "-d", "ping_con=3"]).ok();
    assert_eq!(scaled.stdout, "ping_con scaled to 3\n");
    let up = api.shoal(&["service", "update", "-d", "--replicas=4", "ping_con"]).ok();
    assert_eq!(up.stdout, "ping_con\n");
    api.shoal(&["service", "update", "-d", "--image", "busybox:1.36", "ping_con"])
        .ok();
    api.shoal(&[
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
    let pretty = same(&api, &["service", "inspect", "--pretty", "ping_con"]);
    for needle in [
        " Replicas:\t4",
        "Image:\t\tbusybox:1.36",
        "Env:\t\tA=1 ",
        "Memory:\t64MiB",
        "[node.role==manager]",
    ] {
        assert!(pretty.stdout.contains(needle), "lacks {needle:?}:\n{}", pretty.stdout);
    }
    api.shoal(&[
        "service", "create", "-d", "--mode", "global", "--name", "glob", "busybox", "top",
    ])
    .ok();
    same(&api, &["service", "ls"]);
    same(&api, &["service", "ls", "-f", "mode=global"]);
    // Mounts, as docker's --mount syntax.
    let mounts = [
        "--mount",
        "type=bind,src=/data,dst=/data",
        "--mount",
        "src=vol,dst=/vol",
        "--mount",
        "type=volume,src=vd,dst=/v2,volume-driver=local,volume-opt=type=nfs4,volume-opt=o=addr=10.0.0.1,readonly",
    ];
    let mut args = vec!["service", "create", "-d", "--name", "mounted"];
    args.extend(mounts);
    args.push("busybox");
    api.shoal(&args).ok();
    same(&api, &["service", "inspect", "--pretty", "mounted"]);
    // `{{json}}` writes keys in Go struct order in docker, sorted in shoal: compare as JSON.
    let args = [
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}",
        "mounted",
    ];
    assert_eq!(json(&api.shoal(&args).ok()), json(&api.docker(&args).ok()));
    same_error(
        &api,
        &[
            "service",
            "create",
            "-d",
            "--mount",
            "type=bind,src=rel,dst=/d",
            "busybox",
        ],
    );
    api.shoal(&["service", "rm", "mounted"]).ok();
    same(
        &api,
        &["service", "ls", "--format", "table {{.Name}}\t{{.Mode}}\t{{.Replicas}}"],
    );
    same(&api, &["service", "ls", "--format", "{{.ID}}: {{.Name}} {{.Image}}"]);
    same(
        &api,
        &[
            "node",
            "ls",
            "--format",
            "table {{.Hostname}}\t{{.ManagerStatus}}\t{{.Self}}",
        ],
    );

    // A task as the scheduler will write it: service ps and node ps agree with docker.
    let client = store.client().await;
    let svc: Service = client.get(&svc_id).await.unwrap().unwrap();
    let mut task = shoal_shared::model::Task::new(shoal_shared::id::new_id(), svc_id.clone(), svc.spec.task_template);
    task.slot = Some(1);
    task.node_id = id.clone();
    task.status.state = TaskState::Running;
    // Three hours ago, so both CLIs print the same age however long the test takes.
    task.status.timestamp = svc.meta.updated_at - std::time::Duration::from_secs(3 * 3600);
    client.create(&task).await.unwrap();
    same(&api, &["service", "ps", "ping_con"]);
    same(&api, &["service", "ps", "-q", "ping_con"]);
    same(&api, &["node", "ps"]);
    same(&api, &["service", "ls"]);

    // Networks.
    let net = api
        .shoal(&["network", "create", "--driver", "overlay", "my-network"])
        .ok();
    let net_id = net.stdout.trim().to_string();
    same(&api, &["network", "ls"]);
    same(&api, &["network", "ls", "-q"]);
    same(&api, &["network", "ls", "-f", "name=my"]);
    let n = json(&api.shoal(&["network", "inspect", "my-network"]).ok());
    assert_eq!(n[0]["Id"], Value::String(net_id));
    assert_subset(&n, &json(&api.docker(&["network", "inspect", "my-network"]).ok()), "");
    same_error(&api, &["network", "create", "--driver", "overlay", "my-network"]);

    // Errors read the same.
    same_error(&api, &["service", "inspect", "nope"]);
    same_error(&api, &["service", "rm", "nope"]);
    same_error(&api, &["node", "inspect", "nope"]);
    let conflict = same_error(&api, &["service", "create", "-d", "--name", "ping_con", "busybox"]);
    assert!(
        conflict.contains("name conflicts with an existing object"),
        "{conflict}"
    );

    let rm = api.shoal(&["network", "rm", "my-network"]).ok();
    assert_eq!(rm.stdout, "my-network\n");
    let rm = api.shoal(&["service", "rm", "ping_con", "glob"]).ok();
    assert_eq!(rm.stdout, "ping_con\nglob\n");
    same(&api, &["service", "ls"]);
    assert_eq!(api.shoal(&["service", "ls", "-q"]).ok().stdout, "");

    // Over TCP too, with --host.
    let tcp = api.shoal_host(&api.host(), &["node", "ls", "-q"]).ok();
    assert_eq!(tcp.stdout.trim(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_cli_reports_an_unreachable_api() {
    let (_store, api) = single_manager();
    let r = api.shoal_host("unix:///nonexistent/shoal.sock", &["node", "ls"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Cannot connect to shoal-api"), "{}", r.stderr);
    let r = api.shoal_host("bogus", &["node", "ls"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("invalid host"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_cli_joins_promotes_demotes_updates_and_removes_nodes() {
    let mut hosts = Hosts::start(&[]);
    hosts.manager.shoal(&["swarm", "init"]).ok();
    let token = hosts
        .manager
        .shoal(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .stdout;
    let addr = hosts.swarm_addr();
    let w = hosts.add_host("worker", &[]);
    let (manager, worker) = (&hosts.manager, &hosts.hosts[w].api);
    let wid = worker.node_id();

    let digest = token.trim().split('-').nth(2).unwrap_or_default().to_string();
    let bad_token = format!("SWMTKN-1-{digest}-{}", "0".repeat(25));
    let bad = worker.shoal(&["swarm", "join", "--token", &bad_token, &addr]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("A valid join token is necessary"), "{}", bad.stderr);
    let joined = worker.shoal(&["swarm", "join", "--token", token.trim(), &addr]).ok();
    assert_eq!(joined.stdout, "This node joined a swarm as a worker.\n");
    let denied = worker.shoal(&["node", "ls"]);
    assert_eq!(denied.code, 1);
    assert!(denied
        .stderr
        .contains("This node is not a swarm manager. Worker nodes can't be used"));
    same(manager, &["node", "ls"]);
    same(manager, &["node", "ls", "-f", "role=worker"]);

    let promoted = manager.shoal(&["node", "promote", &wid]).ok();
    assert_eq!(
        promoted.stdout,
        format!("Node {wid} promoted to a manager in the swarm.\n")
    );
    same(manager, &["node", "ls"]);
    let again = manager.shoal(&["node", "promote", &wid]).ok();
    assert_eq!(again.stdout, format!("Node {wid} is already a manager.\n"));
    let demoted = manager.shoal(&["node", "demote", &wid]).ok();
    assert_eq!(demoted.stdout, format!("Manager {wid} demoted in the swarm.\n"));

    let upd = manager
        .shoal(&[
            "node",
            "update",
            "--availability",
            "pause",
            "--label-add",
            "zone=b",
            &wid,
        ])
        .ok();
    assert_eq!(upd.stdout, format!("{wid}\n"));
    same(manager, &["node", "ls", "-f", "node.label=zone=b"]);
    same(manager, &["node", "inspect", "--pretty", &wid]);
    same_error(manager, &["node", "rm", &wid]);

    let left = worker.shoal(&["swarm", "leave"]).ok();
    assert_eq!(left.stdout, "Node left the swarm.\n");
    same(manager, &["node", "ls"]);
    same_error(manager, &["swarm", "leave"]);
    same_error(manager, &["service", "ps", "nope"]);
    same_error(manager, &["service", "scale", "-d", "nope=2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_and_docker_create_the_same_spec_from_the_same_flags() {
    let (_store, api) = single_manager();
    api.shoal(&["swarm", "init"]).ok();
    let flags = [
        "-d",
        "--replicas",
        "2",
        "-e",
        "A=1",
        "--label",
        "tier=web",
        "--container-label",
        "c=1",
        "--constraint",
        "node.role==manager",
        "--limit-memory",
        "64M",
        "--limit-cpu",
        "0.5",
        "--reserve-memory",
        "16M",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "10s",
        "--restart-max-attempts",
        "3",
        "--restart-window",
        "1m",
        "--update-delay",
        "3s",
        "--update-parallelism",
        "2",
        "--update-failure-action",
        "continue",
        "--update-order",
        "start-first",
        "--update-monitor",
        "7s",
        "--rollback-parallelism",
        "3",
        "--rollback-order",
        "start-first",
        "--endpoint-mode",
        "dnsrr",
        "--replicas-max-per-node",
        "1",
        "--hostname",
        "h1",
        "--stop-grace-period",
        "20s",
        "--dns",
        "10.0.0.53",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "--mount",
        "type=tmpfs,dst=/scratch",
    ];
    let create = |cli: &str, name: &str| {
        let mut args = vec!["service", "create", "--name", name];
        args.extend(flags);
        args.extend(["busybox:1.36", "sleep", "1000"]);
        if cli == "docker" {
            api.docker(&args).ok();
        } else {
            api.shoal(&args).ok();
        }
        let mut spec = json(&api.docker(&["service", "inspect", name]).ok())[0]["Spec"].clone();
        spec["Name"] = Value::Null;
        spec
    };
    let from_docker = create("docker", "by-docker");
    let from_shoal = create("shoal", "by-shoal");
    assert_eq!(from_shoal, from_docker);
    same(&api, &["service", "inspect", "--pretty", "by-shoal"]);
}
