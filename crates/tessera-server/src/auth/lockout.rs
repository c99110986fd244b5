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

/// What [`admit`] decided for an attempt about to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted already; checked next.
    Admitted,
    /// The subject is locked.
    Refused { until: Timestamp },
    /// As many attempts as the policy allows are already counted in this
    /// window (failed, or still being checked): this one locks the subject.
    LockedNow { until: Timestamp },
}

/// An attempt at `now`, before its answer is known. It is counted at once,
/// so attempts checked in parallel (a burst from many addresses of one
/// /64, or over several nodes) count while they are in flight: no more than
/// `max_failures` are ever being checked or failed in one window. A window
/// starts at its first attempt.
pub fn admit(row: LockoutRow, now: Timestamp, p: &LockoutPolicy) -> (LockoutRow, Admission) {
    if let Some((until, _)) = remaining(&row, now) {
        return (row, Admission::Refused { until });
    }
    let failures = if row.failures == 0 || now >= row.window_start.plus(p.window) {
        0
    } else {
        row.failures
    };
    let window_start = if failures == 0 { now } else { row.window_start };
    if failures >= p.max_failures {
        let until = now.plus(p.duration);
        let locked = LockoutRow {
            failures: 0,
            window_start: now,
            locked_until: Some(until),
        };
        return (locked, Admission::LockedNow { until });
    }
    let next = LockoutRow {
        failures: failures + 1,
        window_start,
        locked_until: None,
    };
    (next, Admission::Admitted)
}

/// One guess found after the fact: [`admit`] and [`confirm`] at once.
pub fn fail(row: LockoutRow, now: Timestamp, p: &LockoutPolicy) -> (LockoutRow, FailureOutcome) {
    match admit(row, now, p) {
        (next, Admission::Admitted) => confirm(next, now, p),
        (next, Admission::Refused { until }) => (next, FailureOutcome::StillLocked { until }),
        (next, Admission::LockedNow { until }) => (next, FailureOutcome::LockedOut { until }),
    }
}

/// The admitted attempt was a guess: it stays counted, and the count
/// reaching the limit locks the subject.
pub fn confirm(row: LockoutRow, now: Timestamp, p: &LockoutPolicy) -> (LockoutRow, FailureOutcome) {
    if let Some((until, _)) = remaining(&row, now) {
        return (row, FailureOutcome::StillLocked { until });
    }
    let in_window = row.failures > 0 && now < row.window_start.plus(p.window);
    if in_window && row.failures >= p.max_failures {
        let until = now.plus(p.duration);
        let locked = LockoutRow {
            failures: 0,
            window_start: now,
            locked_until: Some(until),
        };
        return (locked, FailureOutcome::LockedOut { until });
    }
    let used = if in_window { row.failures } else { 0 };
    (
        row,
        FailureOutcome::Counted {
            remaining: p.max_failures - used,
        },
    )
}

/// The admitted attempt was no guess (it succeeded, or named something
/// real): its count is given back.
pub fn refunded(row: LockoutRow, now: Timestamp, p: &LockoutPolicy) -> LockoutRow {
    let in_window = row.failures > 0 && now < row.window_start.plus(p.window);
    if remaining(&row, now).is_some() || !in_window {
        return row;
    }
    LockoutRow {
        failures: row.failures - 1,
        ..row
    }
}

/// The address part of a subject: IPv4 as it is, IPv4-mapped IPv6 as the
/// IPv4 it maps, other IPv6 by its /64 — a single host is usually given a
/// whole /64, so per-address keys would let it guess without limit.
pub fn address_key(ip: IpAddr) -> String {
    match address_of(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(net) => format!("{net}/64"),
    }
}

/// The address a request is counted under: IPv4 as it is, IPv4-mapped
/// IPv6 as its IPv4, other IPv6 as the first address of its /64.
pub fn address_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
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

