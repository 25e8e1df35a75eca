//! Swagger UI (`/docs`) in a real headless Chromium, driven through
//! chromedriver on loopback: the page renders, lists the plugin's and the
//! host's operations, "Try it out" → "Execute" reads the secrets redacted,
//! a `PUT` sent from the page shows in the following `GET`, and a plugin
//! dropped into the running host's folder is listed after a reload.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/setup-browser.sh`).
//! Without them the test prints `SKIPPED: ...` and passes, except in CI
//! (`CI=true`), where it fails. Screenshots go to `target/e2e-screenshots/`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::{HostProcess, HostSpec, artifacts};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

/// A long secret in the config file: GET must show only `sk-****...wxyz`.
const CONFIG_SECRET: &str = "sk-browser-CANARY-config-0123-wxyz";
/// The secret the page writes with PUT.
const PAGE_SECRET: &str = "hello-browser-CANARY-page-5678";

/// How long any one step in the page may take.
const STEP: Duration = Duration::from_secs(30);

pub(crate) fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `target/e2e-screenshots/`, next to the profile folder of this test binary.
pub(crate) fn screenshots_root() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("unexpected test executable location")?;
    let dir = target.join("e2e-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `target/e2e-screenshots/`, emptied of this test's earlier screenshots
/// (only the files directly in it: other browser tests keep theirs in
/// folders of their own and run at the same time).
fn screenshot_dir() -> Result<PathBuf> {
    let dir = screenshots_root()?;
    // Screenshots of an earlier run must not pass for this one's.
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "png") {
            std::fs::remove_file(path)?;
        }
    }
    Ok(dir)
}

/// chromedriver on a loopback port, in its own process group so that it and
/// the browser it starts are stopped together.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub(crate) async fn start(binary: &Path, log: &Path) -> Result<Self> {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut cmd = Command::new(binary);
            cmd.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd.spawn().context("starting chromedriver")?;
            let driver = Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
            match driver.wait_ready().await {
                Ok(()) => return Ok(driver),
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        bail!("chromedriver did not start: {last_error}")
    }

    /// chromedriver's base URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    async fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        let client = e2e_tests::client();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(resp) = client.get(format!("{}/status", self.url)).send().await
                && let Ok(body) = resp.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no ready status from {}", self.url)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it left behind.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn swagger_ui_lists_executes_and_writes_secrets_in_a_real_browser() -> Result<()> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = on_path(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        if in_ci() {
            bail!("chromium or chromedriver is not installed; CI runs .ci/setup-browser.sh first");
        }
        eprintln!(
            "SKIPPED: swagger_ui browser test: chromium and chromedriver are not on PATH \
             (install them with .ci/setup-browser.sh)"
        );
        return Ok(());
    };
    let a = artifacts()?;
    let spec = HostSpec::with_secrets()?
        .plugin(&a.hello, "libhello_plugin.so")
        .config(&format!("[env]\nOPENAI_API_KEY = \"{CONFIG_SECRET}\"\n"));
    let h = HostProcess::start(spec)?;
    let shots = screenshot_dir()?;
    let profile = tempfile::tempdir()?;
    let driver = Driver::start(&chromedriver, &shots.join("chromedriver.log")).await?;

    let client = open_session(&driver, &chromium, profile.path(), (1280, 1800)).await?;

    let outcome = drive(&client, &h, &shots).await;
    if outcome.is_err() {
        let _ = save_screenshot(&client, &shots.join("swagger-ui-failure.png")).await;
    }
    let _ = client.close().await;
    drop(driver);
    outcome?;
    assert!(!h.log().contains("CANARY"), "no secret in the host's log");
    Ok(())
}

/// A headless Chromium session through `driver`, with its profile in
/// `profile` and a window of `size` (width, height) CSS pixels.
pub(crate) async fn open_session(
    driver: &Driver,
    chromium: &Path,
    profile: &Path,
    size: (u32, u32),
) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
                format!("--window-size={},{}", size.0, size.1),
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url),
    )
    .await
    .context("starting the browser timed out")?
    .context("starting a browser session")
}

