//! `shoal service ...`: [`Service`]s, their specs built from docker's flags.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_shared::model::{
    ContainerSpec, Driver, Limit, Mount, MountType, NetworkAttachmentConfig, Placement, PortConfig, PublishMode,
    ReplicatedService, ResourceRequirements, Resources, Service, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig,
    VolumeOptions,
};

use super::network::NetworkResource;
use super::swarm::duration_flag;
use super::{
    each, image_name, inspect_out, list_rows, parse_flag, parse_kv_list, query_filters, remove_each, short, single,
    typed, wire, InspectOpts, ListOpts, Out, Printed, Row,
};
use crate::client::{urlencode, ApiError, Client};
use crate::format::{bytes_size, go_duration, parse_bytes};

/// The flags `service create` and `service update` share.
#[derive(Debug, Args)]
pub struct SpecOpts {
    #[arg(long)]
    replicas: Option<u64>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    #[arg(long)]
    constraint: Vec<String>,
    #[arg(long)]
    limit_memory: Option<String>,
    #[arg(long)]
    limit_cpu: Option<f64>,
    #[arg(long)]
    reserve_memory: Option<String>,
    #[arg(long)]
    reserve_cpu: Option<f64>,
    #[arg(long)]
    restart_condition: Option<String>,
    #[arg(long)]
    restart_delay: Option<String>,
    #[arg(long)]
    update_delay: Option<String>,
    #[arg(long)]
    update_parallelism: Option<u64>,
    #[arg(long)]
    network: Vec<String>,
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,src=...,dst=...[,readonly][,volume-driver=..][,volume-opt=k=v]
    #[arg(long)]
    mount: Vec<String>,
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long)]
    container_label: Vec<String>,
    #[arg(long)]
    stop_grace_period: Option<String>,
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    #[arg(long)]
    restart_window: Option<String>,
    #[arg(long)]
    update_failure_action: Option<String>,
    #[arg(long)]
    update_order: Option<String>,
    #[arg(long)]
    update_monitor: Option<String>,
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    #[arg(long)]
    rollback_order: Option<String>,
    #[arg(long)]
    endpoint_mode: Option<String>,
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    #[arg(long)]
    dns: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a new service.
    Create {
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(short, long)]
        detach: bool,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "replicated")]
        mode: String,
        #[command(flatten)]
        spec: SpecOpts,
        image: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List services.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// List the tasks of one or more services.
    Ps {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Display detailed information on one or more services.
    Inspect(InspectOpts),
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Scale one or multiple replicated services.
    Scale {
        #[arg(short, long)]
        detach: bool,
        /// SERVICE=REPLICAS
        #[arg(required = true)]
        scales: Vec<String>,
    },
    /// Update a service.
    Update {
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        rollback: bool,
        #[command(flatten)]
        edits: Edits,
        #[command(flatten)]
        spec: SpecOpts,
        service: String,
    },
}

