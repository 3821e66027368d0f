//! Request bodies: strict JSON decoding that names the bad field, and
//! service spec validation with Docker's defaults ([`DEFAULTS`]) filled in
//! (done here, once).

use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_shared::model::{EndpointMode, EndpointSpec, PublishMode, ServiceSpec, UpdateConfig, DEFAULTS};

use crate::error::{clip, ApiError, ApiResult};

/// Most replicas a replicated service may ask for. More is refused at the API
/// (the scheduler would make a task object per replica); the scheduler caps
/// at the same number.
pub const MAX_REPLICAS: u64 = 100_000;

/// Decodes a JSON body; the error names the field (`Mode.Replicated.Replicas: ...`).
/// Keys match fields as Go's decoder matches them: exactly, else ignoring case ([`crate::fold`]).
/// Go clients write `null` for empty maps and lists: nulls are dropped first.
/// The body must be a JSON object, and no object inside it may be given as an
/// array (serde would otherwise fill a struct from a list, positionally).
pub fn decode<T: DeserializeOwned + Serialize>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request(
            "request body is empty: a JSON object is required",
        ));
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "invalid JSON: cannot unmarshal {} into an object: the body must be a JSON object",
            json_kind(&v)
        )));
    }
    strip_nulls(&mut v);
    let input = v.clone();
    let decoded: T = serde_path_to_error::deserialize(crate::fold::Folded(v)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON: {path}: {inner}"))
        }
    })?;
    let shape =
        serde_json::to_value(&decoded).map_err(|e| ApiError::internal(format!("encoding a decoded body: {e}")))?;
    if let Some(path) = array_given_for_object(&input, &shape, "") {
        return Err(ApiError::bad_request(format!(
            "invalid JSON: {path}: cannot unmarshal array into an object"
        )));
    }
    Ok(decoded)
}

