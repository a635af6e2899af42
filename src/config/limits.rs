//! The values of the per-client and per-session limits (`--maxperclient`, `--ratelimit`,
//! `--idletimeout`) and the one duration syntax every duration flag shares. Pure parsing;
//! [`crate::limit`] enforces them.

use std::time::Duration;

/// Why a duration or rate value was refused; the caller names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    #[error("expected a duration such as 500ms, 1s, 5m or 1h (a bare number is seconds)")]
    Duration,
    #[error("expected MSGS/s with an optional burst, such as 10/s or 10/s:50")]
    Rate,
    #[error("must be more than zero")]
    Zero,
    #[error("too large")]
    TooLarge,
}

/// The longest duration any flag takes: a year. Larger values are typos, and would
/// overflow the timer's arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration: a number (fractions allowed) with a unit `ms`, `s`, `m` or `h`; a
/// bare number means seconds, as `--cgitimeout` takes. Zero is refused (every duration
/// flag turns a limit on; leaving the flag out is how to have none).
pub fn parse_duration(s: &str) -> Result<Duration, ValueProblem> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(ValueProblem::Duration),
    };
    // `f64::from_str` would also take "inf", "1e3" and "-1": the digits check above has
    // already kept those out.
    let n: f64 = number.parse().map_err(|_| ValueProblem::Duration)?;
    let secs = n * scale;
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(ValueProblem::TooLarge);
    }
    let d = Duration::from_secs_f64(secs);
    if d < Duration::from_millis(1) {
        return Err(ValueProblem::Zero);
    }
    Ok(d)
}

/// `--ratelimit=N/s[:BURST]`: at most `per_second` client messages a second on average,
/// with up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    /// Defaults to `per_second` (a second's worth), at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// Parses `N/s`, `N/s:BURST` or `N/s,BURST` (the issue that asked for the flag wrote
    /// both spellings; both are kept).
    pub fn parse(s: &str) -> Result<Self, ValueProblem> {
        let s = s.trim();
        let (rate, burst) = match s.split_once([':', ',']) {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let n = rate
            .strip_suffix("/s")
            .ok_or(ValueProblem::Rate)?
            .trim()
            .parse::<u32>()
            .map_err(|_| ValueProblem::Rate)?;
        let burst = match burst {
            Some(b) => b.trim().parse::<u32>().map_err(|_| ValueProblem::Rate)?,
            None => n,
        };
        if n == 0 || burst == 0 {
            return Err(ValueProblem::Zero);
        }
        Ok(RateLimit { per_second: n, burst })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_a_bare_number_is_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "1x", "-1s", "1e3", "inf", "1 s s", "ms5"] {
            assert_eq!(parse_duration(bad), Err(ValueProblem::Duration), "{bad:?}");
        }
        assert_eq!(parse_duration("0"), Err(ValueProblem::Zero));
        assert_eq!(parse_duration("0.0001s"), Err(ValueProblem::Zero));
        assert_eq!(parse_duration("9999999h"), Err(ValueProblem::TooLarge));
    }

    #[test]
    fn rates_are_per_second_with_an_optional_burst() {
        let r = |per_second, burst| Ok(RateLimit { per_second, burst });
        assert_eq!(RateLimit::parse("10/s"), r(10, 10));
        assert_eq!(RateLimit::parse("10/s:50"), r(10, 50));
        assert_eq!(RateLimit::parse("10/s,1"), r(10, 1));
        for bad in ["10", "10/m", "/s", "x/s", "10/s:", "10/s:x", "-1/s"] {
            assert_eq!(RateLimit::parse(bad), Err(ValueProblem::Rate), "{bad:?}");
        }
        assert_eq!(RateLimit::parse("0/s"), Err(ValueProblem::Zero));
        assert_eq!(RateLimit::parse("5/s:0"), Err(ValueProblem::Zero));
    }
}
