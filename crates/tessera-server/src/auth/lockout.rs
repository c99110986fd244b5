//! Lockout after repeated failures: `max_failures` failures of one subject
//! within `window` lock that subject out for `duration`.
//!
//! This is a decision, not a rate: the rate of all attempts is governor's job
//! (see [`super::ratelimit`]). A success does not clear the count, so an
//! attacker who holds one valid account cannot interleave good logins to keep
//! guessing another's password from the same address.
//!
//! Each [`LockoutPurpose`] counts on its own, so mistyped pairing codes
//! never lock a password login and a lost support-code race never locks
//! pairing approvals. Only a guess counts: a code that exists but was
//! already used, approved or expired is an honest mistake (or a lost race)
//! and answers with its own error instead. Subjects are addresses, IPv6 by
//! /64 (one customer's whole network, as an attacker holds it), or an
//! account or operator at an address, so one person's typos do not lock
//! out a colleague behind the same NAT.
//!
//! The counts live in the database (`store::lockouts`), so every node on
//! one database sees the same counts and a guesser gains nothing by
//! spreading attempts over a cluster. The decisions here are pure
//! functions over a stored row; the async functions only move rows in and
//! out, and a failure that triggers a lock appends its `lockout_triggered`
//! row in the same transaction as the lock.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tessera_core::clock::wait_in_words;
use tessera_core::kinds::LockoutPurpose;
use tessera_core::Timestamp;

use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::lockouts::{self, LockoutRow};
use crate::store::{Db, StoreResult, Write};
use crate::tenancy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: i64,
    pub window: Duration,
    pub duration: Duration,
}

const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

/// How many failures each purpose allows within fifteen minutes before a
/// fifteen-minute lock. The address-wide login limit is ten times the
/// per-account one: it is there for a guesser who tries a few passwords on
/// each of many accounts, not for anyone's typos.
pub fn policy(purpose: LockoutPurpose) -> LockoutPolicy {
    let max_failures = match purpose {
        LockoutPurpose::LoginAccount
        | LockoutPurpose::SupportCode
        | LockoutPurpose::PairingCode => 10,
        LockoutPurpose::LoginAddress => 100,
    };
    LockoutPolicy {
        max_failures,
        window: FIFTEEN_MINUTES,
        duration: FIFTEEN_MINUTES,
    }
}

/// The longest window of any purpose: rows older than this, and not
/// locked, are forgotten.
const LONGEST_WINDOW: Duration = FIFTEEN_MINUTES;

/// The outcome of recording a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Still allowed; this many more failures before lockout.
    Counted { remaining: i64 },
    /// This failure triggered a lockout lasting until the given time.
    LockedOut { until: Timestamp },
    /// Already locked (a request that passed the check before the lock
    /// landed); nothing changes.
    StillLocked { until: Timestamp },
}

/// How long `row` is still locked at `now`, if it is.
pub fn remaining(row: &LockoutRow, now: Timestamp) -> Option<(Timestamp, Duration)> {
    row.locked_until
        .filter(|until| *until > now)
        .map(|until| (until, until.since(now)))
}

/// One more failure at `now`: the row to store and what it means. A window
/// starts at its first failure; failures after it ends start a new one.
pub fn fail(row: LockoutRow, now: Timestamp, p: &LockoutPolicy) -> (LockoutRow, FailureOutcome) {
    if let Some((until, _)) = remaining(&row, now) {
        return (row, FailureOutcome::StillLocked { until });
    }
    let window_over = row.failures == 0 || now >= row.window_start.plus(p.window);
    let mut next = if window_over {
        LockoutRow {
            failures: 1,
            window_start: now,
            locked_until: None,
        }
    } else {
        LockoutRow {
            failures: row.failures + 1,
            locked_until: None,
            ..row
        }
    };
    if next.failures >= p.max_failures {
        let until = now.plus(p.duration);
        next = LockoutRow {
            failures: 0,
            window_start: now,
            locked_until: Some(until),
        };
        (next, FailureOutcome::LockedOut { until })
    } else {
        let remaining = p.max_failures - next.failures;
        (next, FailureOutcome::Counted { remaining })
    }
}

/// The address part of a subject: IPv4 as it is, IPv4-mapped IPv6 as the
/// IPv4 it maps, other IPv6 by its /64 — a single host is usually given a
/// whole /64, so per-address keys would let it guess without limit.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

