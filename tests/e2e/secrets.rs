//! `GET`/`PUT /api/secrets` against the real host and the real library
//! (SPEC §2, one test per rule).

use std::collections::BTreeSet;

use anyhow::Result;
use e2e_tests::{HostProcess, HostSpec, Stored, client, milady_catalog, write_catalog};
use serde_json::{Value, json};

use crate::{get, put};

/// A catalog of our own: plugins A and B share `SHARED_KEY`; `plugin-0` of
/// the generated part declares `P0_KEY_0..49`.
fn own_catalog(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let path = dir.join("own-catalog.json");
    write_catalog(&path, 1, 50)?;
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let shared = |id: &str, required: bool| {
        json!({"npmName": id, "name": id, "pluginParameters": {
            "SHARED_KEY": {"type": "string", "description": format!("shared key of {id}"), "required": required, "sensitive": true},
            "NOT_SECRET": {"type": "string", "description": "plain", "required": false, "sensitive": false}
        }})
    };
    if let Some(list) = doc["plugins"].as_array_mut() {
        list.push(shared("@test/plugin-a", true));
        list.push(shared("@test/plugin-b", false));
    }
    std::fs::write(&path, serde_json::to_vec(&doc)?)?;
    Ok(path)
}

fn start_with_own_catalog(spec: HostSpec) -> Result<(HostProcess, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let catalog = own_catalog(dir.path())?;
    Ok((HostProcess::start(spec.catalog(&catalog))?, dir))
}

async fn secrets(h: &HostProcess) -> Result<Value> {
    let (status, body) = get(h, "/api/secrets").await?;
    assert_eq!(status, 200);
    Ok(body["secrets"].clone())
}

async fn put_secrets(h: &HostProcess, secrets: Value) -> Result<(u16, Value)> {
    put(h, "/api/secrets", &json!({ "secrets": secrets })).await
}

#[tokio::test]
async fn get_serves_every_sensitive_key_of_miladys_catalog() -> Result<()> {
    let Some(catalog) = milady_catalog() else {
        return Ok(());
    };
    let doc: Value = serde_json::from_slice(&std::fs::read(&catalog)?)?;
    let mut expected = BTreeSet::new();
    let mut sensitive_params = 0;
    for plugin in doc["plugins"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Some(params) = plugin["pluginParameters"].as_object() {
            for (key, p) in params {
                if p["sensitive"] == true {
                    expected.insert(key.clone());
                    sensitive_params += 1;
                }
            }
        }
    }
    assert_eq!(doc["plugins"].as_array().map(Vec::len), Some(104));
    assert_eq!(sensitive_params, 114);
    let h = HostProcess::start(HostSpec::with_secrets()?.catalog(&catalog))?;
    let resp = client().get(h.url("/api/secrets")).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.headers().contains_key("etag"));
    let body: Value = resp.json().await?;
    let served = body["secrets"].as_object().cloned().unwrap_or_default();
    for key in &expected {
        let s = &served[key];
        assert_eq!(s["value"], "", "{key}");
        assert_eq!(s["set"], false, "{key}");
        assert!(
            s["pluginId"].as_str().is_some_and(|id| !id.is_empty()),
            "{key}"
        );
        assert!(s["pluginEnabled"].is_boolean(), "{key}");
        assert!(
            s["usedBy"].as_array().is_some_and(|u| !u.is_empty()),
            "{key}"
        );
    }
    // Keys several plugins share list them all.
    let openai = &served["OPENAI_API_KEY"];
    assert!(
        openai["usedBy"].as_array().map(Vec::len).unwrap_or(0) >= 2,
        "{openai}"
    );
    // Catalog entries without an npm name fall back to their id.
    assert_eq!(served["CUSTOM_RTMP_KEY"]["pluginId"], "custom-rtmp");
    Ok(())
}

