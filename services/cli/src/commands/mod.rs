//! The command line: one module per Docker noun, each owning its arguments
//! (clap), what it sends to shoal-api and what it prints (the docker CLI's
//! words and layout). Objects are read as the shared model's typed structs
//! (`shoal_shared::model`); `inspect` keeps the API's JSON as it came, for
//! the default JSON output and for `--format` templates (`{{json .}}`,
//! `.Spec.Name`).
//!
//! - [`swarm`]: `swarm init|join|join-token|leave|update` and `info`;
//! - [`node`]: `node ls|inspect|ps|rm|update|promote|demote`;
//! - [`service`]: `service create|ls|ps|inspect|rm|scale|update`;
//! - [`network`]: `network create|ls|inspect|rm`;
//! - [`task`]: the tasks table of `service ps` and `node ps`.
//!
//! What is common to them lives here: the list (`ls`) and `inspect` outputs,
//! filters, and running the command line.

use std::collections::BTreeMap;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::client::{urlencode, ApiError, Client, Host};
use crate::format::{render, table};

pub mod network;
pub mod node;
pub mod service;
pub mod swarm;
pub mod task;

/// Default socket of a manager's shoal-api.
pub const DEFAULT_HOST: &str = "unix:///var/lib/shoal/shoal.sock";

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Drive a shoal swarm: swarm, node, service and network commands"
)]
pub struct Cli {
    /// shoal-api to talk to: unix:///path or tcp://HOST:PORT.
    #[arg(short = 'H', long, env = "SHOAL_HOST", default_value = DEFAULT_HOST, global = true)]
    pub host: String,
    /// Trust certs signed only by this CA (TLS to a tcp:// host).
    #[arg(long, env = "SHOAL_TLSCACERT", global = true)]
    pub tlscacert: Option<std::path::PathBuf>,
    /// Path to this client's TLS certificate (for an API started with --tls-ca).
    #[arg(long, env = "SHOAL_TLSCERT", global = true)]
    pub tlscert: Option<std::path::PathBuf>,
    /// Path to this client's TLS key.
    #[arg(long, env = "SHOAL_TLSKEY", global = true)]
    pub tlskey: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage the swarm.
    #[command(subcommand)]
    Swarm(swarm::SwarmCmd),
    /// Manage swarm nodes.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Manage swarm services.
    #[command(subcommand)]
    Service(Box<service::ServiceCmd>),
    /// Manage swarm networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Display swarm-wide information.
    Info,
    /// Run a swarm node on this machine: nats-server and every shoal process, supervised.
    ///
    /// Prints `metrics <process> http://ADDR/metrics` for each shoal process
    /// (Prometheus metrics on a free loopback port), then `DOCKER_HOST=...` when ready.
    Up(Box<crate::up::UpArgs>),
    /// Load one component of a running cluster (over NATS; the API over --host) and print figures.
    ///
    /// What it creates is labeled `shoal.load=<run>` and removed when it ends, also on Ctrl-C.
    Load(Box<crate::load::LoadArgs>),
}

/// The flags of every `ls`.
#[derive(Debug, Args)]
pub struct ListOpts {
    /// Only display IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter output based on conditions provided (key=value).
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a Go template.
    #[arg(long)]
    format: Option<String>,
}

/// The flags of `node inspect` and `service inspect`.
#[derive(Debug, Args)]
pub struct InspectOpts {
    /// Print the information in a human friendly format.
    #[arg(long)]
    pretty: bool,
    /// Format output using a Go template.
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    refs: Vec<String>,
}

/// What a command ends with: printed output, or an error for stderr.
pub(crate) type Out = Result<String, String>;

/// What a command that acts on several objects ends with: what it printed
/// (for the objects it managed) and the errors of the others, if any.
pub(crate) type Printed = (String, Option<String>);

