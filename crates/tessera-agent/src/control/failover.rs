//! Which server the agent connects to next, and how long it waits first:
//! the decisions of the reconnect loop, kept apart from its I/O so they
//! are tested directly.
//!
//! An agent may know several servers (nodes behind one database): the
//! one it enrolled with, then its alternates. A failed attempt or a lost
//! connection moves it on to the next in the list, round and round, after
//! a jittered exponential wait, so a fleet whose node went away spreads
//! over the others instead of arriving in lockstep. The wait starts again
//! from the first step once a connection stayed up for [`STABLE_AFTER`];
//! a node that accepts and drops at once keeps the wait growing up to the
//! cap.

use std::net::SocketAddr;
use std::time::Duration;

/// The first step of the backoff: the first retry comes within `[0.5, 1]`
/// of it.
pub const FIRST_STEP: Duration = Duration::from_secs(1);

/// The default cap of the wait between attempts (`RunOptions::max_backoff`).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A connection that stayed up this long was healthy: the next wait starts
/// from the first step again.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The wait before attempt `n` (0-based) with jitter `fraction` (taken in
/// `[0, 1]`): a time in `[d/2, d]` where `d = min(FIRST_STEP · 2^n, max)`.
pub fn jittered(attempt: u32, max: Duration, fraction: f64) -> Duration {
    let d = FIRST_STEP
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max);
    let half = d / 2;
    half + d.saturating_sub(half).mul_f64(fraction.clamp(0.0, 1.0))
}

/// The reconnect loop's position: which server is next and how many
/// attempts have failed since the last healthy connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    servers: usize,
    current: usize,
    attempt: u32,
    max_backoff: Duration,
}

impl Failover {
    /// Starts at the first of `servers` (at least one is assumed; an empty
    /// list behaves as one).
    pub fn new(servers: usize, max_backoff: Duration) -> Failover {
        Failover {
            servers: servers.max(1),
            current: 0,
            attempt: 0,
            max_backoff,
        }
    }

    /// The index of the server to try now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// An attempt on the current server failed (refused, unreachable, no
    /// answer): move on to the next; the wait before trying it.
    pub fn failed(&mut self, fraction: f64) -> Duration {
        self.step(fraction)
    }

    /// A connection to the current server ended after it was up for `up`:
    /// move on to the next; the wait before trying it, from the first step
    /// again when the connection had been healthy.
    pub fn dropped(&mut self, up: Duration, fraction: f64) -> Duration {
        if up >= STABLE_AFTER {
            self.attempt = 0;
        }
        self.step(fraction)
    }

    fn step(&mut self, fraction: f64) -> Duration {
        let wait = jittered(self.attempt, self.max_backoff, fraction);
        self.attempt = self.attempt.saturating_add(1);
        self.current = (self.current + 1) % self.servers;
        wait
    }
}

/// The servers an agent connects to, in order: the one it enrolled with,
/// the alternates it stored, then those given when it was started; each
/// once (compared as URLs, so `http://a:1` and `http://a:1/` are one).
pub fn server_list<'a>(
    enrolled: &'a str,
    stored: &'a [String],
    given: &'a [String],
) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let same = |a: &str, b: &str| match (
        tessera_client::parse_server_url(a),
        tessera_client::parse_server_url(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim() == b.trim(),
    };
    for s in std::iter::once(enrolled)
        .chain(stored.iter().map(String::as_str))
        .chain(given.iter().map(String::as_str))
    {
        if !out.iter().any(|o| same(o, s)) {
            out.push(s);
        }
    }
    out
}

