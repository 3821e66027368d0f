//! Durations as Docker writes them: Go's `time.Duration`, an integer count of
//! nanoseconds (`"Delay": 5000000000` is five seconds).
//!
//! Use with serde's `with` attribute:
//! - [`nanos`] for a `std::time::Duration` that is always present;
//! - [`option_nanos`] for an `Option<Duration>` (pair it with
//!   `default` and `skip_serializing_if = "Option::is_none"`).
//!
//! Negative values are refused on input: a Rust `Duration` cannot hold them
//! and no Swarm setting means anything with one.

use std::time::Duration;

/// A duration as Docker's integer nanoseconds; `None` if it does not fit an `i64`
/// (about 292 years).
pub fn to_nanos(d: Duration) -> Option<i64> {
    i64::try_from(d.as_nanos()).ok()
}

/// A duration from Docker's integer nanoseconds; `None` if negative.
pub fn from_nanos(n: i64) -> Option<Duration> {
    u64::try_from(n).ok().map(Duration::from_nanos)
}

/// Serde helpers for `Duration` <-> integer nanoseconds.
pub mod nanos {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let n = super::to_nanos(*d).ok_or_else(|| S::Error::custom("duration overflows i64 nanoseconds"))?;
        s.serialize_i64(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let n = i64::deserialize(d)?;
        super::from_nanos(n).ok_or_else(|| D::Error::custom(format!("negative duration {n}ns")))
    }
}

/// Serde helpers for `Option<Duration>` <-> integer nanoseconds.
pub mod option_nanos {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::nanos::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<i64>::deserialize(d)? {
            None => Ok(None),
            Some(n) => super::from_nanos(n)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("negative duration {n}ns"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(rename = "Delay", with = "super::nanos")]
        delay: Duration,
        #[serde(
            rename = "Window",
            default,
            skip_serializing_if = "Option::is_none",
            with = "super::option_nanos"
        )]
        window: Option<Duration>,
    }

    #[test]
    fn five_seconds_is_5000000000_nanoseconds_both_ways() {
        let s = Sample {
            delay: Duration::from_secs(5),
            window: Some(Duration::from_millis(1500)),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v, json!({"Delay": 5_000_000_000i64, "Window": 1_500_000_000i64}));
        let back: Sample = serde_json::from_value(json!({"Delay": 5000000000i64})).unwrap();
        assert_eq!(back.delay, Duration::from_secs(5));
        assert_eq!(back.window, None);
    }

    #[test]
    fn absent_optional_duration_is_not_written() {
        let s = Sample {
            delay: Duration::ZERO,
            window: None,
        };
        assert_eq!(serde_json::to_value(&s).unwrap(), json!({"Delay": 0}));
    }

    #[test]
    fn large_values_survive_and_negative_ones_are_refused() {
        // 90 days, the CA's default NodeCertExpiry.
        let v = json!({"Delay": 7_776_000_000_000_000i64});
        let s: Sample = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(s.delay, Duration::from_secs(7_776_000));
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        assert!(serde_json::from_value::<Sample>(json!({"Delay": -1})).is_err());
        assert!(serde_json::from_value::<Sample>(json!({"Delay": 1, "Window": -5})).is_err());
        assert_eq!(super::to_nanos(Duration::MAX), None);
        assert_eq!(super::from_nanos(-1), None);
    }
}
