//! Creating an automatic session: the facts about every named device are
//! fetched in a few queries (`store::members`), each device is checked
//! ([`decide`](super::decide::decide)), the outcomes are recorded with
//! their audit rows in one transaction, and the devices that passed are
//! invited.

use tessera_core::identity::DeviceId;
use tessera_core::kinds::{
    Consent, EndCode, MemberOutcome, Origin, RejectionReason, SessionAccess,
};
use tessera_core::trust::Scope;
use tessera_proto::v1::{self, AutoJoinInvite, AutoSessionCreate, AutoSessionCreated};
use tessera_proto::Body;

use super::decide::{decide, hex, Facts};
use super::hub::{Auto, Conn, Member, MemberState};
use super::remote::{self, Reach};
use super::{clip, MAX_NAMED};
use crate::auth::device::DevicePrincipal;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, StoreError};
use crate::AppState;

/// One named device's outcome, as the creator is answered.
struct Named {
    device_id: String,
    /// 1-based among the named devices (the creator is 0).
    index: u32,
    outcome: MemberOutcome,
}

impl Named {
    /// What the member row records: a device that passed is `invited`
    /// once the session starts (else it keeps the server's outcome).
    fn member_row(&self, started: bool) -> &'static str {
        match self.outcome {
            MemberOutcome::Joined if started => "invited",
            other => other.as_str(),
        }
    }

    /// What the audit row records: a device that passed was invited.
    fn audited(&self) -> &'static str {
        match self.outcome {
            MemberOutcome::Joined => "invited",
            MemberOutcome::Rejected(r) => r.as_str(),
        }
    }

    fn wire(&self) -> v1::MemberOutcome {
        wire(&self.device_id, self.outcome, self.index)
    }
}

fn wire(device_id: &str, outcome: MemberOutcome, index: u32) -> v1::MemberOutcome {
    v1::MemberOutcome {
        device_id: device_id.to_owned(),
        outcome: outcome.as_str().to_owned(),
        member_index: index,
    }
}

/// A request refused whole, before any session exists.
fn refused(reason: RejectionReason) -> AutoSessionCreated {
    AutoSessionCreated {
        session_id: String::new(),
        outcomes: vec![wire("", MemberOutcome::Rejected(reason), 0)],
        started: false,
    }
}

/// A created session: the creator's answer, and the invitations to send
/// once that answer is on its way.
///
/// A member answers an invitation on the creator's notice queue, which the
/// connection's writer may take before its reply queue: the reply must be
/// queued first, so a creator never reads an answer for a session it has
/// not yet been told of (PROTOCOL.md §8.2).
pub struct Creation {
    pub reply: AutoSessionCreated,
    pub invites: Invites,
}

/// Each invited member, its connection, the grant that let it in, and its
/// invitation.
pub struct Invites(Vec<(String, Conn, String, AutoJoinInvite)>);

impl Creation {
    fn answer_only(reply: AutoSessionCreated) -> Creation {
        Creation {
            reply,
            invites: Invites(Vec::new()),
        }
    }
}

impl Invites {
    /// Sends each invitation to its member's connection (here, or through
    /// the node holding it), noting the use of the grant that let it in. A
    /// member whose node cannot be reached leaves with the reason.
    pub async fn send(self, state: &AppState) {
        let now = state.now();
        let r = super::Routing::of(state);
        for (device, conn, grant_id, invite) in self.0 {
            let _ = store::trust::touch_grant(state.db(), &grant_id, now).await;
            let session_id = invite.session_id.clone();
            let body = Body::AutoJoinInvite(invite);
            match &conn.node {
                None => super::deliver_here(&r, conn.id, body, super::Queue::Notices).await,
                Some(node) => {
                    if let Err(why) = remote::invite(&r, node, &device, conn.id, body).await {
                        super::lose(&r, &session_id, vec![(node.clone(), why)]).await;
                    }
                }
            }
        }
    }
}

