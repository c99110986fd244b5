//! The closed sets of words the server, the agent and the API share: states,
//! outcomes, reasons and error codes, each an enum with one stable
//! snake_case spelling.
//!
//! That spelling is the wire form (serde), the TEXT column form (the store
//! reads rows through `TryFrom<String>`) and what `Display` prints, so a
//! state is never compared as a string: a misspelt state does not compile,
//! and an unknown word read back from the database or the network is one
//! [`UnknownWord`] error instead of a silent mismatch.
//!
//! Transitions live with the states they move between (see
//! [`SessionState`] and [`Consent`]): each returns the new state or a
//! [`Refused`] naming the state it found, so an illegal move is one tested
//! refusal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word that names none of an enum's variants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {word:?}")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub word: String,
}

/// Defines a closed set of snake_case words: the enum, `as_str`, `ALL`,
/// `Display`, `FromStr` and `TryFrom<String>` (the store's column codec).
macro_rules! words {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $word)] $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord { kind: $kind, word: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownWord;

            fn try_from(s: String) -> Result<Self, UnknownWord> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_owned()
            }
        }
    };
}

pub(crate) use words;

/// A transition that the current state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a session that is {from}")]
pub struct Refused<S: fmt::Display + fmt::Debug> {
    pub action: &'static str,
    pub from: S,
}

words! {
    /// Where a session came from.
    pub enum Origin: "session origin" {
        /// An end user bound a support code.
        Attended = "attended",
        /// An operator opened it to an enrolled device.
        Managed = "managed",
        /// Devices that trust each other started it.
        Automatic = "automatic",
    }
}

words! {
    /// The most a session allows its viewers (a session's and a support
    /// code's stored `access`).
    pub enum SessionAccess: "session access" {
        View = "view",
        Control = "control",
    }
}

words! {
    /// What a session carries: a terminal, or the device's screen and input
    /// (protocol 4 agents only).
    pub enum SessionChannel: "session channel" {
        Shell = "shell",
        Screen = "screen",
    }
}

words! {
    /// What one viewer token allows.
    pub enum ViewerAccess: "viewer access" {
        ViewOnly = "view_only",
        Control = "control",
    }
}

impl SessionAccess {
    /// The most a viewer of such a session may get.
    pub fn viewer(self) -> ViewerAccess {
        match self {
            SessionAccess::View => ViewerAccess::ViewOnly,
            SessionAccess::Control => ViewerAccess::Control,
        }
    }
}

impl ViewerAccess {
    /// `Control` only where both allow it.
    pub fn at_most(self, cap: ViewerAccess) -> ViewerAccess {
        if self == ViewerAccess::Control && cap == ViewerAccess::Control {
            ViewerAccess::Control
        } else {
            ViewerAccess::ViewOnly
        }
    }
}

words! {
    /// Where the end user's consent stands.
    pub enum Consent: "consent" {
        NotRequired = "not_required",
        Pending = "pending",
        Granted = "granted",
        Denied = "denied",
    }
}

words! {
    /// A session's life: pending (waiting for consent) → active → ended.
    pub enum SessionState: "session state" {
        Pending = "pending",
        Active = "active",
        Ended = "ended",
    }
}

impl Consent {
    /// The consent a new session starts with.
    pub fn initial(origin: Origin, managed_needs_consent: bool) -> Consent {
        match origin {
            Origin::Attended => Consent::Pending,
            Origin::Managed if managed_needs_consent => Consent::Pending,
            Origin::Managed | Origin::Automatic => Consent::NotRequired,
        }
    }

    /// pending → granted or denied; any other consent has been decided.
    pub fn decide(self, granted: bool) -> Result<Consent, Refused<Consent>> {
        match self {
            Consent::Pending if granted => Ok(Consent::Granted),
            Consent::Pending => Ok(Consent::Denied),
            from => Err(Refused {
                action: "decide consent for",
                from,
            }),
        }
    }
}

impl SessionState {
    /// The state a new session starts in, given its consent.
    pub fn initial(consent: Consent) -> SessionState {
        match consent {
            Consent::Pending => SessionState::Pending,
            Consent::NotRequired | Consent::Granted => SessionState::Active,
            Consent::Denied => SessionState::Ended,
        }
    }

