//! Request bodies: strict JSON decoding that names the bad field, and
//! service spec validation with Docker's defaults filled in (done here, once).

use std::time::Duration;

use serde::de::DeserializeOwned;
use shoal_shared::model::{
    EndpointMode, EndpointSpec, FailureAction, ReplicatedService, RestartCondition, RestartPolicy, ServiceSpec,
    UpdateConfig, UpdateOrder,
};

use crate::error::{ApiError, ApiResult};

/// Decodes a JSON body; the error names the field (`Mode.Replicated.Replicas: ...`).
/// Go clients write `null` for empty maps and lists: nulls are dropped first.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request(
            "request body is empty: a JSON object is required",
        ));
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    strip_nulls(&mut v);
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON: {path}: {inner}"))
        }
    })
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

/// Docker's restart default: condition any, delay 5 s, no attempt limit.
fn default_restart() -> RestartPolicy {
    RestartPolicy {
        condition: Some(RestartCondition::Any),
        delay: Some(Duration::from_secs(5)),
        max_attempts: Some(0),
        window: None,
    }
}

/// Docker's update (and rollback) defaults: one at a time, pause on failure,
/// monitor 5 s, stop-first.
fn default_update() -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        delay: None,
        failure_action: Some(FailureAction::Pause),
        monitor: Some(Duration::from_secs(5)),
        max_failure_ratio: Some(0.0),
        order: Some(UpdateOrder::StopFirst),
    }
}

fn fill_update(cfg: &mut Option<UpdateConfig>) {
    let d = default_update();
    let c = cfg.get_or_insert_with(default_update);
    c.failure_action
        .get_or_insert(d.failure_action.unwrap_or(FailureAction::Pause));
    c.monitor.get_or_insert(d.monitor.unwrap_or_default());
    c.max_failure_ratio.get_or_insert(0.0);
    c.order.get_or_insert(UpdateOrder::StopFirst);
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

/// Validates a service spec and fills Docker's defaults. Errors name the field.
pub fn validate_service(spec: &mut ServiceSpec) -> ApiResult<()> {
    if !spec.name.is_empty() && !valid_name(&spec.name) {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = InvalidArgument desc = Name: name {:?} is invalid: use letters, digits, '-', '_' and \
             '.' (63 characters at most), starting with a letter or digit",
            spec.name
        )));
    }
    let image_empty = spec
        .task_template
        .container_spec
        .as_ref()
        .is_none_or(|c| c.image.trim().is_empty());
    if image_empty {
        return Err(ApiError::bad_request(
            "rpc error: code = InvalidArgument desc = TaskTemplate.ContainerSpec.Image: image reference must be provided",
        ));
    }
    match (&spec.mode.replicated, &spec.mode.global) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "rpc error: code = InvalidArgument desc = Mode: only one of Replicated or Global may be set",
            ))
        }
        (None, None) => spec.mode.replicated = Some(ReplicatedService { replicas: Some(1) }),
        (Some(r), None) if r.replicas.is_none() => spec.mode.replicated = Some(ReplicatedService { replicas: Some(1) }),
        _ => {}
    }
    if let Some(p) = &spec.task_template.placement {
        for c in &p.constraints {
            let ok = ["==", "!="].iter().any(|op| {
                c.split_once(op)
                    .is_some_and(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
            });
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "rpc error: code = InvalidArgument desc = TaskTemplate.Placement.Constraints: invalid constraint \
                     {c:?}: want key==value or key!=value"
                )));
            }
        }
    }
    if let Some(cs) = &spec.task_template.container_spec {
        for m in &cs.mounts {
            if !m.target.starts_with('/') {
                return Err(ApiError::bad_request(format!(
                    "rpc error: code = InvalidArgument desc = TaskTemplate.ContainerSpec.Mounts: invalid mount target \
                     {:?}: must be an absolute path",
                    m.target
                )));
            }
            if m.kind == shoal_shared::model::MountType::Bind && !m.source.starts_with('/') {
                return Err(ApiError::bad_request(format!(
                    "rpc error: code = InvalidArgument desc = TaskTemplate.ContainerSpec.Mounts: invalid bind mount \
                     source {:?}: must be an absolute path",
                    m.source
                )));
            }
        }
    }
    let rp = spec.task_template.restart_policy.get_or_insert_with(default_restart);
    rp.condition.get_or_insert(RestartCondition::Any);
    rp.delay.get_or_insert(Duration::from_secs(5));
    rp.max_attempts.get_or_insert(0);
    fill_update(&mut spec.update_config);
    fill_update(&mut spec.rollback_config);
    let ep = spec.endpoint_spec.get_or_insert_with(EndpointSpec::default);
    ep.mode.get_or_insert(EndpointMode::Vip);
    Ok(())
}

/// Decodes and validates a service spec in one go; unknown modes are refused
/// (serde would otherwise silently ignore `{"Mode": {"Bogus": {}}}`).
pub fn decode_service(body: &[u8]) -> ApiResult<ServiceSpec> {
    let raw: serde_json::Value = decode(body)?;
    if let Some(mode) = raw.get("Mode").and_then(|m| m.as_object()) {
        if let Some(k) = mode.keys().find(|k| !matches!(k.as_str(), "Replicated" | "Global")) {
            return Err(ApiError::bad_request(format!(
                "rpc error: code = InvalidArgument desc = Mode: unknown mode {k:?} (want Replicated or Global)"
            )));
        }
    }
    let mut spec: ServiceSpec = decode(body)?;
    validate_service(&mut spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_filled_and_bad_fields_are_named() {
        let spec = decode_service(br#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#).unwrap();
        assert_eq!(spec.replicas(), Some(1));
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
}
