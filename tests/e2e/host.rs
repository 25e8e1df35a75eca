//! The host itself: auth, the registry API, routing, limits, start-up and
//! shutdown.

use std::time::Duration;

use anyhow::Result;
use e2e_tests::{HostProcess, HostSpec, artifacts, client, spawn_listening, workspace_root};
use serde_json::json;

use crate::{get, put};

const TOKEN: &str = "test-token-6f1d2a9c";

#[tokio::test]
async fn token_is_required_on_host_and_plugin_routes() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?.env("MILADY_API_TOKEN", TOKEN))?;
    let c = client();
    for path in ["/api/secrets", "/api/plugins", "/api/health", "/api/nope"] {
        let resp = c.get(h.url(path)).send().await?;
        assert_eq!(resp.status(), 401, "{path}");
        let body: serde_json::Value = resp.json().await?;
        assert_eq!(body["error"], "Unauthorized");
        assert_eq!(body["code"], "unauthorized");
        let wrong = c
            .get(h.url(path))
            .bearer_auth("test-token-6f1d2a9d")
            .send()
            .await?;
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let resp = c
        .put(h.url("/api/secrets"))
        .json(&json!({"secrets": {"OPENAI_API_KEY": "sk-x"}}))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    for (name, value) in [
        ("Authorization", format!("Bearer {TOKEN}")),
        ("X-Milady-Token", TOKEN.to_owned()),
        ("X-Api-Key", TOKEN.to_owned()),
    ] {
        for path in ["/api/secrets", "/api/plugins"] {
            let resp = c.get(h.url(path)).header(name, &value).send().await?;
            assert_eq!(resp.status(), 200, "{path} with {name}");
        }
    }
    // Docs stay public; the token never appears in the log.
    assert_eq!(c.get(h.url("/openapi.json")).send().await?.status(), 200);
    assert!(!h.log().contains(TOKEN));
    // The token is not lent to plugins as part of the runtime environment.
    let resp = c
        .put(h.url("/api/secrets"))
        .bearer_auth(TOKEN)
        .json(&json!({"secrets": {"MILADY_API_TOKEN": "x"}}))
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    Ok(())
}

#[tokio::test]
async fn plugin_toggle_is_visible_at_once_and_persisted() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let id = "@elizaos/plugin-openai";
    let (_, before) = get(&h, "/api/plugins").await?;
    let entry = before["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["id"] == id).cloned())
        .unwrap_or_default();
    assert_eq!(entry["enabled"], false);
    let (status, body) = put(
        &h,
        "/api/plugins/%40elizaos%2Fplugin-openai",
        &json!({"enabled": true}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "id": id, "enabled": true}));
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(secrets["secrets"]["OPENAI_API_KEY"]["pluginEnabled"], true);
    let text = std::fs::read_to_string(h.config_path())?;
    assert!(
        text.contains("[plugins.entries.\"@elizaos/plugin-openai\"]"),
        "{text}"
    );
    assert!(text.contains("enabled = true"));

    let h = h.restart()?;
    let (_, after) = get(&h, "/api/plugins").await?;
    let entry = after["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["id"] == id).cloned())
        .unwrap_or_default();
    assert_eq!(entry["enabled"], true, "persisted across a restart");

    let (status, body) = put(
        &h,
        "/api/plugins/%40nobody%2Fnothing",
        &json!({"enabled": true}),
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("plugin_not_found"))
    );
    for bad in [json!({"enabled": "yes"}), json!({}), json!([true])] {
        let (status, body) = put(&h, "/api/plugins/%40elizaos%2Fplugin-openai", &bad).await?;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string());
    }
    Ok(())
}

