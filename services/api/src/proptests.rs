//! Property tests of request decoding and spec validation: the pure
//! functions behind `POST /services/create` (and update) and
//! `POST /networks/create`, fed arbitrary bytes, arbitrary JSON built from
//! Docker's field names, valid specs, and valid specs with one field made
//! invalid. Whatever comes in: no panic; a refusal is a 400 with a message;
//! an accepted service spec keeps Docker's limits and decodes to itself again.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use shoal_shared::model::ServiceSpec;

use crate::error::ApiError;
use crate::networks::{decode_network, validate_ipam};
use crate::spec::{decode_service, MAX_REPLICAS};

/// Field names of the bodies (and a few others), so that arbitrary objects
/// reach deep into the specs instead of only being unknown keys.
const KEYS: &[&str] = &[
    "Name",
    "Labels",
    "TaskTemplate",
    "ContainerSpec",
    "Image",
    "Command",
    "Args",
    "Env",
    "Mounts",
    "Type",
    "Source",
    "Target",
    "Mode",
    "Replicated",
    "Replicas",
    "Global",
    "Resources",
    "Limits",
    "Reservations",
    "NanoCPUs",
    "MemoryBytes",
    "Pids",
    "RestartPolicy",
    "Condition",
    "Delay",
    "MaxAttempts",
    "Window",
    "Placement",
    "Constraints",
    "MaxReplicas",
    "UpdateConfig",
    "RollbackConfig",
    "Parallelism",
    "FailureAction",
    "Monitor",
    "MaxFailureRatio",
    "Order",
    "EndpointSpec",
    "Ports",
    "TargetPort",
    "PublishedPort",
    "Protocol",
    "PublishMode",
    "Networks",
    "Healthcheck",
    "Driver",
    "Scope",
    "IPAM",
    "Config",
    "Subnet",
    "Gateway",
    "IPRange",
    "EnableIPv6",
    "Options",
    "Internal",
    "Attachable",
    "Ingress",
    "x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-3i64..70_000).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN/inf", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (-1.0f64..3.0).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            "busybox",
            "web",
            "overlay",
            "tcp",
            "udp",
            "host",
            "ingress",
            "dnsrr",
            "vip",
            "bind",
            "volume",
            "/data",
            "rel",
            "10.0.0.0/24",
            "10.0.0.1",
            "999.1.1.1/99",
            "zz",
            "fd00::/64",
            "node.role==manager",
            "pause",
            "rollback",
            "start-first",
            "any",
            "none",
        ])
        .prop_map(|s| json!(s)),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

/// A refusal: a 400 with something to say.
fn refusal_is_a_400(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.status.as_u16(), 400, "{}", e.message);
    prop_assert!(!e.message.trim().is_empty());
    prop_assert!(e.message.len() < 4096, "message too long: {} bytes", e.message.len());
    Ok(())
}

/// What every accepted service spec satisfies, and that it decodes to itself.
fn accepted_spec_holds(spec: &ServiceSpec) -> Result<(), TestCaseError> {
    prop_assert!(spec.replicas().is_none_or(|r| r <= MAX_REPLICAS));
    let image = spec.task_template.container_spec.as_ref().map(|c| c.image.trim());
    prop_assert!(image.is_some_and(|i| !i.is_empty()));
    for u in [&spec.update_config, &spec.rollback_config].into_iter().flatten() {
        prop_assert!(u.max_failure_ratio.is_none_or(|r| (0.0..=1.0).contains(&r)));
    }
    for p in spec.endpoint_spec.iter().flat_map(|e| e.ports.iter()) {
        prop_assert!((1..=65535).contains(&p.target_port) && p.published_port <= 65535);
    }
    let again = serde_json::to_vec(spec).unwrap();
    let back = decode_service(&again).map_err(|e| TestCaseError::fail(format!("re-decode refused: {e}")))?;
    prop_assert_eq!(&back, spec);
    Ok(())
}

fn check_service_body(body: &[u8]) -> Result<(), TestCaseError> {
    match decode_service(body) {
        Ok(spec) => accepted_spec_holds(&spec),
        Err(e) => refusal_is_a_400(&e),
    }
}

fn check_network_body(body: &[u8]) -> Result<(), TestCaseError> {
    match decode_network(body) {
        Ok(spec) => {
            prop_assert!(!spec.name.trim().is_empty());
            if let Some(ipam) = &spec.ipam_options {
                prop_assert!(validate_ipam(&ipam.configs, spec.ipv6_enabled).is_ok());
            }
            Ok(())
        }
        Err(e) => refusal_is_a_400(&e),
    }
}

