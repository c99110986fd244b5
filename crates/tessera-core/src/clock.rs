//! Time as the rest of Tessera sees it: UTC milliseconds since the Unix epoch,
//! read through a [`Clock`] so that expiry, lockout and rate-limit logic can be
//! tested by moving a [`ManualClock`] instead of sleeping.

use std::fmt;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `d`, saturating instead of overflowing.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// This instant minus `d`, saturating instead of overflowing.
    pub fn minus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// RFC 3339 with millisecond precision, e.g. `2026-11-23T07:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        let t = if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        };
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// Parses RFC 3339 (`2026-11-23T07:00:00Z`, fractional seconds allowed).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).ok()?,
            Err(e) => -i64::try_from(e.duration().as_millis()).ok()?,
        };
        Some(Timestamp(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Timestamp {
    /// The first whole minute at or after this instant, as a wall-clock
    /// time for people: `05:31 UTC`. Rounded up, so whoever comes back then
    /// is not refused again.
    pub fn minute_after_utc(self) -> String {
        let minute = 60_000;
        let up = Timestamp(self.0.saturating_add(minute - 1).div_euclid(minute) * minute);
        let text = up.to_rfc3339();
        format!("{} UTC", text.get(11..16).unwrap_or("??:??"))
    }
}

/// A wait in the largest unit that reads naturally, rounded up so whoever
/// waits that long is not refused again: "45 seconds", "14 minutes",
/// "2 hours". The one formatter for waits shown to people (the server's
/// lockout messages, the command line's "try again in …").
pub fn wait_in_words(wait: Duration) -> String {
    fn plural(n: u64, unit: &str) -> String {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    }
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match secs {
        0..=90 => plural(secs.max(1), "second"),
        91..=7199 => plural(secs.div_ceil(60), "minute"),
        _ => plural(secs.div_ceil(3600), "hour"),
    }
}

/// Where the current time comes from.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.as_millis())))
    }

    /// Starts at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// The current reading in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_at_millisecond_precision() {
        let t = Timestamp::from_millis(1_795_000_000_123);
        let s = t.to_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
    }

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let c = ManualClock::new(Timestamp::from_millis(1000));
        let c2 = c.clone();
        c.advance(Duration::from_secs(2));
        assert_eq!(c2.now(), Timestamp::from_millis(3000));
    }

    #[test]
    fn since_saturates_at_zero() {
        let a = Timestamp::from_millis(10);
        assert_eq!(a.since(Timestamp::from_millis(20)), Duration::ZERO);
    }

    #[test]
    fn waits_read_as_words_rounded_up() {
        let w = |s| wait_in_words(Duration::from_secs(s));
        assert_eq!(w(0), "1 second");
        assert_eq!(w(1), "1 second");
        assert_eq!(wait_in_words(Duration::from_millis(44_001)), "45 seconds");
        assert_eq!(w(91), "2 minutes");
        assert_eq!(w(840), "14 minutes");
        assert_eq!(w(899), "15 minutes");
        assert_eq!(w(3600), "60 minutes");
        assert_eq!(w(7200), "2 hours");
        assert_eq!(w(86_400), "24 hours");
    }

    #[test]
    fn the_minute_after_rounds_up_to_a_whole_minute() {
        // 2026-11-26T05:30:20Z
        let t = Timestamp::parse_rfc3339("2026-11-26T05:30:20Z").unwrap();
        assert_eq!(t.minute_after_utc(), "05:31 UTC");
        let exact = Timestamp::parse_rfc3339("2026-11-26T05:31:00Z").unwrap();
        assert_eq!(exact.minute_after_utc(), "05:31 UTC");
        let late = Timestamp::parse_rfc3339("2026-11-26T23:59:01Z").unwrap();
        assert_eq!(late.minute_after_utc(), "00:00 UTC");
    }
}