#[tokio::test]
async fn errors_are_json_and_limits_hold() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let c = client();
    let (status, body) = get(&h, "/nowhere").await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = get(&h, "/api/secrets/").await?;
    assert_eq!(status, 200, "trailing slash routes to the plugin: {body}");
    let resp = c.delete(h.url("/api/secrets")).send().await?;
    assert_eq!(resp.status(), 405);
    let body: serde_json::Value = resp.json().await?;
    assert!(body["error"].is_string());
    // Over the 1 MiB default limit: 413 before the plugin sees it.
    let big = format!(
        "{{\"secrets\":{{\"OPENAI_API_KEY\":\"{}\"}}}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let resp = c
        .put(h.url("/api/secrets"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["code"], "payload_too_large");
    Ok(())
}

#[tokio::test]
async fn docs_serve_swagger_ui_offline_with_every_route() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let resp = client().get(h.url("/docs")).send().await?;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await?;
    assert!(html.contains("SwaggerUIBundle"));
    assert!(html.contains("/api/secrets") && html.contains("/api/plugins/{id}"));
    // Every asset is inline: nothing is fetched from another host.
    for tag in ["<script src=\"http", "<link href=\"http", "cdn."] {
        assert!(!html.contains(tag), "{tag}");
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() -> Result<()> {
    let mut h = HostProcess::start(HostSpec::with_secrets()?)?;
    let status = h.terminate()?;
    assert!(status.success(), "{status:?}");
    assert!(h.wait_for_log("shut down", Duration::from_secs(2)));
    // The plugin's `shutdown` entry point (host-api 0.1.1) ran.
    assert!(h.log().contains("secrets plugin stopped"), "{}", h.log());
    Ok(())
}

#[tokio::test]
async fn an_invalid_config_stops_the_host_naming_line_and_column() -> Result<()> {
    let a = artifacts()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("milady.toml");
    std::fs::write(&path, "[env]\nOPENAI_API_KEY = \"sk-CANARY-unterminated\n")?;
    let out = std::process::Command::new(&a.host)
        .arg("--config")
        .arg(&path)
        .args(["--bind", "127.0.0.1:0"])
        .arg("--plugins-dir")
        .arg(dir.path().join("plugins"))
        .env_remove("MILADY_API_TOKEN")
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("column"), "{stderr}");
    assert!(
        !stderr.contains("CANARY"),
        "no secret in the error: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("error")).count(),
        1,
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn non_loopback_bind_without_token_generates_one() -> Result<()> {
    let mut spec = HostSpec::with_secrets()?;
    spec.bind = Some("0.0.0.0:0".into());
    let h = HostProcess::start(spec)?;
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("generated API token"))
        .unwrap_or_default();
    let token = line.rsplit(' ').next().unwrap_or_default().to_owned();
    assert_eq!(token.len(), 64, "{line}");
    assert_eq!(log.matches(&token).count(), 1, "printed once");
    let port = h.base.rsplit(':').next().unwrap_or_default().to_owned();
    let url = format!("http://127.0.0.1:{port}/api/secrets");
    let c = client();
    assert_eq!(c.get(&url).send().await?.status(), 401);
    assert_eq!(c.get(&url).bearer_auth(&token).send().await?.status(), 200);
    Ok(())
}

/// The README's first command: builds, installs the plugin (atomically) into
/// the plugin folder, writes a starter config and serves.
#[tokio::test]
async fn the_quick_start_script_installs_the_plugin_and_serves() -> Result<()> {
    artifacts()?; // built once already, so the script's own build is quick
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    let config = dir.path().join("milady.toml");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(workspace_root().join("scripts/demo.sh"))
        .arg("--config")
        .arg(&config)
        .args(["--bind", "127.0.0.1:0"])
        .env("PROFILE", "dev")
        .env("MILADY_PLUGINS_DIR", &plugins)
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut launched = spawn_listening(&mut cmd, Duration::from_secs(300))?;
    let resp = client()
        .get(format!("{}/api/secrets", launched.base))
        .send()
        .await?;
    let status = resp.status();
    let _ = launched.child.kill();
    let _ = launched.child.wait();
    assert_eq!(status, 200);
    let installed: Vec<String> = std::fs::read_dir(&plugins)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        // The running host's watch lock (`plugins::pickup`) is no temp file.
        .filter(|name| name != ".demo-host-watch.lock")
        .collect();
    assert_eq!(
        installed.len(),
        1,
        "one library, no temp file left: {installed:?}"
    );
    assert!(installed[0].contains("secrets_plugin"));
    assert!(
        std::fs::read_to_string(&config)?.contains("[env]"),
        "starter config written"
    );
    Ok(())
}