/// The addresses a server name resolved to, in the order to try them:
/// each once, starting after `last` (the address of the connection that
/// just ended) so a name with several nodes behind it moves on to another
/// node first and comes back to `last` only when the others fail.
pub fn address_order(resolved: Vec<SocketAddr>, last: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::with_capacity(resolved.len());
    for a in resolved {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    if let Some(at) = last.and_then(|l| unique.iter().position(|a| *a == l)) {
        unique.rotate_left(at + 1);
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = DEFAULT_MAX_BACKOFF;

    #[test]
    fn the_wait_doubles_within_its_jitter_band_and_stops_at_the_cap() {
        for attempt in 0..40 {
            let full = Duration::from_secs(1u64 << attempt.min(16)).min(MAX);
            assert_eq!(jittered(attempt, MAX, 0.0), full / 2, "attempt {attempt}");
            assert_eq!(jittered(attempt, MAX, 1.0), full, "attempt {attempt}");
            let mid = jittered(attempt, MAX, 0.5);
            assert!(mid > full / 2 && mid < full, "attempt {attempt}: {mid:?}");
        }
        // The first retry comes within 0.5–1 s; the cap holds whatever the
        // jitter source says.
        assert_eq!(jittered(0, MAX, 0.0), Duration::from_millis(500));
        assert_eq!(jittered(0, MAX, 1.0), Duration::from_secs(1));
        assert_eq!(jittered(u32::MAX, MAX, 7.0), MAX);
        assert_eq!(jittered(3, MAX, -1.0), MAX / 2);
    }

    #[test]
    fn failures_go_round_the_servers_with_a_growing_wait() {
        let mut f = Failover::new(3, MAX);
        let mut seen = vec![f.current()];
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(f.failed(1.0));
            seen.push(f.current());
        }
        assert_eq!(seen, [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            waits,
            [1, 2, 4, 5, 5].map(Duration::from_secs),
            "1 s, doubling, capped at 5 s"
        );
    }

    #[test]
    fn a_healthy_connection_resets_the_wait_and_a_flapping_one_does_not() {
        let mut f = Failover::new(2, MAX);
        for _ in 0..4 {
            f.failed(1.0);
        }
        assert_eq!(f.current(), 0);
        // Up long enough: the node went away after serving; back within
        // the first step, on the other node.
        assert_eq!(f.dropped(STABLE_AFTER, 1.0), FIRST_STEP);
        assert_eq!(f.current(), 1);
        assert_eq!(f.dropped(STABLE_AFTER * 6, 0.0), FIRST_STEP / 2);
        assert_eq!(f.current(), 0);
        // Accepted then dropped at once, again and again: the wait grows.
        let flapping: Vec<Duration> = (0..3)
            .map(|_| f.dropped(Duration::from_millis(200), 1.0))
            .collect();
        assert_eq!(flapping, [2, 4, 5].map(Duration::from_secs));
    }

    #[test]
    fn one_server_is_retried_itself() {
        let mut f = Failover::new(1, MAX);
        f.failed(0.5);
        assert_eq!(f.current(), 0);
        let mut none = Failover::new(0, MAX);
        none.dropped(Duration::ZERO, 0.5);
        assert_eq!(none.current(), 0);
    }

    #[test]
    fn the_enrolled_server_comes_first_and_each_server_once() {
        let stored = vec!["http://127.0.0.1:2/".to_owned()];
        let given = vec![
            "http://127.0.0.1:1/".to_owned(),
            "http://127.0.0.1:3".to_owned(),
            " http://127.0.0.1:2".to_owned(),
        ];
        assert_eq!(
            server_list("http://127.0.0.1:1", &stored, &given),
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2/",
                "http://127.0.0.1:3"
            ]
        );
        assert_eq!(server_list("http://a:1", &[], &[]), ["http://a:1"]);
    }

    #[test]
    fn addresses_start_after_the_one_just_lost() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(address_order(vec![a, b, c], None), [a, b, c]);
        assert_eq!(address_order(vec![a, b, c], Some(a)), [b, c, a]);
        assert_eq!(address_order(vec![a, b, c], Some(c)), [a, b, c]);
        assert_eq!(address_order(vec![a, b, a, c, b], Some(b)), [c, a, b]);
        let elsewhere: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(address_order(vec![a, b], Some(elsewhere)), [a, b]);
        assert!(address_order(vec![], Some(a)).is_empty());
    }
}
