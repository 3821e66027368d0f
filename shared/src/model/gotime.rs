//! Time stamps as Docker prints them: Go's `time.RFC3339Nano`, whose
//! fraction has no trailing zeros (`.5Z`, `.123456789Z`, none for whole
//! seconds), where chrono would pad to 3, 6 or 9 digits. Parsing accepts
//! any RFC 3339 form.

use chrono::{DateTime, Utc};
use serde::Serializer;

/// Formats like Go's `t.Format(time.RFC3339Nano)` for a UTC time.
pub fn format(t: &DateTime<Utc>) -> String {
    let secs = t.format("%Y-%m-%dT%H:%M:%S");
    // A leap second's nanoseconds run past 1e9: Go has none, so clamp.
    let ns = t.timestamp_subsec_nanos().min(999_999_999);
    if ns == 0 {
        return format!("{secs}Z");
    }
    let frac = format!("{ns:09}");
    format!("{secs}.{}Z", frac.trim_end_matches('0'))
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

/// The same for an optional time stamp.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_lose_their_trailing_zeros_as_in_go() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            format(&at("2016-08-16T00:11:33.545965515Z")),
            "2016-08-16T00:11:33.545965515Z"
        );
        assert_eq!(format(&at("2026-11-30T19:17:22.500000000Z")), "2026-11-30T19:17:22.5Z");
        assert_eq!(format(&at("2026-11-30T19:17:22.123400Z")), "2026-11-30T19:17:22.1234Z");
        assert_eq!(format(&at("2026-11-30T19:17:22Z")), "2026-11-30T19:17:22Z");
        assert_eq!(format(&crate::store::zero_time()), "0001-01-01T00:00:00Z");
        let json = serde_json::to_string(&crate::model::UpdateStatus {
            started_at: Some(at("2026-11-30T19:17:22.120Z")),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(json, r#"{"StartedAt":"2026-11-30T19:17:22.12Z"}"#);
    }
}