#[tokio::test]
async fn put_sets_clears_and_redacts_with_every_field_documented() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let long = "sk-proj-0123456789abcdefghijwxyz";
    let (status, body) =
        put_secrets(&h, json!({"OPENAI_API_KEY": long, "P0_KEY_1": "short"})).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["updated"], json!(["OPENAI_API_KEY", "P0_KEY_1"]));
    assert_eq!(body["cleared"], json!([]));
    let s = secrets(&h).await?;
    assert_eq!(s["OPENAI_API_KEY"]["value"], "sk-****...wxyz");
    assert_eq!(s["OPENAI_API_KEY"]["set"], true);
    assert_eq!(s["OPENAI_API_KEY"]["source"], "api");
    assert_eq!(s["P0_KEY_1"]["value"], "********");
    assert_eq!(
        h.stored_env()?["OPENAI_API_KEY"],
        Stored::Encrypted(long.into()),
        "written to the config file, encrypted"
    );

    let (status, body) = put_secrets(&h, json!({"OPENAI_API_KEY": ""})).await?;
    assert_eq!(status, 200);
    assert_eq!(body["cleared"], json!(["OPENAI_API_KEY"]));
    let s = secrets(&h).await?;
    assert_eq!(s["OPENAI_API_KEY"]["value"], "");
    assert_eq!(s["OPENAI_API_KEY"]["set"], false);
    assert!(s["OPENAI_API_KEY"].get("source").is_none());
    let text = std::fs::read_to_string(h.config_path())?;
    assert!(
        !text.lines().any(|l| l.starts_with("OPENAI_API_KEY")),
        "removed from the file:\n{text}"
    );
    Ok(())
}

#[tokio::test]
async fn multibyte_secret_is_set_and_redacted_by_characters() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let value = "🔑ключ-секрет-значение-密钥🙂🙂🙂🙂";
    let (status, _) = put_secrets(&h, json!({"P0_KEY_2": value})).await?;
    assert_eq!(status, 200);
    let s = secrets(&h).await?;
    assert_eq!(s["P0_KEY_2"]["value"], "🔑кл****...🙂🙂🙂🙂");
    assert_eq!(h.stored_env()?["P0_KEY_2"], Stored::Encrypted(value.into()));
    Ok(())
}

/// Every rejection reason of SPEC §2, each leaving file and GET unchanged.
#[tokio::test]
async fn every_rejection_changes_nothing() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let (status, _) =
        put_secrets(&h, json!({"P0_KEY_3": "an-existing-secret-value-123456"})).await?;
    assert_eq!(status, 200);
    let file_before = std::fs::read(h.config_path())?;
    let get_before = secrets(&h).await?;
    let c = client();

    let raw = |body: &'static str, ct: &'static str| {
        let c = c.clone();
        let url = h.url("/api/secrets");
        async move {
            let resp = c
                .put(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await?;
            anyhow::Ok((status, body))
        }
    };
    for (body, ct, code) in [
        ("{not json", "application/json", "invalid_json"),
        ("", "application/json", "invalid_body"),
        ("[1,2]", "application/json", "invalid_body"),
        ("\"text\"", "application/json", "invalid_body"),
        ("{}", "application/json", "missing_secrets"),
        (
            "{\"secrets\": [\"A\"]}",
            "application/json",
            "invalid_secrets_type",
        ),
        (
            "{\"secrets\": \"A\"}",
            "application/json",
            "invalid_secrets_type",
        ),
        // `{"secrets": {}}` is a no-op now (SPEC §8): `knowing::the_empty_write_*`.
        (
            "{\"secrets\": {\"P0_KEY_4\": \"v\"}}",
            "text/plain",
            "unsupported_media_type",
        ),
    ] {
        let (status, resp) = raw(body, ct).await?;
        assert_eq!(status, 400, "{body}: {resp}");
        assert_eq!(resp["code"], code, "{body}");
        assert!(resp["error"].is_string());
    }

    let placeholder = get_before["P0_KEY_3"]["value"].clone();
    let cases = json!({
        "": "x",
        "1BAD": "x",
        "BAD-NAME": "x",
        "NOT_DECLARED_ANYWHERE": "x",
        "NOT_SECRET": "x",
        "LD_PRELOAD": "/tmp/evil.so",
        "ld_preload": "/tmp/evil.so",
        "HTTPS_PROXY": "http://evil",
        "PATH": "/evil",
        "SSL_CERT_FILE": "/evil.pem",
        "MILADY_API_TOKEN": "stolen",
        "P0_KEY_5": 42,
        "P0_KEY_6": null,
        "P0_KEY_7": {"nested": true},
        "P0_KEY_8": "nul\u{0}inside",
        "P0_KEY_9": "  \t\n ",
        "P0_KEY_3": placeholder,
        "P0_KEY_10": "this one is fine on its own",
    });
    let (status, body) = put_secrets(&h, cases.clone()).await?;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_secrets");
    let rejected = body["rejected"].as_object().cloned().unwrap_or_default();
    let reason = |k: &str| {
        rejected
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_owned()
    };
    assert_eq!(reason(""), "key is empty");
    assert_eq!(reason("1BAD"), "not a valid environment variable name");
    assert_eq!(reason("BAD-NAME"), "not a valid environment variable name");
    assert_eq!(
        reason("NOT_DECLARED_ANYWHERE"),
        "not declared as sensitive by any plugin"
    );
    assert_eq!(
        reason("NOT_SECRET"),
        "not declared as sensitive by any plugin"
    );
    for blocked in [
        "LD_PRELOAD",
        "ld_preload",
        "HTTPS_PROXY",
        "PATH",
        "SSL_CERT_FILE",
        "MILADY_API_TOKEN",
    ] {
        assert_eq!(reason(blocked), "blocked by the host", "{blocked}");
    }
    for wrong_type in ["P0_KEY_5", "P0_KEY_6", "P0_KEY_7"] {
        assert!(
            reason(wrong_type).starts_with("value must be a string"),
            "{wrong_type}"
        );
    }
    assert_eq!(reason("P0_KEY_8"), "value contains a NUL character");
    assert_eq!(reason("P0_KEY_9"), "value is only whitespace");
    assert!(reason("P0_KEY_3").contains("masked placeholder"));
    assert!(!rejected.contains_key("P0_KEY_10"));
    assert_eq!(rejected.len(), 17);
    assert_eq!(body["error"], "17 secrets rejected");
    let text = body.to_string();
    for value in [
        "/tmp/evil.so",
        "http://evil",
        "stolen",
        "nul",
        "this one is fine",
    ] {
        assert!(!text.contains(value), "no value echoed: {value}");
    }

    assert_eq!(
        std::fs::read(h.config_path())?,
        file_before,
        "file unchanged"
    );
    assert_eq!(secrets(&h).await?, get_before, "GET unchanged");
    Ok(())
}

