//! The cluster object model: typed Docker Swarm objects.
//!
//! Every struct here serializes with exactly the JSON field names of the
//! Docker Engine API (`TaskTemplate`, `ContainerSpec`, `NanoCPUs`, ...), so
//! the HTTP API layer is a thin mapping and `docker service inspect` output
//! round-trips through these types without adding or dropping fields.
//!
//! Conventions, mirroring Go's `encoding/json` as Docker uses it:
//! - a Go pointer with `omitempty` is an `Option<T>` skipped when `None`;
//!   `Some(T::default())` serializes as `{}` (e.g. `"Limits": {}`);
//! - a Go scalar with `omitempty` is a plain field skipped when zero/empty;
//! - a Go struct field (never omitted by Go) is a plain field, always written;
//! - durations are integer nanoseconds (see [`duration`]).
//!
//! The top-level objects ([`Cluster`], [`Node`], [`Service`], [`Task`],
//! [`Network`], [`Secret`], [`Config`]) embed the store's [`Meta`](crate::store::Meta) flattened as
//! their first field and implement [`StoreObject`](crate::store::StoreObject).

/// Implements [`StoreObject`](crate::store::StoreObject) for a model type
/// whose store [`Meta`](crate::store::Meta) is its `meta` field, with the
/// trait items written after the kind (name, labels, fields) added as they
/// are. `spec_named` adds the name and labels of its `spec` (`spec.name`,
/// `None` while empty, and `spec.labels`).
macro_rules! store_object {
    ($ty:ty, $kind:ident, spec_named $(, $($item:tt)*)?) => {
        store_object!($ty, $kind,
            /// `None` while unset, so nameless objects never collide in the store's name index.
            fn name(&self) -> Option<String> {
                $crate::model::non_empty(&self.spec.name)
            }

            fn labels(&self) -> std::collections::BTreeMap<String, String> {
                self.spec.labels.clone()
            }

            $($($item)*)?
        );
    };
    ($ty:ty, $kind:ident $(, $($item:tt)*)?) => {
        impl $crate::store::StoreObject for $ty {
            const KIND: $crate::store::Kind = $crate::store::Kind::$kind;

            fn meta(&self) -> &$crate::store::Meta {
                &self.meta
            }

            fn meta_mut(&mut self) -> &mut $crate::store::Meta {
                &mut self.meta
            }

            $($($item)*)?
        }
    };
}

pub mod cluster;
pub mod defaults;
pub mod duration;
pub mod gotime;
pub mod network;
pub mod node;
pub mod resources;
pub mod secret;
pub mod service;
pub mod task;

pub use cluster::*;
pub use defaults::{Defaults, DEFAULTS};
pub use network::*;
pub use node::*;
pub use resources::*;
pub use secret::*;
pub use service::*;
pub use task::*;

/// `deserialize_with` helper for an optional enum given as a string: Go
/// clients write `""` for an unset one (e.g. `UpdateConfig.Order`, which has
/// no `omitempty`, as the docker CLI's `stack deploy` sends it), which Docker
/// takes as unset.
pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => T::deserialize(serde::de::value::StringDeserializer::<D::Error>::new(s)).map(Some),
    }
}

/// `skip_serializing_if` helper: Go's `omitempty` on a bool.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// `skip_serializing_if` helper: Go's `omitempty` on an integer.
pub(crate) fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// `skip_serializing_if` helper: Go's `omitempty` on an unsigned integer.
pub(crate) fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// `skip_serializing_if` helper: Go's `omitempty` on a port number.
pub(crate) fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// `Some(s)` unless `s` is empty (for [`StoreObject::name`](crate::store::StoreObject::name)).
pub(crate) fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}
