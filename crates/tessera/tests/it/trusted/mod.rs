//! Trusted devices: SAS-verified pins, automatic-join grants, automatic
//! end-to-end sessions and file transfer, with real agent processes on
//! separate state directories.
//!
//! Here: what the tests share (trust, grants, automatic sessions, audit);
//! the tests are in `grants`, `relay` and `transfer`.

mod grants;
mod interrupted;
mod order;
mod relay;
mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tessera_agent::auto::AutoSession;
use tessera_agent::control::Credentials;
use tessera_agent::trust::{self, TrustStore};
use tessera_client::{ApiClient, AuditQuery};
use tessera_core::api::AuditEntryView;
use tessera_core::trust::Scope;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use tessera_testkit::{tessera_bin, TestDevice};

pub(crate) const DAY: Duration = Duration::from_secs(86_400);

pub(crate) fn creds(d: &TestDevice) -> Credentials {
    Credentials::load(&d.state).expect("credentials")
}

/// Both devices verify each other through the library (the SAS compared
/// by the test, as a person would).
pub(crate) async fn trust_both(a: &TestDevice, b: &TestDevice) {
    let (ca, cb) = (creds(a), creds(b));
    let (xa, xb) = tokio::join!(
        trust::exchange(&ca, &b.device_id),
        trust::exchange(&cb, &a.device_id)
    );
    let (xa, xb) = (xa.expect("exchange a"), xb.expect("exchange b"));
    assert_eq!(xa.sas, xb.sas, "both sides show the same code");
    trust::confirm(&a.state, &ca, &xa, "peer")
        .await
        .expect("confirm a");
    let att = trust::confirm(&b.state, &cb, &xb, "peer")
        .await
        .expect("confirm b");
    assert!(att.mutual);
}

/// `granter` lets `grantee` auto-join it.
pub(crate) async fn grant(
    granter: &TestDevice,
    grantee: &TestDevice,
    scopes: &[Scope],
    ttl: Duration,
) -> tessera_core::api::GrantView {
    trust::grant(
        &granter.state,
        &creds(granter),
        &grantee.device_id,
        scopes,
        ttl,
    )
    .await
    .expect("grant")
}

pub(crate) async fn create(
    a: &TestDevice,
    members: &[&str],
    scope: Scope,
    all: bool,
) -> AutoSession {
    let store = TrustStore::load(&a.state).expect("trust store");
    let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    AutoSession::create(&creds(a), &store, &members, scope, all)
        .await
        .expect("session request answered")
}

fn outcomes(s: &AutoSession) -> HashMap<String, String> {
    s.outcomes
        .iter()
        .map(|o| (o.device_id.clone(), o.outcome.clone()))
        .collect()
}

pub(crate) async fn audit(admin: &ApiClient, action: &str) -> Vec<AuditEntryView> {
    admin
        .audit_page(&AuditQuery {
            action: Some(action.to_owned()),
            limit: Some(500),
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .entries
}

/// Every file under `dir`, relative path → contents.
fn files_under(dir: &Path) -> HashMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = HashMap::new();
    walk(dir, dir, &mut out);
    out
}

fn inbox(d: &TestDevice) -> PathBuf {
    d.inbox()
}

/// A `tessera trust add` process, answered on its standard input.
struct TrustAdd {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl TrustAdd {
    fn spawn(me: &TestDevice, peer: &TestDevice) -> TrustAdd {
        let mut child = tokio::process::Command::new(tessera_bin())
            .args(["trust", "add", &peer.device_id])
            .env("TESSERA_AGENT_STATE_DIR", me.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tessera trust add");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        TrustAdd { child, lines }
    }

    /// The code it shows (`123-456`).
    async fn sas(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let t = line.trim();
                if t.len() == 7
                    && t.as_bytes()[3] == b'-'
                    && t.replace('-', "").parse::<u32>().is_ok()
                {
                    return t.to_owned();
                }
            }
            panic!("trust add ended without showing a code")
        })
        .await
        .expect("a code within 30 s")
    }

    async fn answer(mut self, text: &str) -> (i32, String) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
        drop(stdin);
        let mut rest = String::new();
        while let Ok(Some(l)) = self.lines.next_line().await {
            rest.push_str(&l);
            rest.push('\n');
        }
        let status = self.child.wait().await.unwrap();
        (status.code().unwrap_or(-1), rest)
    }
}

/// Both devices run `tessera trust add` for each other; the person checks
/// the codes match and says yes on both.
async fn trust_cli(a: &TestDevice, b: &TestDevice) {
    let (mut pa, mut pb) = (TrustAdd::spawn(a, b), TrustAdd::spawn(b, a));
    let (sa, sb) = tokio::join!(pa.sas(), pb.sas());
    assert_eq!(sa, sb, "both screens show the same code");
    let ((ca, oa), (cb, ob)) = tokio::join!(pa.answer("yes\n"), pb.answer("yes\n"));
    assert_eq!((ca, cb), (0, 0), "{oa}\n{ob}");
    assert!(
        oa.contains("Trusted") && ob.contains("Trusted"),
        "{oa}\n{ob}"
    );
}
