//! User administration and the role checks on every admin route.

use reqwest::{Method, StatusCode};
use tessera_core::api::{CreateUserRequest, SecretString, UpdateUserRequest};
use tessera_core::roles::Role;

use tessera_testkit::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_lists_changes_role_disables_and_enables_users() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let created = admin
        .create_user(&CreateUserRequest {
            username: "carol".into(),
            role: Role::Viewer,
            password: None,
        })
        .await
        .unwrap();
    let generated = created
        .initial_password
        .expect("server generated a password");
    assert!(generated.expose().len() >= 20);
    let carol = s.login("carol", generated.expose()).await;
    assert_eq!(carol.whoami().await.unwrap().role, Role::Viewer);

    let dup = admin
        .create_user(&CreateUserRequest {
            username: "carol".into(),
            role: Role::Viewer,
            password: None,
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some("username_taken"));

    let by_name = admin
        .update_user(
            "carol",
            &UpdateUserRequest {
                role: Some(Role::Operator),
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(by_name.role, Role::Operator);
    let by_id = admin
        .update_user(
            &by_name.id,
            &UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();
    assert!(by_id.disabled);
    let enabled = admin
        .update_user(
            "carol",
            &UpdateUserRequest {
                role: None,
                disabled: Some(false),
            },
        )
        .await
        .unwrap();
    assert!(!enabled.disabled);

    let names: Vec<String> = admin
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["admin", "carol"]);

    let missing = admin
        .update_user(
            "nobody",
            &UpdateUserRequest {
                role: Some(Role::Viewer),
                disabled: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("not_found"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_cannot_be_demoted_or_disabled() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let demote = admin
        .update_user(
            "admin",
            &UpdateUserRequest {
                role: Some(Role::Viewer),
                disabled: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(demote.code(), Some("last_admin"));
    let selfish = admin
        .update_user(
            "admin",
            &UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(selfish.code(), Some("cannot_disable_self"));
    // With a second admin, the first may be demoted.
    s.user(&admin, "root2", Role::Admin).await;
    admin
        .update_user(
            "admin",
            &UpdateUserRequest {
                role: Some(Role::Operator),
                disabled: None,
            },
        )
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_usernames_are_refused() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for bad in [
        "",
        "Alice",
        "has space",
        "-dash",
        &"x".repeat(65),
        "0191c5a6-1a2b-7c3d-8e4f-a1b2c3d4e5f6",
    ] {
        let err = admin
            .create_user(&CreateUserRequest {
                username: bad.to_owned(),
                role: Role::Viewer,
                password: Some(SecretString::new("long enough password")),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("invalid_username"), "{bad:?}");
    }
    s.stop().await;
}

/// Every route that needs a permission, with a body that would otherwise be
/// valid, so a 403 can only come from the role check.
fn admin_routes() -> Vec<(
    Method,
    &'static str,
    Option<serde_json::Value>,
    &'static str,
)> {
    vec![
        (Method::GET, "/api/v1/users", None, "manage_users"),
        (
            Method::POST,
            "/api/v1/users",
            Some(
                serde_json::json!({"username": "mallory", "role": "admin", "password": "long enough password"}),
            ),
            "manage_users",
        ),
        (
            Method::PATCH,
            "/api/v1/users/admin",
            Some(serde_json::json!({"role": "viewer"})),
            "manage_users",
        ),
        (Method::GET, "/api/v1/audit", None, "audit_read"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_operators_get_403_on_every_admin_route() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for (role, name) in [(Role::Viewer, "vera"), (Role::Operator, "otto")] {
        let password = format!("{name}-password-123");
        admin
            .create_user(&CreateUserRequest {
                username: name.into(),
                role,
                password: Some(SecretString::new(password.clone())),
            })
            .await
            .unwrap();
        let token = s
            .client()
            .login(name, SecretString::new(password))
            .await
            .unwrap()
            .token;
        for (method, path, body, perm) in admin_routes() {
            let mut req = s
                .http()
                .request(method.clone(), s.api(path))
                .bearer_auth(token.expose());
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::FORBIDDEN,
                "{role:?} {method} {path}"
            );
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden");
            assert!(body["error"]["message"].as_str().unwrap().contains(perm));
        }
    }
    // Nothing was changed by the refused calls.
    let users = admin.list_users().await.unwrap();
    assert!(users.iter().all(|u| u.username != "mallory"));
    assert!(users
        .iter()
        .any(|u| u.username == "admin" && u.role == Role::Admin));
    s.stop().await;
}
