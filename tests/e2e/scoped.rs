//! Scoped host services (host-api 0.1.2): each plugin sees only the keys it
//! declares (plus non-sensitive settings); managing every secret is a
//! capability the manifest asks for and the config grants; each request
//! carries its client; plugins append to and query the audit log.

use anyhow::Result;
use e2e_tests::{HostProcess, HostSpec, artifacts};
use serde_json::Value;

use crate::get;

const TOKEN: &str = "e2e-scoped-token-0123456789";
const OPENAI_VALUE: &str = "sk-CANARY-openai-value-4242";
const OWN_VALUE: &str = "CANARY-own-value-9999";

fn spec(config: Option<&str>) -> Result<HostSpec> {
    let a = artifacts()?;
    let mut spec = HostSpec::with_secrets()?
        .plugin(&a.scoped, "scoped.so")
        .env("MILADY_API_TOKEN", TOKEN)
        .env("OPENAI_API_KEY", OPENAI_VALUE)
        .env("SCOPED_OWN_KEY", OWN_VALUE);
    if let Some(text) = config {
        spec = spec.config(text);
    }
    Ok(spec)
}

async fn call(h: &HostProcess, method: reqwest::Method, path: &str) -> Result<(u16, Value)> {
    let resp = e2e_tests::client()
        .request(method, h.url(path))
        .header("x-api-key", TOKEN)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

#[tokio::test]
async fn a_plugin_that_reads_a_secret_it_did_not_declare_gets_an_error() -> Result<()> {
    let h = HostProcess::start(spec(None)?)?;
    let (status, body) = call(
        &h,
        reqwest::Method::GET,
        "/api/scoped/read?key=OPENAI_API_KEY",
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "undeclared_key", "{body}");
    // Its own key reads fine.
    let (status, body) = call(
        &h,
        reqwest::Method::GET,
        "/api/scoped/read?key=SCOPED_OWN_KEY",
    )
    .await?;
    assert_eq!((status, &body["set"]), (200, &Value::Bool(true)), "{body}");
    // The host logged the refusal, naming the plugin and the key, never a value.
    assert!(h.wait_for_log("refused a plugin's read", std::time::Duration::from_secs(5)));
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused a plugin's read"))
        .unwrap_or_default();
    assert!(
        line.contains("@fixtures/scoped") && line.contains("OPENAI_API_KEY"),
        "{line}"
    );
    assert!(!log.contains("CANARY"), "a value reached the log");

    // The 0.1.1-style `HostContext::env()` is scoped the same way.
    let (_, env) = call(&h, reqwest::Method::GET, "/api/scoped/env").await?;
    let keys: Vec<&str> = env["keys"]
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(keys.contains(&"SCOPED_OWN_KEY"), "{keys:?}");
    assert!(
        !keys.contains(&"OPENAI_API_KEY") && !keys.contains(&"PATH"),
        "{keys:?}"
    );

    // Nor may it write another plugin's secret.
    let (status, body) = call(
        &h,
        reqwest::Method::PUT,
        "/api/scoped/write?key=OPENAI_API_KEY&value=x",
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "rejected", "{body}");
    let (status, body) = call(
        &h,
        reqwest::Method::PUT,
        "/api/scoped/write?key=SCOPED_OWN_KEY&value=new-own-value",
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // The secrets plugin still manages every key, the fixture's included.
    let (status, secrets) = call(&h, reqwest::Method::GET, "/api/secrets").await?;
    assert_eq!(status, 200);
    assert_eq!(
        secrets["secrets"]["OPENAI_API_KEY"]["set"], true,
        "{secrets}"
    );
    assert_eq!(
        secrets["secrets"]["SCOPED_OWN_KEY"]["set"], true,
        "{secrets}"
    );
    Ok(())
}

#[tokio::test]
async fn requests_carry_their_client_and_records_and_audit_carry_no_value() -> Result<()> {
    let h = HostProcess::start(spec(None)?)?;
    let (status, client) = call(&h, reqwest::Method::GET, "/api/scoped/client").await?;
    assert_eq!(status, 200, "{client}");
    assert_eq!(client["auth"], "api_key");
    assert!(
        client["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{client}"
    );
    let fingerprint = client["tokenFingerprint"].as_str().unwrap_or_default();
    assert!(
        fingerprint.starts_with("hmac-sha256:") && fingerprint.len() == 28,
        "{client}"
    );
    assert!(!client.to_string().contains(TOKEN));
    // Asked for, not granted: the config does not say so.
    assert_eq!(client["manageSecrets"], false);

    let (_, records) = call(&h, reqwest::Method::GET, "/api/scoped/records").await?;
    let records = records["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["key"], "SCOPED_OWN_KEY");
    assert_eq!(records[0]["source"], "process");
    assert_eq!(records[0]["readable"], true);
    assert!(
        records[0]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("hmac-sha256:"))
    );
    assert!(!Value::Array(records).to_string().contains("CANARY"));

    let (status, audit) = call(
        &h,
        reqwest::Method::POST,
        "/api/scoped/audit?key=SCOPED_OWN_KEY",
    )
    .await?;
    assert_eq!(status, 200, "{audit}");
    let newest = &audit["entries"][0];
    // The host names the plugin itself and stamps the time.
    assert_eq!(newest["plugin"], "@fixtures/scoped", "{audit}");
    assert!(
        newest["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{audit}"
    );
    assert_eq!(newest["auth"], "api_key");
    let file = h.dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&file)?;
    assert!(
        text.contains("fixture.audit") && !text.contains("CANARY"),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o777,
            0o600
        );
    }
    Ok(())
}

#[tokio::test]
async fn managing_every_secret_needs_the_config_grant() -> Result<()> {
    // Granted to the fixture (which asks), withdrawn from the secrets plugin.
    let config = r#"
[plugins.entries."@fixtures/scoped"]
manage_secrets = true

[plugins.entries."@milady/plugin-secrets"]
manage_secrets = false
"#;
    let h = HostProcess::start(spec(Some(config))?)?;
    let (status, body) = call(
        &h,
        reqwest::Method::GET,
        "/api/scoped/read?key=OPENAI_API_KEY",
    )
    .await?;
    assert_eq!((status, &body["set"]), (200, &Value::Bool(true)), "{body}");
    let (_, client) = call(&h, reqwest::Method::GET, "/api/scoped/client").await?;
    assert_eq!(client["manageSecrets"], true);
    // Without the grant the secrets plugin sees no other plugin's secret.
    let (status, secrets) = call(&h, reqwest::Method::GET, "/api/secrets").await?;
    assert_eq!(status, 200);
    assert_eq!(
        secrets["secrets"]["OPENAI_API_KEY"]["set"], false,
        "{secrets}"
    );
    assert!(h.wait_for_log(
        "not granted `manage_secrets`",
        std::time::Duration::from_secs(5)
    ));
    // Unauthenticated requests never reach a plugin.
    let (status, _) = get(&h, "/api/scoped/client").await?;
    assert_eq!(status, 401);
    Ok(())
}