/// Creates an automatic session for `creator` (on connection `conn_id`).
pub async fn create(
    state: &AppState,
    creator: &DevicePrincipal,
    conn_id: u64,
    req: AutoSessionCreate,
) -> Result<Creation, StoreError> {
    let now = state.now();
    let Some(scope) = Scope::parse(&req.scope) else {
        return Ok(Creation::answer_only(refused(
            RejectionReason::InvalidScope,
        )));
    };
    let db = state.db();
    let Some(creator_row) = store::devices::by_id_any_tenant(db.pool(), &creator.device_id).await?
    else {
        return Err(StoreError::Db(sqlx::Error::RowNotFound));
    };
    if req.members.len() > MAX_NAMED {
        return Ok(Creation::answer_only(refused(
            RejectionReason::TooManyMembers,
        )));
    }
    // The creator is always a member; duplicates and the creator are
    // dropped from the named list, which keeps its order. A name that is
    // no device id is answered as unknown, shortened, without a lookup.
    let mut named: Vec<String> = Vec::new();
    for m in req.members {
        let id = DeviceId::parse(&m)
            .map(|d| d.to_string())
            .unwrap_or_else(|_| clip(&m));
        if id != creator.device_id && !named.contains(&id) {
            named.push(id);
        }
    }
    let max = state.config().auto_session_max_members;
    // Names that are no device id are looked up nowhere: they are unknown.
    let ids: Vec<String> = named
        .iter()
        .filter(|id| DeviceId::parse(id).is_ok())
        .cloned()
        .collect();
    let rows = store::members::for_members(db, &creator.device_id, &ids).await?;
    let r = super::Routing::of(state);
    let mut reach = std::collections::HashMap::new();
    for id in &ids {
        reach.insert(id.clone(), remote::reach(&r, id, now).await?);
    }
    let mut outcomes = Vec::new();
    let mut invited = Vec::new();
    for (i, id) in named.iter().enumerate() {
        let device = rows.devices.get(id).filter(|d| !d.ephemeral);
        let grant = rows.grants.get(id);
        let at = reach.get(id).cloned().unwrap_or(Reach::Offline);
        let facts = Facts {
            device,
            same_tenant: device.is_some_and(|d| d.tenant_id == creator.tenant_id),
            position: i + 2,
            online: at.conn().is_some(),
            protocol: at.protocol(),
            creator_trusts_member: rows.creator_trusts.get(id),
            member_trusts_creator: rows.trusts_creator.get(id),
            grant,
        };
        let outcome = match decide(&creator_row, &facts, scope, max, now) {
            Ok(()) => MemberOutcome::Joined,
            // Online on a node this one cannot reach right now.
            Err(RejectionReason::Offline) if at == Reach::Unreachable => {
                MemberOutcome::Rejected(RejectionReason::RelayUnavailable)
            }
            Err(reason) => MemberOutcome::Rejected(reason),
        };
        let index = (i + 1) as u32;
        outcomes.push(Named {
            device_id: id.clone(),
            index,
            outcome,
        });
        if outcome.joined() {
            if let (Some(conn), Some(g)) = (at.conn(), grant) {
                invited.push((id.clone(), conn, index, g.grant.id.clone()));
            }
        }
    }
    let rejected = outcomes.iter().any(|o| !o.outcome.joined());
    let started = !(invited.is_empty() || req.all_or_nothing && rejected);

    let session_id = uuid::Uuid::now_v7().to_string();
    db.write(async |w| {
        store::sessions::insert(
            w,
            store::sessions::NewSession {
                id: &session_id,
                tenant_id: &creator.tenant_id,
                origin: Origin::Automatic,
                device_id: &creator.device_id,
                created_by: &format!("device:{}", creator.device_id),
                access: SessionAccess::Control,
                channel: tessera_core::kinds::SessionChannel::Shell,
                consent: Consent::initial(Origin::Automatic, false),
                support_code_id: None,
                now,
                consent_deadline: None,
            },
        )
        .await?;
        store::sessions::set_routing_node(w, &session_id, state.cluster().node_id()).await?;
        store::trust::insert_member(w, &session_id, &creator.device_id, 0, "creator").await?;
        let actor = Actor::Device(creator.device_id.clone());
        w.audit(
            AuditEvent::new(
                &creator.tenant_id,
                actor.clone(),
                Action::AutoSessionCreated,
            )
            .target(format!("session:{session_id}"))
            .detail("scope", scope.as_str())
            .detail("named", named.len())
            .detail("all_or_nothing", req.all_or_nothing),
        )
        .await?;
        for o in &outcomes {
            let recorded = o.member_row(started);
            store::trust::insert_member(w, &session_id, &o.device_id, o.index, recorded).await?;
            w.audit(
                AuditEvent::new(&creator.tenant_id, actor.clone(), Action::AutoJoin)
                    .target(format!("session:{session_id}"))
                    .detail("member", o.device_id.clone())
                    .detail("outcome", o.audited())
                    .detail("checked_by", "server"),
            )
            .await?;
        }
        if !started {
            let reason = if invited.is_empty() {
                "no named device could join"
            } else {
                "all or nothing: some devices could not join"
            };
            store::sessions::end(w, &session_id, EndCode::MembersRejected, reason, now).await?;
        }
        Ok::<_, StoreError>(())
    })
    .await?;
    let outcomes = outcomes.iter().map(Named::wire).collect();
    if !started {
        return Ok(Creation::answer_only(AutoSessionCreated {
            session_id,
            outcomes,
            started: false,
        }));
    }

    let creator_hex = (
        hex(&creator_row.ed25519_public),
        hex(&creator_row.x25519_public),
    );
    {
        let mut hub = state.auto().lock();
        let members = invited
            .iter()
            .map(|(id, conn, index, _)| {
                (
                    id.clone(),
                    Member {
                        conn: conn.clone(),
                        index: *index,
                        state: MemberState::Invited,
                    },
                )
            })
            .collect();
        hub.insert(
            session_id.clone(),
            Auto {
                tenant_id: creator.tenant_id.clone(),
                creator: creator.device_id.clone(),
                creator_conn: conn_id,
                scope,
                members,
            },
        );
    }
    let invites = invited
        .into_iter()
        .map(|(device, conn, index, grant_id)| {
            let invite = AutoJoinInvite {
                session_id: session_id.clone(),
                creator: creator.device_id.clone(),
                creator_ed25519: creator_hex.0.clone(),
                creator_x25519: creator_hex.1.clone(),
                scope: scope.as_str().to_owned(),
                member_index: index,
                creator_name: creator_row.name.clone(),
            };
            (device, conn, grant_id, invite)
        })
        .collect();
    let invites = Invites(invites);
    Ok(Creation {
        reply: AutoSessionCreated {
            session_id,
            outcomes,
            started: true,
        },
        invites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(outcome: MemberOutcome) -> Named {
        Named {
            device_id: "d".into(),
            index: 1,
            outcome,
        }
    }

    #[test]
    fn a_device_that_passed_is_invited_only_once_the_session_starts() {
        let joined = named(MemberOutcome::Joined);
        assert_eq!(joined.member_row(true), "invited");
        assert_eq!(joined.member_row(false), "joined");
        assert_eq!(joined.audited(), "invited");
        assert_eq!(joined.wire().outcome, "joined");
        let offline = named(MemberOutcome::Rejected(RejectionReason::Offline));
        assert_eq!(offline.member_row(true), "offline");
        assert_eq!(offline.audited(), "offline");
        assert_eq!(offline.wire().outcome, "offline");
    }
}
