//! Trust and grants governance: who may auto-join whom, with scopes,
//! expiry, state (active, expiring soon, expired, revoked, key mismatch)
//! and last use; revoking one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tessera_core::roles::Permission;

use super::{
    csrf_field, done, empty, fail, html_response, page, require_post, require_signed, Nav,
};
use crate::http::extract::ClientIp;
use crate::{store, tenancy, AppState};

/// `GET /grants`
pub async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::View) {
        return fail(&s, Nav::Grants, e);
    }
    let loaded = async {
        let rows = store::trust::list_grants(state.db(), tenancy::of(&s.op), None).await?;
        let mut out = Vec::new();
        for g in &rows {
            out.push(crate::http::trust::grant_view(state.db(), g).await?);
        }
        Ok::<_, store::StoreError>(out)
    };
    let grants = match loaded.await {
        Ok(g) => g,
        Err(e) => return fail(&s, Nav::Grants, e),
    };
    let manage = s.op.role.allows(Permission::ManageDevices);
    let body = html! {
        h1 { "Trust and grants" }
        p { "A grant lets one device be joined automatically into sessions another device creates, pinned to that device's key, for the scopes and until the time shown. Devices set them up themselves ("
            code { "tessera trust" } ", " code { "tessera grant" } "); here you can see and revoke them." }
        @if grants.is_empty() {
            (empty("No grants yet.", html! { p { "Devices that trust each other create them with " code { "tessera grant" } "." } }))
        } @else {
            div.scroll { table {
                thead { tr { th { "Device (granter)" } th { "May be joined by" } th { "Scopes" } th { "Expires" } th { "State" } th { "Last used" } th { span.sr { "Actions" } } } }
                tbody { @for g in &grants { tr {
                    td { (g.granter_name.as_deref().unwrap_or(&g.granter)) }
                    td { (g.grantee_name.as_deref().unwrap_or(&g.grantee)) br; code.details { (g.grantee_fingerprint) } }
                    td { (g.scopes.join(", ")) }
                    td { (g.expires_at) }
                    td { span class=(format!("state {}", g.state)) { (g.state.replace('_', " ")) }
                         @if let Some(r) = &g.revoked_reason { br; span.muted { (r) } } }
                    td { (g.last_used_at.as_deref().unwrap_or("never")) }
                    td { @if manage && g.state != "revoked" {
                        form method="post" action=(format!("/grants/{}/revoke", g.id)) {
                            (csrf_field(&s))
                            button.danger type="submit" { "Revoke grant" }
                        }
                    } }
                } } }
            } }
        }
    };
    html_response(StatusCode::OK, page(&s, Nav::Grants, "Grants", body))
}

/// `POST /grants/{id}/revoke`
pub async fn revoke(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let reason = form.text("reason").map(str::to_owned);
    match crate::http::trust::revoke_grant_as_operator(&state, ip, &s.op, &id, reason).await {
        Ok(_) => done("/grants"),
        Err(e) => fail(&s, Nav::Grants, e),
    }
}
