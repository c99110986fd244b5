//! The web console's pages at fleet size (10,000 devices, 20,000 sessions,
//! a million audit rows): the time from request to the last byte of each
//! page over loopback with the console's cookie session — the devices list
//! (first page, searches, sorts, a deep page), a device's page, the
//! sessions list and the audit log (unfiltered, filtered, a deep page).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::json;

use super::console_seed::{audit_plans, seed, Fleet};
use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{millis, percentile};

/// Requests per case (spread over its pages).
const ROUNDS: usize = 50;

async fn sign_in(server: &Server) -> anyhow::Result<(reqwest::Client, String)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = http
        .post(format!("{}/login", server.url))
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("username", "admin"),
            ("password", server.admin_password.as_str()),
            ("next", "/"),
        ])
        .send()
        .await?;
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow!("no session cookie: {}", resp.status()))?
        .to_owned();
    Ok((http, cookie))
}

/// Times `ROUNDS` GETs of each path in turn (whole body read).
async fn time_pages(
    http: &reqwest::Client,
    cookie: &str,
    base: &str,
    paths: &[String],
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for i in 0..ROUNDS {
        let path = &paths[i % paths.len()];
        let t0 = Instant::now();
        let resp = http
            .get(format!("{base}{path}"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await?;
        let status = resp.status();
        let _ = resp.bytes().await?;
        times.push(t0.elapsed());
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
    }
    Ok(times)
}

/// Server time per console page at fleet size: `fleet` is seeded straight
/// into the database, then each case's pages are read `ROUNDS` times.
pub(crate) async fn console_pages(opts: &Opts, fleet: Fleet) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "console-pages",
        json!({
            "devices": fleet.devices,
            "sessions": fleet.sessions,
            "audit_rows": fleet.audit_rows,
            "rounds": ROUNDS,
        }),
    );
    let server = Server::start(opts, &[]).await?;
    let now = tessera_core::Clock::now(&tessera_core::SystemClock).as_millis();
    let t0 = Instant::now();
    let seeded = seed(&server.database_url(), fleet, now).await?;
    r.figure("seeding", t0.elapsed().as_secs_f64(), "s");
    let (http, cookie) = sign_in(&server).await?;
    let last_page = fleet.devices.div_ceil(50).max(1);
    let ended_pages = (fleet.sessions * 99 / 100).div_ceil(50).clamp(1, 2_000);
    let head = seeded.audit_head;
    let day = |days_ago: i64| {
        tessera_core::Timestamp::from_millis(now - days_ago * 86_400_000).to_rfc3339()
    };
    // An hour's window a week back: about 120 rows.
    let (since, until) = (
        day(7),
        tessera_core::Timestamp::from_millis(now - 7 * 86_400_000 + 3_600_000).to_rfc3339(),
    );
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("devices first page", vec!["/devices".into()]),
        (
            "devices search name",
            vec!["/devices?q=kiosk-012".into(), "/devices?q=host0042".into()],
        ),
        ("devices search tag", vec!["/devices?q=lab".into()]),
        (
            "devices search key prefix",
            vec![format!("/devices?q={}", seeded.key_prefix)],
        ),
        (
            "devices sort last seen",
            vec![
                "/devices?sort=seen".into(),
                "/devices?sort=-seen&page=2".into(),
            ],
        ),
        (
            "devices sort online first",
            vec!["/devices?sort=online".into()],
        ),
        (
            "devices deep page",
            vec![
                format!("/devices?page={last_page}"),
                format!(
                    "/devices?sort=-name&page={}",
                    last_page.saturating_sub(1).max(1)
                ),
            ],
        ),
        (
            "device page",
            vec![format!("/devices/{}", seeded.device_id)],
        ),
        ("sessions first page", vec!["/sessions".into()]),
        (
            "sessions deep page",
            vec![format!("/sessions?ended={ended_pages}")],
        ),
        ("audit first page", vec!["/audit".into()]),
        (
            "audit by action",
            vec![
                "/audit?action=device_revoked".into(),
                "/audit?action=login_succeeded".into(),
            ],
        ),
        ("audit by actor", vec!["/audit?actor=user%3Abench-7".into()]),
        (
            "audit by target",
            vec!["/audit?target=device%3Abench-42".into()],
        ),
        (
            "audit by time",
            vec![format!("/audit?since={since}&until={until}")],
        ),
        (
            "audit since a date",
            vec![format!("/audit?since={}", day(180))],
        ),
        (
            "audit deep page",
            vec![
                format!("/audit?before={}", head - head / 2),
                format!("/audit?action=session_created&before={}", head / 10),
            ],
        ),
    ];
    for (name, plan, indexed) in audit_plans(&server.database_url(), head, now).await? {
        eprintln!("plan of {name}: {plan}");
        r.check(&format!("{name} reads through an index"), indexed);
    }
    for (name, paths) in cases {
        let mut times = time_pages(&http, &cookie, &server.url, &paths).await?;
        r.figure(
            &format!("{name} p50"),
            millis(percentile(&mut times, 50.0)),
            "ms",
        );
        r.figure(
            &format!("{name} p99"),
            millis(percentile(&mut times, 99.0)),
            "ms",
        );
    }
    Ok(r)
}