/// Runs the command line; returns the exit status.
pub fn run(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    if let Cmd::Up(args) = cli.cmd {
        return crate::up::run(*args);
    }
    let host = match Host::parse(&cli.host) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return 125;
        }
    };
    let tls = crate::client::tls_config(&crate::client::TlsFiles {
        ca: cli.tlscacert.clone(),
        cert: cli.tlscert.clone(),
        key: cli.tlskey.clone(),
    });
    let c = match tls {
        Ok(tls) => Client::with_tls(host, tls),
        Err(e) => {
            eprintln!("{e}");
            return 125;
        }
    };
    if let Cmd::Load(args) = cli.cmd {
        return crate::load::run(*args, c);
    }
    let (out, err) = dispatch(&c, cli.cmd);
    print!("{out}");
    match err {
        None => 0,
        Some(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Runs one command: (stdout, error). Multi-object commands print what succeeded.
fn dispatch(c: &Client, cmd: Cmd) -> Printed {
    match cmd {
        Cmd::Info => single(swarm::info(c)),
        Cmd::Up(_) => single(Err("shoal up is not an API command".into())),
        Cmd::Load(_) => single(Err("shoal load is not an API command".into())),
        Cmd::Swarm(cmd) => single(swarm::run(c, cmd)),
        Cmd::Node(cmd) => node::run(c, cmd),
        Cmd::Service(cmd) => service::run(c, *cmd),
        Cmd::Network(cmd) => network::run(c, cmd),
    }
}

/// A single-object command's outcome as [`Printed`].
pub(crate) fn single(r: Out) -> Printed {
    match r {
        Ok(s) => (s, None),
        Err(e) => (String::new(), Some(e)),
    }
}

/// Removes each object (`DELETE url(name)`, the name URL-encoded), printing
/// the names removed (as `docker ... rm` does).
pub(crate) fn remove_each(c: &Client, names: &[String], url: impl Fn(&str) -> String) -> Printed {
    each(names, |n| {
        c.delete(&url(&urlencode(n)))
            .map(|_| n.to_string())
            .map_err(String::from)
    })
}

/// Applies `f` to each name, printing a line per success and collecting the errors.
pub(crate) fn each(names: &[String], f: impl Fn(&str) -> Result<String, String>) -> Printed {
    let mut out = String::new();
    let mut errs = Vec::new();
    for n in names {
        match f(n) {
            Ok(msg) => {
                out.push_str(&msg);
                out.push('\n');
            }
            Err(e) => errs.push(e),
        }
    }
    (out, (!errs.is_empty()).then(|| errs.join("\n")))
}

/// `-f key=value` flags as Docker's `filters` query value (`{"key":{"value":true}}`), URL-encoded.
pub(crate) fn query_filters(filters: &[String]) -> Result<String, String> {
    if filters.is_empty() {
        return Ok(String::new());
    }
    let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| format!("bad format of filter (expected name=value): {f}"))?;
        m.entry(k.to_string()).or_default().insert(v.to_string(), true);
    }
    Ok(urlencode(&serde_json::to_string(&m).unwrap_or_default()))
}

/// `KEY=VALUE` flags (`--label`, `--opt`) as a map; a bare `KEY` maps to "".
pub(crate) fn parse_kv_list(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A flag's value as one of the model's enums, by its API spelling (`on-failure`, `drain`).
pub(crate) fn parse_flag<T: DeserializeOwned>(flag: &str, value: &str) -> Result<T, String> {
    serde_json::from_value(Value::String(value.to_string()))
        .map_err(|e| format!("invalid argument \"{value}\" for \"{flag}\" flag: {e}"))
}

/// An enum of the model as the API spells it (`ready`, `start-first`).
pub(crate) fn wire<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Capitalized, as the docker CLI prints states (`Ready`, `Active`).
pub(crate) fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// An ID as tables show it: its first 12 characters.
pub(crate) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The image without its `@sha256:` pin, as the docker CLI lists it.
pub(crate) fn image_name(img: &str) -> String {
    img.split('@').next().unwrap_or(img).to_string()
}

/// An object of the API's JSON as a typed model struct.
pub(crate) fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    T::deserialize(v).map_err(|e| format!("bad JSON from shoal-api: {e}"))
}

