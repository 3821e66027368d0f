//! Go templates (gtmpl) over JSON values, as Docker uses them: the CLI's
//! `--format`, and the placeholders Swarm expands per task in a service's
//! hostname, environment and mounts (`{{.Service.Name}}`, `{{.Task.Slot}}`, ...).

use std::collections::HashMap;

use serde_json::Value;

/// A serde JSON value as a template value.
pub fn to_gtmpl(v: &Value) -> gtmpl::Value {
    match v {
        Value::Null => gtmpl::Value::Nil,
        Value::Bool(b) => gtmpl::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                gtmpl::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                gtmpl::Value::from(i)
            } else {
                gtmpl::Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => gtmpl::Value::String(s.clone()),
        Value::Array(a) => gtmpl::Value::Array(a.iter().map(to_gtmpl).collect()),
        Value::Object(o) => gtmpl::Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_gtmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Expands `s` as a Go template over `ctx`; a string without `{{` is
/// returned as it is.
pub fn expand(s: &str, ctx: &gtmpl::Value) -> Result<String, String> {
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    gtmpl::template(s, ctx.clone()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_expand_and_plain_strings_pass_through() {
        let ctx = to_gtmpl(&serde_json::json!({"Service": {"Name": "web"}, "Task": {"Slot": "3"}}));
        assert_eq!(expand("{{.Service.Name}}-{{.Task.Slot}}", &ctx).unwrap(), "web-3");
        assert_eq!(expand("plain", &ctx).unwrap(), "plain");
        assert!(expand("{{.Service.Name", &ctx).is_err());
    }
}
