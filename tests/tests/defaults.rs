//! Docker's defaults, three ways: what a real Docker swarm (this machine's
//! engine in Swarm mode) stores for `docker service create --name d0 busybox
//! sleep 1` and for `docker swarm init`, what shoal's `DEFAULTS` serialize
//! to, and what shoal-api stores for the same commands. The engine part is
//! skipped when there is no engine; a swarm this test initialized is always
//! left again, also when an assertion fails.

use std::process::Command;

use serde_json::Value;
use shoal_shared::model::DEFAULTS;
use shoal_tests::api::{single_manager, Run};

/// The parts of a service spec that are defaults for a service created with no flags.
const SERVICE_FIELDS: &[&str] = &[
    "/TaskTemplate/RestartPolicy",
    "/TaskTemplate/ContainerSpec/StopGracePeriod",
    "/TaskTemplate/Resources",
    "/TaskTemplate/Placement",
    "/UpdateConfig",
    "/RollbackConfig",
    "/EndpointSpec/Mode",
    "/Mode",
];

/// Fields the docker CLI does not send and Docker's daemon fills at create,
/// which shoal-api leaves unset (its readers fall back to `DEFAULTS`): in
/// shoal-api's answer each is either absent or equal.
const FILLED_BY_READERS: &[&str] = &["/TaskTemplate/ContainerSpec/StopGracePeriod"];

/// The parts of the cluster spec that are defaults of `docker swarm init`
/// (`Raft.ElectionTick` differs on purpose: Docker counts 100 ms ticks, shoal seconds).
const SWARM_FIELDS: &[&str] = &[
    "/Orchestration/TaskHistoryRetentionLimit",
    "/Dispatcher/HeartbeatPeriod",
    "/CAConfig/NodeCertExpiry",
    "/Raft/SnapshotInterval",
    "/Raft/KeepOldSnapshots",
    "/Raft/LogEntriesForSlowFollowers",
    "/Raft/HeartbeatTick",
    "/TaskDefaults",
    "/EncryptionConfig",
];

/// The docker CLI against this machine's engine, with a config dir of its own.
fn engine(home: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new("docker")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .env("DOCKER_CLI_HINTS", "false")
        .args(args)
        .output()
        .expect("run docker");
    Run::from(out)
}

/// Removes the service and, when this test initialized the swarm, leaves it:
/// on success and on panic alike.
struct EngineSwarm<'a> {
    home: &'a std::path::Path,
    initialized: bool,
}

impl Drop for EngineSwarm<'_> {
    fn drop(&mut self) {
        let _ = engine(self.home, &["service", "rm", "d0"]);
        if self.initialized {
            let left = engine(self.home, &["swarm", "leave", "--force"]);
            eprintln!(
                "docker swarm leave --force: {} {}",
                left.stdout.trim(),
                left.stderr.trim()
            );
        }
    }
}

/// `value` at `pointer`, numbers as f64 (Docker writes `0` where serde writes `0.0`).
fn at(value: &Value, pointer: &str) -> Value {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Number(n) => serde_json::json!(n.as_f64()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            other => other.clone(),
        }
    }
    norm(value.pointer(pointer).unwrap_or(&Value::Null))
}

/// Asserts that `got` has `want`'s value at each of `fields`, naming both sides.
fn same_fields(fields: &[&str], want: &Value, want_name: &str, got: &Value, got_name: &str) {
    for f in fields {
        assert_eq!(at(got, f), at(want, f), "{f}: {got_name} differs from {want_name}");
    }
}

/// [`same_fields`] for shoal-api's stored service: a field of
/// [`FILLED_BY_READERS`] may also be absent.
fn same_service_fields(want: &Value, want_name: &str, api: &Value) {
    for f in SERVICE_FIELDS {
        let got = at(api, f);
        if got.is_null() && FILLED_BY_READERS.contains(f) {
            eprintln!("{f}: unset in shoal-api's service ({want_name}: {})", at(want, f));
            continue;
        }
        assert_eq!(got, at(want, f), "{f}: shoal-api's service differs from {want_name}");
    }
}

