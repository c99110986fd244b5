//! `GET /ws/viewer`: a viewer joins one session with a viewer token.
//!
//! Checked before the upgrade: the token's signature (by the node key its
//! `kid` names), expiry, purpose and session; the login that minted it, and
//! that its user's current role allows the token's access; the session
//! being active here; and last, the token's `jti`, consumed: a
//! token this deployment never minted is refused, and one token opens one
//! viewer. The connection itself is served by `relay::viewer`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tessera_core::ErrorCode;
use tessera_proto::MAX_VIEWER_FRAME;

use super::error::ApiError;
use super::extract::ClientIp;
use super::ws_upgrade::{NotWebSocket, Upgrade};
use crate::auth::viewer::{parse_access, ViewerClaims, ViewerTokenError};
use crate::auth::{bearer_from, check_session};
use crate::cluster::link;
use crate::relay::{viewer, LiveSession};
use crate::store;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::node_keys::Consumed;
use crate::AppState;

#[derive(Deserialize)]
pub struct ViewerQuery {
    session: String,
    /// The viewer means to leave the session running when it goes
    /// (`connect --keep`); otherwise a managed shell ends once unwatched
    /// for the grace period.
    #[serde(default)]
    keep: bool,
}

/// `GET /ws/viewer?session=<id>` with `Authorization: Bearer <viewer token>`.
pub async fn upgrade(
    State(state): State<AppState>,
    ip: ClientIp,
    query: Result<Query<ViewerQuery>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<Upgrade, NotWebSocket>,
) -> Response {
    let Ok(Query(q)) = query else {
        return ApiError::bad_request(ErrorCode::InvalidQuery, "give the session as ?session=<id>")
            .into_response();
    };
    let (claims, target) = match admit(&state, &q.session, &headers, ip.0).await {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(not) => return not.into_response(),
    };
    let live = match target {
        Target::Here(live) => live,
        Target::Node(node, token) => {
            // Admitted here, relayed there: the link carries the socket.
            let remote = match link::open(&state, &node, &token, &q.session, ip.0, q.keep).await {
                Ok(remote) => remote,
                Err(e) => return link_refused(e).into_response(),
            };
            let session = q.session.clone();
            return serve_viewer(ws, move |socket| async move {
                let span = tracing::info_span!("viewer", session = %claims.sid, user = %claims.sub, node = %node);
                tracing::Instrument::instrument(link::pump(socket, state, remote, session), span)
                    .await;
            });
        }
    };
    // A browser cannot set `Authorization` on a WebSocket: the web
    // terminal offers its token as a subprotocol beside `tessera.viewer`,
    // which the answer names (a browser drops a connection whose answer
    // names none of its offers).
    serve_viewer(ws, move |socket| async move {
        let span = tracing::info_span!("viewer", session = %claims.sid, user = %claims.sub);
        tracing::Instrument::instrument(
            viewer::serve(
                viewer::local(socket),
                state.clone(),
                claims,
                live,
                ip.0,
                q.keep,
                state.shutdown_token().clone(),
            ),
            span,
        )
        .await;
    })
}

/// Answers a viewer's upgrade with a viewer socket's protocol and size
/// cap, wherever its session is relayed.
fn serve_viewer<F, Fut>(ws: Upgrade, serve: F) -> Response
where
    F: FnOnce(crate::ws::WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    ws.on_upgrade(&[BROWSER_PROTOCOL], MAX_VIEWER_FRAME, serve)
}

/// Where an admitted viewer's session is relayed.
enum Target {
    Here(Arc<LiveSession>),
    /// On another node (by id), reached with the viewer's token.
    Node(String, String),
}

fn link_refused(e: link::OpenError) -> ApiError {
    match e {
        link::OpenError::Unavailable(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RelayUnavailable,
            format!("the server node relaying this session cannot be reached: {why}"),
        ),
        link::OpenError::NodeGone => ApiError::conflict(
            ErrorCode::SessionNotActive,
            "the server node relaying this session is gone",
        ),
        link::OpenError::Refused(code, message) => match code {
            ErrorCode::TooManyViewers | ErrorCode::SessionNotActive => {
                ApiError::conflict(code, message)
            }
            ErrorCode::RelayUnavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            }
            _ => ApiError::unauthorized(code, message),
        },
    }
}

/// The subprotocol a browser viewer offers; see [`protocol_token`].
pub const BROWSER_PROTOCOL: &str = "tessera.viewer";
/// Prefix of the subprotocol that carries a browser viewer's token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "tessera.token.";

