//! The mistakes a new user makes following the README (issue 17), made
//! with the real binary against a real server: each error names what is
//! wrong and what to type instead.

use std::process::Stdio;
use std::time::Duration;

use tessera_core::api::SecretString;
use tessera_server::TlsMode;

use tessera_testkit::{ctl, tessera_bin, Options, TestServer};

async fn login(server: &str, extra: &[&str]) -> (i32, String) {
    let cfg = tempfile::tempdir().unwrap();
    let mut args = vec!["login", "--server", server, "--password-stdin"];
    args.extend_from_slice(extra);
    let (code, out, err) = ctl(cfg.path(), &args, Some("not the password\n")).await;
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_scheme_is_no_url_and_the_error_says_which_one_was_meant() {
    let s = TestServer::start().await;
    let bare = s.addr.to_string();
    let (code, err) = login(&bare, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "`{bare}` is not a URL: did you mean `http://{bare}`?"
        )),
        "{err}"
    );
    assert!(!err.contains("relative URL without a base"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_server_says_to_use_http() {
    let s = TestServer::start().await;
    let (code, err) = login(&format!("https://{}", s.addr), &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "the server at https://{} answered plain HTTP",
            s.addr
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("use http://{} instead", s.addr)),
        "{err}"
    );
    assert!(!err.contains("InvalidContentType"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_without_a_pin_says_to_pass_the_fingerprint() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.tls = TlsMode::SelfSigned)),
        ..Options::default()
    })
    .await;
    assert!(s.url.starts_with("https://"));
    let (code, err) = login(&s.url, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("certificate at https://127.0.0.1")
            && err.contains("is not signed by a known authority"),
        "{err}"
    );
    assert!(
        err.contains("pass --tls-fingerprint <the SHA-256 the server printed at start>"),
        "{err}"
    );
    assert!(!err.contains("UnknownIssuer"), "{err}");

    // A wrong pin is named too.
    let (code, err) = login(&s.url, &["--tls-fingerprint", &"00".repeat(32)]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("does not match the pinned fingerprint"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_login_says_how_long_to_wait() {
    let s = TestServer::start().await;
    let c = s.client();
    for _ in 0..10 {
        let _ = c.login("admin", SecretString::new("wrong password!")).await;
    }
    s.clock.advance(Duration::from_secs(60));
    let cfg = tempfile::tempdir().unwrap();
    let pw = s.admin_password.clone().unwrap();
    let (code, out, err) = ctl(
        cfg.path(),
        &["login", "--server", &s.url, "--password-stdin"],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("locked_out"), "{err}");
    assert!(err.contains("try again in 14 minutes"), "{err}");
    // The server's own words say it too, and until when.
    assert!(err.contains("locked out for 14 minutes after"), "{err}");
    assert!(err.contains("; try again after "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enroll_shows_the_servers_reason() {
    // (A second enroll while a pairing is pending now replaces it: see
    // enroll_retry.) A device whose clock is ten minutes off is refused,
    // and the CLI says why, not just `invalid_request`.
    let s = TestServer::start().await;
    s.clock.advance(Duration::from_secs(600));
    let state = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(tessera_bin())
            .args(["agent", "enroll", "--server", &s.url, "--state-dir"])
            .arg(state.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "`issued_at` is more than five minutes from the server's clock (invalid_request)"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tokio::process::Command::new(tessera_bin())
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("tessera"), "{shell}: {script}");
        assert!(script.contains("enroll-token"), "{shell}: no subcommand");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_pages_are_printed_or_written_one_per_command() {
    let out = tokio::process::Command::new(tessera_bin())
        .arg("man")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH tessera"),
        "{page}"
    );
    assert!(page.contains("ctl"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(tessera_bin())
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let login = std::fs::read_to_string(dir.path().join("tessera-ctl-login.1")).unwrap();
    assert!(login.contains("tls\\-fingerprint"), "{login}");
    assert!(dir.path().join("tessera.1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_to_an_unpinned_self_signed_server_names_the_certificate_problem() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.tls = TlsMode::SelfSigned)),
        ..Options::default()
    })
    .await;
    let unpinned =
        tessera_client::ApiClient::new(&s.url, &tessera_client::TlsTrust::PublicRoots).unwrap();
    let err = tessera_client::viewer::connect(&unpinned, "any", &SecretString::new("t"))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, tessera_client::ClientError::UnknownIssuer { ref url } if url == &s.url),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_enroll_says_how_long_to_wait() {
    let s = TestServer::start().await;
    // The pairing start allows a burst of ten per address.
    for _ in 0..10 {
        s.http()
            .post(s.api("/oauth/device_authorization"))
            .form(&[("client_id", "tessera-agent")])
            .send()
            .await
            .unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(tessera_bin())
        .args(["agent", "enroll", "--server", &s.url, "--state-dir"])
        .arg(state.path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("rate_limited, HTTP 429"), "{err}");
    assert!(err.contains("try again in 6 seconds"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_tls_server_says_to_use_https() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.tls = TlsMode::SelfSigned)),
        ..Options::default()
    })
    .await;
    let (code, err) = login(&format!("http://{}", s.addr), &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "the server at http://{} did not answer in plain HTTP",
            s.addr
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("if it uses TLS, use https://{} instead", s.addr)),
        "{err}"
    );
    assert!(!err.contains("invalid HTTP version"), "{err}");
}
