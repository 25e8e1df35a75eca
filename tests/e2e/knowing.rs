//! Knowing your secrets (SPEC §8) against the real host and library: the
//! audit log (one line per attempt, fail closed, the query route, refused
//! tokens, toggles), fingerprints, provider warnings, precedence and the
//! empty write. Every test scans what the host wrote and answered for any
//! 8-character piece of the values it sent.

use anyhow::{Context, Result};
use e2e_tests::{HostProcess, HostSpec, client, files_holding_pieces, pieces};
use serde_json::{Value, json};

use crate::{get, put};

/// Values that must never show anywhere but in the config (encrypted).
const CANARY_A: &str = "sk-proj-CanaryAlphaQwZkPfXuTrBvNmYhGd";
const CANARY_B: &str = "sk-proj-CanaryBravoJsLcWeRtYuIoPaSdFg";

async fn put_secrets(h: &HostProcess, secrets: Value) -> Result<(u16, Value)> {
    put(h, "/api/secrets", &json!({ "secrets": secrets })).await
}

async fn audit(h: &HostProcess, query: &str) -> Result<Vec<Value>> {
    let (status, body) = get(h, &format!("/api/secrets/audit{query}")).await?;
    anyhow::ensure!(status == 200, "audit query: {status} {body}");
    Ok(body["entries"].as_array().cloned().unwrap_or_default())
}

fn audit_path(h: &HostProcess) -> std::path::PathBuf {
    h.dir.path().join("audit.jsonl")
}

/// No piece of `values` in the audit file, the host's folder, the audit
/// response or the host's log.
fn assert_no_piece(h: &HostProcess, values: &[&str], response: &str) -> Result<()> {
    let log = h.log();
    for value in values {
        let in_files: Vec<_> = files_holding_pieces(h.dir.path(), value)?
            .into_iter()
            // The config holds the values encrypted; its folder holds
            // nothing else of them (the plugin libraries are not the host's
            // to write, and hold digits runs of their own).
            .filter(|(path, _)| path.file_name().is_some_and(|n| n != "milady.toml"))
            .filter(|(path, _)| !path.starts_with(h.dir.path().join("plugins")))
            .collect();
        assert!(in_files.is_empty(), "value pieces in {in_files:?}");
        for piece in pieces(value) {
            assert!(!response.contains(&piece), "response holds {piece}");
            assert!(!log.contains(&piece), "log holds {piece}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn applied_rejected_and_failed_writes_each_leave_one_line() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    // Applied.
    let (status, body) = put_secrets(&h, json!({"OPENAI_API_KEY": CANARY_A})).await?;
    assert_eq!(status, 200, "{body}");
    // Rejected by the plugin (an undeclared key next to a real value).
    let (status, _) = put_secrets(
        &h,
        json!({"OPENAI_API_KEY": CANARY_B, "NOT_DECLARED_ANYWHERE": "x"}),
    )
    .await?;
    assert_eq!(status, 400);
    // Failed: the config file turned invalid under the host.
    let config = h.config_path();
    let saved = std::fs::read(&config)?;
    std::fs::write(&config, "[env\nbroken")?;
    let (status, body) = put_secrets(&h, json!({"OPENAI_API_KEY": CANARY_B})).await?;
    assert_eq!(status, 500, "{body}");
    std::fs::write(&config, saved)?;

    let entries = audit(&h, "").await?;
    let outcomes: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "env.update")
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["failed", "rejected", "applied"], "{entries:#?}");
    let applied = &entries[2];
    assert_eq!(applied["plugin"], "@milady/plugin-secrets");
    assert_eq!(applied["keys"][0]["key"], "OPENAI_API_KEY");
    assert_eq!(applied["keys"][0]["operation"], "set");
    let fp = applied["keys"][0]["fingerprint"].as_str().unwrap_or("");
    assert!(fp.starts_with("hmac-sha256:") && fp.len() == 28, "{fp}");
    assert!(
        applied["client"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert_eq!(
        entries[1]["reasons"]["NOT_DECLARED_ANYWHERE"],
        "not declared as sensitive by any plugin"
    );
    assert!(
        entries[0]["reasons"]
            .as_object()
            .is_some_and(|r| !r.is_empty())
    );

    // Every line whole JSON, the file owner-only.
    let text = std::fs::read_to_string(audit_path(&h))?;
    for line in text.lines() {
        serde_json::from_str::<Value>(line).context("a torn line")?;
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(audit_path(&h))?.permissions().mode() & 0o777,
        0o600
    );
    let response = serde_json::to_string(&entries)?;
    assert_no_piece(&h, &[CANARY_A, CANARY_B], &response)?;
    Ok(())
}

#[tokio::test]
async fn the_audit_query_filters_by_key_and_limit() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    for (key, value) in [
        ("OPENAI_API_KEY", "sk-proj-first-value-000000"),
        ("ANTHROPIC_API_KEY", "sk-ant-api03-second-value-0"),
        ("OPENAI_API_KEY", "sk-proj-third-value-0000000"),
    ] {
        let (status, _) = put_secrets(&h, json!({ key: value })).await?;
        assert_eq!(status, 200);
    }
    let openai = audit(&h, "?key=OPENAI_API_KEY").await?;
    assert_eq!(openai.len(), 2);
    assert!(
        openai
            .iter()
            .all(|e| e["keys"][0]["key"] == "OPENAI_API_KEY")
    );
    // Newest first: the third write's fingerprint leads.
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(
        openai[0]["keys"][0]["fingerprint"],
        secrets["secrets"]["OPENAI_API_KEY"]["fingerprint"]
    );
    let last = audit(&h, "?limit=1").await?;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["keys"][0]["key"], "OPENAI_API_KEY");
    assert_eq!(audit(&h, "").await?.len(), 3);
    assert!(audit(&h, "?key=GROQ_API_KEY").await?.is_empty());
    let (status, body) = get(&h, "/api/secrets/audit?limit=0").await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["code"].is_string());
    Ok(())
}