/// Whose password was tried, for the per-account count.
#[derive(Clone, Copy, Debug)]
pub enum Account<'a> {
    /// An existing user, by id (stable across renames).
    User(&'a str),
    /// A name no account has. It must count like a real account (or the
    /// lockout would tell a guesser which names exist), but what was typed
    /// may be a password typed into the wrong box: only 16 bits of its hash
    /// are kept, which name a bucket and cannot give the text back.
    Unknown(&'a str),
}

/// One counter: a purpose, the subject it counts, and how the lock is
/// audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockKey {
    pub purpose: LockoutPurpose,
    pub subject: String,
    tenant: String,
    actor: Actor,
    target: Option<String>,
}

impl LockKey {
    fn new(purpose: LockoutPurpose, subject: String) -> LockKey {
        LockKey {
            purpose,
            subject,
            tenant: tenancy::for_anonymous().to_owned(),
            actor: Actor::Anonymous,
            target: None,
        }
    }

    /// Wrong passwords for `account` from `ip`.
    pub fn login_account(account: Account<'_>, ip: IpAddr) -> LockKey {
        let addr = address_key(ip);
        match account {
            Account::User(id) => {
                let mut k = LockKey::new(LockoutPurpose::LoginAccount, format!("user:{id}@{addr}"));
                k.target = Some(format!("user:{id}"));
                k
            }
            Account::Unknown(name) => {
                let hash = Sha256::digest(name.to_lowercase().as_bytes());
                let tag = format!("{:02x}{:02x}", hash[0], hash[1]);
                LockKey::new(LockoutPurpose::LoginAccount, format!("name:{tag}@{addr}"))
            }
        }
    }

    /// Wrong passwords for any account from `ip`.
    pub fn login_address(ip: IpAddr) -> LockKey {
        LockKey::new(LockoutPurpose::LoginAddress, address_key(ip))
    }

    /// Support codes that never existed, from `ip`.
    pub fn support_code(ip: IpAddr) -> LockKey {
        LockKey::new(LockoutPurpose::SupportCode, address_key(ip))
    }

    /// Pairing user codes that never existed, typed by the operator
    /// `user_id` of `tenant` from `ip`.
    pub fn pairing_code(tenant: &str, user_id: &str, ip: IpAddr) -> LockKey {
        let mut k = LockKey::new(
            LockoutPurpose::PairingCode,
            format!("user:{user_id}@{}", address_key(ip)),
        );
        k.tenant = tenant.to_owned();
        k.actor = Actor::User(user_id.to_owned());
        k.target = Some(format!("user:{user_id}"));
        k
    }
}

/// A refusal: a subject is locked out until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub purpose: LockoutPurpose,
    pub until: Timestamp,
    pub remaining: Duration,
}

impl Locked {
    fn reason(&self) -> &'static str {
        match self.purpose {
            LockoutPurpose::LoginAccount => {
                "too many failed sign-ins to this account from this address"
            }
            LockoutPurpose::LoginAddress => "too many failed sign-ins from this address",
            LockoutPurpose::SupportCode => "too many unknown support codes from this address",
            LockoutPurpose::PairingCode => {
                "too many unknown pairing codes from you at this address"
            }
        }
    }
}

/// "locked out for 14 minutes after too many …; try again after 05:31 UTC"
impl fmt::Display for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "locked out for {} after {}; try again after {}",
            wait_in_words(self.remaining),
            self.reason(),
            self.until.minute_after_utc()
        )
    }
}

/// The longest-lasting lock among `keys` at `now`, if any is locked.
pub async fn check(db: &Db, keys: &[LockKey]) -> StoreResult<Option<Locked>> {
    let now = db.now();
    let mut worst: Option<Locked> = None;
    for key in keys {
        let Some(row) = lockouts::get(db.pool(), key.purpose, &key.subject).await? else {
            continue;
        };
        if let Some((until, remaining)) = remaining(&row, now) {
            if worst.is_none_or(|w| w.until < until) {
                worst = Some(Locked {
                    purpose: key.purpose,
                    until,
                    remaining,
                });
            }
        }
    }
    Ok(worst)
}

