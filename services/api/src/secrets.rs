//! `/secrets` and `/configs`: create, list, inspect, update (labels only) and
//! remove, as SwarmKit's control API answers them through Docker.
//!
//! A secret's data is sealed here with the managers' key (see
//! `shoal_shared::secrets`) before it is written; it never appears in an
//! answer, a log line or the store's change feed in the clear. A config's
//! data is kept and shown as given.

use actix_web::{web, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};
use shoal_shared::id::new_id;
use shoal_shared::model::{Config, ConfigSpec, Secret, SecretSpec, Service, ServiceSpec};
use shoal_shared::store::{Kind, ListFilter};
use shoal_shared::ErrorCode;

use crate::error::{clip, ApiError, ApiResult};
use crate::filters::Filters;
use crate::request::{parse_version, Body, IdPath, Manager, Query};
use crate::spec::decode;
use crate::state::AppState;

/// SwarmKit's largest secret (`MaxSecretSize`, 500 KiB).
pub const MAX_SECRET_SIZE: usize = 500 * 1024;
/// SwarmKit's largest config (`MaxConfigSize`, 1000 KiB).
pub const MAX_CONFIG_SIZE: usize = 1000 * 1024;

fn invalid(desc: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("rpc error: code = InvalidArgument desc = {desc}"))
}

/// SwarmKit's name rule for secrets and configs: 1 to 64 of `[a-zA-Z0-9-_.]`,
/// starting and ending with a letter or digit.
pub fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() {
        return Err(invalid("name must be provided"));
    }
    let b = name.as_bytes();
    let ok = b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        return Err(invalid(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be \
             [a-zA-Z0-9]",
        ));
    }
    Ok(())
}

/// `Data` (base64 in JSON) as bytes.
fn data_of(data: Option<&str>) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: Data: illegal base64 data: {e}")))
}

/// The agents expand templates of the `golang` driver (as SwarmKit's do);
/// another driver is refused here, in the words SwarmKit's agent uses when
/// it meets one, rather than failing every task that uses it later.
fn check_templating(t: Option<&shoal_shared::model::Driver>) -> ApiResult<()> {
    match t {
        Some(d) if !d.name.is_empty() && d.name != "golang" => {
            Err(invalid(format!("unrecognized template type {}", clip(&d.name))))
        }
        _ => Ok(()),
    }
}

/// Validates a secret create body; returns the spec without data and the data.
pub fn decode_secret(body: &[u8]) -> ApiResult<(SecretSpec, Vec<u8>)> {
    let mut spec: SecretSpec = decode(body)?;
    check_name(&spec.name)?;
    if let Some(d) = spec.driver.as_ref().filter(|d| !d.name.is_empty()) {
        return Err(ApiError::not_found(format!(
            "rpc error: code = NotFound desc = plugin {} not found: secret drivers are not supported",
            clip(&d.name)
        )));
    }
    check_templating(spec.templating.as_ref())?;
    let data = data_of(spec.data.take().as_deref())?;
    if data.is_empty() || data.len() >= MAX_SECRET_SIZE {
        return Err(invalid(format!(
            "secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes"
        )));
    }
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(invalid("secret data must contain non white space bytes"));
    }
    Ok((spec, data))
}

/// Validates a config create body.
pub fn decode_config(body: &[u8]) -> ApiResult<ConfigSpec> {
    let spec: ConfigSpec = decode(body)?;
    check_name(&spec.name)?;
    check_templating(spec.templating.as_ref())?;
    let data = data_of(spec.data.as_deref())?;
    if data.is_empty() || data.len() >= MAX_CONFIG_SIZE {
        return Err(invalid(format!(
            "config data must be larger than 0 and less than {MAX_CONFIG_SIZE} bytes"
        )));
    }
    Ok(spec)
}

/// The filters Docker takes for secrets and configs: `name` (prefix),
/// `names` (exact), `id` (prefix), `label`.
fn list_filters(q: &Query) -> ApiResult<Filters> {
    Filters::parse(q.get("filters").map(String::as_str), &["id", "name", "names", "label"])
}

fn selected(f: &Filters, id: &str, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let by_name = f.has("name") || f.has("names");
    let named = (f.has("name") && f.get("name").iter().any(|p| name.starts_with(p.as_str())))
        || f.get("names").iter().any(|n| n == name);
    (!by_name || named) && f.any_prefix("id", id) && f.labels_match("label", labels)
}