    /// The state after the consent answer: yes starts it, no ends it.
    pub fn after_consent(self, consent: Consent) -> Result<SessionState, Refused<SessionState>> {
        match self {
            SessionState::Pending => Ok(SessionState::initial(consent)),
            from => Err(Refused {
                action: "answer consent for",
                from,
            }),
        }
    }

    /// Ending is allowed from any live state, once.
    pub fn end(self) -> Result<SessionState, Refused<SessionState>> {
        match self {
            SessionState::Pending | SessionState::Active => Ok(SessionState::Ended),
            from => Err(Refused {
                action: "end",
                from,
            }),
        }
    }

    /// Traffic (shell, screen, files, viewer tokens) flows only now.
    pub fn carries_traffic(self) -> bool {
        self == SessionState::Active
    }
}

words! {
    /// An RFC 8628 pairing's life.
    pub enum PairingState: "pairing state" {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        /// The approval was exchanged for the device's key.
        Consumed = "consumed",
    }
}

words! {
    /// A support code's life.
    pub enum SupportCodeState: "support code state" {
        Active = "active",
        Consumed = "consumed",
        Expired = "expired",
        Revoked = "revoked",
    }
}

words! {
    /// What a lockout guards: each purpose counts its own failures, so
    /// mistyped pairing codes never lock a password login, nor one
    /// account's typos another account.
    pub enum LockoutPurpose: "lockout purpose" {
        /// Wrong passwords for one account from one address.
        LoginAccount = "login_account",
        /// Wrong passwords for any account from one address: brute force
        /// spread over many accounts.
        LoginAddress = "login_address",
        /// Support codes that never existed, typed from one address.
        SupportCode = "support_code",
        /// Pairing user codes that never existed, typed by one operator
        /// from one address.
        PairingCode = "pairing_code",
    }
}

words! {
    /// A trust exchange's commit-then-reveal steps.
    pub enum ExchangeState: "exchange state" {
        Committed = "committed",
        Responded = "responded",
        Revealed = "revealed",
    }
}

words! {
    /// Why a named device is not in an automatic session: the server's
    /// checks (`automatic::decide`) and the member's own ones.
    pub enum RejectionReason: "rejection reason" {
        UnknownDevice = "unknown_device",
        OtherTenant = "other_tenant",
        TooManyMembers = "too_many_members",
        NotMutuallyTrusted = "not_mutually_trusted",
        KeyMismatch = "key_mismatch",
        NoGrant = "no_grant",
        GrantRevoked = "grant_revoked",
        GrantExpired = "grant_expired",
        ScopeMissing = "scope_missing",
        Offline = "offline",
        IncompatibleVersion = "incompatible_version",
        /// The device is online on another node that this one cannot reach
        /// right now (NATS is down).
        RelayUnavailable = "relay_unavailable",
        /// The member could not start the end-to-end handshake.
        HandshakeFailed = "handshake_failed",
        /// The request named no scope the server knows (answered for the
        /// whole request, not one member).
        InvalidScope = "invalid_scope",
    }
}

words! {
    /// Why a session ended, as its row, its viewers and its device see it.
    pub enum EndCode: "end code" {
        EndedByOperator = "ended_by_operator",
        /// The person at the device ended it (the one-time support agent).
        EndedByUser = "ended_by_user",
        EndedByCreator = "ended_by_creator",
        CreatorDisconnected = "creator_disconnected",
        MembersRejected = "members_rejected",
        ConsentDenied = "consent_denied",
        /// The agent had no way to ask anybody (unattended).
        ConsentUnavailable = "consent_unavailable",
        ConsentTimeout = "consent_timeout",
        ConsentAbandoned = "consent_abandoned",
        ShellExited = "shell_exited",
        /// A screen session to an agent too old to open screen channels
        /// (below protocol 4): refused before the device is asked.
        ChannelUnsupported = "channel_unsupported",
        /// The agent answered the screen channel with `screen_unavailable`
        /// (no display, no capture permission).
        ScreenUnavailable = "screen_unavailable",
        /// The agent closed the screen channel.
        ScreenClosed = "screen_closed",
        DeviceDisconnected = "device_disconnected",
        /// The node that held the device's connection is gone (killed, or
        /// cut off): its lease lapsed.
        NodeLost = "node_lost",
        DeviceOffline = "device_offline",
        DeviceUnresponsive = "device_unresponsive",
        DeviceRevoked = "device_revoked",
        ServerShuttingDown = "server_shutting_down",
        /// A managed shell's last viewer left and none came back within
        /// the grace period.
        ViewersLeft = "viewers_left",
        /// The operator who opened it was disabled.
        UserDisabled = "user_disabled",
        /// Recorded live, but its device was not connected when the server
        /// started: nothing relays it any more.
        ServerRestart = "server_restart",
        /// Ended before this version recorded codes, or by an older node.
        Ended = "ended",
    }
}