#[tokio::test]
async fn masked_placeholder_round_trip_is_refused() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    for value in [
        "sk-ant-0123456789abcdefghijklmn",
        "sixteen-chars-ab",
        "short",
    ] {
        let (status, _) = put_secrets(&h, json!({"ANTHROPIC_API_KEY": value})).await?;
        assert_eq!(status, 200);
        let shown = secrets(&h).await?["ANTHROPIC_API_KEY"]["value"].clone();
        // A form that sends back what it was shown must not overwrite the secret.
        let (status, body) = put_secrets(&h, json!({"ANTHROPIC_API_KEY": shown})).await?;
        assert_eq!(status, 400, "{value}: {body}");
        assert_eq!(
            h.stored_env()?["ANTHROPIC_API_KEY"],
            Stored::Encrypted(value.into()),
            "the real secret is kept"
        );
    }
    Ok(())
}

#[tokio::test]
async fn etag_and_if_match_guard_against_lost_updates() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let c = client();
    let tag = |resp: &reqwest::Response| {
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let first = c.get(h.url("/api/secrets")).send().await?;
    let etag = tag(&first);
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    // Tab 1 writes with the fresh tag.
    let resp = c
        .put(h.url("/api/secrets"))
        .header("If-Match", &etag)
        .json(&json!({"secrets": {"P0_KEY_11": "from-tab-one"}}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let new_tag = tag(&resp);
    assert_ne!(new_tag, etag);
    // Tab 2 still holds the old tag: refused, nothing changed.
    let resp = c
        .put(h.url("/api/secrets"))
        .header("If-Match", &etag)
        .json(&json!({"secrets": {"P0_KEY_11": "from-tab-two"}}))
        .send()
        .await?;
    assert_eq!(resp.status(), 412);
    let body: Value = resp.json().await?;
    assert_eq!(body["code"], "precondition_failed");
    assert_eq!(
        h.stored_env()?["P0_KEY_11"],
        Stored::Encrypted("from-tab-one".into())
    );
    // Garbage tags are stale too; `*` and no header proceed.
    for (header, expected) in [(Some("\"garbage\""), 412), (Some("*"), 200), (None, 200)] {
        let mut req = c
            .put(h.url("/api/secrets"))
            .json(&json!({"secrets": {"P0_KEY_12": "v-12-x"}}));
        if let Some(v) = header {
            req = req.header("If-Match", v);
        }
        assert_eq!(req.send().await?.status(), expected, "{header:?}");
    }
    // The tag from GET after the writes works.
    let etag = tag(&c.get(h.url("/api/secrets")).send().await?);
    let resp = c
        .put(h.url("/api/secrets"))
        .header("If-Match", &etag)
        .json(&json!({"secrets": {"P0_KEY_11": ""}}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_puts_all_land() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        let url = h.url("/api/secrets");
        tasks.push(tokio::spawn(async move {
            c.put(url)
                .json(&json!({"secrets": {format!("P0_KEY_{i}"): format!("value-number-{i}-abcdefghijkl")}}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await??, 200);
    }
    let s = secrets(&h).await?;
    let stored = h.stored_env()?;
    for i in 0..50 {
        assert_eq!(s[format!("P0_KEY_{i}")]["set"], true, "P0_KEY_{i}");
        assert_eq!(
            stored.get(&format!("P0_KEY_{i}")),
            Some(&Stored::Encrypted(format!("value-number-{i}-abcdefghijkl"))),
            "P0_KEY_{i} in file"
        );
    }
    Ok(())
}

#[tokio::test]
async fn toggling_a_plugin_moves_plugin_id_and_enabled_of_a_shared_key() -> Result<()> {
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let s = secrets(&h).await?;
    assert_eq!(s["SHARED_KEY"]["pluginId"], "@test/plugin-a");
    assert_eq!(s["SHARED_KEY"]["pluginEnabled"], false);
    assert_eq!(
        s["SHARED_KEY"]["required"], false,
        "no enabled plugin requires it"
    );
    let (status, _) = put(
        &h,
        "/api/plugins/%40test%2Fplugin-b",
        &json!({"enabled": true}),
    )
    .await?;
    assert_eq!(status, 200);
    let s = secrets(&h).await?;
    assert_eq!(
        s["SHARED_KEY"]["pluginId"], "@test/plugin-b",
        "an enabled plugin is preferred"
    );
    assert_eq!(s["SHARED_KEY"]["pluginEnabled"], true);
    assert_eq!(s["SHARED_KEY"]["usedBy"].as_array().map(Vec::len), Some(2));
    let (status, _) = put(
        &h,
        "/api/plugins/%40test%2Fplugin-a",
        &json!({"enabled": true}),
    )
    .await?;
    assert_eq!(status, 200);
    let s = secrets(&h).await?;
    assert_eq!(
        s["SHARED_KEY"]["pluginId"], "@test/plugin-a",
        "then registry order"
    );
    assert_eq!(s["SHARED_KEY"]["required"], true);
    // restartRequired follows enabled declarers.
    let (_, body) = put_secrets(&h, json!({"SHARED_KEY": "shared-value"})).await?;
    assert_eq!(body["restartRequired"], true);
    assert_eq!(
        body["affectedPlugins"],
        json!(["@test/plugin-a", "@test/plugin-b"])
    );
    let (_, body) = put_secrets(&h, json!({"P0_KEY_13": "x-value"})).await?;
    assert_eq!(body["restartRequired"], false);
    Ok(())
}

#[tokio::test]
async fn milady_shared_key_follows_the_toggle() -> Result<()> {
    let Some(catalog) = milady_catalog() else {
        return Ok(());
    };
    let h = HostProcess::start(HostSpec::with_secrets()?.catalog(&catalog))?;
    let s = secrets(&h).await?;
    let users: Vec<String> = s["OPENAI_API_KEY"]["usedBy"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|p| p["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(users.len() >= 2);
    let second = users[1].clone();
    let encoded = second.replace('@', "%40").replace('/', "%2F");
    let (status, _) = put(
        &h,
        &format!("/api/plugins/{encoded}"),
        &json!({"enabled": true}),
    )
    .await?;
    assert_eq!(status, 200);
    let s = secrets(&h).await?;
    assert_eq!(s["OPENAI_API_KEY"]["pluginId"], second.as_str());
    assert_eq!(s["OPENAI_API_KEY"]["pluginEnabled"], true);
    Ok(())
}

#[tokio::test]
async fn values_survive_a_restart_and_sources_follow_the_milady_rule() -> Result<()> {
    let config = "# my notes\n[env]\nGROQ_API_KEY = \"gsk-from-config-file-0123456789\"\nOPENAI_API_KEY = \"from-config-loses\"\n\n[other]\nkeep = 1\n";
    let (h, _dir) = start_with_own_catalog(
        HostSpec::with_secrets()?
            .config(config)
            .env("OPENAI_API_KEY", "sk-from-process-env-0123456789"),
    )?;
    let s = secrets(&h).await?;
    assert_eq!(
        s["OPENAI_API_KEY"]["source"], "process",
        "process environment wins"
    );
    assert_eq!(s["OPENAI_API_KEY"]["value"], "sk-****...6789");
    assert_eq!(s["GROQ_API_KEY"]["source"], "config");
    let (status, _) = put_secrets(&h, json!({"P0_KEY_14": "survives-the-restart-0000"})).await?;
    assert_eq!(status, 200);
    let h = h.restart()?;
    let s = secrets(&h).await?;
    assert_eq!(s["P0_KEY_14"]["set"], true);
    assert_eq!(s["P0_KEY_14"]["source"], "config");
    let text = std::fs::read_to_string(h.config_path())?;
    assert!(text.starts_with("# my notes\n[env]\n"), "{text}");
    assert!(text.contains("[other]\nkeep = 1\n"), "{text}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(h.config_path())?.permissions().mode() & 0o777,
        0o600
    );
    Ok(())
}

#[tokio::test]
async fn block_list_is_configurable() -> Result<()> {
    let config = "[security]\nblocked_env_keys = [\"p0_key_2*\"]\n";
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?.config(config))?;
    let (status, body) = put_secrets(
        &h,
        json!({"P0_KEY_20": "x-value-1", "P0_KEY_1": "ok-value"}),
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(body["rejected"]["P0_KEY_20"], "blocked by the host");
    assert!(body["rejected"].get("P0_KEY_1").is_none());
    Ok(())
}

#[tokio::test]
async fn canary_secrets_never_reach_logs_or_error_bodies() -> Result<()> {
    let canary = "CANARY-7f3e9b2d41c8-secret-value";
    let (h, _dir) = start_with_own_catalog(HostSpec::with_secrets()?)?;
    let c = client();
    let mut bodies = String::new();
    let send = |body: String| {
        let c = c.clone();
        let url = h.url("/api/secrets");
        async move {
            let resp = c
                .put(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::Ok(resp.text().await?)
        }
    };
    bodies += &send(json!({"secrets": {"P0_KEY_15": canary}}).to_string()).await?;
    bodies +=
        &send(json!({"secrets": {"UNKNOWN": canary, "LD_PRELOAD": canary}}).to_string()).await?;
    bodies += &send(json!({"secrets": {"P0_KEY_16": [canary]}}).to_string()).await?;
    bodies += &send(format!("{{\"secrets\": {{\"P0_KEY_17\": \"{canary}")).await?;
    bodies += &send(json!({"secrets": {canary: canary}}).to_string()).await?;
    bodies +=
        &send(json!({"secrets": {"P0_KEY_18": format!("{canary}\u{0}")}}).to_string()).await?;
    bodies += &client()
        .get(h.url("/api/secrets"))
        .send()
        .await?
        .text()
        .await?;
    bodies += &send(json!({"secrets": {"P0_KEY_15": ""}}).to_string()).await?;
    // Only the invalid-name key itself may be echoed (it is a name, not a value).
    let without_key_echo = bodies.replace(&format!("\"{canary}\":"), "");
    assert!(!without_key_echo.contains(canary), "error bodies: {bodies}");
    let log = h.log();
    assert!(!log.contains(canary), "log leaked the canary");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log was verbose"
    );
    Ok(())
}
