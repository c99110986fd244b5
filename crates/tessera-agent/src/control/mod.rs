//! The agent's control channel: connect, heartbeat, carry session
//! channels, and reconnect with jittered exponential backoff until shut
//! down or revoked, moving on to the next of its servers each time.
//!
//! - `failover`: which server is next and how long to wait first;
//! - `connection`: one authenticated WebSocket (connect, the identity
//!   handshake, send and receive, key rotation, serving until it drops);
//! - `sessions`: what a connection serves (shells, consent answers,
//!   invitations to automatic sessions);
//! - `client`: a client connection of this device, for the sessions a
//!   command such as `tessera send` creates.

mod client;
mod connection;
pub mod failover;
mod sessions;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::consent::ConsentMode;
use crate::state::AgentState;

pub use crate::credentials::Credentials;
pub use crate::error::AgentError;
pub use client::ClientConnection;
pub use connection::Connection;
use connection::{connect, connect_after, Connected};
use sessions::Serving;

use crate::auto::TransferReport;

/// Why `run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (SIGTERM, Ctrl-C).
    Shutdown,
    /// The server revoked this device or its key; retrying is pointless.
    Revoked { code: String, reason: String },
    /// One-session mode: the session is over (or never started).
    SessionEnded { code: String, reason: String },
}

/// How the agent serves its sessions.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Servers to use besides the one this device enrolled with (and the
    /// alternates stored with it): nodes sharing its database, tried in
    /// turn when the current one goes away (see [`failover`]).
    pub alternates: Vec<String>,
    /// The shell sessions run (default: `$SHELL`, else `/bin/sh`).
    pub shell: Option<String>,
    /// How consent is asked for when a session needs it.
    pub consent: ConsentMode,
    /// Where files sent in automatic sessions land (default:
    /// `<state dir>/inbox`; `tessera agent run` always gives one, see
    /// `auto::default_inbox`).
    pub inbox: Option<std::path::PathBuf>,
    /// The X display screen channels capture (default: `$DISPLAY`).
    pub display: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_backoff: failover::DEFAULT_MAX_BACKOFF,
            alternates: Vec::new(),
            shell: None,
            consent: ConsentMode::Deny,
            inbox: None,
            display: None,
        }
    }
}

/// A uniform draw in `[0, 1)` for the backoff's jitter
/// ([`failover::jittered`]).
fn jitter() -> f64 {
    rand::thread_rng().gen::<f64>()
}

/// Connects once to the server this device enrolled with, recovering from
/// an interrupted rotation (whose new key waits in `device.key.next`).
pub async fn connect_once(state: &AgentState) -> Result<Result<Box<Connection>, Exit>, AgentError> {
    connect_to(state, None, None).await
}

/// [`connect_once`] to `server` (default: the enrolled one), trying its
/// addresses from the one after `last`.
async fn connect_to(
    state: &AgentState,
    server: Option<&str>,
    last: Option<SocketAddr>,
) -> Result<Result<Box<Connection>, Exit>, AgentError> {
    let mut creds = Credentials::load(state)?;
    if let Some(server) = server {
        server.clone_into(&mut creds.server);
    }
    let connect = |creds: Credentials| async move {
        connect_after(&creds, tessera_proto::role::AGENT, last).await
    };
    let first = connect(creds.clone()).await;
    // An identity rotation the server took but this side did not finish:
    // the next identity key answers the challenge.
    if let (Err(AgentError::Refused { .. }), Some(next)) = (&first, state.next_identity()?) {
        creds.keys = Arc::new(next);
        if let Ok(Connected::Ok(c)) = connect(creds.clone()).await {
            state.promote_next_identity()?;
            return Ok(Ok(c));
        }
    }
    match first? {
        Connected::Ok(c) => Ok(Ok(c)),
        Connected::Revoked(exit) => {
            if let Some(next) = state.next_key()? {
                creds.key = next;
                if let Connected::Ok(c) = connect(creds).await? {
                    state.promote_next_key()?;
                    return Ok(Ok(c));
                }
            }
            Ok(Err(exit))
        }
    }
}

/// Runs the control loop until `shutdown` completes or the device is
/// revoked. Transient failures reconnect with backoff.
pub async fn run(
    state: &AgentState,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    run_until(state, opts, None, shutdown).await
}

