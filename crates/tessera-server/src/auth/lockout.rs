//! Lockout after repeated failures: `max_failures` failures from one key
//! within `window` lock that key out for `duration`.
//!
//! This is a decision, not a rate: the rate of all attempts is governor's job
//! (see [`super::ratelimit`]). A success does not clear the count, so an
//! attacker who holds one valid account cannot interleave good logins to keep
//! guessing another's password from the same address.
//!
//! State is per server process. Each node of a cluster therefore allows
//! `max_failures` per window on its own; the per-IP rate limit still bounds the
//! total.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tessera_core::Timestamp;

#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    pub max_failures: usize,
    pub window: Duration,
    pub duration: Duration,
}

impl Default for LockoutPolicy {
    /// 10 failures within 15 minutes lock the key out for 15 minutes.
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 10,
            window: Duration::from_secs(15 * 60),
            duration: Duration::from_secs(15 * 60),
        }
    }
}

/// One key's recent failures.
#[derive(Debug, Default, Clone)]
struct Record {
    failures: VecDeque<Timestamp>,
    locked_until: Option<Timestamp>,
}

/// The outcome of recording a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Still allowed; this many more failures before lockout.
    Counted { remaining: usize },
    /// This failure triggered a lockout lasting until the given time.
    LockedOut { until: Timestamp },
}

impl Record {
    fn locked(&self, now: Timestamp) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until.since(now))
    }

    fn fail(&mut self, now: Timestamp, p: &LockoutPolicy) -> FailureOutcome {
        let horizon = now.minus(p.window);
        while self.failures.front().is_some_and(|t| *t <= horizon) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() >= p.max_failures {
            let until = now.plus(p.duration);
            self.locked_until = Some(until);
            self.failures.clear();
            FailureOutcome::LockedOut { until }
        } else {
            FailureOutcome::Counted {
                remaining: p.max_failures - self.failures.len(),
            }
        }
    }

    fn is_stale(&self, now: Timestamp, p: &LockoutPolicy) -> bool {
        self.locked(now).is_none()
            && self
                .failures
                .back()
                .is_none_or(|t| *t <= now.minus(p.window))
    }
}

/// Failure counts and lockouts for keys of type `K` (an IP address, a user).
#[derive(Debug)]
pub struct Lockout<K> {
    policy: LockoutPolicy,
    records: Mutex<HashMap<K, Record>>,
}

/// Above this many tracked keys, stale ones are pruned on the next failure.
const PRUNE_ABOVE: usize = 10_000;

impl<K: Hash + Eq + Clone> Lockout<K> {
    pub fn new(policy: LockoutPolicy) -> Self {
        Lockout {
            policy,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(remaining)` while `key` is locked out.
    pub fn check(&self, key: &K, now: Timestamp) -> Result<(), Duration> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match records.get(key).and_then(|r| r.locked(now)) {
            Some(remaining) => Err(remaining),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, key: &K, now: Timestamp) -> FailureOutcome {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() > PRUNE_ABOVE {
            let p = self.policy;
            records.retain(|_, r| !r.is_stale(now, &p));
        }
        records
            .entry(key.clone())
            .or_default()
            .fail(now, &self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_000_000_000);

    #[test]
    fn tenth_failure_locks_for_fifteen_minutes() {
        let l = Lockout::new(LockoutPolicy::default());
        for i in 0..9 {
            assert_eq!(
                l.record_failure(&"ip", T0),
                FailureOutcome::Counted { remaining: 9 - i }
            );
            assert!(l.check(&"ip", T0).is_ok());
        }
        let until = T0.plus(Duration::from_secs(900));
        assert_eq!(
            l.record_failure(&"ip", T0),
            FailureOutcome::LockedOut { until }
        );
        assert_eq!(l.check(&"ip", T0), Err(Duration::from_secs(900)));
        assert!(l.check(&"other", T0).is_ok());
        assert!(l
            .check(&"ip", until.minus(Duration::from_millis(1)))
            .is_err());
        assert!(l.check(&"ip", until).is_ok());
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let l = Lockout::new(LockoutPolicy::default());
        for _ in 0..9 {
            l.record_failure(&"ip", T0);
        }
        let later = T0.plus(Duration::from_secs(901));
        assert_eq!(
            l.record_failure(&"ip", later),
            FailureOutcome::Counted { remaining: 9 }
        );
    }
}