async fn drive(client: &Client, h: &HostProcess, shots: &Path) -> Result<()> {
    client.goto(&h.url("/docs")).await?;
    let title = wait_for(client, ".swagger-ui .info .title").await?;
    let title = title.text().await?;
    ensure!(title.contains("Milady demo host"), "page title: {title}");

    // Every operation of the host and of both plugins is listed.
    wait_for(client, ".opblock").await?;
    let mut listed = Vec::new();
    for op in client.find_all(Locator::Css(".opblock")).await? {
        let method = op
            .find(Locator::Css(".opblock-summary-method"))
            .await?
            .text()
            .await?;
        let path = op
            .find(Locator::Css(".opblock-summary-path"))
            .await?
            .attr("data-path")
            .await?
            .unwrap_or_default();
        listed.push(format!("{method} {path}"));
    }
    for expected in [
        "GET /api/secrets",
        "PUT /api/secrets",
        "GET /api/plugins",
        "PUT /api/plugins/{id}",
        "GET /api/health",
        "GET /api/hello",
    ] {
        ensure!(
            listed.iter().any(|l| l == expected),
            "{expected} is listed in {listed:?}"
        );
    }
    save_screenshot(client, &shots.join("swagger-ui-1-operations.png")).await?;

    // GET /api/secrets: Try it out → Execute → 200, values redacted.
    let get_op = operation(client, "get", "/api/secrets").await?;
    open_and_try(client, &get_op).await?;
    click(&get_op, ".execute").await?;
    let first = response(&get_op, "200", |_| true).await?;
    let key = &first["secrets"]["OPENAI_API_KEY"];
    ensure!(key["set"] == true, "OPENAI_API_KEY set: {key}");
    ensure!(key["value"] == "sk-****...wxyz", "redacted: {key}");
    ensure!(first["secrets"]["HELLO_API_KEY"]["set"] == false);
    ensure!(
        first["secrets"]["HELLO_API_KEY"]["pluginId"] == "@example/plugin-hello",
        "the example plugin's secret is listed: {}",
        first["secrets"]["HELLO_API_KEY"]
    );
    show_in_response(client, &get_op, "OPENAI_API_KEY").await?;
    save_screenshot(client, &shots.join("swagger-ui-2-get-secrets.png")).await?;

    // PUT /api/secrets from the page's own form.
    let put_op = operation(client, "put", "/api/secrets").await?;
    open_and_try(client, &put_op).await?;
    let body = put_op
        .find(Locator::Css("textarea.body-param__text"))
        .await
        .context("the PUT form has a body editor")?;
    // Select all, delete, type: real key events, so the page's own state
    // (not just the DOM) holds the new body.
    body.click().await?;
    body.send_keys("\u{E009}a").await?;
    body.send_keys("\u{E017}").await?;
    body.send_keys(&format!(
        r#"{{"secrets": {{"HELLO_API_KEY": "{PAGE_SECRET}"}}}}"#
    ))
    .await?;
    click(&put_op, ".execute").await?;
    let put = response(&put_op, "200", |_| true).await?;
    ensure!(put["ok"] == true, "PUT answered {put}");
    show_in_response(client, &put_op, "ok").await?;
    save_screenshot(client, &shots.join("swagger-ui-3-put-secrets.png")).await?;

    // The following GET, executed again from the page, shows the change.
    scroll_to(client, &get_op).await?;
    click(&get_op, ".execute").await?;
    let after = response(&get_op, "200", |v| {
        v["secrets"]["HELLO_API_KEY"]["set"] == true
    })
    .await?;
    let hello = &after["secrets"]["HELLO_API_KEY"];
    ensure!(hello["value"] == "hel****...5678", "redacted: {hello}");
    ensure!(hello["source"] == "api", "written through the API: {hello}");
    show_in_response(client, &get_op, "HELLO_API_KEY").await?;
    save_screenshot(client, &shots.join("swagger-ui-4-get-after-put.png")).await?;

    let source = client.source().await?;
    ensure!(
        !source.contains("CANARY-config"),
        "the config secret never reaches the page"
    );
    // The host holds the value the page sent (read back through the plugin
    // that uses it, which reports only whether it is set).
    let (status, greeting) = crate::get(h, "/api/hello").await?;
    ensure!(status == 200 && greeting["apiKeySet"] == true, "{greeting}");

    // A plugin dropped into the running host's folder: once it answers,
    // a reload of the page lists its operation.
    let numbered = std::fs::read(&artifacts()?.numbered)?;
    e2e_tests::drop_library(
        &h.dir.path().join("plugins"),
        "libnumbered_browser.so",
        &e2e_tests::numbered_copy(&numbered, 7)?,
    )?;
    let added = "/api/numbered-SLOT0007";
    let start = Instant::now();
    loop {
        let status = e2e_tests::client().get(h.url(added)).send().await?.status();
        if status == 200 {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "the dropped plugin did not answer within 10 s (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.refresh().await?;
    wait_for(client, ".opblock").await?;
    let op = operation(client, "get", added)
        .await
        .context("the live-added plugin's operation is listed after a reload")?;
    scroll_to(client, &op).await?;
    save_screenshot(client, &shots.join("swagger-ui-5-live-added-plugin.png")).await?;
    Ok(())
}

/// Scrolls the page to an operation's live response, and the response body
/// to the line naming `key`, so a screenshot shows it.
async fn show_in_response(client: &Client, op: &Element, key: &str) -> Result<()> {
    let pre = op
        .find(Locator::Css(".live-responses-table .highlight-code pre"))
        .await?;
    client
        .execute(
            r#"const [pre, key] = arguments;
               pre.closest('.live-responses-table').scrollIntoView({block: 'start'});
               window.scrollBy(0, -40);
               const lines = pre.textContent.split('\n');
               const i = lines.findIndex(l => l.includes('"' + key + '"'));
               const box = pre.scrollHeight > pre.clientHeight ? pre : pre.parentElement;
               box.scrollTop = Math.max(0, i * (box.scrollHeight / lines.length) - 8);"#,
            vec![serde_json::to_value(&pre)?, json!(key)],
        )
        .await?;
    Ok(())
}

pub(crate) async fn wait_for(client: &Client, css: &str) -> Result<Element> {
    client
        .wait()
        .at_most(STEP)
        .every(Duration::from_millis(100))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waiting for `{css}`"))
}

/// The operation block of `method path`.
async fn operation(client: &Client, method: &str, path: &str) -> Result<Element> {
    let xpath = format!(
        "//div[contains(concat(' ', @class, ' '), ' opblock-{method} ')][.//*[@data-path='{path}']]"
    );
    client
        .find(Locator::XPath(&xpath))
        .await
        .with_context(|| format!("the {method} {path} operation"))
}

async fn scroll_to(client: &Client, element: &Element) -> Result<()> {
    client
        .execute(
            "arguments[0].scrollIntoView({block: 'start'});",
            vec![serde_json::to_value(element)?],
        )
        .await?;
    Ok(())
}

/// Expands an operation and presses "Try it out".
async fn open_and_try(client: &Client, op: &Element) -> Result<()> {
    scroll_to(client, op).await?;
    if op.find(Locator::Css(".try-out__btn")).await.is_err() {
        click(op, ".opblock-summary").await?;
    }
    click(op, ".try-out__btn").await?;
    find_within(op, ".execute").await?;
    Ok(())
}

async fn find_within(parent: &Element, css: &str) -> Result<Element> {
    let started = Instant::now();
    loop {
        match parent.find(Locator::Css(css)).await {
            Ok(e) => return Ok(e),
            Err(e) if started.elapsed() > STEP => {
                return Err(e).with_context(|| format!("waiting for `{css}`"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn click(parent: &Element, css: &str) -> Result<()> {
    find_within(parent, css)
        .await?
        .click()
        .await
        .with_context(|| format!("clicking `{css}`"))
}

/// Waits until the operation shows a live response with `status` whose JSON
/// body satisfies `accept`, and returns that body.
async fn response(op: &Element, status: &str, accept: impl Fn(&Value) -> bool) -> Result<Value> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < STEP {
        let shown = async {
            let code = op
                .find(Locator::Css(
                    ".live-responses-table tbody .response-col_status",
                ))
                .await?
                .text()
                .await?;
            let body = op
                .find(Locator::Css(".live-responses-table .highlight-code pre"))
                .await?
                .prop("textContent")
                .await?
                .unwrap_or_default();
            Ok::<_, fantoccini::error::CmdError>((code, body))
        }
        .await;
        if let Ok((code, body)) = shown {
            if code.trim() == status
                && let Ok(json) = serde_json::from_str::<Value>(&body)
                && accept(&json)
            {
                return Ok(json);
            }
            last = format!("status {code}, body {} bytes", body.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no {status} response in the page (last seen: {last})")
}

pub(crate) async fn save_screenshot(client: &Client, path: &Path) -> Result<()> {
    let png = client.screenshot().await?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}
