//! The secrets page (`/secrets`, SPEC §10) in a real headless Chromium,
//! against the real host and the real plugin library:
//!
//! - Milady's catalog: every key listed, enabled plugins first; search
//!   narrows; a multi-key save lands (the next `GET` shows it) with the
//!   restart plan and a provider warning; the `PUT` bodies the page sends,
//!   captured in the browser, hold only the keys the user edited; a save
//!   after another client's write gets the conflict message naming the key
//!   and the client, and lands after a reload; a clear works; one whole
//!   save with the keyboard alone; at 375 px wide, no horizontal scroll;
//!   the DOM, input values, session and local storage and the URL hold no
//!   8-character piece of any secret.
//! - With `MILADY_API_TOKEN`: the page asks for the token, refuses a wrong
//!   one, keeps the right one in session storage only.
//! - 1,000 keys: listed, searched.
//!
//! axe-core (`.ci/setup-axe.sh`, or `AXE_CORE_JS`) audits each state (list,
//! edit, after save, conflict, token prompt) with no rule disabled; any
//! serious or critical finding fails. Screenshots and the axe results go to
//! `target/e2e-screenshots/secrets-page/`; the first-render times (page
//! start to the first frame of the list) are printed, not asserted.
//!
//! Without Chromium or axe-core the test prints `SKIPPED` and passes,
//! except in CI (`CI=true`), where it fails.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::{HostProcess, HostSpec, artifacts, milady_catalog, write_catalog};
use fantoccini::{
    Client,
    actions::{InputSource, KeyAction, KeyActions},
    wd::TimeoutConfiguration,
};
use serde_json::{Value, json};

use crate::browser::{
    Driver, in_ci, on_path, open_session, save_screenshot, screenshots_root, wait_for,
};

/// In the config file: shown redacted, cleared from the page.
const CONFIG_SECRET: &str = "sk-ant-api03-CANARYc9Tz-Zx8Vb3Nm6Lk1Jh4Gf7-wxyz";
/// In the host's process environment: the precedence note.
const PROCESS_SECRET: &str = "gsk_CANARYp3Rm_Tr5Ew2Qa9Sd4Fg7Hj1Kl";
/// Typed as `OPENAI_API_KEY`: an Anthropic key's shape, so a warning.
const OPENAI_TYPED: &str = "sk-ant-api03-CANARYa5Wd-Mn4Bv7Cx2Za5Sd8Fg1Hj-9Kq3";
/// Typed as `HELLO_API_KEY`: the hello plugin takes it live.
const HELLO_TYPED: &str = "hlo-CANARYb8Ks-Ui8Op3As6Df1Gh4Jk-7Lz2";
/// Typed with the keyboard alone.
const HELLO_KEYBOARD: &str = "hlo-CANARYk2Vn-Wq2Er5Ty8Ui1Op4As-3Dx6";
/// Typed before another client's write: first refused (412), then saved.
const EMBEDDING_TYPED: &str = "sk-CANARYq7Zx-Gh3Jk6Lz9Xc2Vb5Nm8-Qa1W";
/// Written by the other client.
const OTHER_CLIENT: &str = "dsc-CANARYw4Pq-Rt6Yu9Io2Pl5Kj8Hg-Fd4S";
/// The host's API token in the token phase.
const TOKEN: &str = "tkn-CANARYt6Hb-Vb7Nm1Lk4Jh9Gf2Ds5";

/// How long one step in the page may take.
const STEP: Duration = Duration::from_secs(30);

/// Every secret the page may have seen or been given. Made of no word the
/// page could show (a piece of one would match the page's own text).
const SECRETS: [&str; 7] = [
    CONFIG_SECRET,
    PROCESS_SECRET,
    OPENAI_TYPED,
    HELLO_TYPED,
    HELLO_KEYBOARD,
    EMBEDDING_TYPED,
    OTHER_CLIENT,
];

const TAB: char = '\u{E004}';
const ENTER: char = '\u{E007}';

/// `target/e2e-screenshots/secrets-page/`, emptied of this test's earlier
/// files (the Swagger UI test owns the files directly in the parent).
fn shots_dir() -> Result<PathBuf> {
    let dir = screenshots_root()?.join("secrets-page");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e == "png" || e == "json" || e == "log")
        {
            std::fs::remove_file(path)?;
        }
    }
    Ok(dir)
}

/// axe-core's `axe.min.js`: `AXE_CORE_JS`, else where `.ci/setup-axe.sh`
/// installs it.
fn axe_path() -> PathBuf {
    std::env::var_os("AXE_CORE_JS").map_or_else(
        || e2e_tests::workspace_root().join(".ci/axe/node_modules/axe-core/axe.min.js"),
        PathBuf::from,
    )
}