/// A valid service spec as a client would send it.
fn valid_service() -> impl Strategy<Value = Value> {
    (
        "[a-z0-9][a-z0-9_.-]{0,20}",
        0..=MAX_REPLICAS,
        prop::option::of(prop_oneof![Just(0i64), 1_000_000i64..64_000_000_000]),
        prop::option::of(prop_oneof![Just(0i64), 4_194_304i64..1 << 40]),
        prop::option::of(0.0f64..=1.0),
        prop::collection::btree_set(1u32..=65535, 0..4),
        1u32..=65535,
    )
        .prop_map(|(name, replicas, cpus, mem, ratio, published, target)| {
            let mut resources = Map::new();
            if let Some(c) = cpus {
                resources.insert("NanoCPUs".into(), json!(c));
            }
            if let Some(m) = mem {
                resources.insert("MemoryBytes".into(), json!(m));
            }
            let ports: Vec<Value> = published
                .iter()
                .map(|p| json!({"Protocol": "tcp", "TargetPort": target, "PublishedPort": p}))
                .chain([json!({"TargetPort": target})])
                .collect();
            let mut update = Map::new();
            if let Some(r) = ratio {
                update.insert("MaxFailureRatio".into(), json!(r));
            }
            json!({
                "Name": name,
                "TaskTemplate": {
                    "ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "60"]},
                    "Resources": {"Limits": resources.clone(), "Reservations": resources},
                },
                "Mode": {"Replicated": {"Replicas": replicas}},
                "UpdateConfig": update.clone(),
                "RollbackConfig": update,
                "EndpointSpec": {"Ports": ports},
            })
        })
}

/// One field of a valid spec made invalid, as Docker would refuse it.
fn one_bad_field() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        (MAX_REPLICAS + 1..=u64::MAX).prop_map(|n| ("/Mode/Replicated/Replicas", json!(n))),
        (i64::MIN..1_000_000i64)
            .prop_filter("0 is unset", |n| *n != 0)
            .prop_map(|n| ("/TaskTemplate/Resources/Limits/NanoCPUs", json!(n))),
        (i64::MIN..4_194_304i64)
            .prop_filter("0 is unset", |n| *n != 0)
            .prop_map(|n| ("/TaskTemplate/Resources/Reservations/MemoryBytes", json!(n))),
        prop_oneof![-1e12f64..-1e-9, 1.000001f64..1e12].prop_map(|r| ("/UpdateConfig/MaxFailureRatio", json!(r))),
        prop_oneof![-1e12f64..-1e-9, 1.000001f64..1e12].prop_map(|r| ("/RollbackConfig/MaxFailureRatio", json!(r))),
        (65536u32..=u32::MAX).prop_map(|p| ("/EndpointSpec/Ports/0/PublishedPort", json!(p))),
        prop_oneof![Just(0u32), 65536u32..=u32::MAX].prop_map(|p| ("/EndpointSpec/Ports/0/TargetPort", json!(p))),
        Just(("/TaskTemplate/ContainerSpec/Image", json!(""))),
        "[a-z]{1,8}[!@ /][a-z]{0,8}".prop_map(|n| ("/Name", json!(n))),
        Just(("/TaskTemplate", json!([{"Image": "busybox"}]))),
    ]
}

/// Sets the value at a JSON pointer, creating missing object members on the way.
fn set_path(v: &mut Value, path: &str, to: Value) {
    let mut at = v;
    for part in path.trim_start_matches('/').split('/') {
        at = match at {
            Value::Array(a) => &mut a[part.parse::<usize>().unwrap()],
            other => &mut other[part],
        };
    }
    *at = to;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_refusals_are_400s(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_service_body(&body)?;
        check_network_body(&body)?;
    }

    #[test]
    fn arbitrary_json_never_panics_and_accepted_specs_round_trip(v in arb_json()) {
        let body = serde_json::to_vec(&v).unwrap();
        check_service_body(&body)?;
        check_network_body(&body)?;
        // The same value as the body's TaskTemplate, and as a network's IPAM.
        let svc = serde_json::to_vec(&json!({"Name": "p", "TaskTemplate": v.clone(), "Mode": v.clone()})).unwrap();
        check_service_body(&svc)?;
        let net = serde_json::to_vec(&json!({"Name": "n", "Driver": "overlay", "IPAM": {"Config": [v]}})).unwrap();
        check_network_body(&net)?;
    }

    #[test]
    fn valid_specs_are_accepted_and_round_trip(v in valid_service()) {
        let body = serde_json::to_vec(&v).unwrap();
        let spec = decode_service(&body).map_err(|e| TestCaseError::fail(format!("{e} for {v}")))?;
        prop_assert_eq!(spec.name.as_str(), v["Name"].as_str().unwrap());
        prop_assert_eq!(spec.replicas(), v["Mode"]["Replicated"]["Replicas"].as_u64());
        prop_assert_eq!(spec.endpoint_spec.as_ref().map(|e| e.ports.len()), v["EndpointSpec"]["Ports"].as_array().map(Vec::len));
        accepted_spec_holds(&spec)?;
    }

    #[test]
    fn a_spec_with_one_bad_field_is_refused_with_a_400((mut v, (path, bad)) in (valid_service(), one_bad_field())) {
        set_path(&mut v, path, bad);
        let e = decode_service(&serde_json::to_vec(&v).unwrap()).err();
        prop_assert!(e.is_some(), "accepted with {} spoiled: {}", path, v);
        refusal_is_a_400(&e.unwrap())?;
    }

    #[test]
    fn ipam_subnets_and_gateways_never_panic(subnet in "[0-9a-f:./]{0,24}", gw in "[0-9a-f:.]{0,20}", v6 in any::<bool>()) {
        let body = json!({"Name": "n", "Driver": "overlay", "EnableIPv6": v6,
            "IPAM": {"Config": [{"Subnet": subnet, "Gateway": gw}]}});
        check_network_body(&serde_json::to_vec(&body).unwrap())?;
    }
}
