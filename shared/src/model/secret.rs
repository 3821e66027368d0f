//! Swarm secrets and configs, and the references a container spec makes to them.
//!
//! A [`Secret`] in the store never holds its data in the clear: the API seals
//! `Spec.Data` with the managers' key ([`crate::secrets::SecretKey`]) into
//! `SealedData` and drops `Spec.Data`; the dispatcher opens it only to send
//! it with the assignment of a node that runs a task using it. Docker's
//! answers omit the data of a secret (`Spec.Data` is never shown); a
//! [`Config`]'s data is not confidential and is kept and shown as given
//! (base64 in JSON, as Go writes a `[]byte`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Driver;
use crate::store::Meta;

/// `SecretSpec` as Docker's API takes it. `Data` is base64 text; it is only
/// ever set in a create or update request, never in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SecretSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A secrets driver plugin (shoal has none: refused at create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// The template driver (`--template-driver`; refused at create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

/// A secret as the store keeps it: its spec without data, and the data sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Spec", default)]
    pub spec: SecretSpec,
    /// `base64(nonce || ciphertext)` of the data, sealed with the managers'
    /// key and the secret's ID as associated data. Store-only.
    #[serde(rename = "SealedData", default)]
    pub sealed_data: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.meta.id)
            .field("name", &self.spec.name)
            .field("labels", &self.spec.labels)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Docker's shape: no data, sealed or not.
    pub fn to_docker(&self) -> serde_json::Value {
        let mut spec = self.spec.clone();
        spec.data = None;
        serde_json::json!({
            "ID": self.meta.id,
            "Version": self.meta.version,
            "CreatedAt": super::gotime::format(&self.meta.created_at),
            "UpdatedAt": super::gotime::format(&self.meta.updated_at),
            "Spec": spec,
        })
    }
}

store_object!(Secret, Secret, spec_named);

/// `ConfigSpec`: like a secret's, with `Data` kept in the store (base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConfigSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

/// A config in the store, as Docker shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Spec", default)]
    pub spec: ConfigSpec,
}

store_object!(Config, Config, spec_named);

/// Where a secret or config appears in the container: a file `Name`
/// (relative: under `/run/secrets/` for a secret; a config's is an absolute
/// path or relative to `/`), owned by `UID`:`GID` with `Mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileTarget {
    pub name: String,
    #[serde(rename = "UID")]
    pub uid: String,
    #[serde(rename = "GID")]
    pub gid: String,
    pub mode: u32,
}

impl FileTarget {
    /// The owner as numbers (Docker's default, and an unparsable one: 0).
    pub fn owner(&self) -> (u32, u32) {
        (
            self.uid.trim().parse().unwrap_or(0),
            self.gid.trim().parse().unwrap_or(0),
        )
    }
}

/// `ContainerSpec.Secrets[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SecretReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    pub secret_name: String,
}

/// `ContainerSpec.Configs[]`. `Runtime` (a credential spec) is kept, not used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConfigReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<serde_json::Value>,
    #[serde(rename = "ConfigID")]
    pub config_id: String,
    pub config_name: String,
}

/// Where Docker mounts secrets in a container.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The container path of a secret reference (`/run/secrets/<target>`, an
/// absolute target as given).
pub fn secret_path(r: &SecretReference) -> String {
    let name = r.file.as_ref().map(|f| f.name.as_str()).filter(|n| !n.is_empty());
    let name = name.unwrap_or(&r.secret_name);
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("{SECRETS_DIR}/{name}")
    }
}

/// The container path of a config reference (relative targets are under `/`).
pub fn config_path(r: &ConfigReference) -> String {
    let name = r.file.as_ref().map(|f| f.name.as_str()).filter(|n| !n.is_empty());
    let name = name.unwrap_or(&r.config_name);
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreObject;

    #[test]
    fn a_secret_shows_no_data_and_debug_prints_none() {
        let mut s = Secret {
            meta: Meta::new("s1"),
            spec: SecretSpec {
                name: "db_pw".into(),
                data: Some("c2VjcmV0".into()),
                ..SecretSpec::default()
            },
            sealed_data: "SEALED".into(),
        };
        s.spec.labels.insert("a".into(), "b".into());
        let v = s.to_docker();
        assert_eq!(v["Spec"], serde_json::json!({"Name": "db_pw", "Labels": {"a": "b"}}));
        assert!(!v.to_string().contains("SEALED"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("SEALED") && !dbg.contains("c2VjcmV0"), "{dbg}");
        let rec = s.to_record().unwrap();
        assert_eq!(rec.name.as_deref(), Some("db_pw"));
    }

    #[test]
    fn references_decode_from_docker_json_and_give_container_paths() {
        let r: SecretReference = serde_json::from_str(
            r#"{"File":{"Name":"pw","UID":"1000","GID":"50","Mode":384},"SecretID":"x","SecretName":"db_pw"}"#,
        )
        .unwrap();
        assert_eq!(secret_path(&r), "/run/secrets/pw");
        assert_eq!(r.file.as_ref().unwrap().owner(), (1000, 50));
        let c: ConfigReference = serde_json::from_str(
            r#"{"File":{"Name":"/etc/app.conf","UID":"0","GID":"0","Mode":292},"ConfigID":"c","ConfigName":"app"}"#,
        )
        .unwrap();
        assert_eq!(config_path(&c), "/etc/app.conf");
        let c = ConfigReference {
            config_name: "app".into(),
            ..ConfigReference::default()
        };
        assert_eq!(config_path(&c), "/app");
    }
}
