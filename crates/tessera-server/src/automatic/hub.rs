//! The automatic sessions this node routes, and who may send to whom; and
//! the sessions routed by another node that members connected here belong
//! to (see `remote`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_core::trust::Scope;
use tessera_proto::Body;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum MemberState {
    Invited,
    Joined,
}

/// A participant's control connection: its id on the node that holds it
/// (`None`: this node). Connection ids are counted per node, so the pair
/// names one connection in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Conn {
    pub(super) node: Option<String>,
    pub(super) id: u64,
}

impl Conn {
    pub(super) fn here(id: u64) -> Conn {
        Conn { node: None, id }
    }

    pub(super) fn at(node: &str, id: u64) -> Conn {
        Conn {
            node: Some(node.to_owned()),
            id,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) conn: Conn,
    pub(super) index: u32,
    pub(super) state: MemberState,
}

/// A live automatic session: who may send to whom. The creator's
/// connection is always on this node (a session is routed where its
/// creator is connected).
#[derive(Debug)]
pub(super) struct Auto {
    pub(super) tenant_id: String,
    pub(super) creator: String,
    pub(super) creator_conn: u64,
    /// What the session was created for: each member's grant must keep it.
    pub(super) scope: Scope,
    pub(super) members: HashMap<String, Member>,
}

impl Auto {
    /// Every participant's connection.
    pub(super) fn conns(&self) -> Vec<Conn> {
        let mut conns: Vec<Conn> = self.members.values().map(|m| m.conn.clone()).collect();
        conns.push(Conn::here(self.creator_conn));
        conns
    }
}

/// A session routed by another node (`hub`) that members connected here
/// were invited to: what they send for it goes there.
#[derive(Debug)]
pub(super) struct Away {
    pub(super) hub: String,
    /// The members connected here: device and connection.
    pub(super) members: Vec<(String, u64)>,
}

/// The automatic sessions routed by this node, and those routed elsewhere
/// that members connected here belong to.
#[derive(Default)]
pub struct AutoHub {
    sessions: Mutex<HashMap<String, Auto>>,
    away: Mutex<HashMap<String, Away>>,
}

/// A hook that sees (and may change) sealed payloads as the relay routes
/// them. Only tests set it, to show that a changed byte is detected by the
/// receiving member.
pub type RelayTap = Arc<dyn Fn(&mut Body) + Send + Sync>;

impl AutoHub {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Auto>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn away(&self) -> std::sync::MutexGuard<'_, HashMap<String, Away>> {
        self.away.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node still routes `session`.
    pub fn is_routing(&self, session: &str) -> bool {
        self.lock().contains_key(session)
    }

    /// Whether a member connected here still belongs to `session`, routed
    /// by another node.
    pub fn is_joined_away(&self, session: &str) -> bool {
        self.away().contains_key(session)
    }

    /// The node routing `session`, if `device` on connection `conn` (here)
    /// was invited to it from there.
    pub(super) fn hub_of(&self, session: &str, device: &str, conn: u64) -> Option<String> {
        self.away()
            .get(session)
            .filter(|a| a.members.iter().any(|(d, c)| d == device && *c == conn))
            .map(|a| a.hub.clone())
    }

    /// `device` on connection `conn` (here) is invited to `session`,
    /// routed by `hub`.
    pub(super) fn invited_away(&self, session: &str, hub: &str, device: &str, conn: u64) {
        let mut away = self.away();
        let a = away.entry(session.to_owned()).or_insert_with(|| Away {
            hub: hub.to_owned(),
            members: Vec::new(),
        });
        if a.hub == hub && !a.members.iter().any(|(d, _)| d == device) {
            a.members.push((device.to_owned(), conn));
        }
    }

    /// `device` no longer belongs to `session` (routed elsewhere).
    pub(super) fn left_away(&self, session: &str, device: &str) {
        let mut away = self.away();
        if let Some(a) = away.get_mut(session) {
            a.members.retain(|(d, _)| d != device);
            if a.members.is_empty() {
                away.remove(session);
            }
        }
    }

    /// `session` (routed elsewhere) ended: its members connected here.
    pub(super) fn ended_away(&self, session: &str) -> Vec<(String, u64)> {
        self.away()
            .remove(session)
            .map(|a| a.members)
            .unwrap_or_default()
    }

    /// A connection here closed: the sessions routed elsewhere it was a
    /// member of, with the node routing each.
    pub(super) fn closed_away(&self, device: &str, conn: u64) -> Vec<(String, String)> {
        let mut away = self.away();
        let mut of = Vec::new();
        for (id, a) in away.iter_mut() {
            let before = a.members.len();
            a.members.retain(|(d, c)| !(d == device && *c == conn));
            if a.members.len() != before {
                of.push((id.clone(), a.hub.clone()));
            }
        }
        away.retain(|_, a| !a.members.is_empty());
        of
    }

    /// The nodes routing sessions that members connected here belong to.
    pub(super) fn hubs_away(&self) -> Vec<String> {
        let mut hubs: Vec<String> = self.away().values().map(|a| a.hub.clone()).collect();
        hubs.sort_unstable();
        hubs.dedup();
        hubs
    }

    /// Sessions routed by `hub`, with their members here (that node is
    /// gone); they are forgotten.
    pub(super) fn lost_hub(&self, hub: &str) -> Vec<(String, Vec<(String, u64)>)> {
        let mut away = self.away();
        let ids: Vec<String> = away
            .iter()
            .filter(|(_, a)| a.hub == hub)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| away.remove(&id).map(|a| (id, a.members)))
            .collect()
    }