fn json_of(run: Run) -> Value {
    let run = run.ok();
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// What this machine's Docker stores for a service and a swarm created with
/// no flags: `(service Spec, cluster Spec, Swarm of /info)`, or `None` without an engine.
fn docker_defaults() -> Option<(Value, Value, Value)> {
    let home = tempfile::tempdir().expect("temp dir");
    let info = engine(home.path(), &["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    if info.code != 0 {
        eprintln!("no Docker engine here, skipping the engine comparison: {}", info.stderr);
        return None;
    }
    let version = engine(
        home.path(),
        &[
            "version",
            "--format",
            "client {{.Client.Version}}, engine {{.Server.Version}} (API {{.Server.APIVersion}})",
        ],
    );
    eprintln!("docker {}", version.stdout.trim());
    let active = info.stdout.trim() == "active";
    let _guard = EngineSwarm {
        home: home.path(),
        initialized: !active,
    };
    if !active {
        engine(home.path(), &["swarm", "init", "--advertise-addr", "127.0.0.1"]).ok();
    }
    Some(create_and_inspect(|args| engine(home.path(), args)))
}

/// What shoal-api stores for the same commands.
fn shoal_defaults() -> (Value, Value, Value) {
    let (_store, api) = single_manager();
    api.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).ok();
    create_and_inspect(|args| api.docker(args))
}

/// Runs `docker service create --name d0 busybox sleep 1` (no image lookup,
/// not waiting) through `docker`, and reads back `(service Spec, cluster
/// Spec, cluster)`.
fn create_and_inspect(docker: impl Fn(&[&str]) -> Run) -> (Value, Value, Value) {
    docker(&[
        "service",
        "create",
        "--name",
        "d0",
        "--no-resolve-image",
        "-d",
        "busybox",
        "sleep",
        "1",
    ])
    .ok();
    let service = json_of(docker(&["service", "inspect", "--format", "{{json .Spec}}", "d0"]));
    let cluster = json_of(docker(&["info", "--format", "{{json .Swarm.Cluster}}"]));
    (service, cluster["Spec"].clone(), cluster)
}

#[test]
fn defaults_match_docker() {
    let ours = serde_json::to_value(DEFAULTS.service_spec()).unwrap();
    let ours_swarm = serde_json::to_value(DEFAULTS.swarm_spec()).unwrap();
    let (shoal, shoal_swarm, shoal_cluster) = shoal_defaults();
    eprintln!("shoal's service spec:  {shoal}");
    eprintln!("shoal's swarm spec:    {shoal_swarm}");
    let docker = docker_defaults();
    if let Some((docker, docker_swarm, docker_cluster)) = &docker {
        eprintln!("docker's service spec: {docker}");
        eprintln!("docker's swarm spec:   {docker_swarm}");
        for k in ["DefaultAddrPool", "SubnetSize", "DataPathPort"] {
            eprintln!("{k}: docker {} / shoal {}", docker_cluster[k], shoal_cluster[k]);
        }
    }

    same_service_fields(&ours, "shoal's DEFAULTS", &shoal);
    same_fields(
        SWARM_FIELDS,
        &ours_swarm,
        "shoal's DEFAULTS",
        &shoal_swarm,
        "shoal-api's swarm",
    );
    assert_eq!(at(&shoal_swarm, "/Raft/ElectionTick"), serde_json::json!(3.0));

    let Some((docker, docker_swarm, docker_cluster)) = docker else {
        return;
    };
    same_fields(SERVICE_FIELDS, &docker, "Docker's", &ours, "shoal's DEFAULTS");
    same_service_fields(&docker, "Docker's", &shoal);
    same_fields(SWARM_FIELDS, &docker_swarm, "Docker's", &ours_swarm, "shoal's DEFAULTS");
    same_fields(
        SWARM_FIELDS,
        &docker_swarm,
        "Docker's",
        &shoal_swarm,
        "shoal-api's swarm",
    );
    // Docker counts 100 ms ticks (election 10); shoal's ticks are seconds (election 3).
    assert_eq!(at(&docker_swarm, "/Raft/ElectionTick"), serde_json::json!(10.0));
    for k in ["SubnetSize", "DataPathPort"] {
        assert_eq!(
            at(&docker_cluster, &format!("/{k}")),
            at(&shoal_cluster, &format!("/{k}")),
            "{k}"
        );
    }
}
