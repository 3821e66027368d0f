//! Golden round trips: real `docker ... inspect` output (from the seed
//! walkthrough) and Docker API spec examples decode into the typed model and
//! encode back to the very same JSON: no field added, none dropped, no value
//! changed.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use shoal_shared::model::*;
use shoal_shared::store::{zero_time, StoreObject};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Removes `"ForceUpdate": 0` from `got`'s objects where `want` has no
/// `ForceUpdate`: Docker writes it always since API 1.25, and these fixtures
/// (the seed's Docker 1.12 output, older swagger examples) predate it.
fn drop_added_force_update(got: &mut Value, want: &Value) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            if !w.contains_key("ForceUpdate") && g.get("ForceUpdate") == Some(&Value::from(0)) {
                g.remove("ForceUpdate");
            }
            for (k, gv) in g.iter_mut() {
                if let Some(wv) = w.get(k) {
                    drop_added_force_update(gv, wv);
                }
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            for (gv, wv) in g.iter_mut().zip(w) {
                drop_added_force_update(gv, wv);
            }
        }
        _ => {}
    }
}

/// Decodes the fixture, re-encodes it and asserts the JSON is unchanged
/// (but for a `ForceUpdate: 0` the fixture predates, see [`drop_added_force_update`]).
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let want = fixture(name);
    let typed: T = serde_json::from_value(want.clone()).unwrap_or_else(|e| panic!("decode {name}: {e}"));
    let mut got = serde_json::to_value(&typed).unwrap();
    drop_added_force_update(&mut got, &want);
    assert_eq!(
        got,
        want,
        "{name} did not round-trip\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&want).unwrap()
    );
    typed
}

#[test]
fn service_inspect_ping_con_round_trips() {
    let svc: Service = round_trip("service_inspect_ping_con.json");
    assert_eq!(svc.meta.id, "26y2vaxv70ezkao9p9mv7lkcg");
    assert_eq!(svc.meta.version.index, 109);
    assert_eq!(svc.spec.name, "ping_con");
    assert_eq!(svc.spec.mode.replicated.as_ref().unwrap().replicas, Some(1));
    assert_eq!(svc.replicas(), Some(1));
    assert!(!svc.spec.is_global());

    let tmpl = &svc.spec.task_template;
    let cs = tmpl.container_spec.as_ref().unwrap();
    assert_eq!(cs.image, "registry.example.com/busybox:latest");
    assert_eq!(cs.args, ["ping", "classroom.example.com"]);
    let rp = tmpl.restart_policy.as_ref().unwrap();
    assert_eq!(rp.condition, Some(RestartCondition::Any));
    assert_eq!(rp.max_attempts, Some(0));
    assert_eq!(rp.delay, None);
    let res = tmpl.resources.as_ref().unwrap();
    assert_eq!(res.limits, Some(Limit::default()));
    assert_eq!(res.reservations, Some(Resources::default()));
    assert_eq!(tmpl.placement, Some(Placement::default()));

    let uc = svc.spec.update_config.as_ref().unwrap();
    assert_eq!(uc.parallelism, 1);
    assert_eq!(uc.failure_action, Some(FailureAction::Pause));
    assert_eq!(svc.spec.endpoint_spec.as_ref().unwrap().mode, Some(EndpointMode::Vip));
    assert_eq!(svc.endpoint, Some(Endpoint::default()));
    let us = svc.update_status.as_ref().unwrap();
    assert_eq!(us.state, None);
    assert_eq!(us.started_at, Some(zero_time()));

    let fields = svc.fields();
    assert_eq!(fields.get("mode").map(String::as_str), Some("replicated"));
    assert_eq!(svc.name().as_deref(), Some("ping_con"));
}

#[test]
fn node_inspect_node1_round_trips() {
    let node: Node = round_trip("node_inspect_node1.json");
    assert_eq!(node.meta.id, "0n868kuog8z6vxo0uvmykwnyw");
    assert_eq!(node.meta.version.index, 327);
    assert_eq!(node.spec.role, NodeRole::Manager);
    assert!(node.is_manager());
    assert_eq!(node.spec.availability, Availability::Active);
    assert_eq!(node.description.hostname, "node1-f0.example.com");
    assert_eq!(node.description.platform.os, "linux");
    assert_eq!(node.description.platform.architecture, "x86_64");
    assert_eq!(node.description.resources.nano_cpus, 2_000_000_000);
    assert_eq!(node.description.resources.memory_bytes, 512_729_088);
    assert_eq!(node.description.engine.engine_version, "1.12.0");
    assert_eq!(node.description.engine.plugins.len(), 5);
    assert_eq!(node.description.engine.plugins[4].kind, "Volume");
    assert_eq!(node.status.state, NodeState::Ready);
    let ms = node.manager_status.as_ref().unwrap();
    assert!(ms.leader);
    assert!(node.is_leader());
    assert_eq!(ms.reachability, Reachability::Reachable);
    assert_eq!(ms.addr, "172.25.0.12:2377");

    assert_eq!(node.name().as_deref(), Some("node1-f0.example.com"));
    let fields = node.fields();
    assert_eq!(fields.get("role").map(String::as_str), Some("manager"));
    assert_eq!(fields.get("membership").map(String::as_str), Some("accepted"));
}

