//! Durations on the command line: human form (`90s`, `10m`, `30d`,
//! `1year`), each argument with its allowed range, and an error that says
//! the range in words. One parser for every duration argument of `tessera
//! ctl` and the device commands (the server's own flags keep theirs in
//! `server.rs`).

use std::time::Duration;

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
}
