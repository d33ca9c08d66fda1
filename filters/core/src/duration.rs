//! Durations written as protobuf JSON / Istio does: a decimal number followed by a unit.
//!
//! Istio's API uses `google.protobuf.Duration`, whose JSON form is seconds with an `s` suffix
//! (`"1.5s"`); Istio docs and users also write `ms`, `m`, `h` and `us` as Kubernetes tooling
//! accepts them. All of these parse; the result is whole microseconds.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// Parses `"5s"`, `"0.5s"`, `"100ms"`, `"250us"`, `"2m"`, `"1h"`, or a sequence such as `"1m30s"`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError(
            "empty duration: write e.g. \"5s\" or \"100ms\"".into(),
        ));
    }
    let mut rest = s;
    let mut total_us: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if num.is_empty() {
            return Err(DurationError(format!(
                "invalid duration {text:?}: expected a number before {unit:?}"
            )));
        }
        let per_unit_us: u64 = match unit {
            "h" => 3_600_000_000,
            "m" => 60_000_000,
            "s" => 1_000_000,
            "ms" => 1_000,
            "us" | "µs" => 1,
            "" => {
                return Err(DurationError(format!(
                    "invalid duration {text:?}: missing unit (use h, m, s, ms or us, e.g. \"{num}s\")"
                )));
            }
            other => {
                return Err(DurationError(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use h, m, s, ms or us)"
                )));
            }
        };
        total_us = total_us.saturating_add(scaled(num, per_unit_us).ok_or_else(|| {
            DurationError(format!("invalid duration {text:?}: bad number {num:?}"))
        })?);
        rest = next;
    }
    let (secs, micros) = whole_seconds(total_us)
        .ok_or_else(|| DurationError(format!("duration {text:?} is too large")))?;
    Ok(Duration::new(secs, micros * 1_000))
}

/// `us` as whole seconds and the microseconds left (below 1_000_000); `None` when the seconds
/// do not fit a u64. Without a u128 division ([`crate::wide`]).
fn whole_seconds(us: u128) -> Option<(u64, u32)> {
    let (secs, micros) = crate::wide::div_rem(us, 1_000_000)?;
    Some((u64::try_from(secs).ok()?, micros))
}

/// `num` (digits with at most one '.') times `per_unit_us`, truncated to whole microseconds.
/// No u128 division or parse ([`crate::wide`]): the fraction's scale fits a u64, and the
/// whole part (at most 20 digits, below 2^67) is accumulated digit by digit.
fn scaled(num: &str, per_unit_us: u64) -> Option<u128> {
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if frac.contains('.') || (whole.is_empty() && frac.is_empty()) || whole.len() > 20 {
        return None;
    }
    let mut whole_v: u128 = 0;
    for digit in whole.bytes() {
        whole_v = whole_v * 10 + u128::from(digit.checked_sub(b'0').filter(|d| *d <= 9)?);
    }
    let mut value = whole_v.checked_mul(u128::from(per_unit_us))?;
    let mut scale = per_unit_us;
    for digit in frac.bytes().take(12) {
        scale /= 10;
        value = value.checked_add(u128::from(digit.checked_sub(b'0')?) * u128::from(scale))?;
    }
    Some(value)
}

/// The JSON Schema `pattern` (ECMA-262) of a duration string: a superset of what [`parse`]
/// accepts (it does not check the number's digits), so editors flag `"5"` or `"5 sec"` without
/// ever refusing a valid duration.
#[cfg(feature = "schema")]
pub const SCHEMA_PATTERN: &str = r"^\s*([0-9.]+(h|m|s|ms|us|µs))+\s*$";

/// Formats a duration the way Istio and Envoy's JSON write it (`"5s"`, `"0.100s"`).
pub fn format(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{nanos:09}");
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(".25s"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_with_reason() {
        for (bad, needle) in [
            ("", "empty"),
            ("5", "missing unit"),
            ("5x", "unknown unit"),
            ("s", "expected a number"),
            ("1.2.3s", "bad number"),
            ("-1s", "expected a number"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn whole_seconds_equals_u128_division() {
        for us in [
            0u128,
            1,
            999_999,
            1_000_000,
            1_234_567_891,
            u128::from(u64::MAX),
            u128::from(u64::MAX) * 1_000_000 + 999_999,
            u128::from(u64::MAX) * 1_000_000 + 1_000_000,
            u128::MAX,
        ] {
            let expected = u64::try_from(us / 1_000_000)
                .ok()
                .map(|secs| (secs, u32::try_from(us % 1_000_000).unwrap()));
            assert_eq!(whole_seconds(us), expected, "{us}");
        }
    }

    #[test]
    fn huge_and_precise_durations_keep_their_values_and_errors() {
        assert_eq!(
            parse("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert!(
            parse("18446744073709551616s")
                .unwrap_err()
                .0
                .contains("too large")
        );
        assert!(
            parse("99999999999999999999h")
                .unwrap_err()
                .0
                .contains("too large")
        );
        assert!(
            parse("999999999999999999999s")
                .unwrap_err()
                .0
                .contains("bad number")
        );
        assert_eq!(parse("1.0000015s"), Ok(Duration::from_micros(1_000_001)));
        assert_eq!(parse("0.123456789123ms"), Ok(Duration::from_nanos(123_000)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(100),
            Duration::from_micros(1500),
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
        assert_eq!(format(Duration::from_millis(100)), "0.1s");
    }
}
