//! shoal-api resolves service, node and task references (exact ID, then
//! exact name, then unique ID prefix, Docker's rule and errors) through the
//! store's indexes: a lookup reads the objects it names, not every object of
//! their kind. Shown with a service record that cannot be decoded: every
//! request that reads all services fails on it, lookups of others do not.

use serde_json::{json, Value};
use shoal_shared::model::{Service, ServiceSpec};
use shoal_shared::store::{Kind, Op, Record, StoreObject, TxRequest};
use shoal_tests::api::{single_manager, Api};

fn create(api: &Api, name: &str) -> String {
    let body = json!({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}).to_string();
    let r = api.raw("POST", "/v1.50/services/create", Some(body.as_bytes()));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["ID"].as_str().expect("ID").to_string()
}

fn get(api: &Api, path: &str) -> (u16, Value) {
    let r = api.raw("GET", path, None);
    let v = if r.body.is_empty() { Value::Null } else { r.json() };
    (r.status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_read_only_the_objects_they_name() {
    let (store, api) = single_manager();
    api.docker(&["swarm", "init"]).ok();
    let web = create(&api, "web");
    let db = create(&api, "db");

    // Services with chosen IDs (for an ambiguous prefix), and one whose body
    // is not a service at all.
    let client = store.client().await;
    let spec = |name: &str| ServiceSpec {
        name: name.into(),
        ..ServiceSpec::default()
    };
    let mut bogus = Record::blob("zzzzbogus", json!("not a service"));
    bogus.kind = Kind::Service;
    bogus.name = Some("bogus".into());
    let ops = vec![
        Op::Create {
            record: Service::new("amb1", spec("one")).to_record().unwrap(),
        },
        Op::Create {
            record: Service::new("amb2", spec("two")).to_record().unwrap(),
        },
        Op::Create { record: bogus },
    ];
    client.tx(TxRequest::new(ops)).await.expect("store write");
    let (status, _) = get(&api, "/services");
    assert_eq!(status, 500, "listing every service reads the bad record");

    // Exact ID, exact name, unique ID prefix.
    for key in [web.as_str(), "web", &web[..8]] {
        let (status, svc) = get(&api, &format!("/v1.50/services/{key}"));
        assert_eq!((status, svc["ID"].as_str()), (200, Some(web.as_str())), "{key}: {svc}");
    }
    let (status, svc) = get(&api, "/services/two");
    assert_eq!((status, svc["ID"].as_str()), (200, Some("amb2")));
    let (status, err) = get(&api, "/services/amb");
    assert_eq!(
        (status, err["message"].as_str()),
        (400, Some("service amb is ambiguous (2 matches found)"))
    );
    let (status, err) = get(&api, "/services/nope");
    assert_eq!((status, err["message"].as_str()), (404, Some("service nope not found")));

    // Task lists filtered by service (name or ID) and node, and a task lookup.
    // (`{"service":["web"]}` and so on, URL-encoded.)
    for q in [
        "/tasks?filters=%7B%22service%22:%5B%22web%22%5D%7D".to_string(),
        format!("/tasks?filters=%7B%22service%22:%5B%22{db}%22%5D%7D"),
        "/tasks?filters=%7B%22node%22:%5B%22self%22%5D%7D".to_string(),
        "/tasks?filters=%7B%22service%22:%5B%22nope%22%5D%7D".to_string(),
    ] {
        let (status, tasks) = get(&api, &q);
        assert_eq!((status, tasks), (200, json!([])), "{q}");
    }
    let (status, err) = get(&api, "/tasks/nope");
    assert_eq!((status, err["message"].as_str()), (404, Some("task nope not found")));
    let (status, _) = get(&api, "/services?filters=%7B%22id%22:%5B%22amb%22%5D%7D&status=true");
    assert_eq!(status, 200, "a list narrowed by ID prefix reads only those");

    // Nodes: by ID, self and name.
    let node = api.node_id();
    let (status, n) = get(&api, "/nodes/self");
    assert_eq!((status, n["ID"].as_str()), (200, Some(node.as_str())));
    let hostname = n["Description"]["Hostname"].as_str().unwrap_or_default().to_string();
    assert!(!hostname.is_empty(), "{n}");
    let (status, n) = get(&api, &format!("/nodes/{hostname}"));
    assert_eq!((status, n["ID"].as_str()), (200, Some(node.as_str())), "{hostname}");
    let (status, n) = get(&api, &format!("/nodes/{}", &node[..6]));
    assert_eq!((status, n["ID"].as_str()), (200, Some(node.as_str())));

    // Update and delete by name.
    let (_, svc) = get(&api, "/services/web");
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let spec = serde_json::to_string(&svc["Spec"]).unwrap();
    let r = api.raw(
        "POST",
        &format!("/services/web/update?version={version}"),
        Some(spec.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.raw("DELETE", "/services/db", None).status, 200);
    assert_eq!(get(&api, &format!("/services/{db}")).0, 404);
    assert_eq!(api.raw("DELETE", "/services/amb1", None).status, 200);
    assert_eq!(get(&api, "/services/one").0, 404);
}