#[test]
fn task_swagger_example_round_trips() {
    let task: Task = round_trip("task_swagger_example.json");
    assert_eq!(task.meta.id, "0kzzo1i0y4jz6027t0k7aezc7");
    assert_eq!(task.service_id, "9mnpnzenvg8p8tdbtq4wvbkcz");
    assert_eq!(task.slot, Some(1));
    assert_eq!(task.node_id, "60gvrl6tm78dmak4yl7srz94v");
    assert_eq!(task.status.state, TaskState::Running);
    assert_eq!(task.desired_state, TaskState::Running);
    assert_eq!(task.status.message, "started");
    assert_eq!(task.status.container_status.as_ref().unwrap().pid, Some(677));
    assert_eq!(task.status.container_status.as_ref().unwrap().exit_code, None);
    assert_eq!(task.name("hopeful_cori"), "hopeful_cori.1");

    let att = &task.networks_attachments[0];
    assert_eq!(att.addresses, ["10.255.0.10/16"]);
    assert_eq!(att.network.spec.name, "ingress");
    assert_eq!(att.network.spec.driver_configuration, Some(Driver::default()));
    assert_eq!(att.network.driver_state.name, "overlay");
    assert_eq!(att.network.ipam_options.as_ref().unwrap().driver.name, "default");
    assert_eq!(att.network.meta.version.index, 18);

    let fields = task.fields();
    assert_eq!(
        fields.get("service").map(String::as_str),
        Some("9mnpnzenvg8p8tdbtq4wvbkcz")
    );
    assert_eq!(
        fields.get("node").map(String::as_str),
        Some("60gvrl6tm78dmak4yl7srz94v")
    );
    assert_eq!(fields.get("desired-state").map(String::as_str), Some("running"));
    assert_eq!(fields.get("slot").map(String::as_str), Some("1"));
}

#[test]
fn task_global_failed_round_trips_with_every_container_field() {
    let task: Task = round_trip("task_global_failed.json");
    assert_eq!(task.slot, None);
    assert_eq!(
        task.name("global_task_con"),
        "global_task_con.0n868kuog8z6vxo0uvmykwnyw"
    );
    assert_eq!(task.status.state, TaskState::Failed);
    assert!(task.status.state.is_terminal());
    assert_eq!(task.status.state.as_docker_display(), "Failed");
    assert_eq!(task.status.err, "task: non-zero exit (2)");
    assert_eq!(task.status.container_status.as_ref().unwrap().exit_code, Some(2));
    let ports = &task.status.port_status.as_ref().unwrap().ports;
    assert_eq!(ports[0].publish_mode, Some(PublishMode::Host));
    assert_eq!(ports[0].published_port, 8080);
    assert_eq!(task.spec_version.map(|v| v.index), Some(398));
    assert_eq!(task.desired_state, TaskState::Shutdown);

    let cs = task.spec.container_spec.as_ref().unwrap();
    assert!(cs.tty);
    assert_eq!(cs.init, Some(true));
    assert_eq!(cs.stop_grace_period, Some(Duration::from_secs(10)));
    assert_eq!(cs.mounts[0].kind, MountType::Bind);
    assert_eq!(cs.mounts[1].kind, MountType::Tmpfs);
    assert_eq!(cs.mounts[1].tmpfs_options.as_ref().unwrap().size_bytes, 64 << 20);
    assert_eq!(cs.dns_config.as_ref().unwrap().nameservers, ["10.0.0.2"]);
    assert_eq!(
        cs.env_map().get("TARGET").map(String::as_str),
        Some("classroom.example.com")
    );

    let rp = task.spec.restart_policy.as_ref().unwrap();
    assert_eq!(rp.condition, Some(RestartCondition::OnFailure));
    assert_eq!(rp.delay, Some(Duration::from_secs(5)));
    assert_eq!(rp.window, Some(Duration::from_secs(60)));
    let limits = task.spec.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(
        (limits.nano_cpus, limits.memory_bytes, limits.pids),
        (500_000_000, 64 << 20, 64)
    );
    let placement = task.spec.placement.as_ref().unwrap();
    assert_eq!(placement.constraints, ["node.role==worker"]);
    assert_eq!(
        placement.preferences[0].spread.as_ref().unwrap().spread_descriptor,
        "node.labels.zone"
    );
    assert_eq!(task.spec.networks[0].target, "backend");
    assert_eq!(task.spec.force_update, 1);

    let fields = task.fields();
    assert_eq!(fields.get("desired-state").map(String::as_str), Some("shutdown"));
    assert!(!fields.contains_key("slot"));
    assert_eq!(task.labels().get("com.example.team").map(String::as_str), Some("ops"));
}

#[test]
fn service_swagger_example_round_trips_with_endpoint() {
    let svc: Service = round_trip("service_swagger_example.json");
    let ep = svc.endpoint.as_ref().unwrap();
    assert_eq!(ep.spec.mode, Some(EndpointMode::Vip));
    assert_eq!(ep.ports[0].protocol, Some(PortProtocol::Tcp));
    assert_eq!(ep.ports[0].target_port, 6379);
    assert_eq!(ep.ports[0].published_port, 30001);
    assert_eq!(ep.virtual_ips.len(), 2);
    assert_eq!(ep.virtual_ips[1].addr, "10.255.0.3/16");
    assert_eq!(ep.virtual_ips[0].network_id, "4qvuz4ko70xaltuqbt8956gd1");
    assert_eq!(svc.update_status, None);
}

#[test]
fn golden_service_survives_the_store_record_path() {
    let want = fixture("service_inspect_ping_con.json");
    let svc: Service = serde_json::from_value(want.clone()).unwrap();
    let rec = svc.to_record().unwrap();
    assert_eq!(rec.version, 109);
    assert_eq!(rec.created_at, svc.meta.created_at);
    let back = Service::from_record(&rec).unwrap();
    let mut got = serde_json::to_value(&back).unwrap();
    drop_added_force_update(&mut got, &want);
    assert_eq!(got, want);
}
