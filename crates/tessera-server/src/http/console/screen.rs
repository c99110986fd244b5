//! The web screen viewer: a page with a `<canvas>` that shows a screen
//! session, decoded in the browser by `assets/screen.js` (raw-zstd with
//! the vendored fzstd decompressor; H.264 with the browser's WebCodecs
//! `VideoDecoder` when it has one that decodes the agent's stream), and
//! sends pointer and keyboard input when the operator may control.
//!
//! The page gets its viewer token the way the web terminal does
//! (`POST /sessions/{id}/viewer-token`, then `/ws/viewer` with the token as
//! a WebSocket subprotocol). Which keys the page may send comes from the one
//! key table, `tessera_proto::keys`: the page carries its
//! `KeyboardEvent.code` → usage map, so the browser and `tessera view`
//! name a physical key the same way.
//!
//! A view-only page sends no input, and the relay drops input from a
//! `view_only` token anyway: the page is a convenience, not the guard.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{html, Markup};
use tessera_core::kinds::{SessionAccess, SessionChannel};
use tessera_core::roles::Permission;
use tessera_core::ErrorCode;

use super::sessions::may_end;
use super::{assets, csrf_field, fail, html_response, page, require_signed, Nav};
use crate::http::error::ApiError;
use crate::http::sessions as api;

/// The combinations the "Send keys" menu offers (`SpecialKeys.combo`),
/// with their labels: keys the operator's own system would keep.
pub const COMBOS: &[(&str, &str)] = &[
    ("ctrl_alt_del", "Ctrl+Alt+Delete"),
    ("ctrl_alt_f1", "Ctrl+Alt+F1"),
    ("ctrl_alt_f2", "Ctrl+Alt+F2"),
    ("ctrl_alt_f3", "Ctrl+Alt+F3"),
    ("ctrl_alt_f4", "Ctrl+Alt+F4"),
    ("ctrl_alt_f5", "Ctrl+Alt+F5"),
    ("ctrl_alt_f6", "Ctrl+Alt+F6"),
    ("ctrl_alt_f7", "Ctrl+Alt+F7"),
    ("ctrl_alt_f8", "Ctrl+Alt+F8"),
    ("ctrl_alt_f9", "Ctrl+Alt+F9"),
    ("ctrl_alt_f10", "Ctrl+Alt+F10"),
    ("ctrl_alt_f11", "Ctrl+Alt+F11"),
    ("ctrl_alt_f12", "Ctrl+Alt+F12"),
    ("super", "Super (Windows key)"),
    ("alt_tab", "Alt+Tab"),
];

/// The page's key map, `KeyboardEvent.code` → usage, as JSON.
pub fn key_map_json() -> String {
    let map: BTreeMap<String, u32> = tessera_proto::keys::web_codes().collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
}

/// `GET /sessions/{id}/screen`
pub async fn show(
    State(state): State<crate::AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let r = match api::find(&state, &s.op, &id).await {
        Ok(r) => r,
        Err(e) => return fail(&s, Nav::Sessions, e),
    };
    if r.channel != SessionChannel::Screen {
        let e = ApiError::conflict(
            ErrorCode::ChannelUnsupported,
            format!(
                "this session carries a shell, not a screen: open its terminal at /sessions/{}/terminal",
                r.id
            ),
        );
        return fail(&s, Nav::Sessions, e);
    }
    let control = s.op.role.allows(Permission::Control) && r.access == SessionAccess::Control;
    let body = html! {
        h1 { "Screen: " (r.device_name) }
        @if !control {
            p.banner.readonly #readonly role="note" {
                "View only: you can watch; your pointer and keys are not sent."
            }
        }
        p #screen-status role="status" aria-live="polite" { "Connecting…" }
        noscript { p.error { "The web screen viewer needs JavaScript. Use " code { "tessera view " (r.id) } " instead." } }
        div.screen-tools role="toolbar" aria-label="Screen viewer" {
            label { input #screen-fit type="checkbox" checked; " Scale to fit" }
            @if control { (combo_menu()) }
        }
        @if control {
            p.muted #screen-help {
                "Click the picture (or tab to it) and your pointer and keys go to the remote screen. "
                "Tap Right Ctrl to give the keyboard back. Keys your own system keeps are in “Send keys”."
            }
        }
        div.screen-frame {
            canvas #screen.screen.fit.readonly[!control] width="1" height="1" tabindex="0"
                data-session=(r.id) data-csrf=(s.csrf) data-control=(if control { "1" } else { "0" })
                data-keys=(key_map_json())
                aria-label=(format!("Screen of {}{}", r.device_name, if control { "" } else { " (view only)" })) {
                "The remote screen."
            }
        }
        form.inline method="post" action=(format!("/sessions/{}/end", r.id)) {
            (csrf_field(&s))
            @if may_end(&s, &r) { button.danger type="submit" { "End session" } }
        }
        " " a href="/sessions" { "Back to sessions" }
        script src=(assets::url("fzstd-0.1.1.min.js")) defer {}
        script src=(assets::url("protobuf.js")) defer {}
        script src=(assets::url("screen.js")) defer {}
    };
    html_response(StatusCode::OK, page(&s, Nav::Sessions, "Screen", body))
}

fn combo_menu() -> Markup {
    html! {
        details.menu #send-keys {
            summary { "Send keys" }
            ul role="list" {
                @for (combo, label) in COMBOS {
                    li { button type="button" data-combo=(combo) { "Send " (label) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_map_comes_from_the_key_table() {
        let map: BTreeMap<String, u32> = serde_json::from_str(&key_map_json()).unwrap();
        assert_eq!(map.get("KeyA"), Some(&0x04));
        assert_eq!(map.get("ControlRight"), Some(&0xE4));
        assert_eq!(map.get("Delete"), Some(&0x4C));
        assert!(map.len() > 100, "{}", map.len());
    }

    #[test]
    fn every_combo_is_one_the_protocol_knows() {
        for (combo, _) in COMBOS {
            assert!(
                tessera_proto::keys::Combo::parse(combo).is_some(),
                "{combo}"
            );
        }
    }
}