#[tokio::test]
async fn secrets_page_manages_every_key_in_a_real_browser() -> Result<()> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = on_path(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        if in_ci() {
            bail!("chromium or chromedriver is not installed; CI runs .ci/setup-browser.sh first");
        }
        eprintln!(
            "SKIPPED: secrets page browser test: chromium and chromedriver are not on PATH \
             (install them with .ci/setup-browser.sh)"
        );
        return Ok(());
    };
    let axe_file = axe_path();
    let Ok(axe) = std::fs::read_to_string(&axe_file) else {
        if in_ci() {
            bail!(
                "axe-core is not installed at {}; CI runs .ci/setup-axe.sh first",
                axe_file.display()
            );
        }
        eprintln!(
            "SKIPPED: secrets page browser test: axe-core is not installed \
             (install it with .ci/setup-axe.sh, or set AXE_CORE_JS)"
        );
        return Ok(());
    };
    let Some(catalog) = milady_catalog() else {
        return Ok(());
    };
    let shots = shots_dir()?;
    let profile = tempfile::tempdir()?;
    let driver = Driver::start(&chromedriver, &shots.join("chromedriver.log")).await?;
    let client = open_session(&driver, &chromium, profile.path(), (1280, 1100)).await?;
    let page = Page {
        client: &client,
        driver: &driver,
        axe: &axe,
        shots: &shots,
    };
    let outcome = async {
        page.client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(120)),
                Some(Duration::from_secs(60)),
                None,
            ))
            .await?;
        milady_catalog_phase(&page, &catalog).await?;
        token_phase(&page, &catalog).await?;
        thousand_keys_phase(&page).await
    }
    .await;
    if outcome.is_err() {
        let _ = save_screenshot(&client, &shots.join("failure.png")).await;
    }
    let _ = client.close().await;
    drop(driver);
    outcome
}

/// The browser session and where its evidence goes.
struct Page<'a> {
    client: &'a Client,
    driver: &'a Driver,
    axe: &'a str,
    shots: &'a Path,
}