/// Counts one failure against each of `keys` in `w`'s transaction. A failure
/// that locks a key out appends `lockout_triggered` in the same
/// transaction, so a lock is never without its row, nor a row without its
/// lock.
pub async fn record_failure(w: &mut Write, ip: IpAddr, keys: &[LockKey]) -> StoreResult<()> {
    let now = w.now();
    lockouts::forget_stale(w, now.minus(LONGEST_WINDOW), now).await?;
    for key in keys {
        let row = lockouts::hold(w, key.purpose, &key.subject, now).await?;
        let (next, outcome) = fail(row, now, &policy(key.purpose));
        if next != row {
            lockouts::put(w, key.purpose, &key.subject, &next).await?;
        }
        if let FailureOutcome::LockedOut { until } = outcome {
            let mut event =
                AuditEvent::new(&key.tenant, key.actor.clone(), Action::LockoutTriggered)
                    .ip(Some(ip))
                    .detail("purpose", key.purpose.as_str())
                    .detail("until", until.to_rfc3339());
            if let Some(target) = &key.target {
                event = event.target(target.clone());
            }
            w.audit(event).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_000_000_000);

    fn after(row: LockoutRow, n: usize, now: Timestamp, p: &LockoutPolicy) -> LockoutRow {
        (0..n).fold(row, |r, _| fail(r, now, p).0)
    }

    #[test]
    fn tenth_failure_locks_for_fifteen_minutes() {
        let p = policy(LockoutPurpose::LoginAccount);
        let mut row = LockoutRow::fresh(T0);
        for i in 0..9 {
            let (next, outcome) = fail(row, T0, &p);
            assert_eq!(outcome, FailureOutcome::Counted { remaining: 9 - i });
            assert_eq!(remaining(&next, T0), None);
            row = next;
        }
        let until = T0.plus(Duration::from_secs(900));
        let (row, outcome) = fail(row, T0, &p);
        assert_eq!(outcome, FailureOutcome::LockedOut { until });
        assert_eq!(remaining(&row, T0), Some((until, Duration::from_secs(900))));
        assert!(remaining(&row, until.minus(Duration::from_millis(1))).is_some());
        assert_eq!(remaining(&row, until), None);
        // A failure racing the lock changes nothing and is not a new lock.
        assert_eq!(
            fail(row, T0, &p),
            (row, FailureOutcome::StillLocked { until })
        );
        // After the lock, counting starts again from one.
        assert_eq!(
            fail(row, until, &p).1,
            FailureOutcome::Counted { remaining: 9 }
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let p = policy(LockoutPurpose::SupportCode);
        let row = after(LockoutRow::fresh(T0), 9, T0, &p);
        let later = T0.plus(Duration::from_secs(901));
        assert_eq!(
            fail(row, later, &p).1,
            FailureOutcome::Counted { remaining: 9 }
        );
    }

    #[test]
    fn the_address_wide_login_limit_is_ten_times_the_per_account_one() {
        let account = policy(LockoutPurpose::LoginAccount);
        let address = policy(LockoutPurpose::LoginAddress);
        assert_eq!(address.max_failures, 10 * account.max_failures);
        let row = after(LockoutRow::fresh(T0), 99, T0, &address);
        assert_eq!(remaining(&row, T0), None);
        assert!(matches!(
            fail(row, T0, &address).1,
            FailureOutcome::LockedOut { .. }
        ));
    }

    #[test]
    fn ipv6_is_keyed_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), "2001:db8:1:2::/64");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7");
        assert_eq!(address_key(v4), "192.0.2.7");
        assert_eq!(address_key("::1".parse().unwrap()), "::/64");
        assert_eq!(
            LockKey::support_code(a).subject,
            LockKey::support_code(b).subject
        );
    }

    #[test]
    fn each_purpose_and_account_is_its_own_subject() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let alice = LockKey::login_account(Account::User("u1"), ip);
        let bob = LockKey::login_account(Account::User("u2"), ip);
        assert_ne!(alice.subject, bob.subject);
        assert_eq!(alice.subject, "user:u1@192.0.2.7");
        assert_eq!(LockKey::login_address(ip).subject, "192.0.2.7");
        assert_ne!(
            LockKey::support_code(ip).purpose,
            LockKey::pairing_code("t", "u1", ip).purpose
        );
        // An unknown name keeps 16 bits of its hash, whatever its case,
        // never the text.
        let typed = LockKey::login_account(Account::Unknown("Correct Horse Battery"), ip);
        assert!(!typed.subject.to_lowercase().contains("horse"));
        assert_eq!(typed.subject.len(), "name:abcd@192.0.2.7".len());
        assert_eq!(
            typed.subject,
            LockKey::login_account(Account::Unknown("correct horse battery"), ip).subject
        );
    }

    #[test]
    fn the_refusal_says_how_long_and_until_when_in_words() {
        let until = Timestamp::parse_rfc3339("2026-11-26T05:30:20Z").unwrap();
        let locked = Locked {
            purpose: LockoutPurpose::LoginAccount,
            until,
            remaining: Duration::from_secs(14 * 60 - 5),
        };
        assert_eq!(
            locked.to_string(),
            "locked out for 14 minutes after too many failed sign-ins to this account \
             from this address; try again after 05:31 UTC"
        );
    }
}
