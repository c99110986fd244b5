//! Automatic-session setup: sessions of 2, 4 and 8 members with their
//! end-to-end keys.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{millis, percentile};

use super::*;

pub(crate) async fn session_setup(opts: &Opts, sessions: usize) -> anyhow::Result<BenchResult> {
    use tessera_agent::auto::AutoSession;
    use tessera_agent::control::Credentials;
    use tessera_agent::trust::{self, TrustStore};
    use tessera_core::trust::Scope;
    const SIZES: [usize; 3] = [2, 4, 8];
    let mut r = BenchResult::new(
        "session-setup",
        json!({"sizes": SIZES, "sessions_per_size": sessions, "measured": "create → every member keyed"}),
    );
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let dirs = tempfile::tempdir()?;
    let mut states = Vec::new();
    for i in 0..8 {
        let state = tessera_agent::AgentState::new(dirs.path().join(format!("d{i}")));
        let token = admin
            .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                uses: 1,
                ttl_seconds: 600,
                tags: vec![],
            })
            .await?;
        tessera_agent::enroll::with_token(
            &state,
            &tessera_agent::enroll::EnrollOptions {
                server: server.url.clone(),
                tls_fingerprint: None,
                ca_cert: None,
                name: Some(format!("member-{i}")),
            },
            token.secret,
        )
        .await?;
        states.push(state);
    }
    let creds: Vec<Credentials> = states
        .iter()
        .map(Credentials::load)
        .collect::<Result<_, _>>()?;
    let ids: Vec<String> = creds.iter().map(|c| c.device_id.to_string()).collect();
    // The creator (0) and each member verify each other; members grant.
    let pairs = (1..8).map(|m| {
        let (c0, cm) = (&creds[0], &creds[m]);
        let (s0, sm) = (&states[0], &states[m]);
        let (id0, idm) = (ids[0].clone(), ids[m].clone());
        async move {
            let (x0, xm) = tokio::join!(trust::exchange(c0, &idm), trust::exchange(cm, &id0));
            let (x0, xm) = (x0?, xm?);
            if x0.sas != xm.sas {
                bail!("codes differ");
            }
            trust::confirm(s0, c0, &x0, "member").await?;
            trust::confirm(sm, cm, &xm, "creator").await?;
            trust::grant(sm, cm, &id0, &[Scope::Files], Duration::from_secs(3600)).await?;
            Ok::<_, anyhow::Error>(())
        }
    });
    for p in futures_util::future::join_all(pairs).await {
        p.context("setting up trust")?;
    }
    // Members' agents run in this process.
    let mut agents = Vec::new();
    for state in states.iter().skip(1) {
        let state = state.clone();
        let inbox = dirs.path().join(format!("inbox-{}", agents.len()));
        agents.push(tokio::spawn(async move {
            tessera_agent::run(
                &state,
                tessera_agent::RunOptions {
                    inbox: Some(inbox),
                    ..tessera_agent::RunOptions::default()
                },
                std::future::pending::<()>(),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let store = TrustStore::load(&states[0])?;
    for size in SIZES {
        let members: Vec<String> = ids[1..size].to_vec();
        let mut times = Vec::new();
        let mut all_keyed = true;
        for _ in 0..sessions {
            let t0 = Instant::now();
            let s = AutoSession::create(&creds[0], &store, &members, Scope::Files, false).await?;
            times.push(t0.elapsed());
            all_keyed &= s.joined().len() == size - 1;
            s.end().await;
        }
        r.figure(
            &format!("{size} members p50"),
            millis(percentile(&mut times, 50.0)),
            "ms",
        );
        r.figure(
            &format!("{size} members p99"),
            millis(percentile(&mut times, 99.0)),
            "ms",
        );
        r.check(&format!("{size} members: every member keyed"), all_keyed);
    }
    for a in agents {
        a.abort();
    }
    Ok(r)
}