impl Page<'_> {
    async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("running `{}`", script.lines().next().unwrap_or("")))
    }

    /// Opens the page and waits for its list (or its token prompt); from
    /// then on, the page's policy violations are recorded.
    async fn open(&self, h: &HostProcess, state: &str) -> Result<()> {
        self.client.goto(&h.url("/secrets")).await?;
        self.wait_state(state).await?;
        // The style sheet applied under the page's policy (the skip link
        // sits off-screen until focused).
        let styled = self
            .js(
                "window.__violations = [];
                 document.addEventListener('securitypolicyviolation',
                   e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
                 return getComputedStyle(document.querySelector('.skip')).position;",
                vec![],
            )
            .await?;
        ensure!(styled == "absolute", "the page's style sheet is applied");
        Ok(())
    }

    /// Fails if the page's policy blocked anything since it was opened.
    async fn no_policy_violations(&self) -> Result<()> {
        let violations = self.js("return window.__violations || [];", vec![]).await?;
        ensure!(
            violations.as_array().is_some_and(Vec::is_empty),
            "the page's Content-Security-Policy blocked: {violations}"
        );
        Ok(())
    }

    /// Waits until the page says it is in `state` (`body[data-state]`).
    async fn wait_state(&self, state: &str) -> Result<()> {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < STEP {
            last = self
                .js(
                    "return document.body && document.body.dataset.state;",
                    vec![],
                )
                .await?;
            if last == state {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the page did not reach `{state}` (it is `{last}`)")
    }

    /// Milliseconds from the page's start to the first frame of the list,
    /// to the arrival of the data it shows, and to the list built in the
    /// DOM (the rest is the browser's layout and paint).
    async fn first_render_ms(&self) -> Result<(f64, f64, f64)> {
        let started = Instant::now();
        while started.elapsed() < STEP {
            let marks = self
                .js(
                    "const at = name => {
                       const m = performance.getEntriesByName(name);
                       return m.length ? m[0].startTime : null;
                     };
                     return [at('secrets-first-render'), at('secrets-first-data'), at('secrets-first-dom')];",
                    vec![],
                )
                .await?;
            if let (Some(render), Some(data), Some(built)) =
                (marks[0].as_f64(), marks[1].as_f64(), marks[2].as_f64())
            {
                return Ok((render, data, built));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the page never marked its first render")
    }

    /// Scrolls an element to the middle of the window (clear of the sticky
    /// bars) and clicks it.
    async fn click(&self, css: &str) -> Result<()> {
        let element = wait_for(self.client, css).await?;
        self.js(
            "arguments[0].scrollIntoView({block: 'center'});",
            vec![serde_json::to_value(&element)?],
        )
        .await?;
        element
            .click()
            .await
            .with_context(|| format!("clicking `{css}`"))
    }

    /// Types into an input, as a user would.
    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = wait_for(self.client, css).await?;
        self.js(
            "arguments[0].scrollIntoView({block: 'center'});",
            vec![serde_json::to_value(&element)?],
        )
        .await?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("typing into `{css}`"))
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(wait_for(self.client, css).await?.text().await?)
    }

    /// From now on, every `PUT` the page sends is recorded in the browser.
    async fn capture_puts(&self) -> Result<()> {
        self.js(
            "if (!window.__puts) {
               window.__puts = [];
               const real = window.fetch;
               window.fetch = function (url, init) {
                 if (init && init.method === 'PUT') {
                   const headers = init.headers || {};
                   window.__puts.push({url: String(url), body: JSON.parse(init.body),
                                       ifMatch: headers['If-Match'] || null});
                 }
                 return real.apply(this, arguments);
               };
             }",
            vec![],
        )
        .await?;
        Ok(())
    }

    /// The `PUT`s recorded since the last call.
    async fn take_puts(&self) -> Result<Vec<Value>> {
        let puts = self
            .js(
                "const p = window.__puts || []; window.__puts = []; return p;",
                vec![],
            )
            .await?;
        Ok(puts.as_array().cloned().unwrap_or_default())
    }

    /// Keys pressed and released, in order, on whatever has the focus.
    async fn keys(&self, keys: &str) -> Result<()> {
        let mut actions = KeyActions::new("keyboard".into());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(actions).await?;
        Ok(())
    }

    async fn active_id(&self) -> Result<String> {
        Ok(self
            .js(
                "return document.activeElement ? document.activeElement.id : '';",
                vec![],
            )
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Presses Tab until the element with `id` has the focus.
    async fn tab_to(&self, id: &str) -> Result<()> {
        let mut seen = Vec::new();
        for _ in 0..40 {
            let active = self.active_id().await?;
            if active == id {
                return Ok(());
            }
            seen.push(active);
            self.keys(&TAB.to_string()).await?;
        }
        bail!("Tab never reached #{id}; focus went through {seen:?}")
    }

    async fn screenshot(&self, name: &str) -> Result<()> {
        save_screenshot(self.client, &self.shots.join(format!("{name}.png"))).await
    }

    /// Runs axe-core on the page as it is (no rule disabled), saves the
    /// results as `axe-<state>.json` and fails on any serious or critical
    /// violation.
    async fn audit(&self, state: &str) -> Result<()> {
        let loaded = self.js("return typeof window.axe;", vec![]).await?;
        if loaded != "object" {
            // The page's policy forbids foreign scripts; WebDriver's own
            // script evaluation is not subject to it.
            self.js(&format!("{}\nreturn typeof window.axe;", self.axe), vec![])
                .await
                .context("injecting axe-core")?;
        }
        let raw = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document)
                   .then(r => done(JSON.stringify(r)))
                   .catch(e => done(JSON.stringify({error: String(e)})));",
                vec![],
            )
            .await
            .context("running axe-core")?;
        let text = raw.as_str().context("axe-core answered no JSON")?;
        let results: Value = serde_json::from_str(text)?;
        if let Some(error) = results.get("error") {
            bail!("axe-core failed in state {state}: {error}");
        }
        std::fs::write(
            self.shots.join(format!("axe-{state}.json")),
            serde_json::to_vec_pretty(&results)?,
        )?;
        let violations = results["violations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let count = |key: &str| results[key].as_array().map_or(0, Vec::len);
        let summary: Vec<String> = violations
            .iter()
            .map(|v| {
                format!(
                    "{} ({}, {} nodes)",
                    v["id"].as_str().unwrap_or("?"),
                    v["impact"].as_str().unwrap_or("?"),
                    v["nodes"].as_array().map_or(0, Vec::len)
                )
            })
            .collect();
        eprintln!(
            "axe-core {} on the secrets page, state {state}: {} rules passed, {} violations {summary:?}, {} incomplete",
            results["testEngine"]["version"].as_str().unwrap_or("?"),
            count("passes"),
            violations.len(),
            count("incomplete"),
        );
        ensure!(
            count("passes") > 0,
            "axe-core checked nothing in state {state}"
        );
        let severe: Vec<String> = violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let targets: Vec<String> = v["nodes"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .take(3)
                    .map(|n| n["target"].to_string())
                    .collect();
                format!(
                    "{} ({}): {} at {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["impact"].as_str().unwrap_or("?"),
                    v["help"].as_str().unwrap_or("?"),
                    targets.join(", ")
                )
            })
            .collect();
        ensure!(
            severe.is_empty(),
            "serious or critical accessibility violations in state {state}: {severe:#?}"
        );
        Ok(())
    }

    /// Fails if any 8-character piece of a secret is in the DOM, an
    /// input's value, session or local storage, or the URL.
    async fn scan_for_secrets(&self, secrets: &[&str], state: &str) -> Result<()> {
        let seen = self
            .js(
                "const parts = [location.href, document.title, document.documentElement.outerHTML];
                 for (const i of document.querySelectorAll('input, textarea, select')) parts.push(i.value);
                 for (const s of [sessionStorage, localStorage])
                   for (let i = 0; i < s.length; i++) parts.push(s.key(i), s.getItem(s.key(i)));
                 return parts.join('\\n');",
                vec![],
            )
            .await?;
        let seen = seen.as_str().unwrap_or_default();
        ensure!(
            seen.len() > 1000,
            "the scan read the page ({} bytes)",
            seen.len()
        );
        for secret in secrets {
            let chars: Vec<char> = secret.chars().collect();
            for piece in chars.windows(8) {
                let piece: String = piece.iter().collect();
                ensure!(
                    !seen.contains(&piece),
                    "state {state}: an 8-character piece of a secret is in the page (the piece starts at `{}`)",
                    piece.chars().next().unwrap_or(' ')
                );
            }
        }
        Ok(())
    }

    /// The keys the page lists, in page order, and the enabled state of
    /// each group, in page order.
    async fn listed(&self) -> Result<(Vec<String>, Vec<bool>)> {
        let v = self
            .js(
                "return {
                   keys: [...document.querySelectorAll('li.key')].map(li => li.dataset.key),
                   groups: [...document.querySelectorAll('section.group h2 .badge')]
                             .map(b => b.textContent === 'enabled'),
                 };",
                vec![],
            )
            .await?;
        let keys = v["keys"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        let groups = v["groups"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|b| b == true)
            .collect();
        Ok((keys, groups))
    }

    /// The keys of the rows not hidden by the search.
    async fn visible_keys(&self) -> Result<Vec<String>> {
        let v = self
            .js(
                "return [...document.querySelectorAll('li.key')]
                   .filter(li => !li.hidden && !li.closest('section').hidden)
                   .map(li => li.dataset.key);",
                vec![],
            )
            .await?;
        Ok(v.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect())
    }

    /// Replaces the search text, as a user would.
    async fn search(&self, text: &str) -> Result<()> {
        let input = wait_for(self.client, "#search").await?;
        input.clear().await?;
        // `clear` fires no input event: one keystroke that changes nothing
        // visible makes the page filter again.
        input.send_keys(&format!("{text} \u{E003}")).await?;
        Ok(())
    }

    /// Back to a desktop window, without any device-metrics override.
    async fn reset_width(&self, width: u32, height: u32) -> Result<()> {
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await?;
        self.client.set_window_size(width, height).await?;
        Ok(())
    }

    /// One DevTools command through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Result<()> {
        let session = self
            .client
            .session_id()
            .await?
            .context("no WebDriver session id")?;
        let resp = e2e_tests::client()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver.url()
            ))
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "chromedriver refused {cmd}: {}",
            resp.status()
        );
        Ok(())
    }

    /// Makes the viewport `width` CSS pixels wide: the window if Chromium
    /// allows it, else DevTools' device metrics through chromedriver.
    async fn set_width(&self, width: u32, height: u32) -> Result<()> {
        self.client.set_window_size(width, height).await?;
        let inner = self.js("return window.innerWidth;", vec![]).await?;
        if inner.as_u64() == Some(u64::from(width)) {
            return Ok(());
        }
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true}),
        )
        .await?;
        let inner = self.js("return window.innerWidth;", vec![]).await?;
        ensure!(
            inner.as_u64() == Some(u64::from(width)),
            "the viewport is {inner} px wide, not {width}"
        );
        Ok(())
    }
}

