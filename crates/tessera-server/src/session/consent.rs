//! The consent flow and the session state machine as pure decisions: what
//! an answer, a timeout or a departed device does to a session, and which
//! moves each state allows. The database applies them as conditional
//! UPDATEs (see `store::sessions`); this module says what they mean.

use tessera_core::kinds::{Consent, EndCode, Refused, SessionState};

use crate::store::audit::Action;

/// What happened to a session waiting for consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentEvent {
    /// The person at the device said yes.
    Granted,
    /// The person at the device said no.
    Denied,
    /// The agent could not ask anybody (no consent command, no terminal).
    Unavailable,
    /// Nobody answered before the deadline.
    TimedOut,
    /// The device went away before anybody answered.
    Abandoned,
}

/// How a refused consent ends its session: the end code, the reason the
/// viewers and the device read, and the audit action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: EndCode,
    pub reason: &'static str,
    pub action: Action,
}

/// What a consent event does to a pending session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// The session becomes active: its relay starts.
    Start,
    /// The session ends before it began.
    End(Refusal),
}

impl ConsentEvent {
    /// The outcome of this event for a session waiting on it.
    pub fn outcome(self) -> ConsentOutcome {
        let refusal = |code, reason, action| {
            ConsentOutcome::End(Refusal {
                code,
                reason,
                action,
            })
        };
        match self {
            ConsentEvent::Granted => ConsentOutcome::Start,
            ConsentEvent::Denied => refusal(
                EndCode::ConsentDenied,
                "the person at the device declined",
                Action::ConsentDenied,
            ),
            ConsentEvent::Unavailable => refusal(
                EndCode::ConsentUnavailable,
                "the device has no way to ask for consent (its agent runs without \
                 --consent-command or a terminal); nobody declined",
                Action::ConsentUnavailable,
            ),
            ConsentEvent::TimedOut => refusal(
                EndCode::ConsentTimeout,
                "nobody answered the consent prompt in time",
                Action::ConsentTimedOut,
            ),
            ConsentEvent::Abandoned => refusal(
                EndCode::ConsentAbandoned,
                "the device disconnected",
                Action::ConsentAbandoned,
            ),
        }
    }

    fn granted(self) -> bool {
        self == ConsentEvent::Granted
    }
}

/// What can happen to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Consent(ConsentEvent),
    /// Ended by anyone (operator, device, creator, sweep).
    End,
}

/// The session's consent and state after `event`, or a refusal naming the
/// state that does not allow it (the store's conditional UPDATE then
/// changes nothing).
pub fn next(
    state: SessionState,
    consent: Consent,
    event: Event,
) -> Result<(SessionState, Consent), Refused<SessionState>> {
    match event {
        Event::Consent(e) => {
            let decided = consent.decide(e.granted()).map_err(|_| Refused {
                action: "answer consent for",
                from: state,
            })?;
            Ok((state.after_consent(decided)?, decided))
        }
        Event::End => Ok((state.end()?, consent)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::kinds::Origin;

    fn pending() -> (SessionState, Consent) {
        let consent = Consent::initial(Origin::Attended, false);
        (SessionState::initial(consent), consent)
    }

    #[test]
    fn a_yes_starts_the_session() {
        let (s, c) = pending();
        assert_eq!(
            next(s, c, Event::Consent(ConsentEvent::Granted)),
            Ok((SessionState::Active, Consent::Granted))
        );
        assert_eq!(ConsentEvent::Granted.outcome(), ConsentOutcome::Start);
    }

    #[test]
    fn a_no_a_timeout_or_a_departed_device_ends_it_before_it_began() {
        let (s, c) = pending();
        for (event, code, action) in [
            (
                ConsentEvent::Denied,
                EndCode::ConsentDenied,
                Action::ConsentDenied,
            ),
            (
                ConsentEvent::Unavailable,
                EndCode::ConsentUnavailable,
                Action::ConsentUnavailable,
            ),
            (
                ConsentEvent::TimedOut,
                EndCode::ConsentTimeout,
                Action::ConsentTimedOut,
            ),
            (
                ConsentEvent::Abandoned,
                EndCode::ConsentAbandoned,
                Action::ConsentAbandoned,
            ),
        ] {
            assert_eq!(
                next(s, c, Event::Consent(event)),
                Ok((SessionState::Ended, Consent::Denied))
            );
            let ConsentOutcome::End(r) = event.outcome() else {
                panic!("{event:?} must end the session")
            };
            assert_eq!((r.code, r.action), (code, action));
            assert!(!r.reason.is_empty());
        }
    }

    #[test]
    fn consent_is_answered_once() {
        let (s, c) = pending();
        let (s, c) = next(s, c, Event::Consent(ConsentEvent::Granted)).unwrap();
        // A late timeout (or a second answer) changes nothing.
        assert!(next(s, c, Event::Consent(ConsentEvent::TimedOut)).is_err());
        assert!(next(s, c, Event::Consent(ConsentEvent::Denied)).is_err());
    }

    #[test]
    fn sessions_without_consent_cannot_be_answered_for() {
        let c = Consent::initial(Origin::Managed, false);
        let s = SessionState::initial(c);
        assert_eq!(s, SessionState::Active);
        assert!(next(s, c, Event::Consent(ConsentEvent::Granted)).is_err());
    }

    #[test]
    fn ending_works_once_from_any_live_state() {
        let (s, c) = pending();
        let (ended, _) = next(s, c, Event::End).unwrap();
        assert_eq!(ended, SessionState::Ended);
        assert!(next(ended, c, Event::End).is_err());
        let active = SessionState::initial(Consent::NotRequired);
        assert_eq!(
            next(active, Consent::NotRequired, Event::End),
            Ok((SessionState::Ended, Consent::NotRequired))
        );
        // An ended session's consent cannot be granted after the fact.
        assert!(next(
            ended,
            Consent::Denied,
            Event::Consent(ConsentEvent::Granted)
        )
        .is_err());
    }
}
