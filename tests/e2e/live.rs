//! Live changes (SPEC §6, issue 13) against the real binary: a change of a
//! key reaches the plugins that use it without a restart, and the `PUT`
//! says which plugins took it live and which need a restart; a library
//! dropped into the folder of a running host is served (routes,
//! `/openapi.json`, `/docs`, `Allow`, `GET /api/plugins`); a replaced
//! library is reported `pendingRestart`, never half-swapped; `plugin
//! install` says whether the running host picked the library up.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use e2e_tests::{HostProcess, HostSpec, artifacts, drop_library, numbered_copy};
use serde_json::{Value, json};

use crate::{get, put};

/// The bound on waiting for a dropped library to answer.
const DROP_WAIT: Duration = Duration::from_secs(10);

fn plugins_dir(h: &HostProcess) -> PathBuf {
    h.dir.path().join("plugins")
}

/// Polls `GET path` until it answers 200 or `wait` has passed; the last
/// status and body.
async fn wait_for_200(h: &HostProcess, path: &str, wait: Duration) -> Result<(u16, String)> {
    let start = Instant::now();
    loop {
        let resp = e2e_tests::client().get(h.url(path)).send().await?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        if status == 200 || start.elapsed() >= wait {
            return Ok((status, body));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn plugin_entry<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["plugins"].as_array()?.iter().find(|p| p["id"] == id)
}

#[tokio::test]
async fn a_live_change_to_hellos_key_is_applied_without_a_restart() -> Result<()> {
    let a = artifacts()?;
    let mut h =
        HostProcess::start(HostSpec::with_secrets()?.plugin(&a.hello, "libhello_plugin.so"))?;
    let pid = h.pid();
    let (_, before) = get(&h, "/api/hello").await?;
    assert_eq!(before["liveChanges"]["notices"], 0, "{before}");
    assert_eq!(before["liveChanges"]["apiKeyApplied"], false, "{before}");

    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"HELLO_API_KEY": "hello-live-CANARY-0123456789"}}),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["restartPlan"],
        json!({"@example/plugin-hello": "live"}),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], false, "{answer}");

    // The next call shows what only the notice sets.
    let (status, after) = get(&h, "/api/hello").await?;
    assert_eq!(status, 200, "{after}");
    let live = &after["liveChanges"];
    assert_eq!(live["notices"], 1, "{after}");
    assert_eq!(live["apiKeyApplied"], true, "{after}");
    assert!(
        live["lastVersion"].as_u64().is_some_and(|v| v > 0),
        "{after}"
    );
    assert!(live["lastAtMs"].as_u64().is_some_and(|t| t > 0), "{after}");

    // A clear is a change too.
    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"HELLO_API_KEY": ""}}),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["restartPlan"]["@example/plugin-hello"], "live");
    let (_, cleared) = get(&h, "/api/hello").await?;
    assert_eq!(cleared["liveChanges"]["notices"], 2, "{cleared}");
    assert_eq!(cleared["liveChanges"]["apiKeyApplied"], false, "{cleared}");

    // No restart: the same process served everything.
    assert!(h.is_running());
    assert_eq!(h.pid(), pid);
    assert!(!h.log().contains("CANARY"), "no secret in the log");
    Ok(())
}

#[tokio::test]
async fn a_catalog_plugins_key_change_says_restart() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .plugin(&a.hello, "libhello_plugin.so")
            .config(
                "[plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n\
                 [plugins.entries.\"@elizaos/plugin-anthropic\"]\nenabled = false\n",
            ),
    )?;
    // A catalog plugin cannot take a change live.
    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": "sk-live-CANARY-0123456789abcdef"}}),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["restartPlan"],
        json!({"@elizaos/plugin-openai": "restart"}),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], true, "{answer}");

    // With a live plugin in the same write: each plugin its own mode, and
    // a disabled plugin that declares a key is affected but not planned.
    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {
            "OPENAI_API_KEY": "sk-live-CANARY-abcdef0123456789",
            "HELLO_API_KEY": "hello-live-CANARY-abcdef",
            "ANTHROPIC_API_KEY": "sk-ant-live-CANARY-0123456789",
        }}),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["restartPlan"],
        json!({"@elizaos/plugin-openai": "restart", "@example/plugin-hello": "live"}),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], true, "{answer}");
    let affected = answer["affectedPlugins"]
        .as_array()
        .context("affectedPlugins")?;
    assert!(
        affected.iter().any(|p| p == "@elizaos/plugin-anthropic"),
        "{answer}"
    );
    assert!(!h.log().contains("CANARY"), "no secret in the log");
    Ok(())
}