/// `GET /api/secrets` through the host, with the token when given.
async fn secrets(h: &HostProcess, token: Option<&str>) -> Result<Value> {
    let mut req = e2e_tests::client().get(h.url("/api/secrets"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await?;
    ensure!(resp.status() == 200, "GET /api/secrets: {}", resp.status());
    Ok(resp.json::<Value>().await?["secrets"].clone())
}

fn row(key: &str) -> String {
    format!("li.key[data-key=\"{key}\"]")
}

async fn milady_catalog_phase(page: &Page<'_>, catalog: &Path) -> Result<()> {
    let a = artifacts()?;
    let spec = HostSpec::with_secrets()?
        .plugin(&a.hello, "libhello_plugin.so")
        .catalog(catalog)
        .env("GROQ_API_KEY", PROCESS_SECRET)
        .config(&format!(
            "[env]\nANTHROPIC_API_KEY = \"{CONFIG_SECRET}\"\n\n\
             [plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n"
        ));
    let h = HostProcess::start(spec)?;
    let before = secrets(&h, None).await?;
    let expected: BTreeSet<String> = before
        .as_object()
        .context("secrets object")?
        .keys()
        .cloned()
        .collect();

    // The list: every key, enabled plugins first.
    page.open(&h, "ready").await?;
    let (ms, data, built) = page.first_render_ms().await?;
    eprintln!(
        "secrets page: first render with Milady's catalog ({} keys): {ms:.0} ms \
         (the data arrived at {data:.0} ms, the list was built at {built:.0} ms)",
        expected.len()
    );
    let (keys, groups) = page.listed().await?;
    let listed: BTreeSet<String> = keys.iter().cloned().collect();
    ensure!(
        keys.len() == expected.len() && listed == expected,
        "the page lists {} keys, the API {}; missing {:?}",
        keys.len(),
        expected.len(),
        expected.difference(&listed).collect::<Vec<_>>()
    );
    ensure!(
        groups.first() == Some(&true) && groups.windows(2).all(|w| w[0] >= w[1]),
        "enabled plugins come first: {groups:?}"
    );
    let anthropic = page.text(&row("ANTHROPIC_API_KEY")).await?;
    ensure!(
        anthropic.contains("sk-****...wxyz") && anthropic.contains("hmac-sha256:"),
        "the config key shows redacted, with its fingerprint: {anthropic}"
    );
    let groq = page.text(&row("GROQ_API_KEY")).await?;
    ensure!(
        groq.contains("process environment") && groq.contains("Precedence"),
        "the process key says where it comes from and what wins: {groq}"
    );
    page.screenshot("1-list").await?;
    page.audit("list").await?;

    // Search narrows.
    page.search("openai").await?;
    let visible = page.visible_keys().await?;
    ensure!(
        visible.contains(&"OPENAI_API_KEY".to_owned())
            && !visible.contains(&"GROQ_API_KEY".to_owned())
            && visible.len() < keys.len(),
        "searching `openai` shows {visible:?}"
    );
    let count = page.text("#count").await?;
    ensure!(
        count.contains(&format!("Showing {} of {}", visible.len(), keys.len())),
        "{count}"
    );
    page.screenshot("2-search").await?;
    page.search("").await?;
    ensure!(page.visible_keys().await?.len() == keys.len());

    // A save of two keys: one plugin takes it live, one needs a restart,
    // one value has another provider's shape.
    page.capture_puts().await?;
    page.type_into(
        &format!("{} input.value-input", row("OPENAI_API_KEY")),
        OPENAI_TYPED,
    )
    .await?;
    page.type_into(
        &format!("{} input.value-input", row("HELLO_API_KEY")),
        HELLO_TYPED,
    )
    .await?;
    let pending = page.text("#pending").await?;
    ensure!(pending.starts_with("2 unsaved changes"), "{pending}");
    page.screenshot("3-edit").await?;
    page.audit("edit").await?;
    page.click("#save").await?;
    page.wait_state("saved").await?;
    let puts = page.take_puts().await?;
    ensure!(puts.len() == 1, "one PUT: {}", puts.len());
    ensure!(
        puts[0]["body"]
            == json!({"secrets": {"OPENAI_API_KEY": OPENAI_TYPED, "HELLO_API_KEY": HELLO_TYPED}}),
        "the PUT holds exactly the two keys typed (keys sent: {:?})",
        puts[0]["body"]["secrets"]
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
    );
    ensure!(
        puts[0]["ifMatch"].as_str().is_some_and(|t| !t.is_empty()),
        "the PUT carries If-Match"
    );
    let after = secrets(&h, None).await?;
    for key in ["OPENAI_API_KEY", "HELLO_API_KEY"] {
        ensure!(
            after[key]["set"] == true && after[key]["source"] == "api",
            "{key} saved: {}",
            after[key]
        );
    }
    ensure!(after["HELLO_API_KEY"]["value"] == "hlo****...7Lz2");
    page.wait_state("saved").await?;
    let live = page
        .text("#plan li[data-mode=\"live\"][data-plugin=\"@example/plugin-hello\"]")
        .await?;
    let restart = page
        .text("#plan li[data-mode=\"restart\"][data-plugin=\"@elizaos/plugin-openai\"]")
        .await?;
    ensure!(!live.is_empty() && !restart.is_empty());
    let warning = page
        .text(&format!("{} .warning", row("OPENAI_API_KEY")))
        .await?;
    ensure!(
        warning.contains("Provider check") && warning.contains("Anthropic"),
        "the warning shows beside the key: {warning}"
    );
    let hello_row = page.text(&row("HELLO_API_KEY")).await?;
    ensure!(
        hello_row.contains("hlo****...7Lz2"),
        "the row shows the new redacted value"
    );
    let emptied = page
        .js(
            "return [...document.querySelectorAll('input.value-input')].every(i => i.value === '');",
            vec![],
        )
        .await?;
    ensure!(emptied == true, "every value field is empty after the save");
    page.screenshot("4-saved").await?;
    page.audit("after-save").await?;
    page.scan_for_secrets(&SECRETS, "after-save").await?;
    // The warning beside its key.
    page.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});",
        vec![json!(format!("{} .warning", row("OPENAI_API_KEY")))],
    )
    .await?;
    page.screenshot("5-warning-beside-key").await?;

    // The audit trail of a key, on demand.
    page.click(&format!("{} button.history", row("HELLO_API_KEY")))
        .await?;
    let trail = page
        .text(&format!("{} .audit-list li", row("HELLO_API_KEY")))
        .await?;
    ensure!(
        trail.contains("set, applied") && trail.contains("hmac-sha256:"),
        "the audit trail shows the save: {trail}"
    );
    page.screenshot("6-history").await?;

    // A conflicting save: another client writes after the page loaded.
    page.type_into(
        &format!("{} input.value-input", row("OPENAI_EMBEDDING_API_KEY")),
        EMBEDDING_TYPED,
    )
    .await?;
    let (status, _) = crate::put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"DISCORD_API_TOKEN": OTHER_CLIENT}}),
    )
    .await?;
    ensure!(status == 200, "the other client's PUT: {status}");
    page.click("#save").await?;
    page.wait_state("conflict").await?;
    let conflict = page
        .text("#conflict-list li[data-key=\"DISCORD_API_TOKEN\"]")
        .await?;
    ensure!(
        conflict.contains("was set")
            && conflict.contains("from 127.0.0.1:")
            && conflict.contains("without a token"),
        "the conflict says who changed what: {conflict}"
    );
    let refused = page.take_puts().await?;
    ensure!(
        refused.len() == 1
            && refused[0]["body"]
                == json!({"secrets": {"OPENAI_EMBEDDING_API_KEY": EMBEDDING_TYPED}}),
        "the refused PUT held only the edited key"
    );
    ensure!(
        secrets(&h, None).await?["OPENAI_EMBEDDING_API_KEY"]["set"] == false,
        "nothing of the refused save landed"
    );
    page.screenshot("7-conflict").await?;
    page.audit("conflict").await?;
    page.click("#conflict-reload").await?;
    page.wait_state("ready").await?;
    let kept = page
        .js(
            "return document.querySelector(arguments[0]).value === arguments[1];",
            vec![
                json!(format!(
                    "{} input.value-input",
                    row("OPENAI_EMBEDDING_API_KEY")
                )),
                json!(EMBEDDING_TYPED),
            ],
        )
        .await?;
    ensure!(kept == true, "the edit survives the reload");
    page.click("#save").await?;
    page.wait_state("saved").await?;
    let retried = page.take_puts().await?;
    ensure!(
        retried.len() == 1
            && retried[0]["body"]
                == json!({"secrets": {"OPENAI_EMBEDDING_API_KEY": EMBEDDING_TYPED}})
            && retried[0]["ifMatch"] != refused[0]["ifMatch"],
        "the second save sends the same key with the new tag"
    );
    let now = secrets(&h, None).await?;
    ensure!(now["OPENAI_EMBEDDING_API_KEY"]["set"] == true);
    ensure!(
        now["DISCORD_API_TOKEN"]["set"] == true,
        "the other client's change stays"
    );

    // The masked placeholder typed back is refused in the page: no PUT.
    let shown = now["HELLO_API_KEY"]["value"]
        .as_str()
        .context("a redacted value")?
        .to_owned();
    page.type_into(
        &format!("{} input.value-input", row("HELLO_API_KEY")),
        &shown,
    )
    .await?;
    page.click("#save").await?;
    let refusal = page
        .text(&format!("{} .error", row("HELLO_API_KEY")))
        .await?;
    ensure!(
        refusal.contains("redacted value")
            && page
                .text("#save-error")
                .await?
                .contains("Nothing was saved"),
        "the placeholder is refused beside its key: {refusal}"
    );
    ensure!(
        page.take_puts().await?.is_empty(),
        "nothing is sent for a placeholder"
    );
    page.click("#discard").await?;
    ensure!(page.text("#pending").await? == "No unsaved changes");

    // A clear.
    page.click(&format!("{} button.clear", row("ANTHROPIC_API_KEY")))
        .await?;
    let pending = page.text("#pending").await?;
    ensure!(pending.contains("ANTHROPIC_API_KEY"), "{pending}");
    page.click("#save").await?;
    page.wait_state("saved").await?;
    let cleared = page.take_puts().await?;
    ensure!(
        cleared.len() == 1 && cleared[0]["body"] == json!({"secrets": {"ANTHROPIC_API_KEY": ""}}),
        "a clear sends only that key, empty"
    );
    ensure!(secrets(&h, None).await?["ANTHROPIC_API_KEY"]["set"] == false);
    let result = page.text("#result-text").await?;
    ensure!(
        result.contains("Cleared 1 key: ANTHROPIC_API_KEY"),
        "{result}"
    );
    page.screenshot("8-cleared").await?;
    page.no_policy_violations().await?;

    // One whole save with the keyboard alone, from a fresh page.
    page.open(&h, "ready").await?;
    page.capture_puts().await?;
    let fingerprint = secrets(&h, None).await?["HELLO_API_KEY"]["fingerprint"].clone();
    page.tab_to("search").await?;
    page.keys("HELLO_API_KEY").await?;
    let visible = page.visible_keys().await?;
    ensure!(
        visible == ["HELLO_API_KEY"],
        "the search typed with keys narrows to one key: {visible:?}"
    );
    let input_id = page
        .js(
            "return document.querySelector(arguments[0]).id;",
            vec![json!(format!("{} input.value-input", row("HELLO_API_KEY")))],
        )
        .await?;
    page.tab_to(input_id.as_str().context("the input has an id")?)
        .await?;
    page.keys(HELLO_KEYBOARD).await?;
    page.tab_to("save").await?;
    page.keys(&ENTER.to_string()).await?;
    page.wait_state("saved").await?;
    let typed = page.take_puts().await?;
    ensure!(
        typed.len() == 1
            && typed[0]["body"] == json!({"secrets": {"HELLO_API_KEY": HELLO_KEYBOARD}}),
        "the keyboard save sent only the key typed"
    );
    let hello = &secrets(&h, None).await?["HELLO_API_KEY"];
    ensure!(
        hello["set"] == true && hello["fingerprint"] != fingerprint,
        "the keyboard save landed: {hello}"
    );
    ensure!(
        page.active_id().await? == "result-title",
        "the focus moves to the result"
    );
    page.screenshot("9-keyboard-save").await?;
    page.scan_for_secrets(&SECRETS, "after-keyboard-save")
        .await?;
    page.no_policy_violations().await?;

    // A phone's width: nothing wider than the screen.
    page.set_width(375, 812).await?;
    page.open(&h, "ready").await?;
    page.click(&format!("{} button.history", row("OPENAI_API_KEY")))
        .await?;
    page.text(&format!("{} .audit-list li", row("OPENAI_API_KEY")))
        .await?;
    let widths = page
        .js(
            "return {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
                     body: document.body.scrollWidth};",
            vec![],
        )
        .await?;
    ensure!(
        widths["inner"] == 375
            && widths["scroll"].as_u64().is_some_and(|w| w <= 375)
            && widths["body"].as_u64().is_some_and(|w| w <= 375),
        "no horizontal scroll at 375 px: {widths}"
    );
    page.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
        vec![json!(row("OPENAI_API_KEY"))],
    )
    .await?;
    page.screenshot("10-phone").await?;
    page.no_policy_violations().await?;
    page.reset_width(1280, 1100).await?;

    let log = h.log();
    ensure!(!log.contains("CANARY"), "no secret in the host's log");
    Ok(())
}

