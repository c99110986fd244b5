//! `/`: what needs attention, at a glance.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tessera_core::kinds::SessionState;
use tessera_core::roles::Permission;

use super::{fail, html_response, page, require_signed, Nav};
use crate::http::devices::is_online;
use crate::{store, tenancy, AppState};

/// A grant "expires soon" within this long.
pub const SOON: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// `GET /`
pub async fn show(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = tenancy::of(&s.op);
    let manage = s.op.role.allows(Permission::ManageDevices);
    let counts = async {
        let devices = store::devices::list(state.db(), tenant).await?;
        let now = state.now();
        let hb = state.config().heartbeat_interval;
        let live: Vec<_> = devices.iter().filter(|d| d.revoked_at.is_none()).collect();
        let online = live
            .iter()
            .filter(|d| is_online(d, now, hb, state.registry().is_connected(&d.id)))
            .count();
        let sessions =
            store::sessions::list_visible(state.db(), tenant, &s.op.user_id, false).await?;
        let active = sessions
            .iter()
            .filter(|r| r.state == SessionState::Active)
            .count();
        let waiting = sessions
            .iter()
            .filter(|r| r.state == SessionState::Pending)
            .count();
        let pairings = if manage {
            store::pairings::list_pending(state.db(), tenant, now)
                .await?
                .len()
        } else {
            0
        };
        let soon = now.plus(SOON);
        let expiring = store::trust::list_grants(state.db(), tenant, None)
            .await?
            .iter()
            .filter(|g| {
                g.revoked_at.is_none() && g.grant.expires_at > now && g.grant.expires_at <= soon
            })
            .count();
        let chain = if s.op.role.allows(Permission::AuditRead) {
            let mut c = state.db().pool().acquire().await?;
            let (head, _) = store::checkpoints::head(&mut c).await?;
            let last = store::checkpoints::recent(&mut c, head, 1).await?;
            Some((head, last.into_iter().next()))
        } else {
            None
        };
        Ok::<_, store::StoreError>((
            (live.len(), online, active, waiting, pairings, expiring),
            chain,
        ))
    };
    let ((total, online, active, waiting, pairings, expiring), chain) = match counts.await {
        Ok(c) => c,
        Err(e) => return fail(&s, Nav::Overview, e),
    };
    let body = html! {
        h1 { "Overview" }
        ul.cards {
            li { a href="/devices?sort=online" { strong { (online) } " of " (total) " devices online" } }
            li { a href="/sessions" { strong { (active) } " sessions live" } @if waiting > 0 { ", " (waiting) " awaiting consent" } }
            @if manage {
                li { a href="/pairings" { strong { (pairings) } " pairings waiting for approval" } }
            }
            li { strong { (expiring) } " grants expiring within 7 days" }
            @if let Some((head, last)) = &chain {
                li {
                    a href="/audit" { strong { (head) } " audit rows" }
                    @if let Some(c) = last {
                        " — last signed checkpoint at row " (c.seq) ", " (super::when(c.signed_at))
                    } @else { " — no signed checkpoint yet" }
                    ". Verify the chain on the Audit page."
                }
            }
        }
        @if total == 0 {
            div.empty {
                p { "No devices yet. On a machine you want to reach, run "
                    code { "tessera agent enroll --server <this server's address>" }
                    ", then approve the code it shows under " a href="/pairings" { "Pairings" } "." }
            }
        }
    };
    html_response(StatusCode::OK, page(&s, Nav::Overview, "Overview", body))
}
