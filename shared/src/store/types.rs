//! Wire types of the store API: records, transactions, lists and change events.
//!
//! The store is generic: it keeps [`Record`]s, each holding one object's JSON
//! body plus the few attributes the store itself needs (kind, id, version,
//! unique name, labels and secondary index fields). The typed object model in
//! [`crate::model`] converts to and from records through [`StoreObject`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ShoalError};

/// The kinds of object the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cluster,
    Node,
    Service,
    Task,
    Network,
    /// Opaque objects used by tests and tools; no uniqueness rules.
    Blob,
    /// Swarm secrets (data sealed by the API, see `model::Secret`).
    Secret,
    /// Swarm configs.
    Config,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Cluster,
        Kind::Node,
        Kind::Service,
        Kind::Task,
        Kind::Network,
        Kind::Blob,
        Kind::Secret,
        Kind::Config,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Blob => "blob",
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kinds whose `name` must be unique in the cluster (Docker refuses a
    /// second service, network, secret or config of the same name).
    pub fn unique_names(self) -> bool {
        matches!(self, Kind::Service | Kind::Network | Kind::Secret | Kind::Config)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Version` as Docker prints it: `{"Index": 109}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    #[serde(rename = "Index", default)]
    pub index: u64,
}

/// The four fields every stored object carries at the top of its JSON, as in
/// Docker: `ID`, `Version.Index`, `CreatedAt`, `UpdatedAt`. The store sets
/// version and timestamps; callers set the ID (see [`crate::id::new_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Version", default)]
    pub version: Version,
    #[serde(
        rename = "CreatedAt",
        default = "zero_time",
        serialize_with = "crate::model::gotime::serialize"
    )]
    pub created_at: DateTime<Utc>,
    #[serde(
        rename = "UpdatedAt",
        default = "zero_time",
        serialize_with = "crate::model::gotime::serialize"
    )]
    pub updated_at: DateTime<Utc>,
}

/// The indexed field (`Record::fields`, value `"1"`) a record carries for
/// each object it refers to, so a removal can check in its own write that
/// nothing refers to it any more (`Op::NoneMatch`; see [`reference_guards`]).
pub fn reference_field(kind: Kind, id: &str) -> String {
    format!("ref.{kind}.{id}")
}

/// The guards of a write that removes `kind`/`id`: no object of the
/// `referrers` kinds refers to it (by [`reference_field`]).
pub fn unreferenced(kind: Kind, id: &str, referrers: &[Kind]) -> Vec<crate::store::Op> {
    referrers
        .iter()
        .map(|&r| crate::store::Op::NoneMatch {
            kind: r,
            filter: crate::store::ListFilter::default().field(reference_field(kind, id), "1"),
        })
        .collect()
}

/// The guards of a write whose object refers to `refs`: each still exists.
pub fn reference_guards(refs: &[(Kind, String)]) -> Vec<crate::store::Op> {
    refs.iter()
        .map(|(kind, id)| crate::store::Op::Exists {
            kind: *kind,
            id: id.clone(),
        })
        .collect()
}

/// Go's zero `time.Time`, which Docker prints as `0001-01-01T00:00:00Z`.
pub fn zero_time() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Meta {
    pub fn new(id: impl Into<String>) -> Meta {
        Meta {
            id: id.into(),
            version: Version::default(),
            created_at: zero_time(),
            updated_at: zero_time(),
        }
    }
}

/// A typed object that lives in the store.
pub trait StoreObject: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    /// The name used for lookups and uniqueness (services and networks are unique).
    fn name(&self) -> Option<String> {
        None
    }
    /// User labels (`Spec.Labels`), for list filters.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// Secondary attributes the store can filter on without decoding the body,
    /// e.g. a task's `service`, `node`, `desired-state`.
    fn fields(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Converts to the store's generic record.
    fn to_record(&self) -> Result<Record, ShoalError> {
        let meta = self.meta();
        let body = serde_json::to_string(self)
            .map(Body)
            .map_err(|e| ShoalError::new(ErrorCode::InvalidArgument, format!("encode {}: {e}", Self::KIND)))?;
        Ok(Record {
            kind: Self::KIND,
            id: meta.id.clone(),
            version: meta.version.index,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            name: self.name(),
            labels: self.labels(),
            fields: self.fields(),
            body,
        })
    }

    /// Converts from a record, refusing one of another kind.
    fn from_record(record: &Record) -> Result<Self, ShoalError> {
        if record.kind != Self::KIND {
            return Err(ShoalError::new(
                ErrorCode::InvalidArgument,
                format!("record {} is a {}, not a {}", record.id, record.kind, Self::KIND),
            ));
        }
        let mut obj: Self = serde_json::from_str(record.body.json()).map_err(|e| {
            ShoalError::new(
                ErrorCode::Internal,
                format!("decode {} {}: {e}", record.kind, record.id),
            )
        })?;
        let meta = obj.meta_mut();
        meta.id = record.id.clone();
        meta.version.index = record.version;
        meta.created_at = record.created_at;
        meta.updated_at = record.updated_at;
        Ok(obj)
    }
}

/// One object as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    /// Raft log index of the entry that last wrote this object (Docker's `Version.Index`).
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// The object's JSON. The store moves it without parsing it, so its
    /// `ID`, `Version`, `CreatedAt` and `UpdatedAt` may be stale: the record's
    /// attributes above are the truth ([`StoreObject::from_record`] applies them,
    /// as does [`Record::sync_body`]).
    pub body: Body,
}

impl Record {
    /// A record for an opaque body (tests, tools). The store fills version and times.
    pub fn blob(id: impl Into<String>, body: serde_json::Value) -> Record {
        let body = Body::from_value(&body);
        Record {
            kind: Kind::Blob,
            id: id.into(),
            version: 0,
            created_at: zero_time(),
            updated_at: zero_time(),
            name: None,
            labels: BTreeMap::new(),
            fields: BTreeMap::new(),
            body,
        }
    }

    /// Decodes into a typed object.
    pub fn decode<T: StoreObject>(&self) -> Result<T, ShoalError> {
        T::from_record(self)
    }

    /// Writes the record's attributes (`ID`, `Version`, `CreatedAt`,
    /// `UpdatedAt`) into its JSON body (parses and re-encodes it).
    pub fn sync_body(&mut self) {
        let mut value = self.body.to_value();
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("ID".into(), serde_json::Value::String(self.id.clone()));
            map.insert("Version".into(), serde_json::json!({ "Index": self.version }));
            map.insert(
                "CreatedAt".into(),
                serde_json::to_value(self.created_at).unwrap_or(serde_json::Value::Null),
            );
            map.insert(
                "UpdatedAt".into(),
                serde_json::to_value(self.updated_at).unwrap_or(serde_json::Value::Null),
            );
        }
        self.body = Body::from_value(&value);
    }
}

/// An object's JSON kept as text, so the store and every hop in between move
/// it without building a tree of it. In JSON it is embedded as the raw JSON it
/// holds; in binary formats (the store's MessagePack) it is a string.
#[derive(Clone, PartialEq, Eq)]
pub struct Body(String);

impl Body {
    pub fn from_value(value: &serde_json::Value) -> Body {
        Body(value.to_string())
    }

    /// The JSON, parsed (`null` if it is somehow not JSON).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    pub fn json(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let raw = serde_json::value::RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
            raw.serialize(serializer)
        } else {
            serializer.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        if deserializer.is_human_readable() {
            let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
            Ok(Body(raw.get().to_string()))
        } else {
            String::deserialize(deserializer).map(Body)
        }
    }
}
