//! Enrolling with a token and binding a support code prove possession of
//! the identity key with the pairing proof (issue 12, finding 10): a
//! public identity document alone enrolls nobody, and cannot block its
//! owner from enrolling later.

use std::time::Duration;

use tessera_agent::enroll::{possession_proof_at, PossessionProof};
use tessera_client::ApiClient;
use tessera_core::api::{
    BindSupportCodeRequest, CreateEnrollmentTokenRequest, CreateSupportCodeRequest, EnrollRequest,
    SecretString,
};
use tessera_core::identity::{DeviceKeys, ProofPurpose};

use tessera_testkit::TestServer;

const FIVE_MINUTES_AND_A_SECOND: i64 = 301_000;

/// What the sender claims: `identity`'s document, `name`, and a proof made
/// by `signer` at `issued_at` (or none), for `purpose` (or the route's
/// own) and the server at `server` (or the real one).
#[derive(Clone)]
struct Claim<'a> {
    identity: &'a DeviceKeys,
    signer: &'a DeviceKeys,
    name: &'a str,
    signed_name: &'a str,
    issued_at: Option<i64>,
    purpose: Option<ProofPurpose>,
    server: Option<&'a str>,
}

impl Claim<'_> {
    fn honest<'a>(keys: &'a DeviceKeys, name: &'a str, now: i64) -> Claim<'a> {
        Claim {
            identity: keys,
            signer: keys,
            name,
            signed_name: name,
            issued_at: Some(now),
            purpose: None,
            server: None,
        }
    }

    fn proof(&self, s: &TestServer, route: ProofPurpose) -> Option<PossessionProof> {
        let at = self.issued_at?;
        Some(possession_proof_at(
            self.signer,
            (self.signed_name, "host.lan", "linux"),
            self.purpose.unwrap_or(route),
            self.server.unwrap_or(&s.url),
            at,
        ))
    }

    fn enroll(&self, s: &TestServer, token: &SecretString) -> EnrollRequest {
        let p = self.proof(s, ProofPurpose::Enroll);
        EnrollRequest {
            token: token.clone(),
            identity: self.identity.document().encode(),
            name: self.name.into(),
            hostname: "host.lan".into(),
            os: "linux".into(),
            issued_at: p.as_ref().map(|p| p.issued_at),
            proof: p.as_ref().map(|p| p.proof.clone()),
            audience: p.map(|p| p.audience),
        }
    }

    fn bind(&self, s: &TestServer, code: &SecretString) -> BindSupportCodeRequest {
        let p = self.proof(s, ProofPurpose::SupportBind);
        BindSupportCodeRequest {
            code: code.clone(),
            identity: self.identity.document().encode(),
            name: self.name.into(),
            hostname: "host.lan".into(),
            os: "linux".into(),
            issued_at: p.as_ref().map(|p| p.issued_at),
            proof: p.as_ref().map(|p| p.proof.clone()),
            audience: p.map(|p| p.audience),
        }
    }
}

/// Every way to claim `victim`'s identity without proving its key for this
/// request.
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
        // The victim's proof for pairing, replayed to this route.
        Claim {
            purpose: Some(ProofPurpose::Pairing),
            ..Claim::honest(victim, "victim", now)
        },
        // The victim's proof for another server, replayed here.
        Claim {
            server: Some("https://evil.example"),
            ..Claim::honest(victim, "victim", now)
        },
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
        let e = c.enroll(&forged.enroll(&s, &t)).await.unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (Some(401), Some("invalid_proof")),
            "forgery {i}: {e}"
        );
    }
    let stale = c
        .enroll(&Claim::honest(&victim, "victim", now - FIVE_MINUTES_AND_A_SECOND).enroll(&s, &t))
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
        .enroll(&Claim::honest(&victim, "victim", now).enroll(&s, &t))
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
        let e = c
            .bind_support_code(&forged.bind(&s, &code))
            .await
            .unwrap_err();
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
        .bind_support_code(&Claim::honest(&victim, "victim", s.clock.now_ms()).bind(&s, &code))
        .await
        .expect("the holder of the key binds");
    assert_eq!(bound.device_id, victim.device_id().to_string());
    s.stop().await;
}

