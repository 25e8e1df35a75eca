//! The secrets API linked natively over the real host services (config file
//! in a temporary folder), without loading a library: fast checks of the
//! contract and the OpenAPI metadata.

use demo_host::{Host, HostOptions, HostServices, SecretsKey};
use poem::{Endpoint, http::StatusCode, test::TestClient};
use serde_json::{Value, json};

/// A host's options with the config and the secrets key (never the
/// machine's own) in `dir`.
fn options_in(dir: &tempfile::TempDir) -> HostOptions {
    let mut options = HostOptions::new(dir.path().join("milady.toml"));
    options.secrets_key = SecretsKey::File(dir.path().join("key").join("secrets.key"));
    options
}

fn setup(
    process_env: Vec<(String, String)>,
) -> (tempfile::TempDir, Host, TestClient<impl Endpoint>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::build(options_in(&dir), process_env).expect("host");
    let services = HostServices::new(
        host.registry.clone(),
        host.env.clone(),
        secrets_plugin::PLUGIN_ID,
    );
    let client = TestClient::new(secrets_plugin::endpoint(services.into_box()));
    (dir, host, client)
}

async fn json_body(resp: poem::test::TestResponse) -> Value {
    resp.0.into_body().into_json().await.expect("JSON body")
}

#[tokio::test]
async fn get_lists_default_catalog_secrets_with_headers() {
    let (_dir, _host, cli) = setup(vec![(
        "GROQ_API_KEY".into(),
        "gsk_0123456789abcdefghijklmn".into(),
    )]);
    let resp = cli.get("/api/secrets").send().await;
    resp.assert_status_is_ok();
    resp.assert_header("cache-control", "no-store");
    resp.assert_header_exist("etag");
    let body = json_body(resp).await;
    let groq = &body["secrets"]["GROQ_API_KEY"];
    assert_eq!(groq["value"], "gsk****...klmn");
    assert_eq!(groq["set"], true);
    assert_eq!(groq["source"], "process");
    assert_eq!(groq["pluginId"], "@elizaos/plugin-groq");
    assert_eq!(body["secrets"]["OPENAI_API_KEY"]["set"], false);
    // Non-sensitive parameters are not secrets.
    assert!(body["secrets"].get("OPENAI_BASE_URL").is_none());
}

#[tokio::test]
async fn put_then_get_through_the_host_services() {
    let (dir, host, cli) = setup(Vec::new());
    let resp = cli
        .put("/api/secrets")
        .body_json(&json!({"secrets": {"TELEGRAM_BOT_TOKEN": "123456:ABCdefGhIJKlmnoPQRstuVWxyz"}}))
        .send()
        .await;
    resp.assert_status_is_ok();
    let body = json_body(resp).await;
    assert_eq!(body["updated"], json!(["TELEGRAM_BOT_TOKEN"]));
    assert_eq!(body["affectedPlugins"], json!(["@elizaos/plugin-telegram"]));
    assert_eq!(body["restartRequired"], false, "the plugin is disabled");
    // Visible in the host's runtime environment before the response.
    assert!(host.env.snapshot().get("TELEGRAM_BOT_TOKEN").is_some());
    // Stored encrypted: the key's line holds no piece of the value.
    let text = std::fs::read_to_string(dir.path().join("milady.toml")).expect("file");
    assert!(text.contains("TELEGRAM_BOT_TOKEN = { age = \""), "{text}");
    assert!(!text.contains("ABCdefGh"), "{text}");
    let stored = demo_host::ConfigStore::new(dir.path().join("milady.toml"))
        .load()
        .expect("load");
    assert!(stored.sealed.contains_key("TELEGRAM_BOT_TOKEN"));
    let resp = cli.get("/api/secrets").send().await;
    let body = json_body(resp).await;
    assert_eq!(
        body["secrets"]["TELEGRAM_BOT_TOKEN"]["value"],
        "123****...Wxyz"
    );
}

#[tokio::test]
async fn extractor_failures_are_json() {
    let (_dir, _host, cli) = setup(Vec::new());
    for (ct, payload, code) in [
        ("application/json", "{", "invalid_json"),
        ("text/plain", "{}", "unsupported_media_type"),
    ] {
        let resp = cli
            .put("/api/secrets")
            .content_type(ct)
            .body(payload)
            .send()
            .await;
        resp.assert_status(StatusCode::BAD_REQUEST);
        assert_eq!(json_body(resp).await["code"], code, "{ct} {payload}");
    }
    let resp = cli.post("/api/secrets").send().await;
    resp.assert_status(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json_body(resp).await["code"], "method_not_allowed");
}