/// JSON's name for a value's type, as Go's decoder says it.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The path of an array in `input` whose decoded counterpart in `decoded` is
/// an object: a struct that serde filled from a list.
fn array_given_for_object(input: &serde_json::Value, decoded: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (input, decoded) {
        (Array(_), Object(_)) => Some(path.to_string()),
        (Object(a), Object(b)) => a.iter().find_map(|(k, av)| {
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            b.get(k).and_then(|bv| array_given_for_object(av, bv, &sub))
        }),
        (Array(a), Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (av, bv))| array_given_for_object(av, bv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Removes `null` members of objects, recursively.
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Whether `name` is a valid service name (a DNS label: letters, digits, `-`, `_`, `.`; 63 at most).
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A SwarmKit `InvalidArgument` error, as Docker passes it on (400).
fn invalid(desc: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("rpc error: code = InvalidArgument desc = {desc}"))
}

/// Go's `%g` for a float, as SwarmKit's messages print numbers (`-1e-09`, `0.001`).
fn go_g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let e = format!("{x:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{x}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// SwarmKit's resource checks: a CPU value under 0.001 or memory under 4 MiB
/// (negative ones included) is refused; 0 means unset.
fn validate_resources(nano_cpus: i64, memory_bytes: i64) -> ApiResult<()> {
    if nano_cpus != 0 && nano_cpus < 1_000_000 {
        return Err(invalid(format!(
            "invalid cpu value {}: Must be at least {}",
            go_g(nano_cpus as f64 / 1e9),
            go_g(1e6 / 1e9)
        )));
    }
    if memory_bytes != 0 && memory_bytes < 4 * 1024 * 1024 {
        return Err(invalid(format!(
            "invalid memory value {memory_bytes}: Must be at least 4MiB"
        )));
    }
    Ok(())
}

/// SwarmKit's update/rollback check: the failure ratio is a fraction.
fn validate_update(cfg: Option<&UpdateConfig>) -> ApiResult<()> {
    if let Some(r) = cfg.and_then(|c| c.max_failure_ratio) {
        if !(0.0..=1.0).contains(&r) {
            return Err(invalid(
                "TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1",
            ));
        }
    }
    Ok(())
}

/// Ports: in 1..=65535 (a published 0 lets Swarm pick one), no published
/// port twice for one protocol, and no routing-mesh port with DNS round-robin.
fn validate_ports(ep: Option<&EndpointSpec>) -> ApiResult<()> {
    let Some(ep) = ep else { return Ok(()) };
    let mut seen = std::collections::HashSet::new();
    for p in &ep.ports {
        if !(1..=65535).contains(&p.target_port) {
            return Err(invalid(format!(
                "EndpointSpec: invalid target port {}: must be between 1 and 65535",
                p.target_port
            )));
        }
        if p.published_port > 65535 {
            return Err(invalid(format!(
                "EndpointSpec: invalid published port {}: must be between 1 and 65535 (0 lets Swarm pick one)",
                p.published_port
            )));
        }
        let ingress = p.publish_mode.unwrap_or_default() == PublishMode::Ingress;
        if ep.mode == Some(EndpointMode::Dnsrr) && ingress {
            return Err(invalid(
                "EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
            ));
        }
        if p.published_port != 0 && !seen.insert((p.published_port, p.protocol.unwrap_or_default())) {
            return Err(invalid("EndpointSpec: duplicate published ports provided"));
        }
    }
    Ok(())
}

/// Validates a service spec and fills Docker's defaults. Errors name the field.
/// An empty name is left empty here: [`crate::names::random_name`] gives one on create.
pub fn validate_service(spec: &mut ServiceSpec) -> ApiResult<()> {
    if !spec.name.is_empty() && !valid_name(&spec.name) {
        return Err(invalid(format!(
            "Name: name {:?} is invalid: use letters, digits, '-', '_' and '.' (63 characters at most), starting \
             with a letter or digit",
            clip(&spec.name)
        )));
    }
    let image_empty = spec
        .task_template
        .container_spec
        .as_ref()
        .is_none_or(|c| c.image.trim().is_empty());
    if image_empty {
        return Err(invalid(
            "TaskTemplate.ContainerSpec.Image: image reference must be provided",
        ));
    }
    let m = &spec.mode;
    let modes = [
        m.replicated.is_some(),
        m.global.is_some(),
        m.replicated_job.is_some(),
        m.global_job.is_some(),
    ];
    if modes.iter().filter(|set| **set).count() > 1 {
        return Err(invalid(
            "Mode: only one of Replicated, Global, ReplicatedJob or GlobalJob may be set",
        ));
    }
    if spec.is_job() && spec.update_config.is_some() {
        return Err(invalid("Jobs may not have an update config"));
    }
    if let Some(job) = spec.mode.replicated_job.as_mut() {
        for (field, n) in [
            ("MaxConcurrent", job.max_concurrent),
            ("TotalCompletions", job.total_completions),
        ] {
            if n.is_some_and(|n| n > MAX_REPLICAS) {
                return Err(invalid(format!(
                    "Mode.ReplicatedJob.{field}: {} is more than the maximum of {MAX_REPLICAS}",
                    n.unwrap_or_default()
                )));
            }
        }
        // Docker's defaults, stored: one at a time, as many as run at once.
        let concurrent = job.concurrency();
        job.total_completions.get_or_insert(concurrent);
        job.max_concurrent = Some(concurrent);
    }
    if let Some(n) = spec.mode.replicated.as_ref().and_then(|r| r.replicas) {
        if n > MAX_REPLICAS {
            return Err(invalid(format!(
                "Mode.Replicated.Replicas: {n} replicas is more than the maximum of {MAX_REPLICAS}"
            )));
        }
    }
    if let Some(p) = &spec.task_template.placement {
        for c in &p.constraints {
            let ok = ["==", "!="].iter().any(|op| {
                c.split_once(op)
                    .is_some_and(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
            });
            if !ok {
                return Err(invalid(format!(
                    "TaskTemplate.Placement.Constraints: invalid constraint {:?}: want key==value or key!=value",
                    clip(c)
                )));
            }
        }
    }
    if let Some(r) = &spec.task_template.resources {
        if let Some(l) = &r.limits {
            validate_resources(l.nano_cpus, l.memory_bytes)?;
            if l.pids < 0 {
                return Err(invalid(format!(
                    "TaskTemplate.Resources.Limits.Pids: invalid pids value {}: must not be negative",
                    l.pids
                )));
            }
        }
        if let Some(res) = &r.reservations {
            validate_resources(res.nano_cpus, res.memory_bytes)?;
        }
    }
    if let Some(cs) = &spec.task_template.container_spec {
        for m in &cs.mounts {
            if !m.target.starts_with('/') {
                return Err(invalid(format!(
                    "TaskTemplate.ContainerSpec.Mounts: invalid mount target {:?}: must be an absolute path",
                    clip(&m.target)
                )));
            }
            if m.kind == shoal_shared::model::MountType::Bind && !m.source.starts_with('/') {
                return Err(invalid(format!(
                    "TaskTemplate.ContainerSpec.Mounts: invalid bind mount source {:?}: must be an absolute path",
                    clip(&m.source)
                )));
            }
        }
    }
    validate_update(spec.update_config.as_ref())?;
    validate_update(spec.rollback_config.as_ref())?;
    validate_ports(spec.endpoint_spec.as_ref())?;
    // Stored as given, as Docker stores it; only a missing replica count is
    // written (Docker's daemon makes a spec without a mode replicated, 1).
    // Readers fall back to DEFAULTS; `insertDefaults` shows them (insert_defaults).
    if spec.mode_unset() || spec.mode.replicated.is_some() {
        spec.mode
            .replicated
            .get_or_insert_with(Default::default)
            .replicas
            .get_or_insert(DEFAULTS.replicas);
    }
    Ok(())
}

/// A stored spec with Docker's defaults filled in, as `GET /services/{id}?insertDefaults=true`
/// answers (SwarmKit's `defaults.Service`: stop grace period, DNS config,
/// resources, restart policy, placement, update and rollback config; and
/// endpoint mode vip).
pub fn insert_defaults(spec: &mut ServiceSpec) {
    DEFAULTS.fill_service(spec);
    let tt = &mut spec.task_template;
    tt.resources.get_or_insert_with(|| DEFAULTS.resources.clone());
    tt.placement.get_or_insert_with(|| DEFAULTS.placement.clone());
    if let Some(c) = tt.container_spec.as_mut() {
        c.stop_grace_period.get_or_insert(DEFAULTS.stop_grace_period);
        c.dns_config.get_or_insert_with(Default::default);
    }
}

/// Decodes and validates a service spec in one go; unknown modes are refused
/// (serde would otherwise silently ignore `{"Mode": {"Bogus": {}}}`).
pub fn decode_service(body: &[u8]) -> ApiResult<ServiceSpec> {
    let raw: serde_json::Value = decode(body)?;
    let mode = raw
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("Mode")))
        .and_then(|(_, m)| m.as_object());
    if let Some(mode) = mode {
        let known = |k: &str| {
            ["Replicated", "Global", "ReplicatedJob", "GlobalJob"]
                .iter()
                .any(|m| k.eq_ignore_ascii_case(m))
        };
        if let Some(k) = mode.keys().find(|k| !known(k)) {
            return Err(invalid(format!(
                "Mode: unknown mode {:?} (want Replicated, Global, ReplicatedJob or GlobalJob)",
                clip(k)
            )));
        }
    }
    let mut spec: ServiceSpec = decode(body)?;
    validate_service(&mut spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_shared::model::{FailureAction, RestartCondition, UpdateOrder};

    use super::*;

    #[test]
    fn defaults_are_filled_and_bad_fields_are_named() {
        let mut spec =
            decode_service(br#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#).unwrap();
        assert_eq!(spec.mode, shoal_shared::model::ServiceMode::replicated(1));
        // Stored as given: the other defaults only when asked for.
        assert_eq!(
            (&spec.update_config, &spec.task_template.restart_policy),
            (&None, &None)
        );
        insert_defaults(&mut spec);
        assert_eq!(
            spec.task_template.container_spec.as_ref().unwrap().stop_grace_period,
            Some(Duration::from_secs(10))
        );
        let rp = spec.task_template.restart_policy.unwrap();
        assert_eq!(rp.condition, Some(RestartCondition::Any));
        assert_eq!(rp.delay, Some(Duration::from_secs(5)));
        let u = spec.update_config.unwrap();
        assert_eq!(
            (u.parallelism, u.failure_action, u.monitor, u.order),
            (
                1,
                Some(FailureAction::Pause),
                Some(Duration::from_secs(5)),
                Some(UpdateOrder::StopFirst)
            )
        );

        let e = decode_service(
            br#"{"Name":"w","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"Mode":{"Replicated":{"Replicas":-1}}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("Mode.Replicated.Replicas"), "{}", e.message);
        let e = decode_service(br#"{"Name":"w","TaskTemplate":{"ContainerSpec":{"Image":""}}}"#).unwrap_err();
        assert!(e.message.contains("Image"), "{}", e.message);
        let e = decode_service(br#"{"TaskTemplate":{"ContainerSpec":{"Image":"b"}},"Mode":{"Bogus":{}}}"#).unwrap_err();
        assert!(e.message.contains("Mode: unknown mode"), "{}", e.message);
        let e = decode_service(br#"{"TaskTemplate":{"ContainerSpec":{"Image":"b"},"RestartPolicy":{"Delay":-5}}}"#)
            .unwrap_err();
        assert!(e.message.contains("TaskTemplate.RestartPolicy.Delay"), "{}", e.message);
        let spec =
            decode_service(br#"{"Name":"n","Labels":null,"TaskTemplate":{"ContainerSpec":{"Image":"b","Env":null}}}"#);
        assert!(spec.is_ok(), "nulls are accepted as empty: {spec:?}");
        let e = decode_service(br#"{"Name": 5}"#).unwrap_err();
        assert!(e.message.contains("Name"), "{}", e.message);
        let e = decode_service(
            br#"{"TaskTemplate":{"ContainerSpec":{"Image":"b","Mounts":[{"Type":"bind","Source":"rel","Target":"/d"}]}}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("invalid bind mount source"), "{}", e.message);
        let e = decode_service(
            br#"{"TaskTemplate":{"ContainerSpec":{"Image":"b","Mounts":[{"Type":"tmpfs","Target":"d"}]}}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("invalid mount target"), "{}", e.message);
        let e = decode_service(
            br#"{"TaskTemplate":{"ContainerSpec":{"Image":"b","Mounts":[{"Type":"nfs","Target":"/d"}]}}}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("TaskTemplate.ContainerSpec.Mounts[0].Type"),
            "{}",
            e.message
        );
        assert!(decode_service(b"{not json").is_err());
        assert!(decode_service(b"").is_err());
    }

    fn refused(body: &str) -> String {
        let e = decode_service(body.as_bytes()).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{body}: {}", e.message);
        e.message
    }

    fn svc(extra: &str) -> String {
        format!(r#"{{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"b"}}{extra}}}}}"#)
    }

    #[test]
    fn replica_counts_are_capped() {
        let at_max = format!(
            r#"{{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"b"}}}},"Mode":{{"Replicated":{{"Replicas":{MAX_REPLICAS}}}}}}}"#
        );
        assert_eq!(
            decode_service(at_max.as_bytes()).unwrap().replicas(),
            Some(MAX_REPLICAS)
        );
        let m = refused(
            r#"{"Name":"w","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"Mode":{"Replicated":{"Replicas":9223372036854775807}}}"#,
        );
        assert_eq!(
            m,
            "rpc error: code = InvalidArgument desc = Mode.Replicated.Replicas: 9223372036854775807 replicas is more \
             than the maximum of 100000"
        );
    }

    #[test]
    fn dockers_invalid_specs_are_refused_in_its_words() {
        let m = refused(&svc(r#","Resources":{"Limits":{"NanoCPUs":-1}}"#));
        assert!(m.ends_with("invalid cpu value -1e-09: Must be at least 0.001"), "{m}");
        let m = refused(&svc(r#","Resources":{"Reservations":{"MemoryBytes":-5}}"#));
        assert!(m.ends_with("invalid memory value -5: Must be at least 4MiB"), "{m}");
        let m = refused(&svc(r#","Resources":{"Limits":{"Pids":-1}}"#));
        assert!(m.contains("Pids"), "{m}");
        decode_service(svc(r#","Resources":{"Limits":{"NanoCPUs":1000000,"MemoryBytes":4194304}}"#).as_bytes())
            .unwrap();

        for cfg in ["UpdateConfig", "RollbackConfig"] {
            let body = format!(
                r#"{{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"b"}}}},"{cfg}":{{"MaxFailureRatio":2.5}}}}"#
            );
            let m = refused(&body);
            assert!(
                m.ends_with("TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1"),
                "{m}"
            );
        }

        let ports = |p: &str| {
            format!(
                r#"{{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"b"}}}},"EndpointSpec":{{"Ports":[{p}]}}}}"#
            )
        };
        let m = refused(&ports(r#"{"TargetPort":80,"PublishedPort":70000}"#));
        assert!(m.contains("invalid published port 70000"), "{m}");
        let m = refused(&ports(r#"{"TargetPort":70000}"#));
        assert!(m.contains("invalid target port 70000"), "{m}");
        let m = refused(&ports(
            r#"{"TargetPort":80,"PublishedPort":8080},{"TargetPort":81,"PublishedPort":8080}"#,
        ));
        assert!(m.ends_with("EndpointSpec: duplicate published ports provided"), "{m}");
        decode_service(
            ports(r#"{"TargetPort":80,"PublishedPort":8080},{"TargetPort":80,"PublishedPort":8080,"Protocol":"udp"},{"TargetPort":81},{"TargetPort":82}"#)
                .as_bytes(),
        )
        .unwrap();

        // A list where an object belongs is not a positional struct.
        let m = refused(r#"["w", {}, {"ContainerSpec": {"Image": "b"}}]"#);
        assert!(m.contains("cannot unmarshal array"), "{m}");
        let m = refused(r#"{"Name":"w","TaskTemplate":{"ContainerSpec":["b"]}}"#);
        assert!(m.contains("TaskTemplate.ContainerSpec: cannot unmarshal array"), "{m}");

        // A huge invalid name is quoted clipped.
        let body = format!(
            r#"{{"Name":"{}!","TaskTemplate":{{"ContainerSpec":{{"Image":"b"}}}}}}"#,
            "x".repeat(1 << 20)
        );
        let m = refused(&body);
        assert!(m.len() < 300 && m.contains("xxx...\""), "{}", &m[..m.len().min(300)]);
        // An unnamed spec is valid: the create handler names it.
        assert_eq!(
            decode_service(br#"{"TaskTemplate":{"ContainerSpec":{"Image":"b"}}}"#)
                .unwrap()
                .name,
            ""
        );
    }

    #[test]
    fn go_g_prints_like_go() {
        assert_eq!(go_g(-1e-9), "-1e-09");
        assert_eq!(go_g(0.001), "0.001");
        assert_eq!(go_g(0.0005), "0.0005");
        assert_eq!(go_g(-9.223372036854776e9), "-9.223372036854776e+09");
        assert_eq!(go_g(123456.0), "123456");
    }
}
