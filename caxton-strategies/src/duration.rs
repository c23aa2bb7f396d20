//! Durations as people write them in rollout specs: `30s`, `5m`, `1h30m`, `100ms`.

use std::fmt;
use std::time::Duration;

/// The longest duration a rollout setting may be: 365 days. Every duration a spec gives
/// (holds, intervals, timeouts, stage limits) is bounded by it when parsed, so the sums and
/// conversions that plans, holds and simulations do on durations cannot overflow, and a
/// spec that names a longer time is refused with the place it was written.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration: expected a number and a unit such as 30s, 5m, 1h or 100ms")]
    Empty,
    /// A number was expected at `position`.
    #[error(
        "duration {text:?}: expected a number at byte {position}, found {found:?} \
         (write durations such as 30s, 5m, 1h30m or 100ms)"
    )]
    ExpectedNumber {
        /// The whole text.
        text: String,
        /// Byte offset of the problem.
        position: usize,
        /// What was there instead.
        found: String,
    },
    /// The unit after a number is missing or unknown.
    #[error(
        "duration {text:?}: unknown unit {unit:?} at byte {position}; \
         expected one of ms, s, m, h, d"
    )]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// Byte offset of the unit.
        position: usize,
        /// The unit that was given (empty when missing).
        unit: String,
    },
    /// The value is longer than [`MAX_DURATION`] (or does not fit a number at all).
    #[error("duration {text:?} is longer than 365d, the longest a rollout setting may be")]
    Overflow {
        /// The whole text.
        text: String,
    },
}

/// Parses `30s`, `5m`, `1h`, `100ms`, `2d`, compounds such as `1h30m`, decimals such as
/// `1.5s`, and `0` or `instant` for no time at all.
///
/// ```
/// use std::time::Duration;
/// use caxton_strategies::duration::parse_duration;
///
/// assert_eq!(parse_duration("1m30s")?, Duration::from_secs(90));
/// assert_eq!(parse_duration("100ms")?, Duration::from_millis(100));
/// assert!(parse_duration("5 parsecs").is_err());
/// # Ok::<(), caxton_strategies::duration::DurationError>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    if trimmed == "0" || trimmed.eq_ignore_ascii_case("instant") {
        return Ok(Duration::ZERO);
    }
    let offset = text.len() - text.trim_start().len();
    let bytes = trimmed.as_bytes();
    let mut at = 0;
    let mut total_ms: f64 = 0.0;
    while at < bytes.len() {
        let number_start = at;
        while at < bytes.len() && (bytes[at].is_ascii_digit() || bytes[at] == b'.') {
            at += 1;
        }
        let number = &trimmed[number_start..at];
        let value: f64 = match number.parse() {
            Ok(value) => value,
            Err(_) => {
                return Err(DurationError::ExpectedNumber {
                    text: text.to_owned(),
                    position: offset + number_start,
                    found: trimmed[number_start..].chars().take(8).collect::<String>(),
                });
            }
        };
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        let unit_start = at;
        while at < bytes.len() && bytes[at].is_ascii_alphabetic() {
            at += 1;
        }
        let unit = &trimmed[unit_start..at];
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    position: offset + unit_start,
                    unit: unit.to_owned(),
                });
            }
        };
        total_ms += value * scale;
    }
    // Compared in milliseconds, where every value up to the limit is exact.
    if !total_ms.is_finite() || total_ms > MAX_DURATION.as_millis() as f64 {
        return Err(DurationError::Overflow {
            text: text.to_owned(),
        });
    }
    Ok(Duration::from_micros((total_ms * 1_000.0).round() as u64))
}

/// Writes a duration the way [`parse_duration`] reads it: `5m`, `1h30m`, `100ms`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    HumanDuration(duration).to_string()
}

/// Displays a [`Duration`] as `5m`, `1h30m`, `1.5s` or `100ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        if total_ms < 1_000 {
            return write!(f, "{total_ms}ms");
        }
        if total_ms < 60_000 && !total_ms.is_multiple_of(1_000) {
            let secs = total_ms as f64 / 1_000.0;
            return write!(f, "{secs}s");
        }
        let mut rest = total_ms / 1_000;
        let mut wrote = false;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
                wrote = true;
            }
        }
        let ms = total_ms % 1_000;
        if ms != 0 || !wrote {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

/// Serde helpers for durations written as text (`30s`); also reads a bare number of seconds.
/// Either way a duration longer than [`MAX_DURATION`] is an error.
pub mod serde_text {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{MAX_DURATION, format_duration, parse_duration};

    /// Writes `5m`, `30s`, `100ms`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    /// Reads `30s`, `5m`, `1h30m`, `100ms`, `instant`, or a whole number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    pub(crate) struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 30s, 5m, 1h30m or 100ms")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
            if secs > MAX_DURATION.as_secs() {
                return Err(E::custom(format!(
                    "duration {secs} (a bare number is seconds) is longer than 365d, the \
                     longest a rollout setting may be"
                )));
            }
            Ok(Duration::from_secs(secs))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
            match u64::try_from(secs) {
                Ok(secs) => self.visit_u64(secs),
                Err(_) => Err(E::custom(format!("duration {secs} is negative"))),
            }
        }
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the duration as text, or nothing.
        pub fn serialize<S: Serializer>(
            value: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            #[derive(serde::Deserialize)]
            struct Text(#[serde(with = "super")] Duration);
            Ok(Option::<Text>::deserialize(deserializer)?.map(|Text(d)| d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_unit_and_compound() {
        for (text, ms) in [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("100ms", 100),
            ("2d", 172_800_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("5 m", 300_000),
            ("1.5s", 1_500),
            (" 10m ", 600_000),
            ("0", 0),
            ("instant", 0),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_name_the_unit_and_position() {
        assert_eq!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit {
                text: "5x".into(),
                position: 1,
                unit: "x".into()
            })
        );
        let missing = parse_duration("30").unwrap_err();
        assert!(matches!(missing, DurationError::UnknownUnit { ref unit, .. } if unit.is_empty()));
        let err = parse_duration("m5").unwrap_err();
        assert!(matches!(
            err,
            DurationError::ExpectedNumber { position: 0, .. }
        ));
        assert!(err.to_string().contains("30s"));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("99999999999d"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_round_trip() {
        for text in [
            "5m", "10m", "30s", "1h30m", "100ms", "1.5s", "0s", "2d", "1m5s",
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }
}
