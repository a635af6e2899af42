//! Parsers for flag values whose type alone does not say what is allowed: whole numbers
//! in a range. The bounds keep every value usable downstream (a `--maxforks` above
//! tokio's semaphore limit, a `--cgitimeout` past the end of time, a `--maxframesize`
//! whose buffer sizes overflow would each panic later), and clap prints the error as
//! `invalid value '-1' for '--maxforks <N>': must be a whole number from 0 to 4194304`,
//! which names the flag and the range.

/// A parser for a whole number from `min` to `max` (both included), as `T`.
pub fn number<T>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let bad = || format!("must be a whole number from {min} to {max}");
        let n: u64 = s.parse().map_err(|_| bad())?;
        if !(min..=max).contains(&n) {
            return Err(bad());
        }
        T::try_from(n).map_err(|_| bad())
    }
}

/// `--threads`: 1 to [`MAX_THREADS`].
pub fn threads(s: &str) -> Result<std::num::NonZeroUsize, String> {
    let n: usize = number(1, MAX_THREADS)(s)?;
    // Cannot fail: the range starts at 1. Written as an error anyway, no unwrap.
    std::num::NonZeroUsize::new(n).ok_or_else(|| format!("must be a whole number from 1 to {MAX_THREADS}"))
}

/// Most runtime threads: tokio starts them all at once and panics if one cannot be
/// spawned, so an absurd count must stop at the command line.
pub const MAX_THREADS: u64 = 1024;
/// Most programs at once: Linux's highest possible `pid_max` (2^22), far below the
/// semaphore's limit.
pub const MAX_FORKS: u64 = 1 << 22;
/// Largest message and `--sharedqueue`: 1 GiB, so that buffer sizes computed from it
/// (twice the message plus a chunk) fit a 32-bit `usize`.
pub const MAX_BYTES: u64 = 1 << 30;
/// `--closems` and `--pingms`: one day in milliseconds; timers computed from them stay
/// far from `Instant`'s end.
pub const MAX_MS: u64 = 86_400_000;
/// `--cgitimeout` and `--connect-timeout`: one day in seconds.
pub const MAX_SECS: u64 = 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_range_and_out() {
        let p = number::<u16>(0, 65535);
        assert_eq!(p("0"), Ok(0));
        assert_eq!(p("65535"), Ok(65535));
        for bad in ["70000", "-1", "x", "", "1.5", " 1"] {
            assert_eq!(
                p(bad),
                Err("must be a whole number from 0 to 65535".to_owned()),
                "{bad:?}"
            );
        }
        let p = number::<usize>(1, 10);
        assert!(p("0").is_err());
        assert_eq!(p("10"), Ok(10));
        assert!(threads("0").is_err());
        assert!(threads("1025").is_err());
        assert_eq!(threads("4").map(|n| n.get()), Ok(4));
    }
}