    /// The connection to route to for `device` in `session`, if the sender
    /// (`from`, on `from_conn`) belongs to it.
    pub(super) fn route(
        &self,
        session: &str,
        from: &str,
        from_conn: &Conn,
        to: &str,
    ) -> Option<Conn> {
        let s = self.lock();
        let a = s.get(session)?;
        let sender_ok = (a.creator == from && Conn::here(a.creator_conn) == *from_conn)
            || a.members
                .get(from)
                .is_some_and(|m| m.conn == *from_conn && m.state == MemberState::Joined);
        if !sender_ok {
            return None;
        }
        if a.creator == to {
            return Some(Conn::here(a.creator_conn));
        }
        a.members
            .get(to)
            .filter(|m| m.state == MemberState::Joined)
            .map(|m| m.conn.clone())
    }

    /// Where a sealed payload goes, with the sender's member index: from
    /// the creator to every joined member (or the one named by `to`); from
    /// a joined member to the creator only. Members never hear each other.
    pub(super) fn fan_out(
        &self,
        session: &str,
        from: &str,
        from_conn: &Conn,
        to: &str,
    ) -> Option<(u32, Vec<Conn>)> {
        let s = self.lock();
        let a = s.get(session)?;
        if a.creator == from && Conn::here(a.creator_conn) == *from_conn {
            let conns = a
                .members
                .iter()
                .filter(|(d, m)| m.state == MemberState::Joined && (to.is_empty() || *d == to))
                .map(|(_, m)| m.conn.clone())
                .collect();
            return Some((0, conns));
        }
        let m = a
            .members
            .get(from)
            .filter(|m| m.conn == *from_conn && m.state == MemberState::Joined)?;
        Some((m.index, vec![Conn::here(a.creator_conn)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(id: u64) -> Conn {
        Conn::here(id)
    }

    /// Creator C on connection 1; B joined (conn 2, index 1), D joined
    /// (conn 3, index 2), E only invited (conn 4, index 3), all here; F
    /// joined on node n2, whose connection 2 is not B's.
    fn hub() -> AutoHub {
        let hub = AutoHub::default();
        let member = |conn, index, state| Member { conn, index, state };
        let members = [
            ("B".to_owned(), member(here(2), 1, MemberState::Joined)),
            ("D".to_owned(), member(here(3), 2, MemberState::Joined)),
            ("E".to_owned(), member(here(4), 3, MemberState::Invited)),
            (
                "F".to_owned(),
                member(Conn::at("n2", 2), 4, MemberState::Joined),
            ),
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
        assert_eq!(h.route("s", "C", &here(1), "B"), Some(here(2)));
        assert_eq!(h.route("s", "B", &here(2), "C"), Some(here(1)));
        assert_eq!(h.route("s", "C", &here(1), "F"), Some(Conn::at("n2", 2)));
        assert_eq!(h.route("s", "F", &Conn::at("n2", 2), "C"), Some(here(1)));
        // Not to an invited member, not from one, not from a stale connection.
        assert_eq!(h.route("s", "C", &here(1), "E"), None);
        assert_eq!(h.route("s", "E", &here(4), "C"), None);
        assert_eq!(h.route("s", "C", &here(9), "B"), None);
        assert_eq!(h.route("other", "C", &here(1), "B"), None);
        // A connection is named by its node too: F's id here, or B's on
        // another node, is nobody.
        assert_eq!(h.route("s", "F", &here(2), "C"), None);
        assert_eq!(h.route("s", "B", &Conn::at("n2", 2), "C"), None);
        assert_eq!(h.route("s", "C", &Conn::at("n2", 1), "B"), None);
    }

    #[test]
    fn members_never_hear_each_other_and_the_server_names_the_sender() {
        let h = hub();
        let (index, conns) = h.fan_out("s", "C", &here(1), "").unwrap();
        assert_eq!(index, 0);
        assert_eq!(conns.len(), 3);
        for c in [here(2), here(3), Conn::at("n2", 2)] {
            assert!(conns.contains(&c), "{conns:?}");
        }
        assert_eq!(h.fan_out("s", "C", &here(1), "D"), Some((0, vec![here(3)])));
        // A member's payload goes to the creator only, whatever it names.
        assert_eq!(h.fan_out("s", "D", &here(3), "B"), Some((2, vec![here(1)])));
        assert_eq!(
            h.fan_out("s", "F", &Conn::at("n2", 2), "B"),
            Some((4, vec![here(1)]))
        );
        assert_eq!(h.fan_out("s", "E", &here(4), ""), None);
        assert_eq!(h.fan_out("s", "B", &here(3), ""), None);
    }

    #[test]
    fn a_member_here_of_a_session_routed_elsewhere_is_known_by_its_connection() {
        let h = AutoHub::default();
        h.invited_away("s", "n1", "B", 7);
        h.invited_away("s", "n1", "D", 8);
        assert_eq!(h.hub_of("s", "B", 7).as_deref(), Some("n1"));
        assert_eq!(h.hub_of("s", "B", 8), None, "not on another connection");
        assert_eq!(h.hub_of("t", "B", 7), None);
        assert_eq!(h.hubs_away(), vec!["n1".to_owned()]);
        assert_eq!(
            h.closed_away("B", 7),
            vec![("s".to_owned(), "n1".to_owned())]
        );
        assert_eq!(h.hub_of("s", "B", 7), None);
        assert!(h.is_joined_away("s"), "D is still in it");
        h.left_away("s", "D");
        assert!(!h.is_joined_away("s"));
        h.invited_away("u", "n3", "B", 9);
        assert_eq!(
            h.lost_hub("n3"),
            vec![("u".to_owned(), vec![("B".to_owned(), 9)])]
        );
        assert!(h.hubs_away().is_empty());
    }
}
