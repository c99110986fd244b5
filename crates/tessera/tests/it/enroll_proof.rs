//! Enrolling with a token and binding a support code prove possession of
//! the identity key with the pairing proof (issue 12, finding 10): a
//! public identity document alone enrolls nobody, and cannot block its
//! owner from enrolling later.

use std::time::Duration;

use tessera_client::ApiClient;
use tessera_core::api::{
    BindSupportCodeRequest, CreateEnrollmentTokenRequest, CreateSupportCodeRequest, EnrollRequest,
    SecretString,
};
use tessera_core::identity::DeviceKeys;

use tessera_testkit::TestServer;

const FIVE_MINUTES_AND_A_SECOND: i64 = 301_000;

/// What the sender claims: `identity`'s document, `name`, and a proof made
/// by `signer` at `issued_at` (or none).
struct Claim<'a> {
    identity: &'a DeviceKeys,
    signer: &'a DeviceKeys,
    name: &'a str,
    signed_name: &'a str,
    issued_at: Option<i64>,
}

impl Claim<'_> {
    fn honest<'a>(keys: &'a DeviceKeys, name: &'a str, now: i64) -> Claim<'a> {
        Claim {
            identity: keys,
            signer: keys,
            name,
            signed_name: name,
            issued_at: Some(now),
        }
    }

    fn proof(&self) -> (Option<i64>, Option<String>) {
        match self.issued_at {
            Some(at) => {
                let (_, proof) = tessera_agent::enroll::pairing_proof_at(
                    self.signer,
                    self.signed_name,
                    "host.lan",
                    "linux",
                    at,
                );
                (Some(at), Some(proof))
            }
            None => (None, None),
        }
    }

    fn enroll(&self, token: &SecretString) -> EnrollRequest {
        let (issued_at, proof) = self.proof();
        EnrollRequest {
            token: token.clone(),
            identity: self.identity.document().encode(),
            name: self.name.into(),
            hostname: "host.lan".into(),
            os: "linux".into(),
            issued_at,
            proof,
        }
    }

    fn bind(&self, code: &SecretString) -> BindSupportCodeRequest {
        let (issued_at, proof) = self.proof();
        BindSupportCodeRequest {
            code: code.clone(),
            identity: self.identity.document().encode(),
            name: self.name.into(),
            hostname: "host.lan".into(),
            os: "linux".into(),
            issued_at,
            proof,
        }
    }
}

/// Every way to claim `victim`'s identity without proving its key.
fn forgeries<'a>(victim: &'a DeviceKeys, thief: &'a DeviceKeys, now: i64) -> Vec<Claim<'a>> {
    vec![
        // No proof at all.
        Claim {
            issued_at: None,
            ..Claim::honest(victim, "victim", now)
        },
        // The thief's own signature.
        Claim {
            signer: thief,
            ..Claim::honest(victim, "victim", now)
        },
        // The victim's signature, but over other fields.
        Claim {
            signed_name: "something else",
            ..Claim::honest(victim, "victim", now)
        },
        // The victim's signature, stale.
        Claim::honest(victim, "victim", now - FIVE_MINUTES_AND_A_SECOND),
        // … or from the future.
        Claim::honest(victim, "victim", now + FIVE_MINUTES_AND_A_SECOND),
    ]
}

async fn token(admin: &ApiClient, uses: u32) -> SecretString {
    admin
        .create_enrollment_token(&CreateEnrollmentTokenRequest {
            uses,
            ttl_seconds: 3600,
            tags: vec![],
        })
        .await
        .unwrap()
        .secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_someone_elses_identity_with_a_token_is_refused_and_the_owner_still_enrolls() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();
    let t = token(&admin, 2).await;
    let (victim, thief) = (DeviceKeys::generate(), DeviceKeys::generate());
    let now = s.clock.now_ms();

    for (i, forged) in forgeries(&victim, &thief, now).iter().enumerate() {
        let e = c.enroll(&forged.enroll(&t)).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (Some(401), Some("invalid_proof")),
            "forgery {i}: {e}"
        );
    }
    let stale = c
        .enroll(&Claim::honest(&victim, "victim", now - FIVE_MINUTES_AND_A_SECOND).enroll(&t))
        .await
        .unwrap_err();
    assert!(stale.to_string().contains("five minutes"), "{stale}");

    // Nothing was created and no use was taken.
    assert!(admin.list_devices().await.unwrap().is_empty());
    assert_eq!(
        admin.enrollment_tokens().await.unwrap()[0].uses_remaining,
        2
    );
    // The owner enrolls its identity with its own proof.
    let enrolled = c
        .enroll(&Claim::honest(&victim, "victim", now).enroll(&t))
        .await
        .expect("the owner enrolls");
    assert_eq!(enrolled.device_id, victim.device_id().to_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_support_code_to_someone_elses_identity_is_refused_and_uses_nothing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();
    let code = admin
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code;
    let (victim, thief) = (DeviceKeys::generate(), DeviceKeys::generate());
    let now = s.clock.now_ms();

    for (i, forged) in forgeries(&victim, &thief, now).iter().enumerate() {
        let e = c.bind_support_code(&forged.bind(&code)).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (Some(401), Some("invalid_proof")),
            "forgery {i}: {e}"
        );
    }
    // The code is still unused, no session was created, and the person it
    // was given to binds it with their own identity.
    assert!(admin.sessions(true).await.unwrap().is_empty());
    s.clock.advance(Duration::from_secs(1));
    let bound = c
        .bind_support_code(&Claim::honest(&victim, "victim", s.clock.now_ms()).bind(&code))
        .await
        .expect("the holder of the key binds");
    assert_eq!(bound.device_id, victim.device_id().to_string());
    s.stop().await;
}
