//! What a service refers to (secrets, configs, networks) cannot be removed
//! while a service that refers to it is being created: the removal and the
//! creation each check the other in their own store write (`Op::NoneMatch`,
//! `Op::Exists`), not only by a read before it. Many removals race many
//! creations through the API; afterwards no service refers to something
//! that is gone.

use serde_json::{json, Value};
use shoal_tests::api::{single_manager, Api};

const ROUNDS: usize = 40;

fn post(api: &Api, path: &str, body: Value) -> (u16, Value) {
    let r = api.raw("POST", path, Some(body.to_string().as_bytes()));
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

fn exists(api: &Api, path: &str) -> bool {
    match api.raw("GET", path, None).status {
        200 => true,
        404 => false,
        s => panic!("GET {path}: {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_racing_a_service_that_refers_to_it_leaves_no_dangling_reference() {
    let (_store, api) = single_manager();
    api.docker(&["swarm", "init"]).ok();
    // One secret and one network per round.
    let mut made = Vec::new();
    for i in 0..ROUNDS {
        let (s, secret) = post(
            &api,
            "/secrets/create",
            json!({"Name": format!("s{i}"), "Data": "aGk="}),
        );
        assert_eq!(s, 201, "{secret}");
        let (s, net) = post(
            &api,
            "/networks/create",
            json!({"Name": format!("n{i}"), "Driver": "overlay", "CheckDuplicate": true}),
        );
        assert_eq!(s, 201, "{net}");
        made.push((
            secret["ID"].as_str().unwrap().to_string(),
            net["Id"].as_str().unwrap().to_string(),
        ));
    }
    // Each round: a service referring to both, created while both are removed.
    std::thread::scope(|scope| {
        for (i, (secret, net)) in made.iter().enumerate() {
            let api = &api;
            scope.spawn(move || {
                let spec = json!({
                    "Name": format!("svc{i}"),
                    "TaskTemplate": {
                        "ContainerSpec": {
                            "Image": "busybox",
                            "Secrets": [{"SecretID": secret, "SecretName": format!("s{i}"),
                                         "File": {"Name": format!("s{i}"), "UID": "0", "GID": "0", "Mode": 292}}]
                        },
                        "Networks": [{"Target": net}]
                    },
                    "Mode": {"Replicated": {"Replicas": 0}}
                });
                api.raw("POST", "/services/create", Some(spec.to_string().as_bytes()))
            });
            scope.spawn(move || api.raw("DELETE", &format!("/secrets/{secret}"), None));
            scope.spawn(move || api.raw("DELETE", &format!("/networks/{net}"), None));
        }
    });
    let mut kept = 0;
    for (i, (secret, net)) in made.iter().enumerate() {
        if exists(&api, &format!("/services/svc{i}")) {
            kept += 1;
            assert!(
                exists(&api, &format!("/secrets/{secret}")),
                "svc{i} refers to removed secret s{i}"
            );
            assert!(
                exists(&api, &format!("/networks/{net}")),
                "svc{i} refers to removed network n{i}"
            );
        }
    }
    eprintln!("{kept} of {ROUNDS} services were created before their references' removal");
}
