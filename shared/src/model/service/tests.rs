use serde_json::json;

use super::*;
use crate::store::{Kind, Record, StoreObject, Version};

fn web_spec() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        labels: BTreeMap::from([("team".to_string(), "blue".to_string())]),
        task_template: TaskSpec {
            container_spec: Some(ContainerSpec {
                image: "nginx:alpine".into(),
                env: vec!["A=1".into(), "B".into()],
                stop_grace_period: Some(Duration::from_secs(10)),
                ..ContainerSpec::default()
            }),
            restart_policy: Some(RestartPolicy {
                condition: Some(RestartCondition::OnFailure),
                delay: Some(Duration::from_secs(5)),
                max_attempts: Some(3),
                window: None,
            }),
            ..TaskSpec::default()
        },
        mode: ServiceMode::replicated(3),
        ..ServiceSpec::default()
    }
}

#[test]
fn empty_enum_strings_from_go_clients_mean_unset() {
    let u: UpdateConfig =
        serde_json::from_str(r#"{"Parallelism":2,"Order":"","FailureAction":"","MaxFailureRatio":0}"#).unwrap();
    assert_eq!((u.order, u.failure_action), (None, None));
    let u: UpdateConfig = serde_json::from_str(r#"{"Order":"start-first"}"#).unwrap();
    assert_eq!(u.order, Some(UpdateOrder::StartFirst));
    assert!(serde_json::from_str::<UpdateConfig>(r#"{"Order":"sideways"}"#).is_err());
    let p: PortConfig = serde_json::from_str(r#"{"Protocol":"","PublishMode":"","TargetPort":80}"#).unwrap();
    assert_eq!((p.protocol, p.publish_mode), (None, None));
}

#[test]
fn store_record_round_trip_carries_name_labels_fields_and_meta() {
    let svc = Service::new("svc1", web_spec());
    let mut rec = svc.to_record().unwrap();
    assert_eq!(rec.kind, Kind::Service);
    assert_eq!(rec.id, "svc1");
    assert_eq!(rec.name.as_deref(), Some("web"));
    assert_eq!(rec.labels.get("team").map(String::as_str), Some("blue"));
    assert_eq!(rec.fields.get("mode").map(String::as_str), Some("replicated"));
    assert_eq!(
        rec.body.to_value()["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
        10_000_000_000i64
    );

    // The store owns version and times: from_record must take them from the record.
    let at = "2016-08-16T00:11:33.545965515Z".parse::<DateTime<Utc>>().unwrap();
    rec.version = 109;
    rec.created_at = at;
    rec.updated_at = at;
    let back = Service::from_record(&rec).unwrap();
    assert_eq!(back.meta.version, Version { index: 109 });
    assert_eq!(back.meta.created_at, at);
    assert_eq!(back.meta.updated_at, at);
    assert_eq!(back.spec, svc.spec);

    // A nameless service gets no name in the store's unique-name index.
    let nameless = Service::new("svc2", ServiceSpec::default());
    assert_eq!(nameless.to_record().unwrap().name, None);

    // A record of another kind is refused.
    let blob = Record::blob("svc1", rec.body.to_value());
    assert!(Service::from_record(&blob).is_err());
}

#[test]
fn global_mode_is_indexed_and_has_no_replica_count() {
    let mut spec = web_spec();
    spec.mode = ServiceMode::global();
    let svc = Service::new("g", spec);
    assert!(svc.is_global());
    assert_eq!(svc.replicas(), None);
    assert_eq!(svc.fields().get("mode").map(String::as_str), Some("global"));
    assert_eq!(serde_json::to_value(&svc.spec.mode).unwrap(), json!({"Global": {}}));
}

#[test]
fn replicas_default_to_one_when_unset() {
    let mut spec = web_spec();
    assert_eq!(spec.replicas(), Some(3));
    spec.mode = ServiceMode {
        replicated: Some(ReplicatedService { replicas: None }),
        ..ServiceMode::default()
    };
    assert_eq!(spec.replicas(), Some(1));
    spec.mode = ServiceMode::default();
    assert!(!spec.is_global());
    assert_eq!(spec.replicas(), Some(1));
    spec.mode = ServiceMode::replicated(0);
    assert_eq!(spec.replicas(), Some(0));
}

#[test]
fn job_modes_use_dockers_keys_and_names() {
    let mut spec = web_spec();
    spec.mode = serde_json::from_value(json!({"ReplicatedJob": {"MaxConcurrent": 2}})).unwrap();
    let job = spec.mode.replicated_job.clone().unwrap();
    assert_eq!(
        (job.concurrency(), job.total()),
        (2, 2),
        "the total defaults to the concurrency"
    );
    assert!(spec.is_job() && !spec.is_global());
    assert_eq!((spec.replicas(), spec.mode_name()), (None, "replicated-job"));
    spec.mode = serde_json::from_value(json!({"GlobalJob": {}})).unwrap();
    assert!(spec.is_job() && spec.is_global());
    assert_eq!(spec.mode_name(), "global-job");
    assert_eq!(serde_json::to_value(&spec.mode).unwrap(), json!({"GlobalJob": {}}));
    let mut svc = Service::new("s1", spec.clone());
    assert_eq!(svc.job_iteration(), Some(0));
    svc.job_status = Some(JobStatus {
        job_iteration: crate::store::Version { index: 3 },
        last_execution: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    });
    assert_eq!(svc.job_iteration(), Some(3));
    let v = serde_json::to_value(&svc).unwrap();
    assert_eq!(v["JobStatus"]["JobIteration"], json!({"Index": 3}));
    svc.spec = web_spec();
    assert_eq!(svc.job_iteration(), None, "not a job");
}

#[test]
fn enums_use_dockers_spellings() {
    let cases = [
        (serde_json::to_value(RestartCondition::OnFailure).unwrap(), "on-failure"),
        (serde_json::to_value(RestartCondition::None).unwrap(), "none"),
        (serde_json::to_value(UpdateOrder::StopFirst).unwrap(), "stop-first"),
        (serde_json::to_value(UpdateOrder::StartFirst).unwrap(), "start-first"),
        (serde_json::to_value(FailureAction::Rollback).unwrap(), "rollback"),
        (
            serde_json::to_value(UpdateState::RollbackStarted).unwrap(),
            "rollback_started",
        ),
        (
            serde_json::to_value(UpdateState::RollbackCompleted).unwrap(),
            "rollback_completed",
        ),
        (serde_json::to_value(EndpointMode::Dnsrr).unwrap(), "dnsrr"),
        (serde_json::to_value(MountType::Tmpfs).unwrap(), "tmpfs"),
        (serde_json::to_value(PortProtocol::Udp).unwrap(), "udp"),
        (serde_json::to_value(PublishMode::Ingress).unwrap(), "ingress"),
        (serde_json::to_value(PublishMode::Host).unwrap(), "host"),
    ];
    for (got, want) in cases {
        assert_eq!(got, json!(want));
    }
    let back: UpdateState = serde_json::from_value(json!("rollback_paused")).unwrap();
    assert_eq!(back, UpdateState::RollbackPaused);
}

#[test]
fn update_config_and_mounts_serialize_with_docker_field_names() {
    let cfg = UpdateConfig {
        parallelism: 2,
        delay: Some(Duration::from_secs(10)),
        failure_action: Some(FailureAction::Rollback),
        monitor: Some(Duration::from_secs(5)),
        max_failure_ratio: Some(0.25),
        order: Some(UpdateOrder::StartFirst),
    };
    assert_eq!(
        serde_json::to_value(&cfg).unwrap(),
        json!({
            "Parallelism": 2, "Delay": 10_000_000_000i64, "FailureAction": "rollback",
            "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.25, "Order": "start-first"
        })
    );
    let mount_json = json!({
        "Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": true,
        "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"},
                          "DriverConfig": {"Name": "local", "Options": {"o": "bind"}}}
    });
    let m: Mount = serde_json::from_value(mount_json.clone()).unwrap();
    assert_eq!(m.kind, MountType::Volume);
    assert!(m.read_only);
    assert_eq!(
        m.volume_options.as_ref().unwrap().driver_config.as_ref().unwrap().name,
        "local"
    );
    assert_eq!(serde_json::to_value(&m).unwrap(), mount_json);

    let res = ResourceRequirements {
        limits: Some(Limit {
            nano_cpus: 500_000_000,
            memory_bytes: 0,
            pids: 100,
        }),
        reservations: Some(Resources::default()),
    };
    assert_eq!(
        serde_json::to_value(&res).unwrap(),
        json!({"Limits": {"NanoCPUs": 500000000, "Pids": 100}, "Reservations": {}})
    );
}

#[test]
fn env_map_splits_on_first_equals() {
    let c = ContainerSpec {
        env: vec!["A=1".into(), "B".into(), "C=x=y".into()],
        ..ContainerSpec::default()
    };
    let m = c.env_map();
    assert_eq!(m.get("A").map(String::as_str), Some("1"));
    assert_eq!(m.get("B").map(String::as_str), Some(""));
    assert_eq!(m.get("C").map(String::as_str), Some("x=y"));
}

#[test]
fn writes_that_keep_the_spec_keep_the_version_updates_may_name() {
    // Written by a user at 10: only 10 reads the current spec.
    let mut stored = Service::new("s1", web_spec());
    stored.meta.version = Version { index: 10 };
    assert!(stored.read_current_spec(10));
    assert!(!stored.read_current_spec(9));
    // The scheduler writes its VIP (stored at 14): 10 through 14 read this spec.
    let mut next = stored.clone();
    next.endpoint = Some(Endpoint::default());
    next.keep_spec_version(&stored);
    next.meta.version = Version { index: 14 };
    assert_eq!(next.spec_written_at(), 10);
    assert!(next.read_current_spec(10) && next.read_current_spec(14));
    assert!(!next.read_current_spec(9) && !next.read_current_spec(15));
    // Another such write keeps 10; a rollback writes the spec anew.
    let mut again = next.clone();
    again.keep_spec_version(&next);
    again.meta.version = Version { index: 20 };
    assert_eq!(again.spec_written_at(), 10);
    let mut rolled = again.clone();
    rolled.spec.labels.clear();
    rolled.keep_spec_version(&again);
    rolled.meta.version = Version { index: 25 };
    assert_eq!(rolled.spec_written_at(), 25);
    assert!(!rolled.read_current_spec(20));
    // Kept in the store's record.
    let back = Service::from_record(&again.to_record().unwrap()).unwrap();
    assert_eq!(back.spec_version, 10);
}