#[test]
fn openapi_document_describes_the_contract() {
    let doc: Value = serde_json::from_str(&secrets_plugin::service(None).spec()).expect("JSON");
    let get = &doc["paths"]["/api/secrets"]["get"];
    let put = &doc["paths"]["/api/secrets"]["put"];
    assert!(get["responses"]["200"]["headers"]["CACHE-CONTROL"].is_object());
    assert!(get["responses"]["200"]["headers"]["ETAG"].is_object());
    for status in ["200", "400", "401", "412", "413", "500"] {
        assert!(
            put["responses"][status].is_object(),
            "PUT documents {status}"
        );
    }
    assert!(put["parameters"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["name"] == "If-Match" && p["in"] == "header")
    }));
    let info = &doc["components"]["schemas"]["SecretInfo"];
    for field in [
        "value",
        "set",
        "pluginId",
        "pluginEnabled",
        "usedBy",
        "required",
        "description",
        "source",
    ] {
        assert!(info["properties"][field].is_object(), "{field}");
    }
    let required: Vec<&str> = info["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for field in ["value", "set", "pluginId", "pluginEnabled"] {
        assert!(required.contains(&field), "{field} is always present");
    }
    let redaction = info["properties"]["value"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(redaction.contains("sk-****...wxyz"));
    assert!(doc["components"]["schemas"]["SecretsUpdate"]["example"].is_object());
}

/// The same API linked natively into the host's router (as the benchmark
/// compares it with the plugin): mounted with `nest_no_strip` behind the
/// host's middleware, it answers like the plugin does.
#[tokio::test]
async fn mounts_natively_in_the_host_router() {
    let (_dir, host, _) = setup(Vec::new());
    let services = HostServices::new(host.registry.clone(), host.env.clone(), "native");
    let native = vec![(
        secrets_plugin::ROUTE.to_owned(),
        secrets_plugin::endpoint(services.into_box()),
    )];
    let cli =
        TestClient::new(host.endpoint_with_native(native)).default_header("host", "localhost");
    for path in ["/api/secrets", "/api/secrets/"] {
        let resp = cli.get(path).send().await;
        assert_eq!(resp.0.status(), StatusCode::OK, "{path}");
        assert!(
            json_body(resp).await["secrets"]["OPENAI_API_KEY"].is_object(),
            "{path}"
        );
    }
    let resp = cli.get("/api/plugins").send().await;
    resp.assert_status_is_ok();
}

/// The fast `GET` (answered from the cache through `handle_parsed`) and the
/// poem-openapi route answer the same status, headers and bytes, and the
/// same `ETag`, so a `PUT` with `If-Match` from either works.
#[tokio::test]
async fn the_fast_get_answers_exactly_what_the_api_does() {
    use host_api::{HttpMethod, ParsedRequest};

    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::build(
        options_in(&dir),
        vec![("GROQ_API_KEY".into(), "gsk_0123456789abcdefghijklmn".into())],
    )
    .expect("host");
    let services = HostServices::new(
        host.registry.clone(),
        host.env.clone(),
        secrets_plugin::PLUGIN_ID,
    );
    let secrets = secrets_plugin::Secrets::new(services.into_box());
    let fast = secrets
        .handle_parsed(ParsedRequest::new(HttpMethod::Get, "/api/secrets", ""))
        .await;
    // The same GET through poem-openapi: a method name the fast path does
    // not match, spelled as `Other`.
    let slow = secrets
        .handle_parsed(ParsedRequest {
            method_name: "GET".into(),
            ..ParsedRequest::new(HttpMethod::Other, "/api/secrets", "")
        })
        .await;
    let through_poem = secrets
        .handle_parsed(ParsedRequest::new(HttpMethod::Post, "/api/secrets", ""))
        .await;
    assert_eq!(
        through_poem.status, 405,
        "other methods go through poem-openapi"
    );
    assert_eq!((fast.status, slow.status), (200, 200));
    assert_eq!(fast.body.as_slice(), slow.body.as_slice());
    let headers = |r: &host_api::ParsedResponse| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(&fast), headers(&slow));
    // The same as the endpoint on its own, headers and body.
    let cli = TestClient::new(secrets_plugin::endpoint(
        HostServices::new(host.registry.clone(), host.env.clone(), "x").into_box(),
    ));
    let resp = cli.get("/api/secrets").send().await;
    let mut names: Vec<String> = resp.0.headers().keys().map(|n| n.to_string()).collect();
    names.sort();
    let mut fast_names: Vec<String> = headers(&fast).into_iter().map(|(n, _)| n).collect();
    fast_names.dedup();
    assert_eq!(names, fast_names);
    let bytes = resp.0.into_body().into_bytes().await.expect("body");
    assert_eq!(&bytes[..], fast.body.as_slice());
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let (_dir, _host, cli) = setup(Vec::new());
    let resp = cli.get("/secrets").send().await;
    resp.assert_status_is_ok();
    resp.assert_content_type("text/html; charset=utf-8");
    let policy = resp
        .0
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    let page = resp.0.into_body().into_string().await.expect("page");
    assert!(page.contains("/secrets/app.js") && page.contains("/secrets/app.css"));
    // With `X-Content-Type-Options: nosniff`, a script or style sheet
    // served under another type would not run.
    for (path, content_type) in [
        ("/secrets/app.js", "text/javascript; charset=utf-8"),
        ("/secrets/app.css", "text/css; charset=utf-8"),
    ] {
        let resp = cli.get(path).send().await;
        resp.assert_status_is_ok();
        resp.assert_content_type(content_type);
    }
    let resp = cli.get("/secrets/nothing-here").send().await;
    resp.assert_status(StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await["code"], "not_found");
    let doc: Value = serde_json::from_str(&secrets_plugin::service(None).spec()).expect("JSON");
    assert!(
        doc["paths"]["/secrets"]["get"]["responses"]["200"]["content"]["text/html; charset=utf-8"]
            .is_object()
    );
}