/// The services whose spec refers to a secret (`secret`) or config.
fn users(services: &[Service], kind: Kind, id: &str) -> Vec<String> {
    let uses = |spec: &ServiceSpec| {
        spec.task_template.container_spec.as_ref().is_some_and(|c| match kind {
            Kind::Secret => c.secrets.iter().any(|r| r.secret_id == id),
            _ => c.configs.iter().any(|r| r.config_id == id),
        })
    };
    services
        .iter()
        .filter(|s| uses(&s.spec))
        .map(|s| s.spec.name.clone())
        .collect()
}

/// Removes a secret or config no service uses, in Docker's words when one
/// does. The removal's own guard catches a service written since the check
/// (the check then runs again and names it).
async fn remove_unused(state: &AppState, kind: Kind, id: &str, name: &str) -> ApiResult<()> {
    let what = if kind == Kind::Secret { "secret" } else { "config" };
    let mut attempts = 0;
    loop {
        let services: Vec<Service> = state.store()?.list(ListFilter::default()).await?;
        let users = users(&services, kind, id);
        if !users.is_empty() {
            return Err(in_use(what, name, &users));
        }
        let guards = shoal_shared::store::unreferenced(kind, id, &[Kind::Service]);
        match state.store()?.delete_guarded(kind, id, None, guards).await {
            Err(e) if e.code == shoal_shared::ErrorCode::InUse && attempts < 3 => attempts += 1,
            r => return r.map(drop).map_err(ApiError::from),
        }
    }
}

fn in_use(what: &str, name: &str, users: &[String]) -> ApiError {
    let noun = if users.len() == 1 { "service" } else { "services" };
    invalid(format!(
        "{what} '{name}' is in use by the following {noun}: {}",
        users.join(", ")
    ))
}

// ---------------------------------------------------------------- secrets

