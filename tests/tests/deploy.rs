//! `k8s-free-deploy/` as systemd and the binaries see it:
//! - every unit passes `systemd-analyze verify` without a word (its
//!   `/usr/local/bin/` ExecStart paths pointed at the built binaries), and a
//!   deliberately broken unit does not;
//! - every `shoal-*` unit a unit depends on is one of the shipped units;
//! - `etc/nats.conf` passes `nats-server -t`;
//! - the example env files name only real variables: each `SHOAL_*` set (or
//!   shown commented) in a file is a flag variable (`[env: ...]` in `--help`)
//!   of a binary whose unit reads that file, or a telemetry variable every
//!   binary reads; no variable is set empty (an empty value is an error, not
//!   the default);
//! - every required flag of each binary (its `--help` usage line) is set for
//!   its unit, by `Environment=`, an `EnvironmentFile=` or `ExecStart`;
//!   `ExecStart` flags are real and its `${VAR}`s are set;
//! - `k8s-free-deploy/README.md` names every flag variable of every unit's binary;
//! - `k8s-free-deploy/install` into a staging root: a second run changes
//!   nothing and keeps edited configuration; `--role worker` switches the
//!   enabled target.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_tests::bin;

/// Read by `shoal_shared::telemetry` in every binary; not flags.
const TELEMETRY_VARS: &[&str] = &["SHOAL_LOG", "SHOAL_LOG_FORMAT", "SHOAL_TRACE_FILE"];
/// Where the units expect the shoal binaries (the install script puts them there).
const INSTALLED_BIN: &str = "/usr/local/bin/";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s-free-deploy")
}

fn unit_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("systemd"))
        .expect("k8s-free-deploy/systemd")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "units: {files:?}");
    files
}

/// Copies `units` into a temp dir with the installed binary paths pointed at
/// the built ones, lets `edit` change a copy, runs `systemd-analyze verify`
/// on all of them; returns whether it succeeded and said nothing, and what it said.
fn verify(units: &[PathBuf], edit: impl Fn(&str, String) -> String) -> (bool, String) {
    let tool = shoal_tests::which("systemd-analyze");
    let built = bin("shoal-api").parent().expect("bin dir").to_path_buf();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut copies = Vec::new();
    for unit in units {
        let name = unit.file_name().expect("unit name").to_string_lossy().to_string();
        let text = std::fs::read_to_string(unit).expect("unit");
        let text = text.replace(INSTALLED_BIN, &format!("{}/", built.display()));
        let copy = dir.path().join(&name);
        std::fs::write(&copy, edit(&name, text)).expect("write unit");
        copies.push(copy);
    }
    let out = Command::new(tool)
        .arg("verify")
        .args(&copies)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let (ok, said) = verify(&unit_files(), |_, text| text);
    assert!(ok, "systemd-analyze verify:\n{said}");
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above is only worth something if it fails: a misspelt key, an
    // unknown dependency and a missing binary must each be reported.
    let units = unit_files();
    let (ok, said) = verify(&units, |name, text| match name {
        "shoal-api.service" => text.replace("Restart=always", "Restart=allways"),
        _ => text,
    });
    assert!(!ok && said.contains("allways"), "{said}");
    let (ok, said) = verify(&units, |name, text| match name {
        "shoal-agent.service" => text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
        _ => text,
    });
    assert!(!ok && said.contains("NoNewPrivilege"), "{said}");
    let (ok, said) = verify(&units, |name, text| match name {
        "shoal-scheduler.service" => text.replace("/shoal-scheduler ", "/shoal-no-such-binary "),
        _ => text,
    });
    assert!(!ok && said.contains("shoal-no-such-binary"), "{said}");
}

/// What a binary's `--help` says about its flags.
struct Help {
    /// `--flag` → its `[env: NAME=]`.
    env_of: BTreeMap<String, String>,
    /// Flags on the usage line: the required ones.
    required: Vec<String>,
}

