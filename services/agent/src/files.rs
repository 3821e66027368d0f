//! Secret and config files for task containers.
//!
//! The dispatcher sends the data of the secrets and configs a node's tasks
//! use with its assignments; the agent keeps it in memory only ([`Files::hold`],
//! dropped once no task of the node refers to it, [`Files::retain`]). When a
//! container is created, each reference becomes one file under
//! `<secrets-dir>/<task-id>/` (`--secrets-dir`, default
//! `/dev/shm/shoal/<node-id>`), owned and moded as the reference says, and
//! is bind-mounted read-only at its target: `/run/secrets/<name>` for a
//! secret, the config's path for a config. The directory must be on a tmpfs
//! (checked before any secret is written), so secret data never reaches the
//! node's disk; the task's directory is removed with its container.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shoal_shared::model::{config_path, secret_path, FileTarget, NodeDescription, Task};
use shoal_shared::secrets::Payload;

/// Docker's default mode for a secret or config file (0444).
pub const DEFAULT_MODE: u32 = 0o444;

/// One file to bind into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    pub source: PathBuf,
    pub target: String,
}

/// The data this node holds, and where its files go.
#[derive(Debug)]
pub struct Files {
    root: PathBuf,
    secrets: Mutex<HashMap<String, Payload>>,
    configs: Mutex<HashMap<String, Payload>>,
    /// This node, for the `.Node` of templated secrets and configs.
    node: Mutex<NodeDescription>,
}

/// Whether `path` lies on a tmpfs (or ramfs), from `/proc/self/mountinfo`:
/// the mount whose mount point is the longest prefix of the path decides.
pub fn on_tmpfs(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<(usize, bool)> = None;
    for line in info.lines() {
        // id parent major:minor root mount-point options... - fstype source super-options
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mp), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        let mp = mp.replace("\\040", " ");
        if path.starts_with(&mp) && best.is_none_or(|(len, _)| mp.len() >= len) {
            best = Some((mp.len(), matches!(*fstype, "tmpfs" | "ramfs")));
        }
    }
    best.is_some_and(|(_, tmpfs)| tmpfs)
}

impl Files {
    pub fn new(root: PathBuf) -> Files {
        Files {
            root,
            secrets: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            node: Mutex::new(NodeDescription::default()),
        }
    }

    /// The node's description (hostname, platform), once known.
    pub fn set_node(&self, node: NodeDescription) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = node;
    }

    /// The default directory of a node's files.
    pub fn default_root(node_id: &str) -> PathBuf {
        PathBuf::from("/dev/shm/shoal").join(node_id)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps data received with an assignment.
    pub fn hold(&self, secrets: Vec<Payload>, configs: Vec<Payload>) {
        let mut s = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        for p in secrets {
            s.insert(p.id.clone(), p);
        }
        let mut c = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        for p in configs {
            c.insert(p.id.clone(), p);
        }
    }

    /// Drops the data no task in `tasks` refers to.
    pub fn retain<'a>(&self, tasks: impl Iterator<Item = &'a Task>) {
        let mut secret_ids = std::collections::HashSet::new();
        let mut config_ids = std::collections::HashSet::new();
        for t in tasks {
            if let Some(c) = t.spec.container_spec.as_ref() {
                secret_ids.extend(c.secrets.iter().map(|r| r.secret_id.clone()));
                config_ids.extend(c.configs.iter().map(|r| r.config_id.clone()));
            }
        }
        self.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| secret_ids.contains(id));
        self.configs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| config_ids.contains(id));
    }

    /// How many secrets and configs are held (for tests).
    pub fn held(&self) -> (usize, usize) {
        (
            self.secrets.lock().unwrap_or_else(|e| e.into_inner()).len(),
            self.configs.lock().unwrap_or_else(|e| e.into_inner()).len(),
        )
    }

    fn task_dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    /// Writes a task's secret and config files and returns the binds; an
    /// error names what is missing (the task is then rejected).
    pub fn materialize(&self, task: &Task) -> Result<Vec<FileMount>, String> {
        let Some(c) = task.spec.container_spec.as_ref() else {
            return Ok(Vec::new());
        };
        if c.secrets.is_empty() && c.configs.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.task_dir(&task.meta.id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
        if !c.secrets.is_empty() && !on_tmpfs(&dir) {
            return Err(format!(
                "secrets directory {} is not on a tmpfs: secret data must not be written to disk (choose one with \
                 --secrets-dir)",
                self.root.display()
            ));
        }
        // Each reference's payload, then the data each file gets: a
        // templated payload (driver `golang`) expanded for this task.
        let secrets: Vec<(String, Payload)> = {
            let held = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
            c.secrets
                .iter()
                .map(|r| {
                    let p = held.get(&r.secret_id).ok_or_else(|| {
                        format!(
                            "secret {} ({}) was not delivered to this node",
                            r.secret_name, r.secret_id
                        )
                    })?;
                    Ok((secret_path(r), p.clone()))
                })
                .collect::<Result<_, String>>()?
        };
        let configs: Vec<(String, Payload)> = {
            let held = self.configs.lock().unwrap_or_else(|e| e.into_inner());
            c.configs
                .iter()
                // A runtime (credential spec) config has no file.
                .filter(|r| r.file.is_some())
                .map(|r| {
                    let p = held.get(&r.config_id).ok_or_else(|| {
                        format!(
                            "config {} ({}) was not delivered to this node",
                            r.config_name, r.config_id
                        )
                    })?;
                    Ok((config_path(r), p.clone()))
                })
                .collect::<Result<_, String>>()?
        };
        let data = |p: &Payload| -> Result<Vec<u8>, String> {
            match p.templating.as_deref() {
                None => Ok(p.data.clone()),
                Some("golang") => self.expand(task, &p.data, &secrets, &configs),
                Some(other) => Err(format!("unrecognized template type {other}")),
            }
        };
        let mut out = Vec::new();
        let secret_refs = c.secrets.iter();
        for (i, (r, (target, p))) in secret_refs.zip(&secrets).enumerate() {
            let source = dir.join(format!("secret-{i}"));
            write_file(&source, &data(p)?, r.file.as_ref())?;
            out.push(FileMount {
                source,
                target: target.clone(),
            });
        }
        let config_refs = c.configs.iter().filter(|r| r.file.is_some());
        for (i, (r, (target, p))) in config_refs.zip(&configs).enumerate() {
            let source = dir.join(format!("config-{i}"));
            write_file(&source, &data(p)?, r.file.as_ref())?;
            out.push(FileMount {
                source,
                target: target.clone(),
            });
        }
        Ok(out)
    }

    /// A templated payload expanded for `task`, as SwarmKit's agent does:
    /// `.Service`, `.Node`, `.Task`, and `env`, `secret` and `config` over
    /// the task's environment and the raw data of its other references.
    fn expand(
        &self,
        task: &Task,
        data: &[u8],
        secrets: &[(String, Payload)],
        configs: &[(String, Payload)],
    ) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(data).map_err(|_| "failed to parse template: data is not UTF-8".to_string())?;
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ctx = crate::template::task_context(task, &node);
        let by_target = |refs: &[(String, Payload)]| -> HashMap<String, String> {
            refs.iter()
                .map(|(t, p)| {
                    let name = t.strip_prefix("/run/secrets/").unwrap_or(t);
                    (name.to_string(), String::from_utf8_lossy(&p.data).into_owned())
                })
                .collect()
        };
        let env = task
            .spec
            .container_spec
            .as_ref()
            .map(|c| {
                c.env
                    .iter()
                    .filter_map(|e| e.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let lookups = shoal_shared::template::Lookups {
            env,
            secrets: by_target(secrets),
            configs: by_target(configs),
        };
        shoal_shared::template::expand_payload(text, &ctx, lookups).map(String::into_bytes)
    }

    /// Removes a task's files (its container is gone).
    pub fn remove(&self, task_id: &str) {
        if task_id.is_empty() || task_id.contains('/') {
            return;
        }
        let dir = self.task_dir(task_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "agent: cannot remove a task's secret files");
            }
        }
    }
}

