//! Hostile bodies on every form route: the OAuth device flow
//! (`/oauth/device_authorization`, `/oauth/token`) and the `/device` page's
//! forms. Missing, repeated, NUL-bearing, non-UTF-8, oversized and mistyped
//! fields, and bodies that are not forms at all: never a 5xx, the OAuth
//! routes answer with RFC 6749's error object, the pages with an HTML page,
//! and nothing is created. Runs on both backends (NUL bytes reach
//! PostgreSQL, which refuses them in text).

use std::time::Duration;

use serde_json::Value;
use tessera_core::identity::DeviceKeys;
use tessera_testkit::TestServer;

/// A form as ordered `(field, raw bytes)` pairs, percent-encoded on send.
type Form = Vec<(&'static str, Vec<u8>)>;

fn encode(form: &Form) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, v)) in form.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        for &b in v {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
    }
    out
}

struct Probe {
    name: String,
    content_type: &'static str,
    body: Vec<u8>,
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Every probe built from one well-formed `base` form.
fn probes(base: &Form) -> Vec<Probe> {
    let mut out = vec![
        Probe {
            name: "empty body".into(),
            content_type: FORM,
            body: vec![],
        },
        Probe {
            name: "separators only".into(),
            content_type: FORM,
            body: b"=&=&&==".to_vec(),
        },
        Probe {
            name: "raw binary".into(),
            content_type: FORM,
            body: vec![0xff, 0x00, 0xfe, 0x80, b'&', b'='],
        },
        Probe {
            name: "bad percent escapes".into(),
            content_type: FORM,
            body: b"client_id=%zz%&name=%".to_vec(),
        },
        Probe {
            name: "json instead of a form".into(),
            content_type: "application/json",
            body: b"{\"client_id\":\"tessera-agent\"}".to_vec(),
        },
        Probe {
            name: "form sent as text/plain".into(),
            content_type: "text/plain",
            body: encode(base),
        },
        Probe {
            name: "over the body limit".into(),
            content_type: FORM,
            body: format!("name={}", "A".repeat(tessera_server::http::BODY_LIMIT + 1)).into_bytes(),
        },
    ];
    for (i, (field, _)) in base.iter().enumerate() {
        let with = |v: Vec<u8>| {
            let mut f = base.clone();
            f[i].1 = v;
            encode(&f)
        };
        let mut missing = base.clone();
        missing.remove(i);
        let mut twice = base.clone();
        twice.push(base[i].clone());
        for (what, body) in [
            ("missing", encode(&missing)),
            ("repeated", encode(&twice)),
            ("NUL inside", with(b"a\0b".to_vec())),
            ("only NUL", with(vec![0])),
            ("not UTF-8", with(vec![0xff, 0xfe, 0xc3])),
            (
                "terminal escapes",
                with(b"\x1b[2J\x1b]0;owned\x07".to_vec()),
            ),
            (
                "right-to-left override",
                with("\u{202e}gnp.exe".as_bytes().to_vec()),
            ),
            ("60 KiB", with(vec![b'A'; 60 * 1024])),
            ("empty", with(vec![])),
            (
                "a number where text goes",
                with(b"-9223372036854775809".to_vec()),
            ),
        ] {
            out.push(Probe {
                name: format!("{field}: {what}"),
                content_type: FORM,
                body,
            });
        }
    }
    out
}

fn device_authorization_form(s: &TestServer, keys: &DeviceKeys) -> Form {
    s.pairing_form(keys, ("form-box", "form.lan", "linux"))
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

/// What the route must answer with when it refuses.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// RFC 6749 §5.2: `{"error": "...", "error_description": "..."}`.
    OAuth,
    /// An HTML page saying what went wrong.
    Page,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forms_on_the_oauth_and_device_page_routes_get_a_4xx_and_change_nothing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let http = s.http();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // A pending pairing whose device code the token probes use.
    let keys = DeviceKeys::generate();
    let form = device_authorization_form(&s, &keys);
    let auth: Value = http
        .post(s.api("/oauth/device_authorization"))
        .header("content-type", FORM)
        .body(encode(&form))
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    let device_code = auth["device_code"]
        .as_str()
        .expect("device_code")
        .to_owned();
    let user_code = auth["user_code"].as_str().expect("user_code").to_owned();

    // Signed in on the page, for the approval and sign-out probes.
    let pw = s.admin_password.clone().expect("admin password");
    let signed = no_redirects
        .post(s.api("/device/login"))
        .form(&[
            ("username", "admin"),
            ("password", pw.as_str()),
            ("user_code", ""),
        ])
        .send()
        .await
        .expect("sign in");
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let page = no_redirects
        .get(s.api("/device"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    let csrf = page[at..at + 64].to_owned();

    let fresh = DeviceKeys::generate();
    let routes: Vec<(&str, Answer, Form)> = vec![
        (
            "/oauth/device_authorization",
            Answer::OAuth,
            device_authorization_form(&s, &fresh),
        ),
        (
            "/oauth/token",
            Answer::OAuth,
            vec![
                (
                    "grant_type",
                    b"urn:ietf:params:oauth:grant-type:device_code".to_vec(),
                ),
                ("device_code", device_code.into_bytes()),
                ("client_id", b"tessera-agent".to_vec()),
            ],
        ),
        (
            "/device/login",
            Answer::Page,
            vec![
                ("username", b"admin".to_vec()),
                ("password", b"not the password".to_vec()),
                ("user_code", user_code.clone().into_bytes()),
            ],
        ),
        (
            "/device",
            Answer::Page,
            vec![
                ("csrf", csrf.clone().into_bytes()),
                ("user_code", b"WXYZ-WXYZ".to_vec()),
                ("decision", b"deny".to_vec()),
            ],
        ),
    ];

    let mut failures = Vec::new();
    let mut sent = 0;
    for (path, answer, base) in &routes {
        for p in probes(base) {
            // Rate-limited routes get their allowance back on the server's
            // (manual) clock, so every probe reaches the handler.
            s.clock.advance(Duration::from_secs(6));
            sent += 1;
            let what = format!("POST {path} [{}]", p.name);
            let resp = match no_redirects
                .post(s.api(path))
                .header("content-type", p.content_type)
                .header("cookie", &cookie)
                .body(p.body.clone())
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) if p.body.len() > 16 * 1024 && e.is_request() => continue,
                Err(e) => {
                    failures.push(format!("{what}: {e}"));
                    continue;
                }
            };
            let status = resp.status();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_client_error() {
                failures.push(format!("{what} → {status}, expected a 4xx: {text:.200}"));
                continue;
            }
            match answer {
                Answer::OAuth => {
                    let error = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|b| b["error"].as_str().map(str::to_owned));
                    if error.is_none_or(|e| e.is_empty()) {
                        failures.push(format!(
                            "{what} → {status} without an OAuth error object: {text:.200}"
                        ));
                    }
                }
                Answer::Page => {
                    if !content_type.starts_with("text/html") {
                        failures.push(format!(
                            "{what} → {status} as {content_type:?}, not a page: {text:.200}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} probes failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(sent > 150, "only {sent} probes");

    // Nothing was created or decided: the one pairing above is the only one
    // ever requested, and nothing was approved, denied or enrolled.
    for (action, expected) in [
        ("pairing_requested", 1),
        ("pairing_approved", 0),
        ("pairing_denied", 0),
        ("device_enrolled", 0),
    ] {
        let rows = crate::trusted::audit(&admin, action).await;
        assert_eq!(rows.len(), expected, "{action}: {rows:?}");
    }
    let ok = http.get(s.api("/healthz")).send().await.expect("healthz");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    s.stop().await;
}