fn help(binary: &str) -> Help {
    let out = Command::new(bin(binary)).arg("--help").output().expect("--help");
    assert!(out.status.success(), "{binary} --help failed");
    let text = String::from_utf8(out.stdout).expect("utf-8 help");
    // Entries: a flag's own line (`  -h, --help`, `      --data-dir <DIR>`),
    // then its description, indented further (it may mention other flags,
    // and `[env: NAME=]` may be wrapped onto its own line).
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut required = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(usage) = line.strip_prefix("Usage: ") {
            required = usage
                .split_whitespace()
                .filter(|w| w.starts_with("--"))
                .map(str::to_string)
                .collect();
        } else if t.starts_with('-') && line.len() - t.len() <= 6 {
            let long = t.split_whitespace().find(|w| w.starts_with("--")).unwrap_or(t);
            entries.push((long.trim_end_matches(',').to_string(), t.to_string()));
        } else if let Some((_, desc)) = entries.last_mut() {
            desc.push(' ');
            desc.push_str(t);
        }
    }
    let mut env_of = BTreeMap::new();
    for (flag, desc) in entries {
        if let Some(rest) = desc.split("[env: ").nth(1) {
            let name = rest.split('=').next().expect("env name").trim().to_string();
            env_of.insert(flag, name);
        }
    }
    assert!(!env_of.is_empty(), "{binary}: no [env: ...] in --help:\n{text}");
    Help { env_of, required }
}

/// One unit as the environment check needs it.
struct Unit {
    name: String,
    /// `Environment=` assignments, in order.
    environment: Vec<(String, String)>,
    /// `EnvironmentFile=` names under /etc/shoal (without a leading `-`).
    env_files: Vec<String>,
    /// ExecStart split on whitespace.
    exec: Vec<String>,
}

fn parse_unit(path: &Path) -> Unit {
    let text = std::fs::read_to_string(path).expect("unit");
    let mut unit = Unit {
        name: path.file_name().expect("name").to_string_lossy().to_string(),
        environment: Vec::new(),
        env_files: Vec::new(),
        exec: Vec::new(),
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Environment=") {
            for kv in v.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("Environment=K=V");
                unit.environment.push((k.to_string(), v.to_string()));
            }
        } else if let Some(v) = line.strip_prefix("EnvironmentFile=") {
            let file = v.trim_start_matches('-');
            // Written by shoal-api on a promoted host, not an example.
            if file == "/var/lib/shoal/promoted.env" {
                continue;
            }
            let name = file
                .strip_prefix("/etc/shoal/")
                .unwrap_or_else(|| panic!("{}: EnvironmentFile {file} is not in /etc/shoal", unit.name));
            unit.env_files.push(name.to_string());
        } else if let Some(v) = line.strip_prefix("ExecStart=") {
            unit.exec = v.split_whitespace().map(str::to_string).collect();
        }
    }
    unit
}

/// An example env file: every `VAR=value` set, and every `#VAR=value` shown.
struct EnvFile {
    set: Vec<(String, String)>,
    shown: Vec<String>,
    /// Every `SHOAL_*` word anywhere in the file, comments included.
    mentioned: BTreeSet<String>,
}

fn parse_env_file(name: &str) -> EnvFile {
    let path = deploy_dir().join("etc").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut file = EnvFile {
        set: Vec::new(),
        shown: Vec::new(),
        mentioned: BTreeSet::new(),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(shown) = line.strip_prefix('#') {
            if let Some((k, _)) = shown.trim().split_once('=') {
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    file.shown.push(k.to_string());
                }
            }
        } else {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: {line:?} is neither a comment nor VAR=value"));
            file.set.push((k.to_string(), v.to_string()));
        }
    }
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("SHOAL_") {
            file.mentioned.insert(word.to_string());
        }
    }
    file
}

