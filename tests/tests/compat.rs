//! What a real client's bodies need from the API (issue 15 §7): every field
//! of Docker's `ServiceSpec` (API 1.44) survives create, inspect and update;
//! keys match fields ignoring case, as Go's decoder matches them (docker-py
//! sends `{"mode": {"replicated": ...}}`); defaults appear only when asked
//! for (`insertDefaults`); network names are stored as IDs; and the ingress
//! network may be removed once nothing publishes through it.

use serde_json::{json, Value};
use shoal_tests::api::{single_manager, Api};

fn post(api: &Api, path: &str, body: &Value) -> (u16, Value) {
    let r = api.raw("POST", path, Some(body.to_string().as_bytes()));
    let v = if r.body.trim().is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

fn get(api: &Api, path: &str) -> Value {
    let r = api.raw("GET", path, None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

fn create(api: &Api, spec: &Value) -> String {
    let (status, v) = post(api, "/v1.44/services/create", spec);
    assert_eq!(status, 201, "{v}");
    v["ID"].as_str().expect("ID").to_string()
}

/// A service spec with every field of Docker's `ServiceSpec` (API 1.44) set
/// that a container service can carry (`PluginSpec` and
/// `NetworkAttachmentSpec` belong to other runtimes).
fn every_field(network: &str) -> Value {
    json!({
        "Name": "every-field",
        "Labels": {"l": "v"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "busybox:latest", "Labels": {"cl": "cv"}, "Command": ["sh"], "Args": ["-c", "sleep 1"],
                "Hostname": "h", "Env": ["A=1"], "Dir": "/tmp", "User": "nobody", "Groups": ["users"],
                "Privileges": {
                    "CredentialSpec": {"Config": "", "File": "spec.json", "Registry": ""},
                    "SELinuxContext": {"Disable": false, "User": "u", "Role": "r", "Type": "t", "Level": "s0"},
                    "Seccomp": {"Mode": "unconfined"}, "AppArmor": {"Mode": "disabled"}, "NoNewPrivileges": true
                },
                "Init": true, "StopSignal": "SIGINT", "TTY": true, "OpenStdin": true, "ReadOnly": true,
                "Mounts": [
                    {"Type": "volume", "Source": "v", "Target": "/v", "ReadOnly": true, "Consistency": "cached",
                     "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}, "Subpath": "sub",
                                       "DriverConfig": {"Name": "local", "Options": {"o": "x"}}}},
                    {"Type": "bind", "Source": "/tmp", "Target": "/b",
                     "BindOptions": {"Propagation": "rprivate", "NonRecursive": true, "CreateMountpoint": true,
                                     "ReadOnlyNonRecursive": true}},
                    {"Type": "tmpfs", "Target": "/t",
                     "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448, "Options": [["noexec"], ["uid", "1000"]]}}
                ],
                "StopGracePeriod": 3_000_000_000i64,
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1_000_000_000i64, "Timeout": 1_000_000_000i64,
                                "Retries": 3, "StartPeriod": 1_000_000_000i64},
                "Hosts": ["10.0.0.1 h1"],
                "DNSConfig": {"Nameservers": ["10.0.0.53"], "Search": ["example.org"], "Options": ["ndots:1"]},
                "Isolation": "default",
                "Sysctls": {"net.core.somaxconn": "1024"},
                "CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["CAP_MKNOD"],
                "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                "OomScoreAdj": 100
            },
            "Resources": {
                "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 67_108_864, "Pids": 100},
                "Reservations": {"NanoCPUs": 100_000_000, "MemoryBytes": 8_388_608, "GenericResources": [
                    {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}},
                    {"NamedResourceSpec": {"Kind": "ssd", "Value": "a"}}
                ]}
            },
            "RestartPolicy": {"Condition": "on-failure", "Delay": 1_000_000_000i64, "MaxAttempts": 3,
                              "Window": 2_000_000_000i64},
            "Placement": {"Constraints": ["node.role==manager"],
                          "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                          "MaxReplicas": 2, "Platforms": [{"Architecture": "amd64", "OS": "linux"}]},
            "ForceUpdate": 1,
            "Runtime": "container",
            "Networks": [{"Target": network, "Aliases": ["al"], "DriverOpts": {"d": "o"}}],
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}}
        },
        "Mode": {"Replicated": {"Replicas": 0}},
        "UpdateConfig": {"Parallelism": 2, "Delay": 1_000_000_000i64, "FailureAction": "continue",
                         "Monitor": 2_000_000_000i64, "MaxFailureRatio": 0.5, "Order": "start-first"},
        "RollbackConfig": {"Parallelism": 3, "Delay": 1_000_000_000i64, "FailureAction": "pause",
                           "Monitor": 2_000_000_000i64, "MaxFailureRatio": 0.25, "Order": "stop-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Name": "web", "Protocol": "tcp", "TargetPort": 80,
                                                   "PublishedPort": 30080, "PublishMode": "ingress"}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_spec_field_round_trips_through_create_inspect_and_update() {
    let (_store, api) = single_manager();
    api.docker(&["swarm", "init"]).ok();
    let (status, net) = post(
        &api,
        "/v1.44/networks/create",
        &json!({"Name": "rt-net", "Driver": "overlay"}),
    );
    assert_eq!(status, 201, "{net}");
    let net_id = net["Id"].as_str().unwrap().to_string();

    let given = every_field("rt-net");
    let id = create(&api, &given);
    // Stored as given, the network's name resolved to its ID, as Docker does.
    let mut want = given.clone();
    want["TaskTemplate"]["Networks"][0]["Target"] = json!(net_id);
    let svc = get(&api, &format!("/v1.44/services/{id}"));
    assert_eq!(svc["Spec"], want);

    // An update that changes fields of every kind; the old spec becomes PreviousSpec.
    let mut next = want.clone();
    next["TaskTemplate"]["ContainerSpec"]["CapabilityAdd"] = json!(["CAP_SYS_TIME"]);
    next["TaskTemplate"]["ContainerSpec"]["Sysctls"] = json!({"net.ipv4.ip_forward": "1"});
    next["TaskTemplate"]["ContainerSpec"]["Privileges"]["NoNewPrivileges"] = json!(false);
    next["TaskTemplate"]["ContainerSpec"]["Ulimits"] = json!([{"Name": "nproc", "Soft": 10, "Hard": 20}]);
    next["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"] =
        json!([{"DiscreteResourceSpec": {"Kind": "fpga", "Value": 2}}]);
    next["TaskTemplate"]["ForceUpdate"] = json!(2);
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let (status, v) = post(&api, &format!("/v1.44/services/{id}/update?version={version}"), &next);
    assert_eq!(status, 200, "{v}");
    let svc = get(&api, &format!("/v1.44/services/{id}"));
    assert_eq!(svc["Spec"], next);
    assert_eq!(svc["PreviousSpec"], want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_match_ignoring_case_and_defaults_come_only_when_asked() {
    let (_store, api) = single_manager();
    api.docker(&["swarm", "init"]).ok();
    // docker-py's spellings: lower-case mode keys, `global`, a lower-case `order`.
    let id = create(
        &api,
        &json!({"Name": "ci", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                "Mode": {"replicated": {"replicas": 2}},
                "RollbackConfig": {"parallelism": 1, "order": "start-first"}}),
    );
    let spec = get(&api, &format!("/services/{id}"))["Spec"].clone();
    assert_eq!(spec["Mode"], json!({"Replicated": {"Replicas": 2}}));
    assert_eq!(spec["RollbackConfig"]["Order"], "start-first");
    let g = create(
        &api,
        &json!({"name": "ci-global", "taskTemplate": {"containerSpec": {"image": "busybox"}}, "mode": {"global": {}}}),
    );
    let spec = get(&api, &format!("/services/{g}"))["Spec"].clone();
    assert_eq!(
        (&spec["Name"], &spec["Mode"]),
        (&json!("ci-global"), &json!({"Global": {}}))
    );
    // String values are not folded: an unknown spelling is still refused.
    let (status, v) = post(
        &api,
        "/services/create",
        &json!({"Name": "bad", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                "UpdateConfig": {"Order": "Start-First"}}),
    );
    assert_eq!(status, 400, "{v}");

    // insertDefaults: Docker's defaults only when asked; ForceUpdate always written.
    let plain = get(&api, &format!("/services/{g}"))["Spec"].clone();
    let filled = get(&api, &format!("/services/{g}?insertDefaults=true"))["Spec"].clone();
    assert!(plain.get("RollbackConfig").is_none(), "{plain}");
    assert_eq!(filled["RollbackConfig"]["Order"], "stop-first", "{filled}");
    assert_eq!(filled["TaskTemplate"]["RestartPolicy"]["Condition"], "any", "{filled}");
    assert_eq!(
        filled["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
        10_000_000_000i64
    );
    assert_eq!(plain["TaskTemplate"]["ForceUpdate"], 0, "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_network_may_be_removed_once_nothing_publishes_through_it() {
    let (_store, api) = single_manager();
    api.docker(&["swarm", "init"]).ok();
    let id = create(
        &api,
        &json!({"Name": "pub", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 30081}]}}),
    );
    let r = api.raw("DELETE", "/v1.44/networks/ingress", None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.json()["message"].as_str().unwrap().contains(&format!(
            "ingress network cannot be removed because service {id} depends on it"
        )),
        "{}",
        r.body
    );
    assert_eq!(api.raw("DELETE", &format!("/services/{id}"), None).status, 200);
    let r = api.raw("DELETE", "/v1.44/networks/ingress", None);
    assert_eq!(r.status, 204, "{}", r.body);
    let ls = api.docker(&["network", "ls", "--filter", "driver=overlay", "-q"]).ok();
    assert!(ls.lines().is_empty(), "{}", ls.stdout);
}
