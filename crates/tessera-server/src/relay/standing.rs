//! Whether each open viewer may stay: its login still live, its user still
//! enabled, its user's role still allowing the access it joined with. The
//! node that changes a user acts at once (`user_changed`); the session
//! sweep (`sweep`) catches changes made on any node within a heartbeat.

use tessera_core::roles::{Permission, Role};

use super::{Access, Hub, Kick};
use crate::store::{self, Db};

/// The session sweep's relay work, for changes made on any node: viewers
/// whose login ended are cut off (`logged_out`), those whose user was
/// disabled too (`user_disabled`), and `control` viewers whose user's role
/// no longer allows control (`role_changed`).
pub async fn sweep(hub: &Hub, db: &Db) {
    let live = hub.all();
    let logins: Vec<String> = live
        .iter()
        .flat_map(|s| s.viewers().into_iter().map(|(_, _, login)| login))
        .collect();
    if logins.is_empty() {
        return;
    }
    match store::logins::standing_among(db, &logins, db.now()).await {
        Ok(standing) => {
            let find = |l: &str| standing.iter().find(|s| s.id == l);
            for s in &live {
                s.kick_where(Kick::UserDisabled, |l, _, _| {
                    find(l).is_some_and(|s| s.user_disabled)
                });
                // A login gone from the table has ended too.
                s.kick_where(Kick::LoggedOut, |l, _, _| find(l).is_none_or(|s| !s.live));
                s.kick_where(Kick::RoleChanged, |l, _, access| {
                    find(l).is_some_and(|s| !allows(s.role, access))
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "session sweep: cannot check viewer logins"),
    }
}

/// Whether `role` allows a viewer with `access`.
pub fn allows(role: Role, access: Access) -> bool {
    match access {
        Access::Control => role.allows(Permission::Control),
        Access::ViewOnly => role.allows(Permission::View),
    }
}

/// On this node, at once: disconnects a disabled user's viewers, or those of
/// a user whose new role no longer allows the access they joined with (the
/// sweep does the same on every node within a heartbeat).
pub fn user_changed(hub: &Hub, user_id: &str, role: Role, disabled: bool) {
    for s in hub.all() {
        if disabled {
            s.kick_where(Kick::UserDisabled, |_, u, _| u == user_id);
        } else {
            s.kick_where(Kick::RoleChanged, |_, u, access| {
                u == user_id && !allows(role, access)
            });
        }
    }
}
