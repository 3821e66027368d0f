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

/// What a templated secret or config may look up besides its context,
/// through SwarmKit's functions `env "NAME"` (the task's environment),
/// `secret "TARGET"` and `config "TARGET"` (the data of another secret or
/// config the task uses, by its target).
#[derive(Debug, Default)]
pub struct Lookups {
    pub env: HashMap<String, String>,
    pub secrets: HashMap<String, String>,
    pub configs: HashMap<String, String>,
}

thread_local! {
    /// The lookups of the expansion running on this thread (gtmpl's
    /// functions are plain `fn`s, so they find their data here).
    static LOOKUPS: std::cell::RefCell<Option<Lookups>> = const { std::cell::RefCell::new(None) };
}

fn lookup(
    args: &[gtmpl::Value],
    func: &str,
    pick: fn(&Lookups) -> &HashMap<String, String>,
    missing: fn(&str) -> Option<String>,
) -> Result<gtmpl::Value, gtmpl::FuncError> {
    let [gtmpl::Value::String(name)] = args else {
        return Err(gtmpl::FuncError::ExactlyXArgs(func.to_string(), 1));
    };
    LOOKUPS.with(|l| {
        let held = l.borrow();
        match held.as_ref().and_then(|l| pick(l).get(name)) {
            Some(v) => Ok(gtmpl::Value::String(v.clone())),
            None => match missing(name) {
                None => Ok(gtmpl::Value::String(String::new())),
                Some(e) => Err(gtmpl::FuncError::Generic(e)),
            },
        }
    })
}

fn env_fn(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    // An unset variable is empty, as in SwarmKit.
    lookup(args, "env", |l| &l.env, |_| None)
}

fn secret_fn(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    lookup(
        args,
        "secret",
        |l| &l.secrets,
        |t| Some(format!("secret target {t} not found")),
    )
}

fn config_fn(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    lookup(
        args,
        "config",
        |l| &l.configs,
        |t| Some(format!("config target {t} not found")),
    )
}

/// Expands a templated secret's or config's data (template driver
/// `golang`) over `ctx`, with the `env`, `secret` and `config` functions
/// answering from `lookups`; errors in SwarmKit's words.
pub fn expand_payload(data: &str, ctx: &gtmpl::Value, lookups: Lookups) -> Result<String, String> {
    let mut t = gtmpl::Template::default();
    t.add_funcs(&[
        ("env", env_fn as gtmpl::Func),
        ("secret", secret_fn as gtmpl::Func),
        ("config", config_fn as gtmpl::Func),
    ]);
    t.parse(data).map_err(|e| format!("failed to parse template: {e}"))?;
    LOOKUPS.with(|l| *l.borrow_mut() = Some(lookups));
    let out = t
        .render(&gtmpl::Context::from(ctx.clone()))
        .map_err(|e| format!("failed to execute template: {e}"));
    LOOKUPS.with(|l| *l.borrow_mut() = None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_expand_with_env_secret_and_config_lookups() {
        let ctx = to_gtmpl(&serde_json::json!({"Service": {"Name": "web"}}));
        let lookups = || Lookups {
            env: HashMap::from([("GREETING".into(), "hi".into())]),
            secrets: HashMap::from([("pw".into(), "hunter2".into())]),
            configs: HashMap::from([("/etc/a".into(), "A".into())]),
        };
        let t = r#"{{.Service.Name}} {{env "GREETING"}}{{env "UNSET"}} {{secret "pw"}} {{config "/etc/a"}}"#;
        assert_eq!(expand_payload(t, &ctx, lookups()).unwrap(), "web hi hunter2 A");
        let e = expand_payload(r#"{{secret "nope"}}"#, &ctx, lookups()).unwrap_err();
        assert!(e.contains("secret target nope not found"), "{e}");
        let e = expand_payload("{{.Service.Name", &ctx, lookups()).unwrap_err();
        assert!(e.starts_with("failed to parse template"), "{e}");
        // Nothing is left behind for the next expansion on this thread.
        let e = expand_payload(r#"{{secret "pw"}}"#, &ctx, Lookups::default()).unwrap_err();
        assert!(e.contains("secret target pw not found"), "{e}");
    }

    #[test]
    fn fields_expand_and_plain_strings_pass_through() {
        let ctx = to_gtmpl(&serde_json::json!({"Service": {"Name": "web"}, "Task": {"Slot": "3"}}));
        assert_eq!(expand("{{.Service.Name}}-{{.Task.Slot}}", &ctx).unwrap(), "web-3");
        assert_eq!(expand("plain", &ctx).unwrap(), "plain");
        assert!(expand("{{.Service.Name", &ctx).is_err());
    }
}
