//! The Tessera device agent: its identity and state on disk, enrollment
//! (RFC 8628 pairing or an enrollment token), and the control channel.
//!
//! The agent never talks to a database; everything goes through the
//! server's API and the control WebSocket.

pub mod auto;
pub mod channels;
pub mod consent;
pub mod control;
pub mod credentials;
pub mod enroll;
pub mod error;
pub mod files;
pub mod process_session;
pub mod screen;
pub mod state;
pub mod support;
pub mod sysinfo;
pub mod terminal;
pub mod trust;

pub use control::{run, Exit, RunOptions};
pub use credentials::Credentials;
pub use error::AgentError;
pub use state::{AgentState, StateError};

/// This agent's version, as reported to the server.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
