//! No password, token or other secret in logs, audit rows or error bodies.

use tessera_client::AuditQuery;
use tessera_core::api::{ChangePasswordRequest, CreateUserRequest, SecretString};
use tessera_core::roles::Role;

use tessera_testkit::{ServerProcess, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_appears_in_logs_or_audit_rows() {
    let db = TestDb::new().await;
    // The most verbose logging the server has.
    let p = ServerProcess::spawn(&db.url, "trace", &[]).await;
    let admin_pw = p
        .bootstrap_password()
        .expect("bootstrap password on stdout");
    let c = p.client();
    let mut secrets: Vec<String> = vec![admin_pw.clone()];

    let wrong = "Wrong-Password-Guess-1";
    secrets.push(wrong.to_owned());
    let _ = c.login("admin", SecretString::new(wrong)).await;
    // A password typed into the username box must not be kept either.
    let typed_in_name = "Hunter2-In-The-Username";
    secrets.push(typed_in_name.to_owned());
    let _ = c.login(typed_in_name, SecretString::new(wrong)).await;

    let login = c
        .login("admin", SecretString::new(admin_pw.clone()))
        .await
        .unwrap();
    secrets.push(login.token.expose().to_owned());
    let admin = c.clone().with_token(login.token.clone());
    let made = admin
        .create_user(&CreateUserRequest {
            username: "erin".into(),
            role: Role::Operator,
            password: None,
        })
        .await
        .unwrap();
    secrets.push(made.initial_password.unwrap().expose().to_owned());
    let chosen = "Chosen-Password-For-Frank";
    secrets.push(chosen.to_owned());
    admin
        .create_user(&CreateUserRequest {
            username: "frank".into(),
            role: Role::Viewer,
            password: Some(SecretString::new(chosen)),
        })
        .await
        .unwrap();
    let new_pw = "New-Admin-Passphrase-2";
    secrets.push(new_pw.to_owned());
    admin
        .change_password(&ChangePasswordRequest {
            current_password: SecretString::new(admin_pw.clone()),
            new_password: SecretString::new(new_pw),
        })
        .await
        .unwrap();
    // A request whose JSON carries a password of the wrong type.
    let _ = tessera_testkit::http_client()
        .post(format!("{}/api/v1/auth/login", p.url))
        .json(&serde_json::json!({"username": "admin", "password": 987654321987u64}))
        .send()
        .await
        .unwrap();
    secrets.push("987654321987".to_owned());
    // Device-plane secrets: an enrollment token, the device key it yields,
    // a pairing's device code, and a rotated key.
    let token = admin
        .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
            uses: 1,
            ttl_seconds: 600,
            tags: vec![],
        })
        .await
        .unwrap();
    secrets.push(token.secret.expose().to_owned());
    let dir = tempfile::tempdir().unwrap();
    let agent_state = tessera_agent::AgentState::new(dir.path().join("a"));
    let opts = tessera_agent::enroll::EnrollOptions {
        server: p.url.clone(),
        tls_fingerprint: None,
        ca_cert: None,
        name: Some("leaky".into()),
    };
    tessera_agent::enroll::with_token(&agent_state, &opts, token.secret.clone())
        .await
        .unwrap();
    secrets.push(agent_state.key().unwrap().expose().to_owned());
    tessera_agent::control::rotate_device_key(&agent_state)
        .await
        .unwrap();
    secrets.push(agent_state.key().unwrap().expose().to_owned());
    let keys = tessera_core::identity::DeviceKeys::generate();
    let proof = tessera_agent::enroll::possession_proof(
        &keys,
        ("p", "p", "p"),
        tessera_core::identity::ProofPurpose::Pairing,
        &p.url,
    );
    let doc = keys.document().encode();
    let issued_at = proof.issued_at.to_string();
    let auth = c
        .device_authorization(&[
            ("client_id", "tessera-agent"),
            ("identity", &doc),
            ("name", "p"),
            ("hostname", "p"),
            ("os", "p"),
            ("issued_at", &issued_at),
            ("proof", &proof.proof),
            ("audience", &proof.audience),
        ])
        .await
        .unwrap();
    secrets.push(auth.device_code.expose().to_owned());
    let _ = c
        .device_token(auth.device_code.expose(), "tessera-agent")
        .await;
    // A support code, and a viewer token for the session it opens.
    let support = admin
        .create_support_code(&tessera_core::api::CreateSupportCodeRequest::default())
        .await
        .unwrap();
    let shown = support.code.expose().to_owned();
    secrets.push(shown.clone());
    secrets.push(shown.replace('-', ""));
    let (_creds, bound) =
        tessera_agent::support::bind(&p.url, &tessera_client::TlsTrust::PublicRoots, &shown, None)
            .await
            .unwrap();
    secrets.push(bound.device_key.expose().to_owned());
    // A viewer token, minted for a managed session on the enrolled device.
    let running = {
        let st = agent_state.clone();
        tokio::spawn(async move {
            let opts = tessera_agent::RunOptions {
                shell: Some("/bin/sh".into()),
                ..Default::default()
            };
            let _ = tessera_agent::run(&st, opts, std::future::pending()).await;
        })
    };
    assert!(
        tessera_testkit::eventually(std::time::Duration::from_secs(10), || async {
            admin
                .list_devices()
                .await
                .unwrap()
                .iter()
                .any(|d| d.name == "leaky" && d.online)
        })
        .await
    );
    let session = admin
        .create_session(&tessera_core::api::CreateSessionRequest {
            device: "leaky".into(),
            access: None,
            channel: None,
        })
        .await
        .unwrap();
    let viewer = admin.viewer_token(&session.id).await.unwrap();
    secrets.push(viewer.token.expose().to_owned());
    admin.end_session(&session.id).await.unwrap();
    running.abort();
    admin.logout().await.unwrap();

    let relogin = c.login("admin", SecretString::new(new_pw)).await.unwrap();
    let admin = c.clone().with_token(relogin.token.clone());
    let audit =
        serde_json::to_string(&admin.audit_page(&AuditQuery::default()).await.unwrap()).unwrap();
    let stderr = p.stderr();
    assert!(stderr.contains("finished"), "trace logs were captured");
    let stdout = p.stdout_head.clone();
    assert!(p.terminate().await.success());

    for s in &secrets {
        assert!(
            !stderr.contains(s.as_str()),
            "secret in the server log: {s}"
        );
        assert!(!audit.contains(s.as_str()), "secret in the audit log: {s}");
    }
    // The bootstrap password is on the console banner exactly once, and
    // nowhere else.
    assert_eq!(stdout.matches(admin_pw.as_str()).count(), 1);
    assert!(!stderr.contains(&admin_pw));
}
