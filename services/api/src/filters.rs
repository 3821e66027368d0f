//! Docker's `filters` query parameter: JSON `{"name": {"web": true}}`, or
//! the older `{"name": ["web"]}`.

use std::collections::BTreeMap;

use crate::error::{clip, ApiError, ApiResult};

/// Parsed filters: each key with its values (values of one key match as "any of").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the `filters` parameter as Docker's `filters.FromJSON` does: an
    /// object of objects of booleans (every listed value counts, `true` or
    /// `false`), or the older object of string lists; anything else is
    /// `invalid filter`. Keys not in `allowed` are refused (`invalid filter 'foo'`).
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> ApiResult<Filters> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(Filters::default());
        };
        let invalid = || ApiError::bad_request("invalid filter");
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| invalid())?;
        let obj = match v {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => return Ok(Filters::default()),
            _ => return Err(invalid()),
        };
        // Docker tries the map form for the whole object, then the list form.
        let as_maps = obj.values().all(|vals| match vals {
            serde_json::Value::Object(m) => m.values().all(serde_json::Value::is_boolean),
            serde_json::Value::Null => true,
            _ => false,
        });
        let as_lists = obj.values().all(|vals| match vals {
            serde_json::Value::Array(a) => a.iter().all(serde_json::Value::is_string),
            serde_json::Value::Null => true,
            _ => false,
        });
        if !as_maps && !as_lists {
            return Err(invalid());
        }
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            let mut list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m.into_iter().map(|(v, _)| v).collect(),
                serde_json::Value::Array(a) => a.into_iter().filter_map(|x| x.as_str().map(String::from)).collect(),
                _ => Vec::new(),
            };
            list.sort();
            list.dedup();
            out.insert(k, list);
        }
        if let Some(k) = out.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!("invalid filter '{}'", clip(k))));
        }
        Ok(Filters(out))
    }

    /// Refuses a value of `key` not in `allowed` (compared case-insensitively;
    /// empty values are ignored, as Docker does) with Docker's words,
    /// `Invalid {key} filter: '{value}'`.
    pub fn check_values(&self, key: &str, allowed: &[&str]) -> ApiResult<()> {
        match self
            .get(key)
            .iter()
            .find(|v| !v.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
        {
            Some(v) => Err(ApiError::bad_request(format!("Invalid {key} filter: '{}'", clip(v)))),
            None => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether `value` is one of `key`'s values (true when the key is absent).
    pub fn any_eq(&self, key: &str, value: &str) -> bool {
        !self.has(key) || self.get(key).iter().any(|v| v == value)
    }

    /// Whether `value` is one of `key`'s values, ignoring case (true when the key is absent).
    pub fn any_eq_ignore_case(&self, key: &str, value: &str) -> bool {
        !self.has(key) || self.get(key).iter().any(|v| v.eq_ignore_ascii_case(value))
    }

    /// Whether `value` starts with one of `key`'s values (true when the key is absent).
    pub fn any_prefix(&self, key: &str, value: &str) -> bool {
        !self.has(key) || self.get(key).iter().any(|v| value.starts_with(v.as_str()))
    }

    /// Label filters (`key` or `key=value`), all must match (true when absent).
    pub fn labels_match(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.get(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(f),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_parse_and_unknown_keys_are_refused() {
        let f = Filters::parse(
            Some(r#"{"name":{"web":true},"label":{"a=1":true,"b":true}}"#),
            &["name", "label"],
        )
        .unwrap();
        let legacy = Filters::parse(Some(r#"{"name":["web"],"label":["a=1","b"]}"#), &["name", "label"]).unwrap();
        assert_eq!(f, legacy);
        assert_eq!(f.get("name"), ["web".to_string()]);
        assert!(f.any_prefix("name", "web-1"));
        assert!(!f.any_eq("name", "db"));
        let labels = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), String::new())]);
        assert!(f.labels_match("label", &labels));
        assert!(!f.labels_match("label", &BTreeMap::new()));
        let e = Filters::parse(Some(r#"{"bogus":{"x":true}}"#), &["name"]).unwrap_err();
        assert_eq!(e.message, "invalid filter 'bogus'");
        assert!(Filters::parse(Some("{"), &["name"]).is_err());
        // Docker's map form: every listed value counts; anything but booleans is invalid.
        let f = Filters::parse(Some(r#"{"name":{"a":true,"b":false}}"#), &["name"]).unwrap();
        assert_eq!(f.get("name"), ["a".to_string(), "b".to_string()]);
        for bad in [
            r#"{"name":{"x":"yes"}}"#,
            r#"{"name":"x"}"#,
            r#"{"name":["x",5]}"#,
            r#"["name"]"#,
            r#"{"name":{"x":true},"id":["y"]}"#,
        ] {
            let e = Filters::parse(Some(bad), &["name", "id"]).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.message.as_str()),
                (400, "invalid filter"),
                "{bad}"
            );
        }
        let f = Filters::parse(Some(r#"{"role":{"bogus":true,"":true}}"#), &["role"]).unwrap();
        let e = f.check_values("role", &["worker", "manager"]).unwrap_err();
        assert_eq!(e.message, "Invalid role filter: 'bogus'");
        let f = Filters::parse(Some(r#"{"role":{"Manager":true,"":true}}"#), &["role"]).unwrap();
        f.check_values("role", &["worker", "manager"]).unwrap();
        let long = format!(r#"{{"{}":{{"x":true}}}}"#, "k".repeat(100_000));
        let e = Filters::parse(Some(&long), &["name"]).unwrap_err();
        assert!(e.message.len() < 100, "{}", e.message);
        assert_eq!(Filters::parse(None, &[]).unwrap(), Filters::default());
    }
}