/// What became of one named member of an automatic session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberOutcome {
    Joined,
    Rejected(RejectionReason),
}

impl MemberOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberOutcome::Joined => "joined",
            MemberOutcome::Rejected(r) => r.as_str(),
        }
    }

    pub fn joined(self) -> bool {
        self == MemberOutcome::Joined
    }
}

impl fmt::Display for MemberOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemberOutcome {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, UnknownWord> {
        if s == "joined" {
            return Ok(MemberOutcome::Joined);
        }
        s.parse()
            .map(MemberOutcome::Rejected)
            .map_err(|_| UnknownWord {
                kind: "member outcome",
                word: s.to_owned(),
            })
    }
}

impl TryFrom<String> for MemberOutcome {
    type Error = UnknownWord;

    fn try_from(s: String) -> Result<Self, UnknownWord> {
        s.parse()
    }
}

impl Serialize for MemberOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MemberOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for MemberOutcome {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        String::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for MemberOutcome {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself() {
        for s in SessionState::ALL {
            assert_eq!(s.as_str().parse::<SessionState>(), Ok(*s));
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for r in RejectionReason::ALL {
            let o = MemberOutcome::Rejected(*r);
            assert_eq!(o.as_str().parse::<MemberOutcome>(), Ok(o));
        }
        assert_eq!("joined".parse::<MemberOutcome>(), Ok(MemberOutcome::Joined));
        assert!("Active".parse::<SessionState>().is_err());
        assert!("".parse::<Consent>().is_err());
    }

    #[test]
    fn consent_is_decided_once() {
        assert_eq!(Consent::Pending.decide(true), Ok(Consent::Granted));
        assert_eq!(Consent::Pending.decide(false), Ok(Consent::Denied));
        for c in [Consent::Granted, Consent::Denied, Consent::NotRequired] {
            assert!(c.decide(true).is_err());
        }
    }

    #[test]
    fn sessions_start_pending_only_when_consent_is_needed() {
        let start = |o, m| SessionState::initial(Consent::initial(o, m));
        assert_eq!(start(Origin::Attended, false), SessionState::Pending);
        assert_eq!(start(Origin::Managed, true), SessionState::Pending);
        assert_eq!(start(Origin::Managed, false), SessionState::Active);
        assert_eq!(start(Origin::Automatic, true), SessionState::Active);
    }

    #[test]
    fn an_ended_session_stays_ended() {
        assert_eq!(SessionState::Active.end(), Ok(SessionState::Ended));
        assert_eq!(SessionState::Pending.end(), Ok(SessionState::Ended));
        assert!(SessionState::Ended.end().is_err());
        assert!(SessionState::Active
            .after_consent(Consent::Granted)
            .is_err());
        assert_eq!(
            SessionState::Pending.after_consent(Consent::Denied),
            Ok(SessionState::Ended)
        );
    }

    #[test]
    fn view_sessions_never_give_control() {
        assert_eq!(SessionAccess::View.viewer(), ViewerAccess::ViewOnly);
        assert_eq!(
            ViewerAccess::Control.at_most(SessionAccess::View.viewer()),
            ViewerAccess::ViewOnly
        );
        assert_eq!(
            ViewerAccess::Control.at_most(ViewerAccess::Control),
            ViewerAccess::Control
        );
    }
}
