//! The automatic sessions this node routes, and who may send to whom.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
