//! The one duration parser of the crate: "50ms", "2s", "1.5s", "1m", "250us", "1h".
//! Every duration an operator writes (config, CLI flags) goes through `parse_duration`,
//! so the same text means the same thing everywhere. Pure: no clock, no I/O.

use std::time::Duration;

/// Units an operator may write, longest suffix first so "ms" is not read as "m".
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Why a duration's text was refused; each says what would be right. The key path and
/// line:column are added by whoever read the text (`config::reader`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write a number with a unit, like \"2s\" or \"50ms\"")]
    Empty,
    #[error("{text:?} does not start with a number; write it like \"2s\" or \"50ms\"")]
    NoNumber { text: String },
    #[error("{text:?} has no unit; write \"{number}s\" or \"{number}ms\" (units: ms, s, m, h)")]
    NoUnit { text: String, number: String },
    #[error("{text:?} has an unknown unit {unit:?}; use one of ms, s, m, h (or us, ns)")]
    UnknownUnit { text: String, unit: String },
    #[error("{text:?} is not a number with a unit; write it like \"1.5s\"")]
    NotANumber { text: String },
    #[error("{text:?} is more precise than a nanosecond; round it")]
    TooPrecise { text: String },
    #[error("{text:?} is too long a duration")]
    TooLong { text: String },
}

/// Parses a duration such as "50ms", "1.5s", "2m" or "1h". A number needs a unit
/// (a bare "5" could mean seconds or milliseconds, and guessing wrong is a 1000x error).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let text_owned = || text.to_string();
    // Split at the first character that cannot be part of the number.
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(DurationError::NoNumber { text: text_owned() });
    }
    if unit.is_empty() {
        return Err(DurationError::NoUnit {
            text: text_owned(),
            number: number.to_string(),
        });
    }
    let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(DurationError::UnknownUnit {
            text: text_owned(),
            unit: unit.to_string(),
        });
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(DurationError::NotANumber { text: text_owned() });
    }
    // Exact decimal arithmetic: "0.1s" must be exactly 100ms, which floats do not promise.
    let too_long = || DurationError::TooLong { text: text_owned() };
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_long())?
    };
    let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(too_long)?;
    let mut scale = nanos_per_unit;
    for digit in fraction.bytes() {
        let digit = u128::from(digit - b'0');
        if scale % 10 != 0 {
            if digit != 0 {
                return Err(DurationError::TooPrecise { text: text_owned() });
            }
            continue;
        }
        scale /= 10;
        nanos = nanos.checked_add(digit * scale).ok_or_else(too_long)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    // The remainder is below 1e9, so it always fits in u32.
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

/// Formats a duration the way an operator would write it, in the largest unit that
/// divides it exactly ("150ms", "2s", "1500ms"), so `parse_duration` reads it back.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos >= size && nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_decimals() {
        let ok = [
            ("50ms", Duration::from_millis(50)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            (".5s", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
            (" 2s ", Duration::from_secs(2)),
            ("2 s", Duration::from_secs(2)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_with_a_hint() {
        let bad = [
            ("", "empty"),
            ("5", "no unit"),
            ("s", "does not start with a number"),
            ("-5s", "does not start with a number"),
            ("5 sec", "unknown unit"),
            ("5d", "unknown unit"),
            ("1.2.3s", "not a number"),
            (".s", "not a number"),
            ("1.5ns", "more precise"),
            ("99999999999999999999999999999999999999999h", "too long"),
            ("999999999999999999999h", "too long"),
        ];
        for (text, want) in bad {
            let err = parse_duration(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn formats_like_an_operator_writes() {
        assert_eq!(format_duration(Duration::from_millis(150)), "150ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_nanos(1500)), "1500ns");
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(3600),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