#[tokio::test]
async fn an_unusable_audit_log_while_running_applies_nothing() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let (status, _) = put_secrets(&h, json!({"OPENAI_API_KEY": CANARY_A})).await?;
    assert_eq!(status, 200);
    let (_, before) = get(&h, "/api/secrets").await?;
    let config_before = std::fs::read(h.config_path())?;
    // The path becomes a folder.
    std::fs::remove_file(audit_path(&h))?;
    std::fs::create_dir(audit_path(&h))?;
    let (status, body) = put_secrets(&h, json!({"OPENAI_API_KEY": CANARY_B})).await?;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("audit")),
        "{body}"
    );
    assert!(body["code"].is_string());
    // A refused write cannot be audited either: 500, not 400.
    let (status, _) = put_secrets(&h, json!({"NOT_DECLARED_ANYWHERE": "x"})).await?;
    assert_eq!(status, 500);
    let (_, after) = get(&h, "/api/secrets").await?;
    assert_eq!(before, after, "nothing applied");
    assert_eq!(
        std::fs::read(h.config_path())?,
        config_before,
        "nothing written"
    );
    // A plugin toggle is refused the same way.
    let resp = client()
        .put(h.url("/api/plugins/%40elizaos%2Fplugin-openai"))
        .json(&json!({"enabled": true}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 500);
    assert_no_piece(&h, &[CANARY_B], &body.to_string())?;
    Ok(())
}

#[tokio::test]
async fn an_unusable_audit_log_at_start_up_stops_the_host() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = HostSpec {
        args: vec!["--audit-log".into(), dir.path().display().to_string()],
        ..HostSpec::with_secrets()?
    };
    let err = match HostProcess::start(spec) {
        Ok(_) => anyhow::bail!("the host started with a folder as its audit log"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("audit log"), "{err}");
    Ok(())
}

