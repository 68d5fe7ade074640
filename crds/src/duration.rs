//! `spec.interval`: a duration written as Kubernetes writes them (`15s`, `2m`, `1m30s`, `1h`),
//! bounded to 1s..1h by the schema so the API server refuses anything else.

#[cfg(feature = "crd")]
use std::borrow::Cow;
use std::{fmt, str::FromStr, time::Duration};

#[cfg(feature = "crd")]
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest and longest sampling periods a watch may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Accepts exactly the durations from 1s to 1h in the forms `Ns`, `Nm`, `NmSs` and `1h`.
/// Kept in step with [`Interval::from_str`] by a test.
pub const INTERVAL_PATTERN: &str = concat!(
    "^(",
    "([1-9][0-9]{0,2}|[12][0-9]{3}|3[0-5][0-9]{2}|3600)s",
    "|([1-9]|[1-5][0-9]|60)m",
    "|([1-9]|[1-5][0-9])m([0-9]|[1-5][0-9])s",
    "|1h",
    ")$"
);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntervalError {
    #[error("interval {0:?} is not a duration like 15s, 2m, 1m30s or 1h")]
    Syntax(String),
    #[error("interval {0:?} is outside 1s..1h")]
    OutOfRange(String),
}

impl Interval {
    pub const DEFAULT: Interval = Interval(Duration::from_secs(15));

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn from_duration(duration: Duration) -> Result<Self, IntervalError> {
        let interval = Interval(Duration::from_secs(duration.as_secs()));
        if interval.0 < MIN_INTERVAL || interval.0 > MAX_INTERVAL {
            return Err(IntervalError::OutOfRange(interval.to_string()));
        }
        Ok(interval)
    }
}

impl Default for Interval {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for Interval {
    type Err = IntervalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || IntervalError::Syntax(text.to_string());
        let mut seconds: u64 = 0;
        let mut digits = String::new();
        let mut last_unit_rank = 0;
        for ch in text.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            // Units must come largest first, each at most once: 1h, 2m, 1m30s.
            let (multiplier, rank) = match ch {
                'h' => (3600, 3),
                'm' => (60, 2),
                's' => (1, 1),
                _ => return Err(syntax()),
            };
            if digits.is_empty() || (last_unit_rank != 0 && rank >= last_unit_rank) {
                return Err(syntax());
            }
            let value: u64 = digits.parse().map_err(|_| syntax())?;
            // After a larger unit the smaller one counts less than the next: 1m30s, never 1m90s.
            if last_unit_rank != 0 && value >= 60 {
                return Err(syntax());
            }
            seconds = value
                .checked_mul(multiplier)
                .and_then(|part| seconds.checked_add(part))
                .ok_or_else(syntax)?;
            digits.clear();
            last_unit_rank = rank;
        }
        if !digits.is_empty() || last_unit_rank == 0 {
            return Err(syntax());
        }
        let duration = Duration::from_secs(seconds);
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&duration) {
            return Err(IntervalError::OutOfRange(text.to_string()));
        }
        Ok(Interval(duration))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match (secs / 60, secs % 60) {
            (60, 0) => write!(f, "1h"),
            (0, s) => write!(f, "{s}s"),
            (m, 0) => write!(f, "{m}m"),
            (m, s) => write!(f, "{m}m{s}s"),
        }
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "crd")]
impl JsonSchema for Interval {
    fn schema_name() -> Cow<'static, str> {
        "Interval".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": INTERVAL_PATTERN,
            "description": "Sampling period, from 1s to 1h (15s, 2m, 1m30s, 1h)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_accepts(text: &str) -> bool {
        regex_lite::Regex::new(INTERVAL_PATTERN)
            .unwrap()
            .is_match(text)
    }

    #[test]
    fn parses_the_forms_users_write() {
        for (text, secs) in [
            ("1s", 1),
            ("15s", 15),
            ("90s", 90),
            ("2m", 120),
            ("1m30s", 90),
            ("1h", 3600),
            ("3600s", 3600),
            ("60m", 3600),
        ] {
            assert_eq!(
                text.parse::<Interval>().unwrap().as_duration().as_secs(),
                secs,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_out_of_range_and_malformed() {
        for text in ["0s", "3601s", "61m", "2h", "1h1s"] {
            assert!(
                matches!(text.parse::<Interval>(), Err(IntervalError::OutOfRange(_))),
                "{text}"
            );
        }
        for text in [
            "", "15", "s", "1.5s", "1s1m", "1m1m", "-1s", "15 s", "1d", "1m60s",
        ] {
            assert!(
                matches!(text.parse::<Interval>(), Err(IntervalError::Syntax(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["1s", "59s", "2m", "1m30s", "1h"] {
            assert_eq!(text.parse::<Interval>().unwrap().to_string(), text);
        }
        assert_eq!("90s".parse::<Interval>().unwrap().to_string(), "1m30s");
    }

    /// The API server enforces the schema pattern, the operator and agent the parser: they must
    /// agree on every canonical spelling, so a value the server admits never fails later.
    #[test]
    fn schema_pattern_agrees_with_parser() {
        let mut candidates: Vec<String> = Vec::new();
        for n in 0..=3700u32 {
            candidates.push(format!("{n}s"));
        }
        for m in 0..=70u32 {
            candidates.push(format!("{m}m"));
            for s in 0..=60u32 {
                candidates.push(format!("{m}m{s}s"));
            }
        }
        candidates.extend(["0h", "1h", "2h", "01s", "1h0s"].map(String::from));
        for text in candidates {
            let parsed_ok = text.parse::<Interval>().is_ok();
            // The pattern is stricter on spelling (no leading zeros, no 0s part); it must never
            // admit what the parser refuses.
            if regex_accepts(&text) {
                assert!(parsed_ok, "schema admits {text} but the parser refuses it");
            } else if parsed_ok
                && !text.starts_with('0')
                && !text.contains("m0s")
                && !text.contains('h')
            {
                panic!("parser accepts {text} but the schema refuses it");
            }
        }
    }
}