/// One row of an `ls`: Docker's formatter fields (serialized, for `--format`
/// templates), its ID (for `-q`) and the cells of the default table.
pub(crate) trait Row: Serialize {
    /// Every `--format` field with its header; the first [`Row::SHOWN`] make the default table.
    const COLUMNS: &'static [(&'static str, &'static str)];
    const SHOWN: usize;
    fn id(&self) -> &str;
    /// The default table's cells: the shown columns' fields, as text.
    fn cells(&self) -> Vec<String> {
        let fields = serde_json::to_value(self).unwrap_or_default();
        Self::COLUMNS[..Self::SHOWN]
            .iter()
            .map(|(k, _)| match &fields[*k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// A list command's output: `-q` IDs, a `--format` template per row (with
/// `table` making aligned columns under docker's header names), or the default table.
pub(crate) fn list_rows<R: Row>(rows: &[R], opts: &ListOpts) -> Out {
    if opts.quiet {
        return Ok(rows.iter().map(|r| format!("{}\n", r.id())).collect());
    }
    let values = || -> Result<Vec<Value>, String> {
        rows.iter()
            .map(|r| serde_json::to_value(r).map_err(|e| e.to_string()))
            .collect()
    };
    let Some(f) = &opts.format else {
        let header: Vec<&str> = R::COLUMNS[..R::SHOWN].iter().map(|(_, h)| *h).collect();
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        return Ok(table(&header, &cells));
    };
    let Some(t) = f.strip_prefix("table") else {
        return values()?.iter().map(|r| render(f, r)).collect();
    };
    let t = t.trim_start();
    let cells_of =
        |line: String| -> Vec<String> { line.trim_end_matches('\n').split('\t').map(String::from).collect() };
    let names: serde_json::Map<String, Value> = R::COLUMNS
        .iter()
        .map(|(k, h)| (k.to_string(), Value::String(h.to_string())))
        .collect();
    let header = cells_of(render(t, &Value::Object(names))?);
    let cells = values()?
        .iter()
        .map(|r| render(t, r).map(cells_of))
        .collect::<Result<Vec<_>, _>>()?;
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    Ok(table(&header, &cells))
}

/// `inspect` without `--pretty`: the objects' JSON (docker's 4-space indented
/// array), or `--format` rendered per object.
pub(crate) fn inspect_out(objs: &[Value], format: Option<&str>) -> Out {
    if let Some(f) = format {
        return objs.iter().map(|o| render(f, o)).collect();
    }
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    objs.serialize(&mut ser).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).into_owned() + "\n")
}

/// `GET <path>/<ref>` for each reference, as the API's JSON.
pub(crate) fn fetch_each(c: &Client, refs: &[String], url: impl Fn(&str) -> String) -> Result<Vec<Value>, ApiError> {
    refs.iter().map(|r| c.get(&url(&urlencode(r)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_encode_like_docker_and_flags_parse() {
        let q = query_filters(&["name=web".into(), "label=a=b".into()]).unwrap();
        assert_eq!(
            q,
            urlencode(r#"{"label":{"a=b":true},"name":{"web":true}}"#),
            "docker's map encoding"
        );
        assert!(query_filters(&["bogus".into()]).is_err());
        let cli = Cli::try_parse_from([
            "shoal", "service", "create", "-d", "--name", "w", "busybox", "ping", "-c", "1",
        ])
        .unwrap();
        match cli.cmd {
            Cmd::Service(svc) => {
                let service::ServiceCmd::Create { name, image, args, .. } = *svc else {
                    panic!("not a create")
                };
                assert_eq!((name.as_str(), image.as_str()), ("w", "busybox"));
                assert_eq!(args, ["ping", "-c", "1"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(image_name("busybox:1@sha256:abc"), "busybox:1");
    }

    #[test]
    fn model_enums_parse_from_flags_and_print_as_the_api_spells_them() {
        use shoal_shared::model::{Availability, RestartCondition};
        assert_eq!(
            parse_flag::<RestartCondition>("--restart-condition", "on-failure"),
            Ok(RestartCondition::OnFailure)
        );
        let e = parse_flag::<Availability>("--availability", "away").unwrap_err();
        assert!(
            e.starts_with("invalid argument \"away\" for \"--availability\" flag: "),
            "{e}"
        );
        assert_eq!(wire(&Availability::Drain), "drain");
        assert_eq!(cap(&wire(&Availability::Drain)), "Drain");
    }
}
