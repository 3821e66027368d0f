//! Output as the docker CLI writes it: tab-aligned tables (Go's tabwriter
//! with min width 10 and padding 3), Go templates (`--format`), human
//! durations and byte sizes.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A table: the docker CLI's column layout (every column but the last is
/// padded to at least 10 characters and 3 past its widest cell).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let all = std::iter::once(header.iter().map(|s| s.to_string()).collect::<Vec<_>>()).chain(rows.iter().cloned());
    for r in all {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate().take(n) {
            line.push_str(c);
            if i + 1 < n {
                let w = (widths[i] + 3).max(10);
                line.push_str(&" ".repeat(w - c.chars().count()));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub use shoal_shared::template::to_gtmpl;

fn from_gtmpl(v: &gtmpl::Value) -> Value {
    match v {
        gtmpl::Value::NoValue | gtmpl::Value::Nil | gtmpl::Value::Function(_) => Value::Null,
        gtmpl::Value::Bool(b) => Value::Bool(*b),
        gtmpl::Value::String(s) => Value::String(s.clone()),
        gtmpl::Value::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        gtmpl::Value::Array(a) => Value::Array(a.iter().map(from_gtmpl).collect()),
        gtmpl::Value::Object(o) | gtmpl::Value::Map(o) => {
            let sorted: std::collections::BTreeMap<_, _> = o.iter().map(|(k, v)| (k.clone(), from_gtmpl(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
    }
}

/// Docker's `json` template function.
fn json_func(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    let v = args.first().map(from_gtmpl).unwrap_or(Value::Null);
    Ok(gtmpl::Value::String(serde_json::to_string(&v).unwrap_or_default()))
}

/// Docker's `lower`/`upper`/`join` helpers.
fn lower(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    Ok(gtmpl::Value::String(
        args.first().map(|a| a.to_string().to_lowercase()).unwrap_or_default(),
    ))
}

fn upper(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    Ok(gtmpl::Value::String(
        args.first().map(|a| a.to_string().to_uppercase()).unwrap_or_default(),
    ))
}

fn join(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    let sep = args.get(1).map(|s| s.to_string()).unwrap_or_default();
    let parts: Vec<String> = match args.first() {
        Some(gtmpl::Value::Array(a)) => a.iter().map(|x| x.to_string()).collect(),
        _ => Vec::new(),
    };
    Ok(gtmpl::Value::String(parts.join(&sep)))
}

/// Renders a Go template (`--format`) against `data`, with a trailing newline as docker writes.
pub fn render(tmpl: &str, data: &Value) -> Result<String, String> {
    let mut t = gtmpl::Template::default();
    t.add_func("json", json_func);
    t.add_func("lower", lower);
    t.add_func("upper", upper);
    t.add_func("join", join);
    t.parse(tmpl.replace("\\t", "\t").replace("\\n", "\n"))
        .map_err(|e| format!("template parsing error: {e}"))?;
    let mut out = t
        .render(&gtmpl::Context::from(to_gtmpl(data)))
        .map_err(|e| format!("template: {e}"))?;
    out.push('\n');
    Ok(out)
}

/// Go's `units.HumanDuration`, as `docker service ps` uses it.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (m, h) = (secs / 60, secs / 3600);
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if m == 1 {
        "About a minute".into()
    } else if m < 60 {
        format!("{m} minutes")
    } else if h == 1 {
        "About an hour".into()
    } else if h < 48 {
        format!("{h} hours")
    } else if h < 24 * 7 * 2 {
        format!("{} days", h / 24)
    } else if h < 24 * 30 * 2 {
        format!("{} weeks", h / 24 / 7)
    } else if h < 24 * 365 * 2 {
        format!("{} months", h / 24 / 30)
    } else {
        format!("{} years", h / 24 / 365)
    }
}

/// `"<human> ago"` for a past time.
pub fn ago(t: DateTime<Utc>) -> String {
    format!("{} ago", human_duration((Utc::now() - t).num_seconds()).to_lowercase())
}

/// Go's `units.BytesSize` (binary units, 4 significant digits): `64MiB`.
pub fn bytes_size(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    let s = format!("{v:.4}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    // 4 significant digits, as Go's %.4g.
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    let s = if digits > 4 {
        let int_digits = s.split('.').next().map(str::len).unwrap_or(0);
        let prec = 4usize.saturating_sub(int_digits);
        let t = format!("{v:.prec$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    } else {
        s
    };
    format!("{s}{}", units[i])
}

/// Go's `time.Duration.String()` for nanoseconds: `5s`, `1m30s`, `100ms`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        if nanos % 1_000_000 == 0 {
            return format!("{}ms", nanos / 1_000_000);
        }
        if nanos % 1000 == 0 {
            return format!("{}µs", nanos / 1000);
        }
        return format!("{nanos}ns");
    }
    let total_secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Parses a duration flag (`5s`, `1m30s`, `100ms`, `2h`) to nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?}");
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    if s.is_empty() {
        return Err(bad());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() || n == '.' {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let mult = match unit.as_str() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += v * mult;
    }
    if !num.is_empty() {
        if num == "0" {
            return Ok(0);
        }
        return Err(format!("{}: missing unit", bad()));
    }
    Ok(total as i64)
}

/// Parses a memory size (`64M`, `1g`, `512k`, `100`) to bytes, binary units as docker does.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|x| !x.is_empty()).unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("invalid size: {s:?}"))?;
    if v < 0.0 {
        return Err(format!("invalid size: {s:?}"));
    }
    Ok((v * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_like_docker() {
        let t = table(
            &["ID", "NAME", "LAST"],
            &[vec!["abc".into(), "web-service".into(), "x".into()]],
        );
        // min width 10; else the widest cell + 3; the last column unpadded.
        assert_eq!(t, "ID        NAME          LAST\nabc       web-service   x\n");
    }

    #[test]
    fn templates_render_paths_and_json() {
        let v = serde_json::json!({"Spec": {"Mode": {"Replicated": {"Replicas": 1}}, "Name": "web"}});
        assert_eq!(render("{{.Spec.Mode.Replicated.Replicas}}", &v).unwrap(), "1\n");
        assert_eq!(
            render("{{json .Spec.Mode}}", &v).unwrap(),
            "{\"Replicated\":{\"Replicas\":1}}\n"
        );
        assert_eq!(
            render("{{.Spec.Name}}\\t{{upper .Spec.Name}}", &v).unwrap(),
            "web\tWEB\n"
        );
        assert!(render("{{.Spec", &v).is_err());
    }

    #[test]
    fn sizes_durations_and_ages() {
        assert_eq!(bytes_size(67_108_864), "64MiB");
        assert_eq!(bytes_size(25_274_880_000), "23.54GiB");
        assert_eq!(bytes_size(512), "512B");
        assert_eq!(parse_bytes("64M").unwrap(), 67_108_864);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_duration("5s").unwrap(), 5_000_000_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert!(parse_duration("5").is_err());
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(100_000_000), "100ms");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(0), "Less than a second");
    }
}
