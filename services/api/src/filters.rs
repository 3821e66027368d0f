//! Docker's `filters` query parameter: JSON `{"name": {"web": true}}`, or
//! the older `{"name": ["web"]}`.

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};

/// Parsed filters: each key with its values (values of one key match as "any of").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the `filters` parameter, refusing keys not in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> ApiResult<Filters> {
        let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
            return Ok(Filters::default());
        };
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
            }
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(v, _)| v.clone())
                    .collect(),
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
                _ => return Err(ApiError::bad_request(format!("invalid filter '{k}': bad value"))),
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
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
        let f = Filters::parse(Some(r#"{"name":{"web":true},"label":["a=1","b"]}"#), &["name", "label"]).unwrap();
        assert_eq!(f.get("name"), ["web".to_string()]);
        assert!(f.any_prefix("name", "web-1"));
        assert!(!f.any_eq("name", "db"));
        let labels = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), String::new())]);
        assert!(f.labels_match("label", &labels));
        assert!(!f.labels_match("label", &BTreeMap::new()));
        let e = Filters::parse(Some(r#"{"bogus":{"x":true}}"#), &["name"]).unwrap_err();
        assert_eq!(e.message, "invalid filter 'bogus'");
        assert!(Filters::parse(Some("{"), &["name"]).is_err());
        assert_eq!(Filters::parse(None, &[]).unwrap(), Filters::default());
    }
}
