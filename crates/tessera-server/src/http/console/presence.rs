//! `GET /events/presence`: server-sent events that keep the console's
//! presence badges current without a reload.
//!
//! Each second the stream compares this node's registry of connections
//! (memory only); when it changed, or every [`FULL_EVERY`] otherwise (to
//! see other nodes' devices and heartbeats lapse), it reloads the tenant's
//! devices and sends the ones whose state changed as one `presence` event:
//! `{"<device id>": "online" | "offline" | "revoked", …}`. The first event
//! carries every device. A device the page does not show yet (just
//! approved) makes the page fetch its list again.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tessera_core::roles::Permission;

use super::session;
use crate::auth::Operator;
use crate::http::devices::is_online;
use crate::{store, tenancy, AppState};

const TICK: Duration = Duration::from_secs(1);
const FULL_EVERY: u32 = 5;

pub type Presence = BTreeMap<String, &'static str>;

/// What changed between two snapshots (everything, the first time).
pub fn changes(before: Option<&Presence>, now: &Presence) -> Presence {
    now.iter()
        .filter(|(id, st)| before.and_then(|b| b.get(*id)) != Some(*st))
        .map(|(id, st)| (id.clone(), *st))
        .collect()
}

async fn snapshot(state: &AppState, op: &Operator) -> Option<Presence> {
    let rows = store::devices::list(state.db(), tenancy::of(op))
        .await
        .ok()?;
    let now = state.now();
    let hb = state.config().heartbeat_interval;
    Some(
        rows.iter()
            .map(|d| {
                let st = if d.revoked_at.is_some() {
                    "revoked"
                } else if is_online(d, now, hb, state.registry().is_connected(&d.id)) {
                    "online"
                } else {
                    "offline"
                };
                (d.id.clone(), st)
            })
            .collect(),
    )
}

struct Watch {
    state: AppState,
    headers: HeaderMap,
    op: Operator,
    last: Option<Presence>,
    conns: BTreeSet<String>,
    ticks: u32,
}

/// `GET /events/presence`
pub async fn stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session::signed_in(&state, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    if s.op.require(Permission::View).is_err() {
        return (StatusCode::FORBIDDEN, "your role cannot see devices").into_response();
    }
    let watch = Watch {
        state,
        headers,
        op: s.op,
        last: None,
        conns: BTreeSet::new(),
        ticks: 0,
    };
    Sse::new(events(watch))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some(watch), |w| async move {
        let mut w = w?;
        loop {
            if w.last.is_some() {
                tokio::time::sleep(TICK).await;
            }
            if w.state.shutdown_token().is_cancelled() {
                return None;
            }
            w.ticks += 1;
            let conns: BTreeSet<String> = w
                .state
                .registry()
                .snapshot()
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            let due = w.last.is_none() || conns != w.conns || w.ticks % FULL_EVERY == 0;
            w.conns = conns;
            if !due {
                continue;
            }
            // A login that ended (sign-out, disabled user) ends the stream.
            if w.ticks % FULL_EVERY == 0 && session::signed_in(&w.state, &w.headers).await.is_none()
            {
                return None;
            }
            let Some(now) = snapshot(&w.state, &w.op).await else {
                continue;
            };
            let diff = changes(w.last.as_ref(), &now);
            w.last = Some(now);
            if diff.is_empty() {
                continue;
            }
            let data = serde_json::to_string(&diff).unwrap_or_else(|_| "{}".to_owned());
            return Some((Ok(Event::default().event("presence").data(data)), Some(w)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_sent_after_the_first() {
        let a: Presence = [("a".to_owned(), "online"), ("b".to_owned(), "offline")].into();
        assert_eq!(changes(None, &a), a);
        let b: Presence = [("a".to_owned(), "offline"), ("b".to_owned(), "offline")].into();
        assert_eq!(changes(Some(&a), &b), [("a".to_owned(), "offline")].into());
        assert!(changes(Some(&b), &b).is_empty());
        let c: Presence = [
            ("a".to_owned(), "offline"),
            ("b".to_owned(), "offline"),
            ("c".to_owned(), "online"),
        ]
        .into();
        assert_eq!(changes(Some(&b), &c), [("c".to_owned(), "online")].into());
    }
}