/// Admits one attempt against every key at once, counting it (see
/// [`admit`]), or refuses it with the longest-lasting lock among them,
/// counting nothing. A key that this attempt locks is written and audited
/// (`lockout_triggered`) in the same transaction. Every admitted attempt
/// ends in [`confirm_guess`] or [`refund`].
pub async fn admit_attempt(
    db: &Db,
    ip: IpAddr,
    keys: &[LockKey],
) -> StoreResult<Result<(), Locked>> {
    db.write(async |w| {
        let now = w.now();
        // No pruning here (`record_failure` prunes): a DELETE over many rows
        // beside parallel admissions holding theirs deadlocks on PostgreSQL.
        let mut decided = Vec::with_capacity(keys.len());
        for key in keys {
            let row = lockouts::hold(w, key.purpose, &key.subject, now).await?;
            decided.push((key, admit(row, now, &policy(key.purpose))));
        }
        let mut worst: Option<Locked> = None;
        for (key, (_, admission)) in &decided {
            if let Admission::Refused { until } | Admission::LockedNow { until } = *admission {
                if worst.is_none_or(|w| w.until < until) {
                    worst = Some(Locked {
                        purpose: key.purpose,
                        until,
                        remaining: until.since(now),
                    });
                }
            }
        }
        for (key, (next, admission)) in &decided {
            match (admission, worst.is_some()) {
                (Admission::Admitted, false) => {
                    lockouts::put(w, key.purpose, &key.subject, next).await?;
                }
                (Admission::LockedNow { until }, _) => {
                    lockouts::put(w, key.purpose, &key.subject, next).await?;
                    w.audit(lock_event(key, ip, *until)).await?;
                }
                _ => {}
            }
        }
        Ok(worst.map_or(Ok(()), Err))
    })
    .await
}

/// The admitted attempt was a guess, in `w`'s transaction: it stays
/// counted, and a key it brings to the limit is locked and audited in the
/// same transaction.
pub async fn confirm_guess(w: &mut Write, ip: IpAddr, keys: &[LockKey]) -> StoreResult<()> {
    let now = w.now();
    for key in keys {
        let row = lockouts::hold(w, key.purpose, &key.subject, now).await?;
        let (next, outcome) = confirm(row, now, &policy(key.purpose));
        if next != row {
            lockouts::put(w, key.purpose, &key.subject, &next).await?;
        }
        if let FailureOutcome::LockedOut { until } = outcome {
            w.audit(lock_event(key, ip, until)).await?;
        }
    }
    Ok(())
}

/// The admitted attempt was no guess, in `w`'s transaction: its count is
/// given back.
pub async fn refund_in(w: &mut Write, keys: &[LockKey]) -> StoreResult<()> {
    let now = w.now();
    for key in keys {
        let row = lockouts::hold(w, key.purpose, &key.subject, now).await?;
        let next = refunded(row, now, &policy(key.purpose));
        if next != row {
            lockouts::put(w, key.purpose, &key.subject, &next).await?;
        }
    }
    Ok(())
}

/// [`refund_in`], in a transaction of its own.
pub async fn refund(db: &Db, keys: &[LockKey]) -> StoreResult<()> {
    db.write(async |w| refund_in(w, keys).await).await
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

/// Counts one failure, found after the fact, against each of `keys` in `w`'s
/// transaction (for codes, looked up in a moment: see [`admit_attempt`] for
/// password checks, which take long enough for a burst to matter). A failure
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
            w.audit(lock_event(key, ip, until)).await?;
        }
    }
    Ok(())
}

fn lock_event(key: &LockKey, ip: IpAddr, until: Timestamp) -> AuditEvent {
    let mut event = AuditEvent::new(&key.tenant, key.actor.clone(), Action::LockoutTriggered)
        .ip(Some(ip))
        .detail("purpose", key.purpose.as_str())
        .detail("until", until.to_rfc3339());
    if let Some(target) = &key.target {
        event = event.target(target.clone());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_000_000_000);

    #[test]
    fn attempts_in_flight_count_so_a_burst_gets_no_more_than_the_limit_checked() {
        let p = policy(LockoutPurpose::LoginAccount);
        let mut row = LockoutRow::fresh(T0);
        for _ in 0..10 {
            let (next, a) = admit(row, T0, &p);
            assert_eq!(a, Admission::Admitted);
            row = next;
        }
        // Ten are being checked; the eleventh locks without being checked.
        let until = T0.plus(Duration::from_secs(900));
        let (locked, a) = admit(row, T0, &p);
        assert_eq!(a, Admission::LockedNow { until });
        assert_eq!(admit(locked, T0, &p).1, Admission::Refused { until });
    }

    #[test]
    fn an_attempt_that_was_no_guess_gives_its_count_back() {
        let p = policy(LockoutPurpose::SupportCode);
        let mut row = LockoutRow::fresh(T0);
        // Any number of honest attempts in a row never lock.
        for _ in 0..50 {
            let (next, a) = admit(row, T0, &p);
            assert_eq!(a, Admission::Admitted);
            row = refunded(next, T0, &p);
        }
        assert_eq!(row.failures, 0);
        // A refund never lifts a lock.
        let locked = after(LockoutRow::fresh(T0), 10, T0, &p);
        assert!(remaining(&locked, T0).is_some());
        assert_eq!(refunded(locked, T0, &p), locked);
    }

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