/// [`run`], telling `report` about the files this device receives in
/// automatic sessions (for the caller to show).
pub async fn run_reporting(
    state: &AgentState,
    opts: RunOptions,
    report: TransferReport,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    run_until(state, opts, Some(report), shutdown).await
}

async fn run_until(
    state: &AgentState,
    opts: RunOptions,
    report: Option<TransferReport>,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let enrollment = state.enrollment()?;
    let servers =
        failover::server_list(&enrollment.server, &enrollment.alternates, &opts.alternates);
    let mut failover = failover::Failover::new(servers.len(), opts.max_backoff);
    // The address of the last connection, so a name with several nodes
    // behind it moves on to another of them first.
    let mut last: Option<SocketAddr> = None;
    loop {
        let server = servers[failover.current()];
        let result = tokio::select! {
            r = connect_to(state, Some(server), last) => r,
            () = &mut shutdown => return Ok(Exit::Shutdown),
        };
        let (failure, wait) = match result {
            Ok(Ok(mut conn)) => {
                last = Some(conn.addr);
                let up_since = tokio::time::Instant::now();
                tracing::info!(server = %conn.server, address = %conn.addr, connection = %conn.connection_id, heartbeat_ms = conn.heartbeat.as_millis() as u64, "connected");
                let keys = state.identity()?;
                let me = Credentials::load(state)?.device_id;
                let serving = Serving {
                    opts: &opts,
                    only: None,
                    state: Some(state),
                    identity: Some((me, &keys)),
                    report: report.clone(),
                    attended: None,
                };
                let failure = match conn.serve(serving, &mut shutdown).await {
                    Ok(Some(exit)) => return Ok(exit),
                    Ok(None) => AgentError::Connection("the connection ended".into()),
                    Err(e) => e,
                };
                (failure, failover.dropped(up_since.elapsed(), jitter()))
            }
            Ok(Err(exit)) => return Ok(exit),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => (e, failover.failed(jitter())),
        };
        tracing::warn!(
            server,
            error = %failure,
            next = servers[failover.current()],
            retry_in_ms = wait.as_millis() as u64,
            "control connection lost; reconnecting"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return Ok(Exit::Shutdown),
        }
    }
}

/// One-session mode (the support agent): connect once with in-memory
/// credentials and serve `session_id` until it ends. A lost connection ends
/// the session too (the server ends it when the device goes).
pub async fn run_one_session(
    creds: &Credentials,
    session_id: &str,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    serve_one(creds, session_id, opts, None, shutdown).await
}

/// [`run_one_session`] with a person attending: they are told what
/// happens, and in view mode the shell is their own (see
/// [`crate::support`]).
pub async fn run_attended(
    creds: &Credentials,
    session_id: &str,
    opts: RunOptions,
    attended: crate::support::Attended,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    serve_one(creds, session_id, opts, Some(&attended), shutdown).await
}

async fn serve_one(
    creds: &Credentials,
    session_id: &str,
    opts: RunOptions,
    attended: Option<&crate::support::Attended>,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conn = match connect(creds, tessera_proto::role::AGENT).await? {
        Connected::Ok(c) => c,
        Connected::Revoked(exit) => return Ok(exit),
    };
    let serving = Serving {
        opts: &opts,
        only: Some(session_id),
        state: None,
        identity: None,
        report: None,
        attended,
    };
    match conn.serve(serving, &mut shutdown).await {
        Ok(Some(exit)) => Ok(exit),
        Ok(None) | Err(_) => Ok(Exit::SessionEnded {
            code: "disconnected".into(),
            reason: "the connection to the server was lost".into(),
        }),
    }
}

/// Connects, rotates the device key, and disconnects.
pub async fn rotate_device_key(state: &AgentState) -> Result<String, AgentError> {
    match connect_once(state).await? {
        Ok(mut conn) => {
            let id = conn.rotate_key(state).await?;
            conn.close().await;
            Ok(id)
        }
        Err(Exit::Revoked { code, reason }) | Err(Exit::SessionEnded { code, reason }) => {
            Err(AgentError::Refused {
                code,
                message: reason,
            })
        }
        Err(Exit::Shutdown) => Err(AgentError::Connection("stopped".into())),
    }
}
