//! The web console's pages at fleet size: the time from request to the
//! last byte of a devices page (search, sort, paging), a device's page and
//! an audit page, over loopback with the console's cookie session.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::json;

use crate::device;
use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{millis, percentile};

/// Requests per page kind.
const ROUNDS: usize = 30;

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

pub(crate) async fn console_pages(opts: &Opts, n: usize) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new("console-pages", json!({"devices": n, "rounds": ROUNDS}));
    let server = Server::start(opts, &[]).await?;
    let admin = server.admin().await?;
    let devices = device::enroll(&server, &admin, n).await?;
    let (http, cookie) = sign_in(&server).await?;
    let last_page = n.saturating_sub(1) / 50;
    let cases: [(&str, Vec<String>); 4] = [
        (
            "devices page",
            vec![
                "/devices".into(),
                format!("/devices?sort=-name&page={}", last_page / 2),
                format!("/devices?sort=seen&page={last_page}"),
            ],
        ),
        (
            "devices search",
            vec!["/devices?q=bench-1".into(), "/devices?q=bench+99".into()],
        ),
        (
            "device page",
            devices
                .iter()
                .take(5)
                .map(|d| format!("/devices/{}", d.id))
                .collect(),
        ),
        (
            "audit page",
            vec![
                "/audit".into(),
                "/audit?action=device_enrolled".into(),
                format!("/audit?before={}", n / 2),
            ],
        ),
    ];
    for (name, paths) in cases {
        let mut times = time_pages(&http, &cookie, &server.url, &paths).await?;
        r.figure(
            &format!("{name} p50"),
            millis(percentile(&mut times, 50.0)),
            "ms",
        );
        r.figure(
            &format!("{name} p95"),
            millis(percentile(&mut times, 95.0)),
            "ms",
        );
    }
    Ok(r)
}