pub async fn secret_list(state: web::Data<AppState>, q: Query) -> ApiResult<HttpResponse> {
    let f = list_filters(&q)?;
    state.manager().await?;
    let all: Vec<Secret> = state.store()?.list(ListFilter::default()).await?;
    let out: Vec<Value> = all
        .iter()
        .filter(|s| selected(&f, &s.meta.id, &s.spec.name, &s.spec.labels))
        .map(Secret::to_docker)
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

pub async fn secret_create(state: web::Data<AppState>, body: Body) -> ApiResult<HttpResponse> {
    let (spec, data) = decode_secret(&body)?;
    state.manager().await?;
    let key = state.secrets_key()?;
    let id = new_id();
    let sealed = key.seal(&id, &data).map_err(ApiError::internal)?;
    drop(data);
    let name = spec.name.clone();
    let secret = Secret {
        meta: shoal_shared::store::Meta::new(id),
        spec,
        sealed_data: sealed,
    };
    let created = state.store()?.create(&secret).await.map_err(|e| match e.code {
        ErrorCode::NameConflict => ApiError::conflict(format!(
            "rpc error: code = AlreadyExists desc = secret {} already exists",
            clip(&name)
        )),
        _ => e.into(),
    })?;
    tracing::info!(secret = %created.meta.id, name = %name, "secret created");
    Ok(HttpResponse::Created().json(json!({"ID": created.meta.id})))
}

pub async fn secret_inspect(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    _: Manager,
) -> ApiResult<HttpResponse> {
    let s: Secret = crate::objects::find(&state, &path.id, "secret").await?;
    Ok(HttpResponse::Ok().json(s.to_docker()))
}

pub async fn secret_update(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    body: Body,
) -> ApiResult<HttpResponse> {
    let version = parse_version(&q)?;
    let spec: SecretSpec = decode(&body)?;
    state.manager().await?;
    let mut s: Secret = crate::objects::find(&state, &path.id, "secret").await?;
    let same_data = match spec.data.as_deref() {
        None => true,
        Some(d) => {
            let key = state.secrets_key()?;
            let given = data_of(Some(d))?;
            key.open(&s.meta.id, &s.sealed_data).is_ok_and(|cur| cur == given)
        }
    };
    if spec.name != s.spec.name || !same_data {
        return Err(invalid("only updates to Labels are allowed"));
    }
    s.spec.labels = spec.labels;
    s.meta.version.index = version;
    state.store()?.update(&s).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn secret_delete(state: web::Data<AppState>, path: web::Path<IdPath>, _: Manager) -> ApiResult<HttpResponse> {
    let s: Secret = crate::objects::find(&state, &path.id, "secret").await?;
    remove_unused(&state, Kind::Secret, &s.meta.id, &s.spec.name).await?;
    tracing::info!(secret = %s.meta.id, "secret removed");
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- configs

pub async fn config_list(state: web::Data<AppState>, q: Query) -> ApiResult<HttpResponse> {
    let f = list_filters(&q)?;
    state.manager().await?;
    let all: Vec<Config> = state.store()?.list(ListFilter::default()).await?;
    let out: Vec<&Config> = all
        .iter()
        .filter(|c| selected(&f, &c.meta.id, &c.spec.name, &c.spec.labels))
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

pub async fn config_create(state: web::Data<AppState>, body: Body) -> ApiResult<HttpResponse> {
    let spec = decode_config(&body)?;
    state.manager().await?;
    let name = spec.name.clone();
    let config = Config {
        meta: shoal_shared::store::Meta::new(new_id()),
        spec,
    };
    let created = state.store()?.create(&config).await.map_err(|e| match e.code {
        ErrorCode::NameConflict => ApiError::conflict(format!(
            "rpc error: code = AlreadyExists desc = config {} already exists",
            clip(&name)
        )),
        _ => e.into(),
    })?;
    tracing::info!(config = %created.meta.id, name = %name, "config created");
    Ok(HttpResponse::Created().json(json!({"ID": created.meta.id})))
}

pub async fn config_inspect(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    _: Manager,
) -> ApiResult<HttpResponse> {
    let c: Config = crate::objects::find(&state, &path.id, "config").await?;
    Ok(HttpResponse::Ok().json(c))
}

pub async fn config_update(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    body: Body,
) -> ApiResult<HttpResponse> {
    let version = parse_version(&q)?;
    let spec: ConfigSpec = decode(&body)?;
    state.manager().await?;
    let mut c: Config = crate::objects::find(&state, &path.id, "config").await?;
    let same_data = match spec.data.as_deref() {
        None => true,
        Some(d) => data_of(Some(d))? == data_of(c.spec.data.as_deref())?,
    };
    if spec.name != c.spec.name || !same_data {
        return Err(invalid("only updates to Labels are allowed"));
    }
    c.spec.labels = spec.labels;
    c.meta.version.index = version;
    state.store()?.update(&c).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn config_delete(state: web::Data<AppState>, path: web::Path<IdPath>, _: Manager) -> ApiResult<HttpResponse> {
    let c: Config = crate::objects::find(&state, &path.id, "config").await?;
    remove_unused(&state, Kind::Config, &c.meta.id, &c.spec.name).await?;
    tracing::info!(config = %c.meta.id, "config removed");
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- service references

/// SwarmKit's checks of a spec's secret and config references: each names
/// an ID and a name, has a file target with a name, no two share a target,
/// and each ID names an existing object of that name.
pub async fn check_references(state: &AppState, spec: &ServiceSpec) -> ApiResult<()> {
    let Some(c) = spec.task_template.container_spec.as_ref() else {
        return Ok(());
    };
    check_targets(c)?;
    let mut missing = Vec::new();
    for r in &c.secrets {
        let found: Option<Secret> = state.store()?.get(&r.secret_id).await?;
        if found.is_none_or(|s| s.spec.name != r.secret_name) {
            missing.push(r.secret_name.clone());
        }
    }
    if !missing.is_empty() {
        let noun = if missing.len() == 1 { "secret" } else { "secrets" };
        return Err(invalid(format!("{noun} not found: {}", missing.join(", "))));
    }
    for r in &c.configs {
        let found: Option<Config> = state.store()?.get(&r.config_id).await?;
        if found.is_none_or(|s| s.spec.name != r.config_name) {
            missing.push(r.config_name.clone());
        }
    }
    if !missing.is_empty() {
        let noun = if missing.len() == 1 { "config" } else { "configs" };
        return Err(invalid(format!("{noun} not found: {}", missing.join(", "))));
    }
    Ok(())
}

/// The reference checks that need no store (SwarmKit's `validateSecretRefsSpec`
/// and `validateConfigRefsSpec`).
pub fn check_targets(c: &shoal_shared::model::ContainerSpec) -> ApiResult<()> {
    let mut targets = std::collections::BTreeMap::new();
    for r in &c.secrets {
        if r.secret_id.is_empty() || r.secret_name.is_empty() {
            return Err(invalid("malformed secret reference"));
        }
        let Some(f) = r.file.as_ref() else {
            return Err(invalid("malformed secret reference, no target provided"));
        };
        if f.name.is_empty() {
            return Err(invalid(
                "malformed file secret reference, invalid target file name provided",
            ));
        }
        if let Some(prev) = targets.insert(f.name.clone(), r.secret_name.clone()) {
            return Err(invalid(format!(
                "secret references '{prev}' and '{}' have a conflicting target: '{}'",
                r.secret_name, f.name
            )));
        }
    }
    let mut targets = std::collections::BTreeMap::new();
    for r in &c.configs {
        if r.config_id.is_empty() || r.config_name.is_empty() {
            return Err(invalid("malformed config reference"));
        }
        if r.file.is_none() && r.runtime.is_none() {
            return Err(invalid("malformed config reference, no target provided"));
        }
        let Some(f) = r.file.as_ref() else { continue };
        if f.name.is_empty() {
            return Err(invalid(
                "malformed file config reference, invalid target file name provided",
            ));
        }
        if let Some(prev) = targets.insert(f.name.clone(), r.config_name.clone()) {
            return Err(invalid(format!(
                "config references '{prev}' and '{}' have a conflicting target: '{}'",
                r.config_name, f.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bodies_are_checked_in_swarmkits_words() {
        let e = decode_secret(br#"{"Name":"-x","Data":"YQ=="}"#).unwrap_err();
        assert!(
            e.message
                .contains("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed"),
            "{}",
            e.message
        );
        let e = decode_secret(br#"{"Name":"x"}"#).unwrap_err();
        assert_eq!(
            e.message,
            "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 512000 bytes"
        );
        let e = decode_secret(br#"{"Name":"x","Data":"ICAK"}"#).unwrap_err();
        assert!(e.message.ends_with("secret data must contain non white space bytes"));
        let e = decode_secret(br#"{"Name":"x","Data":"YQ==","Templating":{"Name":"mustache"}}"#).unwrap_err();
        assert!(
            e.message.ends_with("unrecognized template type mustache"),
            "{}",
            e.message
        );
        let (spec, _) = decode_secret(br#"{"Name":"x","Data":"YQ==","Templating":{"Name":"golang"}}"#).unwrap();
        assert_eq!(spec.templating.unwrap().name, "golang");
        let (spec, data) = decode_secret(br#"{"Name":"db.pw","Labels":{"a":"b"},"Data":"aHVudGVyMg=="}"#).unwrap();
        assert_eq!(
            (spec.name.as_str(), data.as_slice(), spec.data),
            ("db.pw", &b"hunter2"[..], None)
        );
        assert!(decode_config(br#"{"Name":"c","Data":"YQ=="}"#).is_ok());
        assert!(decode_config(br#"{"Name":"c","Data":"YQ==","Templating":{"Name":"golang"}}"#).is_ok());
        assert!(decode_config(br#"{"Name":"c","Data":"YQ==","Templating":{"Name":"x"}}"#).is_err());
    }

    #[test]
    fn references_need_distinct_named_targets() {
        let c: shoal_shared::model::ContainerSpec = serde_json::from_str(
            r#"{"Secrets":[
                {"File":{"Name":"pw","UID":"0","GID":"0","Mode":292},"SecretID":"a","SecretName":"one"},
                {"File":{"Name":"pw","UID":"0","GID":"0","Mode":292},"SecretID":"b","SecretName":"two"}]}"#,
        )
        .unwrap();
        let e = check_targets(&c).unwrap_err();
        assert_eq!(
            e.message,
            "rpc error: code = InvalidArgument desc = secret references 'one' and 'two' have a conflicting target: 'pw'"
        );
        let users_of = users(
            &[Service::new(
                "s1",
                ServiceSpec {
                    name: "web".into(),
                    task_template: shoal_shared::model::TaskSpec {
                        container_spec: Some(c),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )],
            Kind::Secret,
            "b",
        );
        assert_eq!(
            in_use("secret", "two", &users_of).message,
            "rpc error: code = InvalidArgument desc = secret 'two' is in use by the following service: web"
        );
    }
}