#[test]
fn env_examples_name_real_flags_and_set_required_ones() {
    let units: Vec<Unit> = unit_files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .map(|p| parse_unit(p))
        .collect();
    let mut helps: BTreeMap<String, Help> = BTreeMap::new();
    let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for unit in &units {
        let exe = unit.exec.first().expect("ExecStart");
        let Some(binary) = exe.strip_prefix(INSTALLED_BIN) else {
            continue; // nats-server: its config is checked by nats-server itself.
        };
        helps.insert(unit.name.clone(), help(binary));
        for f in &unit.env_files {
            readers.entry(f.clone()).or_default().push(unit.name.clone());
        }
    }
    let all_vars: BTreeSet<&str> = helps
        .values()
        .flat_map(|h| h.env_of.values().map(String::as_str))
        .chain(TELEMETRY_VARS.iter().copied())
        .collect();

    // Every example env file is read by some unit, names only variables the
    // units reading it take, and sets none empty.
    let examples: BTreeSet<String> = std::fs::read_dir(deploy_dir().join("etc"))
        .expect("k8s-free-deploy/etc")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".env"))
        .collect();
    for name in &examples {
        let Some(units_reading) = readers.get(name) else {
            problems.push(format!("{name}: no unit reads /etc/shoal/{name}"));
            continue;
        };
        let file = parse_env_file(name);
        let taken: BTreeSet<&str> = units_reading
            .iter()
            .flat_map(|u| helps[u].env_of.values().map(String::as_str))
            .chain(TELEMETRY_VARS.iter().copied())
            .collect();
        let named = file.set.iter().map(|(k, _)| k).chain(&file.shown);
        for var in named.filter(|v| v.starts_with("SHOAL_")) {
            if !taken.contains(var.as_str()) {
                problems.push(format!(
                    "{name}: {var} is not a flag variable of {}",
                    units_reading.join(", ")
                ));
            }
        }
        for (k, v) in &file.set {
            if v.is_empty() {
                problems.push(format!(
                    "{name}: {k} is set empty (an error, not the default): comment it out"
                ));
            }
        }
        for word in &file.mentioned {
            if !all_vars.contains(word.as_str()) {
                problems.push(format!("{name}: mentions {word}, which no shoal binary reads"));
            }
        }
    }
    for (name, _) in readers.iter().filter(|(n, _)| !examples.contains(*n)) {
        problems.push(format!(
            "a unit reads /etc/shoal/{name}, but k8s-free-deploy/etc has no example of it"
        ));
    }

    // Every unit's binary gets its required flags; ExecStart names real flags
    // and set variables; Environment= names real variables.
    for unit in units.iter().filter(|u| helps.contains_key(&u.name)) {
        let help = &helps[&unit.name];
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &unit.environment {
            if k.starts_with("SHOAL_") && !help.env_of.values().any(|e| e == k) && !TELEMETRY_VARS.contains(&k.as_str())
            {
                problems.push(format!("{}: Environment={k} is not a flag variable of it", unit.name));
            }
            env.insert(k.clone(), v.clone());
        }
        for f in unit.env_files.iter().filter(|f| examples.contains(*f)) {
            env.extend(parse_env_file(f).set);
        }
        let args = &unit.exec[1..];
        for a in args {
            if a.starts_with("--") && !help.env_of.contains_key(a) {
                problems.push(format!("{}: ExecStart flag {a} is not a flag of its binary", unit.name));
            }
            if let Some(var) = a.split("${").nth(1).and_then(|r| r.split('}').next()) {
                if env.get(var).is_none_or(|v| v.is_empty()) {
                    problems.push(format!("{}: ExecStart uses ${{{var}}}, which nothing sets", unit.name));
                }
            }
        }
        for flag in &help.required {
            let by_env = help.env_of.get(flag).is_some_and(|v| env.contains_key(v));
            if !by_env && !args.contains(flag) {
                problems.push(format!(
                    "{}: required flag {flag} ({}) is set nowhere",
                    unit.name,
                    help.env_of.get(flag).map_or("no env", String::as_str)
                ));
            }
        }
    }

    // The one place every variable is documented.
    let readme = std::fs::read_to_string(deploy_dir().join("README.md")).expect("k8s-free-deploy/README.md");
    for var in &all_vars {
        if !readme.contains(&format!("`{var}`")) {
            problems.push(format!("k8s-free-deploy/README.md does not document `{var}`"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs `k8s-free-deploy/install` into a staging root; returns its output.
fn install(root: &Path, role: &str) -> String {
    let built = bin("shoal-api").parent().expect("bin dir").to_path_buf();
    let out = Command::new(deploy_dir().join("install"))
        .args(["--role", role, "--bin-dir"])
        .arg(&built)
        .arg("--root")
        .arg(root)
        .output()
        .expect("run install");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install --role {role} failed:\n{said}");
    said
}

/// Whether `wants` holds the enable symlink of `unit` (it points at the
/// unit's path on the installed host, not in the staging root).
fn enabled(wants: &Path, unit: &str) -> bool {
    wants.join(unit).symlink_metadata().is_ok()
}

#[test]
fn install_is_idempotent_keeps_config_and_switches_roles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let first = install(root, "manager");
    for path in [
        "usr/local/bin/shoal-agent",
        "usr/local/bin/shoal-dns",
        "etc/systemd/system/shoal-dns.service",
        "etc/systemd/system/shoal-manager.target",
        "etc/shoal/shoal.env",
        "etc/shoal/nats.conf",
        "var/lib/shoal/node-id",
    ] {
        assert!(root.join(path).exists(), "{path} missing after:\n{first}");
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    assert!(enabled(&wants, "shoal-manager.target"), "{first}");
    let node_id = std::fs::read_to_string(root.join("var/lib/shoal/node-id")).expect("node-id");
    let env = std::fs::read_to_string(root.join("etc/shoal/shoal.env")).expect("shoal.env");
    assert!(
        env.lines().any(|l| l == format!("SHOAL_NODE_ID={}", node_id.trim())),
        "{env}"
    );

    // Again, with a configuration edited meanwhile: nothing replaced, nothing lost.
    let api_env = root.join("etc/shoal/api.env");
    std::fs::write(&api_env, "SHOAL_LISTEN=tcp://127.0.0.1:2999\n").expect("edit api.env");
    let second = install(root, "manager");
    assert!(
        !second.contains("installed"),
        "second run replaced something:\n{second}"
    );
    assert_eq!(
        std::fs::read_to_string(&api_env).expect("api.env"),
        "SHOAL_LISTEN=tcp://127.0.0.1:2999\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/shoal/shoal.env")).expect("shoal.env"),
        env
    );

    // Demoted to a worker: the worker target enabled, the manager target not.
    let third = install(root, "worker");
    assert!(enabled(&wants, "shoal-worker.target"), "{third}");
    assert!(!enabled(&wants, "shoal-manager.target"), "{third}");
}

#[test]
fn units_refer_only_to_shipped_shoal_units() {
    // systemd-analyze accepts a dependency on a unit that does not exist (it
    // may be installed later), so a misspelt shoal-* name must be caught here.
    let files = unit_files();
    let shipped: BTreeSet<String> = files
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().to_string())
        .collect();
    let mut problems = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("unit");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if !["Wants", "Requires", "After", "Before", "PartOf", "BindsTo", "WantedBy"].contains(&key) {
                continue;
            }
            for name in value.split_whitespace().filter(|n| n.starts_with("shoal-")) {
                if !shipped.contains(name) {
                    problems.push(format!("{}: {key}={name} is not a shipped unit", path.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn nats_conf_is_valid_for_nats_server() {
    let conf = deploy_dir().join("etc/nats.conf");
    let out = Command::new(shoal_tests::which("nats-server"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run nats-server -t");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.contains("is valid"), "{said}");
}
