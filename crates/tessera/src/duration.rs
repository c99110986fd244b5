//! Durations on the command line: human form (`90s`, `10m`, `30d`,
//! `1year`), each argument with its allowed range, and an error that says
//! the range in words. One parser for every duration argument: `tessera
//! ctl`, the device commands and `tessera server`'s flags. A value out of
//! range is refused, never clamped.

use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// An allowed range, with its ends in words.
struct Range {
    what: &'static str,
    min: (Duration, &'static str),
    max: (Duration, &'static str),
}

fn within(s: &str, r: &Range) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!(
            "{e}: write a duration like `10m`, `12h` or `30d` ({} is between {} and {})",
            r.what, r.min.1, r.max.1
        )
    })?;
    if d < r.min.0 || d > r.max.0 {
        return Err(format!(
            "{} must be between {} and {}, not {}",
            r.what,
            r.min.1,
            r.max.1,
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

/// `enroll-token create --ttl`: what the server accepts, 1 minute to 30 days.
pub(crate) fn enrollment_token_ttl(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "an enrollment token's lifetime",
            min: (MINUTE, "1 minute"),
            max: (30 * DAY, "30 days"),
        },
    )
}

/// `support create --ttl`: 1 minute to 1 day.
pub(crate) fn support_code_ttl(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "a support code's lifetime",
            min: (MINUTE, "1 minute"),
            max: (DAY, "1 day"),
        },
    )
}

/// `grant add/renew --expires`: 1 minute to 1 year (the server allows 366
/// days, so humantime's `1year`, 365¼ days, fits).
pub(crate) fn grant_expiry(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "a grant's lifetime",
            min: (MINUTE, "1 minute"),
            max: (366 * DAY, "1 year"),
        },
    )
}

/// `server --pairing-ttl`: long enough to walk to the approval page,
/// short enough that a forgotten code does not linger.
pub(crate) fn pairing_ttl(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "a pairing's lifetime",
            min: (MINUTE, "1 minute"),
            max: (DAY, "1 day"),
        },
    )
}

/// `server --heartbeat-interval`: a revoked device is cut off within one,
/// so at most 5 minutes; at least 100 ms (each one costs every device a
/// message).
pub(crate) fn heartbeat_interval(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "the heartbeat interval",
            min: (Duration::from_millis(100), "100 milliseconds"),
            max: (5 * MINUTE, "5 minutes"),
        },
    )
}

/// `server --pairing-interval`: RFC 8628's polling interval, whole
/// seconds on the wire, so 1 second to 1 minute (the shortest pairing).
pub(crate) fn pairing_interval(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "the pairing polling interval",
            min: (SECOND, "1 second"),
            max: (MINUTE, "1 minute"),
        },
    )
}

/// `server --session-ttl`: an operator login, 1 minute to 30 days.
pub(crate) fn session_ttl(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "an operator login's lifetime",
            min: (MINUTE, "1 minute"),
            max: (30 * DAY, "30 days"),
        },
    )
}

/// `server --shell-grace`: 0 (a shell ends with its last viewer) to 1 day.
pub(crate) fn shell_grace(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "a shell's grace period",
            min: (Duration::ZERO, "0 seconds"),
            max: (DAY, "1 day"),
        },
    )
}

/// `view --snapshot --wait`: 1 second to 10 minutes.
pub(crate) fn snapshot_wait(s: &str) -> Result<Duration, String> {
    within(
        s,
        &Range {
            what: "the wait for a snapshot",
            min: (Duration::from_secs(1), "1 second"),
            max: (10 * MINUTE, "10 minutes"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_human_form_within_their_range_in_words() {
        assert_eq!(grant_expiry("30d"), Ok(30 * DAY));
        assert_eq!(grant_expiry("1year"), Ok(Duration::from_secs(31_557_600)));
        assert_eq!(enrollment_token_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(support_code_ttl("30m"), Ok(30 * MINUTE));
        assert_eq!(snapshot_wait("30s"), Ok(Duration::from_secs(30)));
        let e = grant_expiry("2years").unwrap_err();
        assert!(e.contains("between 1 minute and 1 year"), "{e}");
        let e = support_code_ttl("2d").unwrap_err();
        assert!(e.contains("between 1 minute and 1 day, not 2days"), "{e}");
        let e = enrollment_token_ttl("5s").unwrap_err();
        assert!(e.contains("between 1 minute and 30 days"), "{e}");
        let e = enrollment_token_ttl("soon").unwrap_err();
        assert!(e.contains("like `10m`") && e.contains("30 days"), "{e}");
    }

    /// Each parser takes both ends of its range and refuses just past
    /// them (an empty end: nothing below), saying the range in words.
    fn range(parse: fn(&str) -> Result<Duration, String>, ends: [&str; 4], words: &str) {
        let [low, high, too_low, too_high] = ends;
        assert!(parse(low).is_ok(), "{low}");
        assert!(parse(high).is_ok(), "{high}");
        for bad in [too_low, too_high].into_iter().filter(|b| !b.is_empty()) {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("between {words}, not ")), "{bad}: {e}");
        }
        let e = parse("often").unwrap_err();
        assert!(e.contains("like `10m`") && e.contains(words), "{e}");
    }

    #[test]
    fn server_durations_are_refused_outside_their_range_not_clamped() {
        range(
            pairing_ttl,
            ["1m", "1day", "59s", "25h"],
            "1 minute and 1 day",
        );
        assert_eq!(pairing_ttl("30m"), Ok(30 * MINUTE));
        range(
            heartbeat_interval,
            ["100ms", "5m", "99ms", "301s"],
            "100 milliseconds and 5 minutes",
        );
        assert_eq!(heartbeat_interval("15s"), Ok(15 * SECOND));
        range(
            pairing_interval,
            ["1s", "1m", "500ms", "61s"],
            "1 second and 1 minute",
        );
        range(
            session_ttl,
            ["1m", "30d", "59s", "31d"],
            "1 minute and 30 days",
        );
        assert_eq!(session_ttl("12h"), Ok(12 * 60 * MINUTE));
        range(
            shell_grace,
            ["0s", "1day", "", "25h"],
            "0 seconds and 1 day",
        );
        assert_eq!(shell_grace("60s"), Ok(MINUTE));
    }
}