async fn token_phase(page: &Page<'_>, catalog: &Path) -> Result<()> {
    let spec = HostSpec::with_secrets()?
        .catalog(catalog)
        .env("MILADY_API_TOKEN", TOKEN);
    let h = HostProcess::start(spec)?;
    // The page itself holds no secret: it loads without the token, in the
    // host's security headers, with its own strict policy.
    let resp = e2e_tests::client().get(h.url("/secrets")).send().await?;
    ensure!(resp.status() == 200, "GET /secrets: {}", resp.status());
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let policy = header("content-security-policy");
    ensure!(
        policy.contains("default-src 'none'")
            && policy.contains("script-src 'self'")
            && policy.contains("style-src 'self'")
            && policy.contains("connect-src 'self'")
            && policy.contains("frame-ancestors 'none'")
            && !policy.contains("unsafe"),
        "the page's policy: {policy}"
    );
    ensure!(header("x-content-type-options") == "nosniff" && header("x-frame-options") == "DENY");
    ensure!(header("content-type").starts_with("text/html"));
    let script = e2e_tests::client()
        .get(h.url("/secrets/app.js"))
        .send()
        .await?;
    ensure!(
        script.status() == 200
            && script.headers()["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with("text/javascript")),
        "the script is served as a script"
    );
    page.open(&h, "token").await?;
    ensure!(
        page.active_id().await? == "token-input",
        "the prompt has the focus"
    );
    page.screenshot("11-token-prompt").await?;
    page.audit("token-prompt").await?;

    // A wrong token is refused and forgotten.
    page.keys(&format!("not-the-token{ENTER}")).await?;
    let started = Instant::now();
    loop {
        let error = page.text("#token-error").await.unwrap_or_default();
        if error.contains("refused") {
            break;
        }
        ensure!(
            started.elapsed() < STEP,
            "no refusal shown for a wrong token ({error})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    page.wait_state("token").await?;
    page.audit("token-refused").await?;

    page.type_into("#token-input", &format!("{TOKEN}{ENTER}"))
        .await?;
    page.wait_state("ready").await?;
    let storage = page
        .js(
            "return {session: sessionStorage.getItem('milady.apiToken'), sessionKeys: sessionStorage.length,
                     local: localStorage.length, field: document.getElementById('token-input').value};",
            vec![],
        )
        .await?;
    ensure!(
        storage["session"] == TOKEN
            && storage["sessionKeys"] == 1
            && storage["local"] == 0
            && storage["field"] == "",
        "the token is kept in session storage only, and the field is emptied"
    );
    let (keys, _) = page.listed().await?;
    let expected = secrets(&h, Some(TOKEN)).await?;
    ensure!(
        keys.len() == expected.as_object().map_or(0, serde_json::Map::len),
        "the list loads with the token"
    );
    // A save sends the token too.
    page.capture_puts().await?;
    page.type_into(
        &format!("{} input.value-input", row("OPENAI_API_KEY")),
        OPENAI_TYPED,
    )
    .await?;
    page.click("#save").await?;
    page.wait_state("saved").await?;
    ensure!(page.take_puts().await?.len() == 1);
    ensure!(secrets(&h, Some(TOKEN)).await?["OPENAI_API_KEY"]["set"] == true);
    page.scan_for_secrets(&[OPENAI_TYPED], "token").await?;
    let outside = page
        .js(
            "return document.documentElement.outerHTML.includes(arguments[0]) || location.href.includes(arguments[0]);",
            vec![json!(TOKEN)],
        )
        .await?;
    ensure!(outside == false, "the token is not in the DOM or the URL");
    page.screenshot("12-token-accepted").await?;
    page.no_policy_violations().await?;
    // Session storage belongs to this tab and origin: clean up.
    page.js("sessionStorage.clear(); return 0;", vec![]).await?;
    ensure!(!h.log().contains("CANARY"), "no secret in the host's log");
    Ok(())
}

async fn thousand_keys_phase(page: &Page<'_>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog = dir.path().join("thousand.json");
    write_catalog(&catalog, 100, 10)?;
    let h = HostProcess::start(HostSpec::with_secrets()?.catalog(&catalog))?;
    page.open(&h, "ready").await?;
    let (ms, data, built) = page.first_render_ms().await?;
    // The generated catalog's 1,000 keys, and the default catalog's.
    let expected = secrets(&h, None).await?;
    let total = expected.as_object().map_or(0, serde_json::Map::len);
    eprintln!(
        "secrets page: first render with {total} keys (1,000 of 100 generated plugins): \
         {ms:.0} ms (the data arrived at {data:.0} ms, the list was built at {built:.0} ms)"
    );
    let (keys, _) = page.listed().await?;
    let generated = keys.iter().filter(|k| k.contains("_KEY_")).count();
    ensure!(
        keys.len() == total && generated == 1000,
        "every key listed: {} of {total}, {generated} of the 1,000 generated",
        keys.len()
    );
    page.search("P42_KEY_7").await?;
    let visible = page.visible_keys().await?;
    ensure!(visible == ["P42_KEY_7"], "{visible:?}");
    page.search("plugin 42").await?;
    let visible = page.visible_keys().await?;
    ensure!(
        visible.len() == 10 && visible.iter().all(|k| k.starts_with("P42_")),
        "{visible:?}"
    );
    page.screenshot("13-thousand-keys").await?;
    page.no_policy_violations().await?;
    Ok(())
}
