//! A headless Chromium under a `chromedriver` of its own, on a free
//! loopback port, for one test.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session; the driver process ends when this is dropped.
pub(crate) struct Browser {
    pub(crate) client: Client,
    _driver: Child,
    _profile: TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's chromium and chromium-driver (bash .ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        _driver: driver,
                        _profile: profile,
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session: {last:?}");
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Types into the input called `name`.
    pub(crate) async fn fill(&self, name: &str, text: &str) {
        self.client
            .find(Locator::Css(&format!("input[name=\"{name}\"]")))
            .await
            .unwrap_or_else(|e| panic!("no input {name}: {e}"))
            .send_keys(text)
            .await
            .expect("type");
    }

    /// Clicks the button whose text is `label`, as a person would.
    pub(crate) async fn click_button(&self, label: &str) {
        self.client
            .find(Locator::XPath(&format!(
                "//button[normalize-space()='{label}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no button {label}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// The visible text of the page; empty while a new page is loading
    /// (between a click and the next page, there may be no body to read).
    pub(crate) async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the page's text contains `needle`.
    pub(crate) async fn wait_for_text(&self, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never said {needle:?}; it says:\n{text}");
    }

    /// Runs `script` in the page (a function body: `return …`).
    pub(crate) async fn exec(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` (a function body) returns true.
    pub(crate) async fn wait_until(&self, what: &str, script: &str) {
        for _ in 0..150 {
            // An error (a page still loading) counts as "not yet".
            let now = self.client.execute(script, vec![]).await;
            if matches!(now, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never true: {what}; the page says:\n{}", self.text().await);
    }

    /// Signs in on the console's own page and waits for the overview.
    pub(crate) async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        self.fill("username", user).await;
        self.fill("password", password).await;
        self.click_button("Sign in").await;
        self.wait_for_text("Sign out").await;
    }

    /// Clicks the link whose text is `label`.
    pub(crate) async fn click_link(&self, label: &str) {
        self.client
            .find(Locator::XPath(&format!("//a[normalize-space()='{label}']")))
            .await
            .unwrap_or_else(|e| panic!("no link {label}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Every address this page loaded, itself included, from the
    /// browser's own record (Resource Timing).
    pub(crate) async fn loaded_urls(&self) -> Vec<String> {
        let v = self
            .exec(
                "return [location.href].concat(performance.getEntriesByType('resource').map(function (e) { return e.name; }));",
            )
            .await;
        serde_json::from_value(v).expect("a list of addresses")
    }

    /// The response header `name` of a GET of `path`, fetched by the page
    /// (with its cookie), and the status.
    pub(crate) async fn fetch_header(&self, path: &str, name: &str) -> (u16, Option<String>) {
        let v = self
            .client
            .execute_async(
                "var done = arguments[arguments.length - 1], url = arguments[0], name = arguments[1];\
                 fetch(url, {credentials: 'same-origin', redirect: 'manual'})\
                   .then(function (r) { done([r.status, r.headers.get(name)]); })\
                   .catch(function (e) { done([0, String(e)]); });",
                vec![json!(path), json!(name)],
            )
            .await
            .expect("fetch");
        let status = v[0].as_u64().unwrap_or(0) as u16;
        (status, v[1].as_str().map(str::to_owned))
    }

    /// Runs `source` in every page this browser opens from now on, before
    /// the page's own scripts (DevTools' `Page.addScriptToEvaluateOnNewDocument`
    /// through chromedriver): how a test makes the browser lack something.
    pub(crate) async fn before_every_page(&self, source: &str) {
        self.client
            .issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({ "source": source }),
            })
            .await
            .expect("chromedriver runs the DevTools command");
    }

    pub(crate) async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A DevTools command, through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: serde_json::Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (reqwest::Method::POST, Some(body.to_string()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