/// Writes one file with the reference's owner and mode (0444 and root by default).
fn write_file(path: &Path, data: &[u8], target: Option<&FileTarget>) -> Result<(), String> {
    let mode = target.map(|t| t.mode).filter(|m| *m != 0).unwrap_or(DEFAULT_MODE) & 0o7777;
    let (uid, gid) = target.map(FileTarget::owner).unwrap_or((0, 0));
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give {} to {uid}:{gid}: {e}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::{ConfigReference, ContainerSpec, SecretReference, TaskSpec};

    fn task(id: &str) -> Task {
        let spec = TaskSpec {
            container_spec: Some(ContainerSpec {
                image: "busybox".into(),
                secrets: vec![SecretReference {
                    file: Some(FileTarget {
                        name: "pw".into(),
                        uid: "1000".into(),
                        gid: "1001".into(),
                        mode: 0o400,
                    }),
                    secret_id: "s1".into(),
                    secret_name: "db_pw".into(),
                }],
                configs: vec![ConfigReference {
                    file: Some(FileTarget {
                        name: "/etc/app.conf".into(),
                        uid: "0".into(),
                        gid: "0".into(),
                        mode: 0o444,
                    }),
                    config_id: "c1".into(),
                    config_name: "app".into(),
                    ..ConfigReference::default()
                }],
                ..ContainerSpec::default()
            }),
            ..TaskSpec::default()
        };
        Task::new(id, "svc", spec)
    }

    fn payload(id: &str, data: &[u8]) -> Payload {
        Payload {
            id: id.into(),
            name: id.into(),
            data: data.to_vec(),
            templating: None,
        }
    }

    #[test]
    fn files_are_written_on_tmpfs_with_owner_and_mode_and_removed_with_the_task() {
        let shm = Path::new("/dev/shm");
        if !on_tmpfs(shm) {
            eprintln!("SKIPPED: /dev/shm is not a tmpfs here");
            return;
        }
        let root = shm.join(format!("shoal-files-test-{}", shoal_shared::id::new_id()));
        let files = Files::new(root.clone());
        let t = task("t1");
        let e = files.materialize(&t).unwrap_err();
        assert!(e.contains("secret db_pw (s1) was not delivered"), "{e}");
        files.hold(vec![payload("s1", b"hunter2")], vec![payload("c1", b"k=v\n")]);
        let mounts = files.materialize(&t).unwrap();
        assert_eq!(
            mounts.iter().map(|m| m.target.as_str()).collect::<Vec<_>>(),
            ["/run/secrets/pw", "/etc/app.conf"]
        );
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&mounts[0].source).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1000, 1001, 0o400));
        assert_eq!(std::fs::read(&mounts[0].source).unwrap(), b"hunter2");
        files.retain(std::iter::empty());
        assert_eq!(files.held(), (0, 0));
        files.remove("t1");
        assert!(!root.join("t1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn secrets_are_refused_off_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        if on_tmpfs(dir.path()) {
            eprintln!("SKIPPED: the temp dir is a tmpfs here");
            return;
        }
        let files = Files::new(dir.path().to_path_buf());
        files.hold(vec![payload("s1", b"x")], vec![payload("c1", b"y")]);
        let e = files.materialize(&task("t1")).unwrap_err();
        assert!(e.contains("is not on a tmpfs"), "{e}");
    }
}