/// A proof is taken once: the same request sent again (as a proxy that
/// logged it could) is refused, and the first one's effect stands alone.
/// A proof made for another server is refused in words that name both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_used_once_and_only_at_the_server_it_names() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();
    let t = token(&admin, 3).await;
    let keys = DeviceKeys::generate();
    let now = s.clock.now_ms();

    let elsewhere = Claim {
        server: Some("https://evil.example:8443"),
        ..Claim::honest(&keys, "dev", now)
    };
    let mut sent = elsewhere.enroll(&s, &t);
    let e = c.enroll(&sent).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("invalid_proof")));
    let words = e.to_string();
    assert!(
        words.contains("https://evil.example:8443") && words.contains(&s.url),
        "{words}"
    );
    // Relabelled as made for this server, the signature no longer fits.
    sent.audience = Some(s.url.clone());
    let e = c.enroll(&sent).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_proof"), "{e}");

    // The honest request once, then replayed.
    let req = Claim::honest(&keys, "dev", now).enroll(&s, &t);
    c.enroll(&req).await.expect("the first use enrolls");
    let replayed = c.enroll(&req).await.unwrap_err();
    assert_eq!(replayed.code(), Some("invalid_proof"), "{replayed}");
    assert!(replayed.to_string().contains("already used"), "{replayed}");
    // One use taken, by the first request only.
    assert_eq!(
        admin.enrollment_tokens().await.unwrap()[0].uses_remaining,
        2
    );
    s.stop().await;
}

/// With `--public-url`, that origin is the only audience taken, whatever
/// `Host` a request carries: a wrong server that forwards a proof with its
/// own name in `Host` is refused, and a device that used the public URL is
/// taken even when it reached the server by another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_url_only_its_origin_is_an_audience_whatever_the_host_header() {
    let s = TestServer::start_with(tessera_testkit::Options {
        configure: Some(Box::new(|c| {
            c.public_url = Some("HTTPS://Tessera.Test:443/console/".into())
        })),
        ..Default::default()
    })
    .await;
    let admin = s.admin().await;
    let t = token(&admin, 3).await;
    let http = tessera_testkit::http_client();
    let enroll = |req: EnrollRequest, host: &'static str| {
        let http = http.clone();
        let url = s.api("/api/v1/enroll");
        async move {
            http.post(url)
                .header("host", host)
                .json(&req)
                .send()
                .await
                .unwrap()
        }
    };
    let now = s.clock.now_ms();

    // A proof for the wrong server, forwarded with that server's Host.
    let victim = DeviceKeys::generate();
    let forwarded = Claim {
        server: Some("https://evil.example"),
        ..Claim::honest(&victim, "victim", now)
    };
    let resp = enroll(forwarded.enroll(&s, &t), "evil.example").await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_proof", "{body}");
    let words = body["error"]["message"].as_str().unwrap_or_default();
    assert!(words.contains("https://tessera.test"), "{body}");

    // A proof for the address it was reached by is not the public URL's.
    let by_address = Claim::honest(&victim, "victim", now);
    let resp = enroll(by_address.enroll(&s, &t), "127.0.0.1").await;
    assert_eq!(resp.status(), 401);

    // A proof for the public URL (in any spelling of its origin) is taken.
    let public = Claim {
        server: Some("https://tessera.test/"),
        ..Claim::honest(&victim, "victim", now)
    };
    let resp = enroll(public.enroll(&s, &t), "127.0.0.1").await;
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    s.stop().await;
}

/// Support-code binding takes a proof once, too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_bind_proof_is_used_once() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();
    let keys = DeviceKeys::generate();
    let now = s.clock.now_ms();
    let first = admin
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code;
    let second = admin
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code;
    let claim = Claim::honest(&keys, "helped", now);
    c.bind_support_code(&claim.bind(&s, &first))
        .await
        .expect("the first bind");
    // The same proof with another code (as a proxy that logged it could).
    let replayed = c
        .bind_support_code(&claim.bind(&s, &second))
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Some("invalid_proof"), "{replayed}");
    assert!(replayed.to_string().contains("already used"), "{replayed}");
    s.stop().await;
}
