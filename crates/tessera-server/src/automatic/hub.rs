//! The automatic sessions this node routes, and who may send to whom.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_core::trust::Scope;
use tessera_proto::Body;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum MemberState {
    Invited,
    Joined,
}

#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) conn_id: u64,
    pub(super) index: u32,
    pub(super) state: MemberState,
}

/// A live automatic session: who may send to whom.
#[derive(Debug)]
pub(super) struct Auto {
    pub(super) tenant_id: String,
    pub(super) creator: String,
    pub(super) creator_conn: u64,
    /// What the session was created for: each member's grant must keep it.
    pub(super) scope: Scope,
    pub(super) members: HashMap<String, Member>,
}

/// The automatic sessions routed by this node.
#[derive(Default)]
pub struct AutoHub {
    sessions: Mutex<HashMap<String, Auto>>,
}

/// A hook that sees (and may change) sealed payloads as the relay routes
/// them. Only tests set it, to show that a changed byte is detected by the
/// receiving member.
pub type RelayTap = Arc<dyn Fn(&mut Body) + Send + Sync>;

impl AutoHub {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Auto>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node still routes `session`.
    pub fn is_routing(&self, session: &str) -> bool {
        self.lock().contains_key(session)
    }

    /// The connection to route to for `device` in `session`, if the sender
    /// (`from`, on `from_conn`) belongs to it.
    pub(super) fn route(&self, session: &str, from: &str, from_conn: u64, to: &str) -> Option<u64> {
        let s = self.lock();
        let a = s.get(session)?;
        let sender_ok = (a.creator == from && a.creator_conn == from_conn)
            || a.members
                .get(from)
                .is_some_and(|m| m.conn_id == from_conn && m.state == MemberState::Joined);
        if !sender_ok {
            return None;
        }
        if a.creator == to {
            return Some(a.creator_conn);
        }
        a.members
            .get(to)
            .filter(|m| m.state == MemberState::Joined)
            .map(|m| m.conn_id)
    }

    /// Where a sealed payload goes, with the sender's member index: from
    /// the creator to every joined member (or the one named by `to`); from
    /// a joined member to the creator only. Members never hear each other.
    pub(super) fn fan_out(
        &self,
        session: &str,
        from: &str,
        from_conn: u64,
        to: &str,
    ) -> Option<(u32, Vec<u64>)> {
        let s = self.lock();
        let a = s.get(session)?;
        if a.creator == from && a.creator_conn == from_conn {
            let conns = a
                .members
                .iter()
                .filter(|(d, m)| m.state == MemberState::Joined && (to.is_empty() || *d == to))
                .map(|(_, m)| m.conn_id)
                .collect();
            return Some((0, conns));
        }
        let m = a
            .members
            .get(from)
            .filter(|m| m.conn_id == from_conn && m.state == MemberState::Joined)?;
        Some((m.index, vec![a.creator_conn]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creator C on connection 1; B joined (conn 2, index 1), D joined
    /// (conn 3, index 2), E only invited (conn 4, index 3).
    fn hub() -> AutoHub {
        let hub = AutoHub::default();
        let member = |conn_id, index, state| Member {
            conn_id,
            index,
            state,
        };
        let members = [
            ("B".to_owned(), member(2, 1, MemberState::Joined)),
            ("D".to_owned(), member(3, 2, MemberState::Joined)),
            ("E".to_owned(), member(4, 3, MemberState::Invited)),
        ]
        .into_iter()
        .collect();
        hub.lock().insert(
            "s".to_owned(),
            Auto {
                tenant_id: "t".to_owned(),
                creator: "C".to_owned(),
                creator_conn: 1,
                scope: Scope::Files,
                members,
            },
        );
        hub
    }

    #[test]
    fn handshakes_go_between_the_creator_and_joined_members_only() {
        let h = hub();
        assert_eq!(h.route("s", "C", 1, "B"), Some(2));
        assert_eq!(h.route("s", "B", 2, "C"), Some(1));
        // Not to an invited member, not from one, not from a stale connection.
        assert_eq!(h.route("s", "C", 1, "E"), None);
        assert_eq!(h.route("s", "E", 4, "C"), None);
        assert_eq!(h.route("s", "C", 9, "B"), None);
        assert_eq!(h.route("other", "C", 1, "B"), None);
    }

    #[test]
    fn members_never_hear_each_other_and_the_server_names_the_sender() {
        let h = hub();
        let (index, mut conns) = h.fan_out("s", "C", 1, "").unwrap();
        conns.sort_unstable();
        assert_eq!((index, conns), (0, vec![2, 3]));
        assert_eq!(h.fan_out("s", "C", 1, "D"), Some((0, vec![3])));
        // A member's payload goes to the creator only, whatever it names.
        assert_eq!(h.fan_out("s", "D", 3, "B"), Some((2, vec![1])));
        assert_eq!(h.fan_out("s", "E", 4, ""), None);
        assert_eq!(h.fan_out("s", "B", 3, ""), None);
    }
}