#[tokio::test]
async fn a_live_plugin_that_never_acknowledges_counts_as_restart_within_the_timeout() -> Result<()>
{
    let a = artifacts()?;
    let mut spec = HostSpec::with_secrets()?.plugin(&a.silent, "libsilent_plugin.so");
    spec.args = vec!["--plugin-timeout".into(), "2".into()];
    let h = HostProcess::start(spec)?;
    let started = Instant::now();
    // Bounded by the client's own timeout (30 s): the host must stop
    // waiting on its own.
    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"SILENT_API_KEY": "silent-CANARY-0123456789"}}),
    )
    .await?;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["restartPlan"],
        json!({"@fixtures/silent": "restart"}),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], true, "{answer}");
    // It did wait for the acknowledgement (the plugin timeout) first.
    assert!(
        waited >= Duration::from_millis(1900),
        "answered after {waited:?}"
    );
    // The plugin was told, and the host says why it counts as restart.
    let (_, told) = get(&h, "/api/silent").await?;
    assert_eq!(told["notices"], 1, "{told}");
    assert!(
        h.wait_for_log(
            "did not acknowledge a change within the plugin timeout",
            DROP_WAIT
        ),
        "{}",
        h.log()
    );
    // The change itself is applied whatever the plugin does.
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(secrets["secrets"]["SILENT_API_KEY"]["set"], true);
    assert!(!h.log().contains("CANARY"), "no secret in the log");
    Ok(())
}

#[tokio::test]
async fn a_plugin_built_against_0_1_2_is_told_of_changes_and_takes_them_live() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(
        HostSpec::with_secrets()?.plugin(&a.old_interface_0_1_2, "old-0-1-2.so"),
    )?;
    let (status, body) = get(&h, "/api/old-0-1-2").await?;
    assert_eq!(status, 200, "{body}\n{}", h.log());
    assert_eq!(body["built_against"], "host-api 0.1.2");
    let line = h
        .log()
        .lines()
        .find(|l| l.contains("plugin loaded") && l.contains("old-0-1-2.so"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("interface=0.1.2"), "{line}");
    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OLD_0_1_2_API_KEY": "old-CANARY-0123456789"}}),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["restartPlan"],
        json!({"@fixtures/old-interface-0-1-2": "live"}),
        "{answer}"
    );
    let (_, body) = get(&h, "/api/old-0-1-2").await?;
    assert_eq!(body["notices"], 1, "{body}");
    Ok(())
}

#[tokio::test]
async fn a_plugin_dropped_into_the_running_hosts_folder_is_served_and_documented() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let (status, _) = get_status(&h, "/api/hello").await?;
    assert_eq!(status, 404, "not there before the drop");
    assert!(
        h.wait_for_log("watching the plugin folder", DROP_WAIT),
        "{}",
        h.log()
    );

    drop_library(
        &plugins_dir(&h),
        "libhello_plugin.so",
        &std::fs::read(&a.hello)?,
    )?;
    let (status, body) = wait_for_200(&h, "/api/hello", DROP_WAIT).await?;
    assert_eq!(
        status,
        200,
        "answers within {DROP_WAIT:?}: {body}\n{}",
        h.log()
    );

    // Documented, listed and routed like a plugin loaded at start-up.
    let (_, doc) = get(&h, "/openapi.json").await?;
    assert!(
        doc["paths"]["/api/hello"]["get"].is_object(),
        "in /openapi.json"
    );
    assert!(
        doc["paths"]["/api/secrets"]["get"].is_object(),
        "the others stay"
    );
    let docs = e2e_tests::client()
        .get(h.url("/docs"))
        .send()
        .await?
        .text()
        .await?;
    assert!(docs.contains("/api/hello"), "in /docs");
    let (_, plugins) = get(&h, "/api/plugins").await?;
    let hello = plugin_entry(&plugins, "@example/plugin-hello").context("listed")?;
    assert_eq!(hello["loaded"], true, "{hello}");
    assert_eq!(hello["enabled"], true, "{hello}");
    assert_eq!(hello["pendingRestart"], false, "{hello}");
    // Its 405 carries `Allow` from its own document.
    let resp = e2e_tests::client()
        .put(h.url("/api/hello"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
    // Its secret is a secret of the host now, and a change of it is live.
    let (status, answer) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"HELLO_API_KEY": "hello-dropped-0123456789"}}),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["restartPlan"]["@example/plugin-hello"], "live",
        "{answer}"
    );
    assert!(
        h.log().contains("plugin loaded while running"),
        "{}",
        h.log()
    );
    Ok(())
}

