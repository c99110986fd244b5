//! Tessera's shared domain: identities, secret formats, the audit chain's
//! canonical encoding, roles and permissions, and the clock.
//!
//! This crate does no I/O. Everything here is a pure function of its inputs
//! (plus the operating system's CSPRNG where a secret is minted), so the server,
//! the agent and the CLI agree on formats and tests can call it directly.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod audit;
pub mod clock;
pub mod codes;
pub mod e2e;
pub mod error_code;
pub mod events;
pub mod identity;
pub mod ids;
pub mod kinds;
pub mod password;
pub mod roles;
pub mod secret;
pub mod text;
pub mod trust;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error_code::ErrorCode;
pub use identity::DeviceId;
pub use ids::{ExchangeId, GrantId, PairingId, SessionId, TenantId, UserId};
