//! Request bodies decoded as Go's `encoding/json` decodes them into Docker's
//! structs: an object key names a struct field exactly or, failing that,
//! case-insensitively (docker-py sends `{"Mode": {"replicated": ...}}`,
//! `{"global": {}}`, a lower-case `order`). [`Folded`] wraps a JSON value
//! and renames each object's keys to the field names serde asks for, at
//! every depth, before the derived `Deserialize` sees them.
//!
//! What stays as Go has it: string values are not folded (`"Order":
//! "Stop-First"` is still refused); a key matching no field is left alone
//! (and ignored, like Go); when two keys name one field one named exactly wins.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Error, Map, Value};

/// A JSON value whose object keys match struct fields case-insensitively.
pub struct Folded(pub Value);

/// `m`'s entries with each key renamed to the field it names: exact match
/// first, else the first field equal to it ignoring ASCII case. A key that
/// names a field exactly wins over one that only folds to it (JSON objects
/// reach here without their order, so "the later one wins" cannot be told).
fn rename(m: Map<String, Value>, fields: &[&'static str]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::with_capacity(m.len());
    let mut folded: Vec<(String, Value)> = Vec::new();
    for (k, v) in m {
        if fields.contains(&k.as_str()) {
            out.push((k, v));
            continue;
        }
        match fields.iter().find(|f| f.eq_ignore_ascii_case(&k)) {
            Some(f) => folded.push((f.to_string(), v)),
            None => out.push((k, v)),
        }
    }
    for (name, v) in folded {
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, v));
        }
    }
    out
}

struct Entries {
    iter: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self.value.take().ok_or_else(|| de::Error::custom("value is missing"))?;
        seed.deserialize(Folded(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(Folded(v)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

fn visit_map<'de, V: Visitor<'de>>(
    m: Map<String, Value>,
    fields: &[&'static str],
    visitor: V,
) -> Result<V::Value, Error> {
    let mut entries = Entries {
        iter: rename(m, fields).into_iter(),
        value: None,
    };
    let out = visitor.visit_map(&mut entries)?;
    match entries.iter.len() {
        0 => Ok(out),
        n => Err(de::Error::invalid_length(n, &"fewer elements in map")),
    }
}

fn visit_seq<'de, V: Visitor<'de>>(a: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let len = a.len();
    let mut items = Items(a.into_iter());
    let out = visitor.visit_seq(&mut items)?;
    match items.0.len() {
        0 => Ok(out),
        _ => Err(de::Error::invalid_length(len, &"fewer elements in array")),
    }
}

macro_rules! via_any {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for Folded {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) => visit_map(m, &[], visitor),
            Value::Array(a) => visit_seq(a, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Folded(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) => visit_map(m, fields, visitor),
            Value::Array(a) => visit_seq(a, visitor),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) if m.len() == 1 => {
                let renamed: Map<String, Value> = rename(m, variants).into_iter().collect();
                Value::Object(renamed).deserialize_enum(name, variants, visitor)
            }
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    via_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128 deserialize_f32
        deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase", default)]
    struct Inner {
        replicas: Option<u64>,
        order: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase", default)]
    struct Outer {
        name: String,
        mode: Option<std::collections::BTreeMap<String, Inner>>,
        replicated: Option<Inner>,
        list: Vec<Inner>,
        #[serde(rename = "NanoCPUs")]
        nano_cpus: i64,
    }

    #[test]
    fn keys_match_fields_ignoring_case_at_every_depth() {
        let v = json!({"name": "x", "REPLICATED": {"replicas": 3, "ORDER": "stop-first"},
            "list": [{"Replicas": 1}, {"replicas": 2}], "nanocpus": 5,
            "Mode": {"replicated": {"replicas": 4}}});
        let o: Outer = Outer::deserialize(Folded(v)).unwrap();
        assert_eq!(o.name, "x");
        assert_eq!(
            o.replicated.unwrap(),
            Inner {
                replicas: Some(3),
                order: Some("stop-first".into())
            }
        );
        assert_eq!(
            o.list.iter().map(|i| i.replicas).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
        assert_eq!(o.nano_cpus, 5);
        // Map keys are data, not fields: kept as given; their values are still folded.
        assert_eq!(o.mode.unwrap()["replicated"].replicas, Some(4));
    }

    #[test]
    fn an_exact_match_wins_and_values_are_not_folded() {
        let o: Outer = Outer::deserialize(Folded(json!({"name": "a", "Name": "b"}))).unwrap();
        assert_eq!(o.name, "b");
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        enum Order {
            StopFirst,
        }
        assert!(Order::deserialize(Folded(json!("Stop-First"))).is_err());
        assert!(Order::deserialize(Folded(json!("stop-first"))).is_ok());
    }
}
