//! The host's router in-process (no plugin library, no socket): registry
//! routes, JSON errors, auth, the Host-header check and the documents.

use demo_host::{Host, HostOptions, SecretsKey};
use poem::{Endpoint, http::StatusCode, test::TestClient};
use serde_json::{Value, json};

fn host(dir: &tempfile::TempDir, token: Option<&str>) -> Host {
    let mut options = HostOptions::new(dir.path().join("milady.toml"));
    // A key of the test's own, never the machine's.
    options.secrets_key = SecretsKey::File(dir.path().join("key").join("secrets.key"));
    options.token = token.map(str::to_owned);
    Host::build(options, Vec::new()).expect("host builds")
}

async fn body(resp: poem::test::TestResponse) -> Value {
    resp.0.into_body().into_json().await.expect("JSON body")
}

fn client(h: &Host) -> TestClient<impl Endpoint> {
    TestClient::new(h.endpoint()).default_header("host", "127.0.0.1:2138")
}

#[tokio::test]
async fn lists_the_default_catalog_and_toggles_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&dir, None);
    let cli = client(&h);
    let resp = cli.get("/api/plugins").send().await;
    resp.assert_status_is_ok();
    let list = body(resp).await;
    let plugins = list["plugins"].as_array().expect("array");
    assert!(plugins.len() >= 12);
    let openai = plugins
        .iter()
        .find(|p| p["id"] == "@elizaos/plugin-openai")
        .expect("openai in the default catalog");
    assert_eq!(openai["enabled"], false);
    assert_eq!(openai["loaded"], false);
    assert!(openai["parameters"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["key"] == "OPENAI_API_KEY" && p["sensitive"] == true)
    }));

    let resp = cli
        .put("/api/plugins/%40elizaos%2Fplugin-openai")
        .body_json(&json!({"enabled": true}))
        .send()
        .await;
    resp.assert_status_is_ok();
    assert_eq!(
        body(resp).await,
        json!({"ok": true, "id": "@elizaos/plugin-openai", "enabled": true})
    );
    assert!(
        h.registry
            .snapshot()
            .plugins
            .iter()
            .any(|p| p.id == "@elizaos/plugin-openai" && p.enabled)
    );
    let text = std::fs::read_to_string(dir.path().join("milady.toml")).expect("written");
    assert!(
        text.contains("[plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true"),
        "{text}"
    );

    let resp = cli
        .put("/api/plugins/%40nobody%2Fnothing")
        .body_json(&json!({"enabled": true}))
        .send()
        .await;
    resp.assert_status(StatusCode::NOT_FOUND);
    assert_eq!(body(resp).await["code"], "plugin_not_found");
    assert!(
        !std::fs::read_to_string(dir.path().join("milady.toml"))
            .expect("file")
            .contains("nobody")
    );
}

#[tokio::test]
async fn every_error_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&dir, None);
    let cli = client(&h);
    for (method, path, status) in [
        ("GET", "/nope", StatusCode::NOT_FOUND),
        ("GET", "/api/secrets", StatusCode::NOT_FOUND),
        ("DELETE", "/api/plugins", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let resp = match method {
            "DELETE" => cli.delete(path).send().await,
            _ => cli.get(path).send().await,
        };
        resp.assert_status(status);
        resp.assert_content_type("application/json; charset=utf-8");
        let b = body(resp).await;
        assert!(
            b["error"].is_string() && b["code"].is_string(),
            "{path}: {b}"
        );
    }
    let resp = cli
        .put("/api/plugins/x")
        .content_type("application/json")
        .body("{nope")
        .send()
        .await;
    resp.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(body(resp).await["code"], "bad_request");
}

#[tokio::test]
async fn token_and_host_header_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&dir, Some("in-process-token"));
    let cli = client(&h);
    let resp = cli.get("/api/plugins").send().await;
    resp.assert_status(StatusCode::UNAUTHORIZED);
    assert_eq!(
        body(resp).await,
        json!({"error": "Unauthorized", "code": "unauthorized"})
    );
    cli.get("/api/plugins")
        .header("x-api-key", "in-process-token")
        .send()
        .await
        .assert_status_is_ok();
    // Docs are public.
    cli.get("/openapi.json").send().await.assert_status_is_ok();
    // A rebinding attack names its own host: refused before auth.
    let resp = cli
        .get("/api/plugins")
        .header("host", "attacker.example:2138")
        .header("x-api-key", "in-process-token")
        .send()
        .await;
    resp.assert_status(StatusCode::FORBIDDEN);
    assert_eq!(body(resp).await["code"], "forbidden_host");
    // No CORS grant, ever.
    let resp = cli
        .get("/openapi.json")
        .header("origin", "https://attacker.example")
        .send()
        .await;
    resp.assert_header_is_not_exist("access-control-allow-origin");
}

#[tokio::test]
async fn documents_describe_the_host_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&dir, None);
    let cli = client(&h);
    let resp = cli.get("/openapi.json").send().await;
    resp.assert_status_is_ok();
    let doc = body(resp).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in ["/api/plugins", "/api/plugins/{id}", "/api/health"] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    assert!(doc["components"]["securitySchemes"]["bearerAuth"].is_object());
    let resp = cli.get("/docs").send().await;
    resp.assert_status_is_ok();
    let html = resp.0.into_body().into_string().await.expect("html");
    assert!(html.contains("SwaggerUIBundle") && html.contains("/api/plugins/{id}"));
}

#[tokio::test]
async fn invalid_config_stops_start_up_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("milady.toml");
    std::fs::write(&path, "[env]\nA = \"ok\"\nB = = \"SECRET-CANARY\"\n").expect("write");
    let mut options = HostOptions::new(&path);
    options.secrets_key = SecretsKey::File(dir.path().join("key").join("secrets.key"));
    let err = match Host::build(options, Vec::new()) {
        Ok(_) => panic!("an invalid config must stop start-up"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("line 3"), "{err}");
    assert!(!err.contains("SECRET-CANARY"), "{err}");
}

#[test]
fn options_debug_hides_the_token() {
    let mut options = HostOptions::new("/tmp/x.toml");
    options.token = Some("TOKEN-CANARY-123".into());
    let text = format!("{options:?}");
    assert!(!text.contains("TOKEN-CANARY"), "{text}");
    assert!(text.contains("<set>"));
}