/// The flags of `service update` that edit what the service has.
#[derive(Debug, Args)]
pub struct Edits {
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    env_add: Vec<String>,
    #[arg(long)]
    env_rm: Vec<String>,
    #[arg(long)]
    constraint_add: Vec<String>,
    #[arg(long)]
    constraint_rm: Vec<String>,
    #[arg(long)]
    label_add: Vec<String>,
    #[arg(long)]
    label_rm: Vec<String>,
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(c: &Client, cmd: ServiceCmd) -> Printed {
    match cmd {
        ServiceCmd::Create {
            name,
            mode,
            spec,
            image,
            args,
            ..
        } => single(create(c, name, &mode, &spec, &image, args)),
        ServiceCmd::Ls(opts) => single(ls(c, &opts)),
        ServiceCmd::Ps {
            quiet,
            filter,
            services,
        } => single(ps(c, filter, &services, quiet)),
        ServiceCmd::Inspect(opts) => single(inspect(c, &opts)),
        ServiceCmd::Rm { services } => remove_each(c, &services, |s| format!("/services/{s}")),
        ServiceCmd::Scale { scales, .. } => scale(c, &scales),
        ServiceCmd::Update {
            rollback,
            edits,
            spec,
            service,
            ..
        } => single(update(c, &service, rollback, edits, &spec)),
    }
}

/// `POST /services/create`'s answer.
#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

/// The image with `:latest` when it names no tag or digest (as the docker CLI sends it).
fn tagged(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

fn create(c: &Client, name: String, mode: &str, opts: &SpecOpts, image: &str, args: Vec<String>) -> Out {
    let mode = match mode {
        "replicated" => ServiceMode {
            replicated: Some(ReplicatedService::default()),
            ..ServiceMode::default()
        },
        "global" => ServiceMode::global(),
        other => return Err(format!("Unknown mode: {other}, only replicated and global supported")),
    };
    // What the docker CLI sends: the image with its default tag, Init and
    // empty Resources and Placement, so both CLIs store the same spec.
    let mut spec = ServiceSpec {
        name,
        task_template: TaskSpec {
            container_spec: Some(ContainerSpec {
                image: tagged(image),
                init: Some(false),
                args,
                ..ContainerSpec::default()
            }),
            resources: Some(ResourceRequirements {
                limits: Some(Limit::default()),
                reservations: Some(Resources::default()),
            }),
            placement: Some(Placement::default()),
            ..TaskSpec::default()
        },
        mode,
        ..ServiceSpec::default()
    };
    apply_spec_opts(c, &mut spec, opts, true)?;
    let r: Created = c.post("/services/create", &spec)?;
    Ok(format!("{}\n", r.id))
}

/// `GET /services/<name>` with Docker's defaults filled in (as `docker service
/// inspect` asks), a 404 in docker's words (`no such service: x`) after `prefix`.
fn find(c: &Client, name: &str, prefix: &str) -> Result<Value, String> {
    c.get(&format!("/services/{}?insertDefaults=true", urlencode(name)))
        .map_err(|e| match e {
            ApiError::Daemon { status: 404, .. } => format!("{prefix}no such service: {name}"),
            other => other.to_string(),
        })
}

fn ps(c: &Client, mut filters: Vec<String>, services: &[String], quiet: bool) -> Out {
    for name in services {
        let svc: Service = typed(&find(c, name, "")?)?;
        filters.push(format!("service={}", svc.meta.id));
    }
    super::task::table(c, &filters, quiet)
}

fn inspect(c: &Client, opts: &InspectOpts) -> Out {
    let objs = opts
        .refs
        .iter()
        .map(|r| find(c, r, "Error: "))
        .collect::<Result<Vec<_>, _>>()?;
    if !opts.pretty {
        return inspect_out(&objs, opts.format.as_deref());
    }
    let mut names = BTreeMap::new();
    if let Ok(nets) = c.get::<Vec<NetworkResource>>("/networks") {
        names.extend(nets.into_iter().map(|n| (n.id, n.name)));
    }
    objs.iter()
        .map(|o| typed::<Service>(o).map(|s| pretty(&s, &names)))
        .collect()
}

fn update(c: &Client, service: &str, rollback: bool, edits: Edits, opts: &SpecOpts) -> Out {
    let svc: Service = c.get(&format!("/services/{}", urlencode(service)))?;
    if rollback {
        post_update(c, &svc, &svc.spec, "&rollback=previous")?;
        return Ok(format!("{service}\n"));
    }
    let mut spec = svc.spec.clone();
    let cs = spec
        .task_template
        .container_spec
        .get_or_insert_with(ContainerSpec::default);
    if let Some(i) = edits.image {
        cs.image = i;
    }
    let key = |e: &str| e.split('=').next().unwrap_or_default().to_string();
    cs.env.retain(|e| !edits.env_rm.contains(&key(e)));
    for kv in edits.env_add {
        cs.env.retain(|e| key(e) != key(&kv));
        cs.env.push(kv);
    }
    let placement = &mut spec.task_template.placement;
    let mut cons = placement.as_ref().map(|p| p.constraints.clone()).unwrap_or_default();
    cons.retain(|x| !edits.constraint_rm.contains(x));
    for x in edits.constraint_add {
        if !cons.contains(&x) {
            cons.push(x);
        }
    }
    if !cons.is_empty() || !edits.constraint_rm.is_empty() {
        placement.get_or_insert_with(Placement::default).constraints = cons;
    }
    spec.labels.extend(parse_kv_list(&edits.label_add));
    for k in &edits.label_rm {
        spec.labels.remove(k);
    }
    if edits.force {
        spec.task_template.force_update += 1;
    }
    apply_spec_opts(c, &mut spec, opts, false)?;
    post_update(c, &svc, &spec, "")?;
    Ok(format!("{service}\n"))
}

/// Writes `spec` as the service's spec, at the version it was read
/// (`query`: more parameters, e.g. `&rollback=previous`).
fn post_update(c: &Client, svc: &Service, spec: &ServiceSpec, query: &str) -> Result<(), ApiError> {
    let (id, v) = (&svc.meta.id, svc.meta.version.index);
    c.post::<Value, _>(&format!("/services/{id}/update?version={v}{query}"), spec)
        .map(|_| ())
}

fn scale(c: &Client, scales: &[String]) -> Printed {
    each(scales, |sc| {
        let Some((name, n)) = sc.split_once('=') else {
            return Err(format!(
                "invalid scale specifier '{sc}'.\nSee 'shoal service scale --help'."
            ));
        };
        let Ok(n) = n.parse::<u64>() else {
            return Err(format!("invalid replicas value {n}: must be a non-negative integer"));
        };
        let scaled = (|| -> Result<(), String> {
            let svc: Service = c.get(&format!("/services/{}", urlencode(name)))?;
            let mut spec = svc.spec.clone();
            let Some(replicated) = spec.mode.replicated.as_mut() else {
                return Err("scale can only be used with replicated or replicated-job mode".to_string());
            };
            replicated.replicas = Some(n);
            Ok(post_update(c, &svc, &spec, "")?)
        })();
        match scaled {
            Ok(()) => Ok(format!("{name} scaled to {n}")),
            Err(e) => Err(format!("{name}: {e}")),
        }
    })
}

/// Docker's service fields for `--format` on `service ls`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceRow {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    mode: &'static str,
    replicas: String,
    image: String,
    ports: String,
}

impl ServiceRow {
    fn new(svc: &Service) -> ServiceRow {
        let spec = &svc.spec;
        let st = svc.service_status.clone().unwrap_or_default();
        let image = spec.task_template.container_spec.as_ref().map(|cs| cs.image.as_str());
        ServiceRow {
            id: short(&svc.meta.id),
            name: spec.name.clone(),
            mode: spec.mode_name(),
            replicas: format!("{}/{}", st.running_tasks, st.desired_tasks),
            image: image_name(image.unwrap_or_default()),
            ports: ports(svc),
        }
    }
}

impl Row for ServiceRow {
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Mode", "MODE"),
        ("Replicas", "REPLICAS"),
        ("Image", "IMAGE"),
        ("Ports", "PORTS"),
    ];
    const SHOWN: usize = 6;