#[tokio::test]
async fn audit_log_flag_toggles_and_refused_tokens_are_audited() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let log_path = logs.path().join("elsewhere.jsonl");
    let token = "test-token-for-the-audit-0123456789";
    let spec = HostSpec {
        args: vec!["--audit-log".into(), log_path.display().to_string()],
        ..HostSpec::with_secrets()?
    }
    .env("MILADY_API_TOKEN", token);
    let h = HostProcess::start(spec)?;
    let c = client();
    // Two refusals from one client: one line a minute.
    for wrong in ["wrong-token-one-abcdefgh", "wrong-token-two-abcdefgh"] {
        let resp = c
            .get(h.url("/api/secrets"))
            .bearer_auth(wrong)
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 401);
    }
    let resp = c
        .put(h.url("/api/plugins/%40elizaos%2Fplugin-openai"))
        .bearer_auth(token)
        .json(&json!({"enabled": true}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = c
        .get(h.url("/api/secrets/audit"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    let auth: Vec<&Value> = entries.iter().filter(|e| e["action"] == "auth").collect();
    assert_eq!(auth.len(), 1, "{entries:#?}");
    assert_eq!(auth[0]["outcome"], "refused");
    assert_eq!(auth[0]["client"]["auth"], "bearer");
    let toggle = entries
        .iter()
        .find(|e| e["action"] == "plugins.toggle")
        .context("no toggle line")?;
    assert_eq!(toggle["outcome"], "applied");
    assert_eq!(toggle["details"]["target"], "@elizaos/plugin-openai");
    assert!(
        toggle["client"]["tokenFingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("hmac-sha256:"))
    );
    assert!(log_path.exists() && !h.dir.path().join("audit.jsonl").exists());
    let text = std::fs::read_to_string(&log_path)?;
    for secret in [token, "wrong-token-one-abcdefgh"] {
        for piece in pieces(secret) {
            assert!(!text.contains(&piece) && !body.to_string().contains(&piece));
        }
    }
    Ok(())
}

#[tokio::test]
async fn fingerprints_are_equal_for_equal_values_and_stable_across_restart() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let (status, _) = put_secrets(
        &h,
        json!({"OPENAI_API_KEY": CANARY_A, "GROQ_API_KEY": "gsk_SameValueForTwoKeys0123", "ANTHROPIC_API_KEY": "gsk_SameValueForTwoKeys0123"}),
    )
    .await?;
    assert_eq!(status, 200);
    let (_, body) = get(&h, "/api/secrets").await?;
    let s = &body["secrets"];
    let fp = |k: &str| s[k]["fingerprint"].as_str().unwrap_or("").to_owned();
    assert!(fp("OPENAI_API_KEY").starts_with("hmac-sha256:"));
    assert_eq!(fp("OPENAI_API_KEY").len(), "hmac-sha256:".len() + 16);
    assert_eq!(fp("GROQ_API_KEY"), fp("ANTHROPIC_API_KEY"), "equal values");
    assert_ne!(fp("GROQ_API_KEY"), fp("OPENAI_API_KEY"), "different values");
    assert!(
        s["OPENAI_API_KEY"]["updatedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        s["SLACK_BOT_TOKEN"].get("fingerprint").is_none(),
        "unset: none"
    );
    let before = fp("OPENAI_API_KEY");
    assert_no_piece(&h, &[CANARY_A], &body.to_string())?;

    let h = h.restart()?;
    let (_, body) = get(&h, "/api/secrets").await?;
    assert_eq!(
        body["secrets"]["OPENAI_API_KEY"]["fingerprint"].as_str(),
        Some(before.as_str()),
        "stable across a restart"
    );
    // The fingerprint key lives with the secrets key, apart from the config.
    let key_dir = h.key_path().parent().map(std::path::Path::to_owned);
    let fp_key = key_dir.context("no key folder")?.join("fingerprint.key");
    assert!(fp_key.exists());
    assert!(!h.dir.path().join("fingerprint.key").exists());
    Ok(())
}

#[tokio::test]
async fn each_provider_mix_up_warns_and_a_well_shaped_value_does_not() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let tail = "Q7xw2Rk9Lm4Zp8Tb3Vn6Yc1Hd5Jf0Gs";
    let cases = [
        (
            "OPENAI_API_KEY",
            format!("sk-ant-api03-{tail}"),
            "Anthropic",
        ),
        ("ANTHROPIC_API_KEY", format!("sk-proj-{tail}"), "OpenAI"),
        ("SLACK_BOT_TOKEN", format!("ghp_{tail}"), "GitHub"),
        ("GITHUB_TOKEN", format!("xoxb-1234-5678-{tail}"), "Slack"),
        ("GROQ_API_KEY", format!("sk-or-v1-{tail}"), "OpenRouter"),
        ("OPENROUTER_API_KEY", format!("gsk_{tail}"), "Groq"),
        (
            "GOOGLE_GENERATIVE_AI_API_KEY",
            format!("sk-proj-{tail}"),
            "OpenAI",
        ),
        (
            "TELEGRAM_BOT_TOKEN",
            format!("xapp-1-A0123-{tail}"),
            "Slack",
        ),
        (
            "DISCORD_API_TOKEN",
            format!("123456789:AA{tail}"),
            "Telegram",
        ),
    ];
    let mut values = Vec::new();
    for (key, value, named) in &cases {
        let (status, body) = put_secrets(&h, json!({ *key: value })).await?;
        assert_eq!(status, 200, "never blocked: {body}");
        let warning = body["warnings"][*key].as_str().unwrap_or("");
        assert!(warning.contains(named), "{key}: {body}");
        assert!(
            warning.contains("https://"),
            "cites the documentation: {warning}"
        );
        values.push(value.clone());
    }
    let well_shaped = [
        ("OPENAI_API_KEY", format!("sk-proj-{tail}")),
        ("ANTHROPIC_API_KEY", format!("sk-ant-api03-{tail}")),
        ("SLACK_BOT_TOKEN", format!("xoxb-1234-5678-{tail}")),
        ("TELEGRAM_BOT_TOKEN", format!("123456789:AA{tail}")),
    ];
    for (key, value) in &well_shaped {
        let (status, body) = put_secrets(&h, json!({ *key: value })).await?;
        assert_eq!(status, 200);
        assert_eq!(body["warnings"], json!({}), "{key}: {body}");
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let entries = serde_json::to_string(&audit(&h, "").await?)?;
    assert_no_piece(&h, &refs, &entries)?;
    Ok(())
}

#[tokio::test]
async fn the_process_environment_wins_and_says_so() -> Result<()> {
    let spec = HostSpec::with_secrets()?
        .config("[env]\nOPENAI_API_KEY = \"sk-proj-stored-in-config-000\"\n")
        .env("OPENAI_API_KEY", "sk-proj-from-the-process-0000");
    let h = HostProcess::start(spec)?;
    let (_, body) = get(&h, "/api/secrets").await?;
    assert_eq!(
        body["secrets"]["OPENAI_API_KEY"]["overriddenByProcess"],
        true
    );
    assert_eq!(body["secrets"]["OPENAI_API_KEY"]["source"], "process");
    assert_eq!(
        body["secrets"]["ANTHROPIC_API_KEY"]["overriddenByProcess"],
        false
    );
    let (status, body) =
        put_secrets(&h, json!({"OPENAI_API_KEY": "sk-proj-written-now-00000"})).await?;
    assert_eq!(status, 200);
    let warning = body["warnings"]["OPENAI_API_KEY"].as_str().unwrap_or("");
    assert!(warning.contains("process environment"), "{body}");
    assert!(warning.contains("restart"), "{body}");
    let (status, body) = put_secrets(
        &h,
        json!({"ANTHROPIC_API_KEY": "sk-ant-api03-no-process-0"}),
    )
    .await?;
    assert_eq!(status, 200);
    assert!(
        body["warnings"].get("ANTHROPIC_API_KEY").is_none(),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn the_empty_write_is_a_no_op() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let c = client();
    let (status, _) = put_secrets(&h, json!({"OPENAI_API_KEY": CANARY_A})).await?;
    assert_eq!(status, 200);
    let tag = |r: &reqwest::Response| {
        r.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let first = c.get(h.url("/api/secrets")).send().await?;
    let etag = tag(&first);
    let lines_before = std::fs::read_to_string(audit_path(&h))?.lines().count();
    let config_before = std::fs::read(h.config_path())?;

    let resp = c
        .put(h.url("/api/secrets"))
        .header("If-Match", &etag)
        .json(&json!({"secrets": {}}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(tag(&resp), etag, "the ETag does not move");
    let body: Value = resp.json().await?;
    assert_eq!(body["ok"], true);
    assert_eq!(body["updated"], json!([]));
    assert_eq!(
        std::fs::read(h.config_path())?,
        config_before,
        "nothing written"
    );
    let lines_after = std::fs::read_to_string(audit_path(&h))?.lines().count();
    assert_eq!(lines_after, lines_before, "not audited");
    let again = c.get(h.url("/api/secrets")).send().await?;
    assert_eq!(tag(&again), etag);

    // A stale If-Match is still refused.
    let (status, _) = put_secrets(&h, json!({"OPENAI_API_KEY": CANARY_B})).await?;
    assert_eq!(status, 200);
    let resp = c
        .put(h.url("/api/secrets"))
        .header("If-Match", &etag)
        .json(&json!({"secrets": {}}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 412);
    Ok(())
}