#[tokio::test]
async fn a_file_still_being_written_is_served_once_complete() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    assert!(h.wait_for_log("watching the plugin folder", DROP_WAIT));
    // Written in place, slowly: first a truncated library, which must not
    // be the end of it.
    let bytes = numbered_copy(&std::fs::read(&a.numbered)?, 3)?;
    let dest = plugins_dir(&h).join("libnumbered_3.so");
    std::fs::write(&dest, &bytes[..bytes.len() / 2])?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    std::fs::write(&dest, &bytes)?;
    let (status, body) = wait_for_200(&h, "/api/numbered-SLOT0003", DROP_WAIT).await?;
    assert_eq!(status, 200, "{body}\n{}", h.log());
    Ok(())
}

#[tokio::test]
async fn a_replaced_library_shows_pending_restart_and_the_loaded_one_keeps_serving() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(HostSpec::with_secrets()?.plugin(&a.hello, "libhello_plugin.so"))?;
    assert!(h.wait_for_log("watching the plugin folder", DROP_WAIT));
    let out = demo_host_cli(
        &plugins_dir(&h),
        &[
            "plugin",
            "install",
            "--replace",
            a.hello.to_str().context("UTF-8")?,
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("serves plugin @example/plugin-hello already")
            && stdout.contains("waits for a restart"),
        "{stdout}"
    );
    let (_, plugins) = get(&h, "/api/plugins").await?;
    let hello = plugin_entry(&plugins, "@example/plugin-hello").context("listed")?;
    assert_eq!(hello["pendingRestart"], true, "{hello}");
    assert_eq!(hello["pendingVersion"], "0.1.0", "{hello}");
    assert!(
        h.log().contains("plugin replaced while running"),
        "{}",
        h.log()
    );
    // Never half-swapped: the loaded version answers as before.
    let (status, body) = get(&h, "/api/hello").await?;
    assert_eq!(status, 200, "{body}");
    // Only one plugin with that id is loaded.
    let loaded = plugins["plugins"]
        .as_array()
        .context("plugins")?
        .iter()
        .filter(|p| p["id"] == "@example/plugin-hello")
        .count();
    assert_eq!(loaded, 1);
    Ok(())
}

#[tokio::test]
async fn plugin_install_says_whether_the_running_host_picked_it_up() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    assert!(h.wait_for_log("watching the plugin folder", DROP_WAIT));
    let out = demo_host_cli(
        &plugins_dir(&h),
        &["plugin", "install", a.hello.to_str().context("UTF-8")?],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the running demo-host loaded it"),
        "{stdout}"
    );
    // It said so after the fact: the route answers at once.
    let (status, _) = get_status(&h, "/api/hello").await?;
    assert_eq!(status, 200);

    // Without a running host on the folder, it says the next start loads it.
    let other = tempfile::tempdir()?;
    let out = demo_host_cli(
        other.path(),
        &["plugin", "install", a.hello.to_str().context("UTF-8")?],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no running demo-host watches"), "{stdout}");
    Ok(())
}

/// `demo-host --plugins-dir DIR <args>`.
fn demo_host_cli(plugins_dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(&artifacts()?.host)
        .arg("--plugins-dir")
        .arg(plugins_dir)
        .args(args)
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .env_remove("MILADY_API_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .context("running demo-host")?;
    Ok(out)
}

/// The status of `GET path` (the body may not be JSON).
async fn get_status(h: &HostProcess, path: &str) -> Result<(u16, String)> {
    let resp = e2e_tests::client().get(h.url(path)).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}