/// The viewer token a browser offers as the subprotocol
/// `tessera.token.<token>` alongside `tessera.viewer` (never in the URL,
/// where logs and history would keep it).
fn protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX))
}

/// Every check before a viewer may join. A session relayed by another
/// node is found there (the session node checks its state and viewer cap
/// again when the link opens).
async fn admit(
    state: &AppState,
    session_id: &str,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
) -> Result<(ViewerClaims, Target), ApiError> {
    let token = bearer_from(headers)
        .or_else(|| protocol_token(headers))
        .ok_or_else(|| {
            ApiError::unauthorized(ErrorCode::Unauthenticated, "missing viewer token")
        })?;
    let claims = state
        .viewer_keys()
        .check(state.db(), token, session_id, state.now())
        .await?
        .map_err(refused)?;
    let login = store::logins::by_id(state.db(), &claims.lid)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::SessionRevoked,
                "the login that minted this token is gone",
            )
        })?;
    check_session(&login, state.now())?;
    if login.user_id != claims.sub || login.tenant_id != claims.tid {
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidToken,
            "the viewer token does not match its login",
        ));
    }
    // The user's role now (the login row reads it from `users`), not the
    // one the token was minted under: a `control` token of an operator
    // since made `viewer` is refused.
    let access = parse_access(&claims.access).ok_or_else(|| refused(ViewerTokenError::Invalid))?;
    if !crate::relay::allows(login.role, access) {
        return Err(ApiError::forbidden(format!(
            "your role ({}) no longer allows `{}` access; mint a new viewer token",
            login.role.as_str(),
            access.as_str()
        )));
    }
    let not_active = || {
        ApiError::conflict(
            ErrorCode::SessionNotActive,
            "the session is not active on this server",
        )
    };
    let (target, channel) = match state
        .hub()
        .get(session_id)
        .filter(|l| l.tenant_id == claims.tid)
    {
        Some(live) => {
            if live.viewer_count() >= live.max_viewers {
                return Err(ApiError::conflict(
                    ErrorCode::TooManyViewers,
                    "this session has as many viewers as it admits",
                ));
            }
            let channel = live.channel;
            (Target::Here(live), channel)
        }
        None => {
            // A node alone relays nothing it does not hold.
            if state.cluster().nats().is_none() {
                return Err(not_active());
            }
            let node = store::sessions::relay_node(state.db(), session_id, state.now())
                .await?
                .filter(|n| n != state.cluster().node_id())
                .ok_or_else(not_active)?;
            let row = store::sessions::by_id_any_tenant(state.db().pool(), session_id)
                .await?
                .filter(|r| r.tenant_id == claims.tid)
                .ok_or_else(not_active)?;
            (Target::Node(node, token.to_owned()), row.channel)
        }
    };
    // Last, so that a token refused for another reason is not spent.
    let presented = store::node_keys::Presented {
        jti: &claims.jti,
        session_id,
        user_id: &claims.sub,
        login_id: &claims.lid,
        access,
    };
    // The join is audited in the transaction that spends the token: an
    // admitted viewer always has its `session_joined` row, carrying the
    // token's jti, and if that row cannot be written nobody is admitted.
    let now = state.now();
    let consumed = state
        .db()
        .write(async |w| {
            let consumed = store::node_keys::consume(w, &presented, now).await?;
            if consumed == Consumed::Admitted {
                w.audit(
                    AuditEvent::new(
                        &claims.tid,
                        Actor::User(claims.sub.clone()),
                        Action::SessionJoined,
                    )
                    .ip(Some(ip))
                    .target(format!("session:{}", claims.sid))
                    .detail("access", claims.access.clone())
                    .detail("channel", channel.as_str())
                    .detail("jti", claims.jti.clone()),
                )
                .await?;
            }
            Ok::<_, store::StoreError>(consumed)
        })
        .await?;
    match consumed {
        Consumed::Admitted => Ok((claims, target)),
        Consumed::NeverMinted => Err(refused(ViewerTokenError::NotIssued)),
        Consumed::AlreadyUsed => Err(refused(ViewerTokenError::Used)),
        Consumed::Expired => Err(refused(ViewerTokenError::Expired)),
    }
}

fn refused(e: ViewerTokenError) -> ApiError {
    ApiError::unauthorized(e.code(), e.to_string())
}