    fn id(&self) -> &str {
        &self.id
    }
}

/// The published ports `service ls` shows: the routing mesh's, `*:8080->80/tcp`.
fn ports(svc: &Service) -> String {
    let published = svc.endpoint.iter().flat_map(|e| &e.ports);
    published
        .filter(|p| p.publish_mode != Some(PublishMode::Host))
        .map(|p| {
            let proto = p.protocol.map(|p| wire(&p)).unwrap_or_else(|| "tcp".into());
            format!("*:{}->{}/{proto}", p.published_port, p.target_port)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ls(c: &Client, opts: &ListOpts) -> Out {
    let q = query_filters(&opts.filter)?;
    let list: Vec<Service> = c.get(&format!("/services?status=true&filters={q}"))?;
    let mut rows: Vec<ServiceRow> = list.iter().map(ServiceRow::new).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    list_rows(&rows, opts)
}

/// Applies the shared create/update flags to a spec.
fn apply_spec_opts(c: &Client, spec: &mut ServiceSpec, o: &SpecOpts, create: bool) -> Result<(), String> {
    if let Some(r) = o.replicas {
        if spec.is_global() {
            return Err("replicas can only be used with replicated or replicated-job mode".into());
        }
        spec.mode = ServiceMode::replicated(r);
    }
    let cs = spec
        .task_template
        .container_spec
        .get_or_insert_with(ContainerSpec::default);
    if create && !o.env.is_empty() {
        cs.env = o.env.clone();
    }
    if !o.mount.is_empty() {
        cs.mounts = o.mount.iter().map(|m| parse_mount(m)).collect::<Result<_, _>>()?;
    }
    if let Some(h) = &o.hostname {
        cs.hostname = h.clone();
    }
    if create && !o.container_label.is_empty() {
        cs.labels = parse_kv_list(&o.container_label);
    }
    if let Some(d) = &o.stop_grace_period {
        cs.stop_grace_period = Some(duration_flag(d)?);
    }
    if !o.dns.is_empty() {
        cs.dns_config.get_or_insert_with(Default::default).nameservers = o.dns.clone();
    }
    if let Some(w) = &o.workdir {
        cs.dir = w.clone();
    }
    if let Some(u) = &o.user {
        cs.user = u.clone();
    }
    if create && !o.label.is_empty() {
        spec.labels = parse_kv_list(&o.label);
    }
    let tt = &mut spec.task_template;
    if create && !o.constraint.is_empty() {
        tt.placement.get_or_insert_with(Placement::default).constraints = o.constraint.clone();
    }
    fn limits(tt: &mut TaskSpec) -> &mut Limit {
        let r = tt.resources.get_or_insert_with(ResourceRequirements::default);
        r.limits.get_or_insert_with(Limit::default)
    }
    fn reservations(tt: &mut TaskSpec) -> &mut Resources {
        let r = tt.resources.get_or_insert_with(ResourceRequirements::default);
        r.reservations.get_or_insert_with(Resources::default)
    }
    if let Some(m) = &o.limit_memory {
        limits(tt).memory_bytes = parse_bytes(m)?;
    }
    if let Some(cpu) = o.limit_cpu {
        limits(tt).nano_cpus = (cpu * 1e9) as i64;
    }
    if let Some(m) = &o.reserve_memory {
        reservations(tt).memory_bytes = parse_bytes(m)?;
    }
    if let Some(cpu) = o.reserve_cpu {
        reservations(tt).nano_cpus = (cpu * 1e9) as i64;
    }
    if let Some(rc) = &o.restart_condition {
        tt.restart_policy.get_or_insert_with(Default::default).condition = Some(parse_flag("--restart-condition", rc)?);
    }
    if let Some(d) = &o.restart_delay {
        tt.restart_policy.get_or_insert_with(Default::default).delay = Some(duration_flag(d)?);
    }
    if let Some(n) = o.restart_max_attempts {
        tt.restart_policy.get_or_insert_with(Default::default).max_attempts = Some(n);
    }
    if let Some(d) = &o.restart_window {
        tt.restart_policy.get_or_insert_with(Default::default).window = Some(duration_flag(d)?);
    }
    if let Some(n) = o.replicas_max_per_node {
        tt.placement.get_or_insert_with(Placement::default).max_replicas = n;
    }
    if !o.network.is_empty() {
        let mut nets = Vec::new();
        for n in &o.network {
            let net: NetworkResource = c.get(&format!("/networks/{}", urlencode(n)))?;
            nets.push(NetworkAttachmentConfig {
                target: net.id,
                ..NetworkAttachmentConfig::default()
            });
        }
        tt.networks = nets;
    }
    fn update(spec: &mut ServiceSpec) -> &mut UpdateConfig {
        spec.update_config.get_or_insert_with(UpdateConfig::default)
    }
    if let Some(a) = &o.update_failure_action {
        update(spec).failure_action = Some(parse_flag("--update-failure-action", a)?);
    }
    if let Some(a) = &o.update_order {
        update(spec).order = Some(parse_flag("--update-order", a)?);
    }
    if let Some(d) = &o.update_monitor {
        update(spec).monitor = Some(duration_flag(d)?);
    }
    if let Some(d) = &o.update_delay {
        update(spec).delay = Some(duration_flag(d)?);
    }
    if let Some(p) = o.update_parallelism {
        update(spec).parallelism = p;
    }
    if let Some(p) = o.rollback_parallelism {
        spec.rollback_config.get_or_insert_with(Default::default).parallelism = p;
    }
    if let Some(a) = &o.rollback_order {
        spec.rollback_config.get_or_insert_with(Default::default).order = Some(parse_flag("--rollback-order", a)?);
    }
    if let Some(m) = &o.endpoint_mode {
        spec.endpoint_spec.get_or_insert_with(Default::default).mode = Some(parse_flag("--endpoint-mode", m)?);
    }
    if !o.publish.is_empty() {
        let ports = o.publish.iter().map(|p| parse_publish(p)).collect::<Result<_, _>>()?;
        spec.endpoint_spec.get_or_insert_with(Default::default).ports = ports;
    }
    Ok(())
}

/// `-p PUBLISHED:TARGET[/PROTOCOL]`, on the routing mesh.
fn parse_publish(p: &str) -> Result<PortConfig, String> {
    let (pp, rest) = p
        .split_once(':')
        .ok_or_else(|| format!("invalid port {p:?}: want PUBLISHED:TARGET"))?;
    let (tp, proto) = rest.split_once('/').unwrap_or((rest, "tcp"));
    Ok(PortConfig {
        protocol: Some(parse_flag("--publish", proto)?),
        target_port: tp.parse().map_err(|_| format!("invalid target port {tp:?}"))?,
        published_port: pp.parse().map_err(|_| format!("invalid published port {pp:?}"))?,
        publish_mode: Some(PublishMode::Ingress),
        ..PortConfig::default()
    })
}

/// Parses docker's `--mount` syntax into a [`Mount`].
fn parse_mount(spec: &str) -> Result<Mount, String> {
    let bad = |why: String| format!("invalid argument \"{spec}\" for \"--mount\" flag: {why}");
    let mut kind = MountType::Volume;
    let mut source = String::new();
    let mut target = None;
    let mut read_only = false;
    let mut driver: Option<String> = None;
    let mut opts = BTreeMap::new();
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => kind = parse_flag("--mount", v).map_err(|_| bad(format!("unknown mount type '{v}'")))?,
            "source" | "src" => source = v.to_string(),
            "target" | "dst" | "destination" => target = Some(v.to_string()),
            "readonly" | "ro" => {
                if v.is_empty() || v == "1" || v == "true" {
                    read_only = true;
                }
            }
            "volume-driver" => driver = Some(v.to_string()),
            "volume-opt" => {
                let (ok, ov) = v.split_once('=').unwrap_or((v, ""));
                opts.insert(ok.to_string(), ov.to_string());
            }
            _ => return Err(bad(format!("unexpected key '{k}'"))),
        }
    }
    let target = target.ok_or_else(|| bad("target is required".into()))?;
    let volume_options = (driver.is_some() || !opts.is_empty()).then(|| VolumeOptions {
        driver_config: Some(Driver {
            name: driver.unwrap_or_default(),
            options: opts,
        }),
        ..VolumeOptions::default()
    });
    Ok(Mount {
        cluster_options: None,
        kind,
        source,
        target,
        read_only,
        consistency: String::new(),
        bind_options: None,
        volume_options,
        tmpfs_options: None,
    })
}

/// `service inspect --pretty`; `net_names` maps network IDs to names.
fn pretty(svc: &Service, net_names: &BTreeMap<String, String>) -> String {
    let spec = &svc.spec;
    let tt = &spec.task_template;
    let cs = tt.container_spec.clone().unwrap_or_default();
    let mut o = String::from("\n");
    let _ = writeln!(o, "ID:\t\t{}", svc.meta.id);
    let _ = writeln!(o, "Name:\t\t{}", spec.name);
    if !spec.labels.is_empty() {
        let _ = writeln!(o, "Labels:");
        for (k, v) in &spec.labels {
            let _ = writeln!(o, " {k}={v}");
        }
    }
    match spec.replicas() {
        None => {
            let _ = writeln!(o, "Service Mode:\tGlobal");
        }
        Some(n) => {
            let _ = writeln!(o, "Service Mode:\tReplicated");
            let _ = writeln!(o, " Replicas:\t{n}");
        }
    }
    let _ = writeln!(o, "Placement:");
    let placement = tt.placement.clone().unwrap_or_default();
    if !placement.constraints.is_empty() {
        let _ = writeln!(o, " Constraints:\t[{}]", placement.constraints.join(" "));
    }
    if placement.max_replicas > 0 {
        let _ = writeln!(o, " Max Replicas Per Node:   {}", placement.max_replicas);
    }
    for (cfg, title, order) in [
        (&spec.update_config, "UpdateConfig", "Update order:      "),
        (&spec.rollback_config, "RollbackConfig", "Rollback order:    "),
    ] {
        let Some(u) = cfg else {
            continue;
        };
        let _ = writeln!(o, "{title}:");
        let _ = writeln!(o, " Parallelism:\t{}", u.parallelism);
        if let Some(d) = u.delay.filter(|d| !d.is_zero()) {
            let _ = writeln!(o, " Delay:\t\t{}", go_duration(nanos(d)));
        }
        let _ = writeln!(
            o,
            " On failure:\t{}",
            u.failure_action.map(|a| wire(&a)).unwrap_or_default()
        );
        if let Some(m) = u.monitor {
            let _ = writeln!(o, " Monitoring Period: {}", go_duration(nanos(m)));
        }
        let _ = writeln!(o, " Max failure ratio: {}", u.max_failure_ratio.unwrap_or(0.0));
        let _ = writeln!(o, " {order}{}", u.order.map(|a| wire(&a)).unwrap_or_default());
    }
    let _ = writeln!(o, "ContainerSpec:");
    let _ = writeln!(o, " Image:\t\t{}", cs.image);
    for (list, label) in [(&cs.command, "Command"), (&cs.args, "Args"), (&cs.env, "Env")] {
        if !list.is_empty() {
            let joined: String = list.iter().map(|x| format!("{x} ")).collect();
            let _ = writeln!(o, " {label}:\t\t{joined}");
        }
    }
    if !cs.dir.is_empty() {
        let _ = writeln!(o, " Dir:\t\t{}", cs.dir);
    }
    if let Some(init) = cs.init {
        let _ = writeln!(o, " Init:\t\t{init}");
    }
    if !cs.user.is_empty() {
        let _ = writeln!(o, " User: {}", cs.user);
    }
    if !cs.mounts.is_empty() {
        let _ = writeln!(o, "Mounts:");
        for m in &cs.mounts {
            let _ = writeln!(o, " Target:\t{}", m.target);
            let _ = writeln!(o, "  Source:\t{}", m.source);
            let _ = writeln!(o, "  ReadOnly:\t{}", m.read_only);
            let _ = writeln!(o, "  Type:\t\t{}", wire(&m.kind));
        }
    }
    if let Some(res) = &tt.resources {
        let _ = writeln!(o, "Resources:");
        let limits = res.limits.as_ref().map(|l| (l.nano_cpus, l.memory_bytes));
        let reservations = res.reservations.as_ref().map(|r| (r.nano_cpus, r.memory_bytes));
        for (r, title) in [(reservations, "Reservations"), (limits, "Limits")] {
            let (cpu, mem) = r.unwrap_or_default();
            if cpu == 0 && mem == 0 {
                continue;
            }
            let _ = writeln!(o, " {title}:");
            if cpu != 0 {
                let _ = writeln!(o, "  CPU:\t\t{}", cpu as f64 / 1e9);
            }
            if mem != 0 {
                let _ = writeln!(o, "  Memory:\t{}", bytes_size(mem));
            }
        }
    }
    if !tt.networks.is_empty() {
        let names: String = tt
            .networks
            .iter()
            .map(|n| net_names.get(&n.target).unwrap_or(&n.target).clone() + " ")
            .collect();
        let _ = writeln!(o, "Networks: {names}");
    }
    let mode = spec.endpoint_spec.as_ref().and_then(|e| e.mode);
    let _ = writeln!(o, "Endpoint Mode:\t{}", mode.map(|m| wire(&m)).unwrap_or_default());
    let ports: Vec<&PortConfig> = svc.endpoint.iter().flat_map(|e| &e.ports).collect();
    if !ports.is_empty() {
        let _ = writeln!(o, "Ports:");
        for p in ports {
            let _ = writeln!(o, " PublishedPort = {}", p.published_port);
            let _ = writeln!(o, "  Protocol = {}", p.protocol.map(|p| wire(&p)).unwrap_or_default());
            let _ = writeln!(o, "  TargetPort = {}", p.target_port);
            let _ = writeln!(
                o,
                "  PublishMode = {}",
                p.publish_mode.map(|m| wire(&m)).unwrap_or_default()
            );
        }
    }
    o.push('\n');
    o
}

/// A duration as Go's integer nanoseconds.
fn nanos(d: std::time::Duration) -> i64 {
    shoal_shared::model::duration::to_nanos(d).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_dockers_default_tag() {
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(tagged("reg:5000/busybox"), "reg:5000/busybox:latest");
        assert_eq!(tagged("busybox:1.36"), "busybox:1.36");
    }

    #[test]
    fn mounts_and_ports_parse_into_the_model() {
        let m =
            parse_mount("type=volume,src=vd,dst=/v2,volume-driver=local,volume-opt=o=addr=10.0.0.1,readonly").unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"Type": "volume", "Source": "vd", "Target": "/v2", "ReadOnly": true,
                "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"o": "addr=10.0.0.1"}}}})
        );
        assert!(parse_mount("src=x").unwrap_err().ends_with("target is required"));
        let p = parse_publish("8080:80/udp").unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"Protocol": "udp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"})
        );
    }
}
