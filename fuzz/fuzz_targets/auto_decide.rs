//! `automatic::decide`, the server's verdict on each device a creator names
//! in `AutoSessionCreate`, over arbitrary facts: it never panics, refuses
//! only with one of the server's own reasons, and admits only when every
//! check holds.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera_core::trust::{fingerprint, AutoJoinGrant, Scope};
use tessera_core::Timestamp;
use tessera_server::automatic::{decide, Facts};
use tessera_server::store::devices::DeviceRow;
use tessera_server::store::trust::{AttestationRow, GrantRow};

const OUTCOMES: &[&str] = &[
    "unknown_device",
    "other_tenant",
    "too_many_members",
    "not_mutually_trusted",
    "key_mismatch",
    "no_grant",
    "grant_revoked",
    "grant_expired",
    "scope_missing",
    "offline",
    "incompatible_version",
];

#[derive(Arbitrary, Debug)]
struct Pin {
    current: bool,
    other: [u8; 32],
    withdrawn: Option<i64>,
}

#[derive(Arbitrary, Debug)]
struct Grant {
    fingerprint_current: bool,
    files: bool,
    shell: bool,
    issued_at: i64,
    expires_at: i64,
    revoked: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    creator_ed: [u8; 32],
    member_ed: [u8; 32],
    member_known: bool,
    member_revoked: bool,
    same_tenant: bool,
    position: u8,
    max_members: u8,
    online: bool,
    protocol: Option<u32>,
    c2m: Option<Pin>,
    m2c: Option<Pin>,
    grant: Option<Grant>,
    shell: bool,
    now: i64,
}

fn device(id: &str, ed: [u8; 32], revoked: bool) -> DeviceRow {
    DeviceRow {
        id: id.into(),
        tenant_id: "t".into(),
        ed25519_public: ed,
        x25519_public: ed,
        name: id.into(),
        hostname: String::new(),
        os: String::new(),
        agent_version: None,
        tags: vec![],
        enrolled_via: "pairing".into(),
        enrolled_by: "user:u".into(),
        owner_user_id: "u".into(),
        created_at: Timestamp::from_millis(0),
        connected_at: None,
        disconnected_at: None,
        last_seen_at: None,
        last_ip: None,
        revoked_at: revoked.then_some(Timestamp::from_millis(0)),
        revoked_reason: None,
        ephemeral: false,
    }
}

fn pin(p: &Pin, truster: &str, trusted: &DeviceRow) -> AttestationRow {
    let key = if p.current {
        trusted.ed25519_public
    } else {
        p.other
    };
    AttestationRow {
        id: "a".into(),
        truster: truster.into(),
        trusted: trusted.id.clone(),
        trusted_ed25519: tessera_core::secret::hex(&key),
        trusted_x25519: tessera_core::secret::hex(&key),
        issued_at: Timestamp::from_millis(0),
        signature: String::new(),
        withdrawn_at: p.withdrawn.map(Timestamp::from_millis),
    }
}

fuzz_target!(|i: Input| {
    let creator = device("A", i.creator_ed, false);
    let member = device("B", i.member_ed, i.member_revoked);
    let c2m = i.c2m.as_ref().map(|p| pin(p, "A", &member));
    let m2c = i.m2c.as_ref().map(|p| pin(p, "B", &creator));
    let grant = i.grant.as_ref().map(|g| {
        let mut scopes = Vec::new();
        if g.files {
            scopes.push(Scope::Files);
        }
        if g.shell {
            scopes.push(Scope::Shell);
        }
        GrantRow {
            grant: AutoJoinGrant {
                id: "g".into(),
                granter: "B".into(),
                grantee: "A".into(),
                grantee_fingerprint: if g.fingerprint_current {
                    fingerprint(&creator.ed25519_public)
                } else {
                    "stale".into()
                },
                scopes,
                issued_at: Timestamp::from_millis(g.issued_at),
                expires_at: Timestamp::from_millis(g.expires_at),
            },
            tenant_id: "t".into(),
            signature: String::new(),
            superseded_by: None,
            revoked_at: g.revoked.then_some(Timestamp::from_millis(0)),
            revoked_by: None,
            revoked_reason: None,
            last_used_at: None,
        }
    });
    let facts = Facts {
        device: i.member_known.then_some(&member),
        same_tenant: i.same_tenant,
        position: usize::from(i.position),
        online: i.online,
        protocol: i.protocol,
        creator_trusts_member: c2m.as_ref(),
        member_trusts_creator: m2c.as_ref(),
        grant: grant.as_ref(),
    };
    let scope = if i.shell { Scope::Shell } else { Scope::Files };
    let now = Timestamp::from_millis(i.now);
    let verdict = decide(&creator, &facts, scope, usize::from(i.max_members), now);
    // `decide` itself never answers the member's own reasons or the
    // request-wide ones.
    if let Err(reason) = verdict {
        assert!(OUTCOMES.contains(&reason.as_str()), "{reason:?}");
    }
    if verdict.is_ok() {
        assert!(i.member_known && !i.member_revoked && i.same_tenant && i.online);
        assert!(i.position <= i.max_members);
        assert!(i
            .protocol
            .is_some_and(|v| v >= tessera_proto::AUTO_SESSION_VERSION));
        // Each side's pin is live and names the other's current key.
        let pinned = |p: &Option<Pin>, current: &[u8; 32]| {
            p.as_ref()
                .is_some_and(|p| p.withdrawn.is_none() && (p.current || p.other == *current))
        };
        assert!(pinned(&i.c2m, &i.member_ed) && pinned(&i.m2c, &i.creator_ed));
        let g = i.grant.as_ref().expect("joined needs a grant");
        assert!(!g.revoked && g.fingerprint_current && g.expires_at > i.now);
        assert!(if i.shell { g.shell } else { g.files });
    }
});
