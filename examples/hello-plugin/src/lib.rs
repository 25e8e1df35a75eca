//! The plugin of `docs/writing-a-plugin.md`: `GET /api/hello` answers a
//! greeting.
//!
//! It declares two parameters: `HELLO_GREETING`, an ordinary setting, and
//! `HELLO_API_KEY`, a secret (so it shows up in `GET /api/secrets` and can be
//! set with `PUT /api/secrets`). The response tells whether the key is set,
//! never its value.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use host_api::{
    ErrorCode, FfiRequest, FfiResponse, HostContextBox, HostError, LogLevel, ParamSpec, Plugin,
    PluginManifest,
};

/// The plugin id: unique among the host's plugins.
pub const PLUGIN_ID: &str = "@example/plugin-hello";
/// The route prefix the plugin serves (and everything below it).
pub const ROUTE: &str = "/api/hello";
/// A secret the plugin reads from the host's runtime environment.
pub const API_KEY: &str = "HELLO_API_KEY";
/// An ordinary setting: the word the greeting starts with.
pub const GREETING: &str = "HELLO_GREETING";

/// The host services, kept from `init` for every later request.
static HOST: OnceLock<HostContextBox> = OnceLock::new();

/// The plugin as the host sees it.
pub struct HelloPlugin;

impl Plugin for HelloPlugin {
    fn manifest() -> PluginManifest {
        PluginManifest::new(PLUGIN_ID, "Hello", env!("CARGO_PKG_VERSION"))
            .with_description("Says hello; the example plugin of docs/writing-a-plugin.md.")
            .with_route(ROUTE)
            .with_param(ParamSpec::secret(
                API_KEY,
                "An API key the hello plugin would use",
                false,
            ))
            .with_param(ParamSpec::setting(
                GREETING,
                "string",
                "The word the greeting starts with (default: Hello)",
            ))
    }

    fn openapi_json() -> String {
        openapi().to_string()
    }

    fn init(host: HostContextBox) -> Result<(), HostError> {
        host.log(LogLevel::Info, "hello plugin ready".into());
        HOST.set(host)
            .map_err(|_| HostError::new(HostError::INIT, "the hello plugin was initialised twice"))
    }

    // Plain computation plus host services: nothing here needs an async
    // runtime, which the plugin does not have.
    async fn handle(request: FfiRequest) -> FfiResponse {
        match HOST.get() {
            Some(host) => respond(host, &request),
            None => FfiResponse::error(
                503,
                ErrorCode::NotInitialised,
                "the hello plugin is not initialised",
            ),
        }
    }
}

host_api::export_plugin!(HelloPlugin);

/// Answers one request with the services in `host`.
pub fn respond(host: &HostContextBox, request: &FfiRequest) -> FfiResponse {
    let path = request.uri.split('?').next().unwrap_or_default();
    if path != ROUTE && path != "/api/hello/" {
        return FfiResponse::error(404, ErrorCode::NotFound, "no such route");
    }
    if request.method.as_str() != "GET" {
        return FfiResponse::error(405, ErrorCode::MethodNotAllowed, "only GET is served here");
    }
    let env = host.env();
    let word = env
        .get(GREETING)
        .map(|v| v.value.to_string())
        .unwrap_or_else(|| "Hello".to_owned());
    // Only whether the secret is set leaves the plugin, never its value.
    let api_key_set = env.get(API_KEY).is_some_and(|v| !v.value.is_empty());
    let body = serde_json::json!({
        "greeting": format!("{word} from the hello plugin!"),
        "apiKeySet": api_key_set,
    });
    FfiResponse::json(200, body.to_string())
}

/// The OpenAPI 3 document of the routes this plugin serves. The host merges
/// it into `/openapi.json`, so `/docs` shows `GET /api/hello`.
pub fn openapi() -> serde_json::Value {
    serde_json::json!({
        "openapi": "3.0.0",
        "info": { "title": "Hello", "version": env!("CARGO_PKG_VERSION") },
        "tags": [{ "name": "Hello", "description": "The example plugin" }],
        "paths": {
            "/api/hello": {
                "get": {
                    "tags": ["Hello"],
                    "summary": "A greeting",
                    "operationId": "getHello",
                    "responses": {
                        "200": {
                            "description": "The greeting, and whether HELLO_API_KEY is set",
                            "content": { "application/json": { "schema": {
                                "$ref": "#/components/schemas/Hello"
                            } } }
                        }
                    }
                }
            }
        },
        "components": { "schemas": { "Hello": {
            "type": "object",
            "required": ["greeting", "apiKeySet"],
            "properties": {
                "greeting": { "type": "string" },
                "apiKeySet": { "type": "boolean" }
            }
        } } }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use host_api::{
        EnvChange, EnvSnapshot, EnvSource, EnvUpdate, EnvVar, FfiFuture, HostContext,
        HostContext_TO, RegistrySnapshot,
        abi_stable::{
            sabi_trait::TD_Opaque,
            std_types::{RArc, ROption, RResult, RStr, RString, RVec},
        },
        async_ffi::FutureExt as _,
    };

    use super::*;

    /// A host with a fixed runtime environment.
    #[derive(Clone)]
    struct FakeHost(Arc<Vec<(&'static str, &'static str)>>);

    impl HostContext for FakeHost {
        fn registry(&self) -> RArc<RegistrySnapshot> {
            RArc::new(RegistrySnapshot {
                version: 0,
                plugins: RVec::new(),
            })
        }
        fn env(&self) -> RArc<EnvSnapshot> {
            let mut vars: Vec<EnvVar> = self
                .0
                .iter()
                .map(|(k, v)| EnvVar {
                    key: (*k).into(),
                    value: (*v).into(),
                    source: EnvSource::ConfigFile,
                })
                .collect();
            vars.sort_by(|a, b| a.key.cmp(&b.key));
            RArc::new(EnvSnapshot {
                version: 1,
                vars: vars.into(),
            })
        }
        fn check_env_key(&self, _key: RStr<'_>) -> ROption<RString> {
            ROption::RNone
        }
        fn update_env(
            &self,
            _changes: RVec<EnvChange>,
            _expected_version: ROption<u64>,
        ) -> FfiFuture<RResult<EnvUpdate, HostError>> {
            async { RResult::ROk(EnvUpdate { version: 2 }) }.into_ffi()
        }
        fn log(&self, _level: LogLevel, _message: RStr<'_>) {}
    }

    fn host(vars: Vec<(&'static str, &'static str)>) -> HostContextBox {
        HostContext_TO::from_value(FakeHost(Arc::new(vars)), TD_Opaque)
    }

    fn get(uri: &str) -> FfiRequest {
        FfiRequest {
            method: "GET".into(),
            uri: uri.into(),
            ..FfiRequest::default()
        }
    }

    fn body(resp: &FfiResponse) -> serde_json::Value {
        serde_json::from_slice(&resp.body).expect("a JSON body")
    }

    #[test]
    fn greets_and_reports_the_secret_as_set_without_its_value() {
        let canary = "sk-hello-CANARY-0123456789";
        let h = host(vec![(API_KEY, canary), (GREETING, "Howdy")]);
        let resp = respond(&h, &get("/api/hello?x=1"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            body(&resp),
            serde_json::json!({"greeting": "Howdy from the hello plugin!", "apiKeySet": true})
        );
        assert!(!String::from_utf8_lossy(&resp.body).contains("CANARY"));
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let resp = respond(&host(Vec::new()), &get("/api/hello"));
        assert_eq!(resp.status, 200);
        assert_eq!(body(&resp)["greeting"], "Hello from the hello plugin!");
        assert_eq!(body(&resp)["apiKeySet"], false);
    }

    #[test]
    fn other_paths_and_methods_are_json_errors() {
        let h = host(Vec::new());
        let resp = respond(&h, &get("/api/hello/more"));
        assert_eq!(resp.status, 404);
        assert_eq!(body(&resp)["code"], "not_found");
        let mut put = get("/api/hello");
        put.method = "PUT".into();
        let resp = respond(&h, &put);
        assert_eq!(resp.status, 405);
        assert_eq!(body(&resp)["code"], "method_not_allowed");
    }

    #[test]
    fn manifest_declares_the_route_and_a_sensitive_key() {
        let m = HelloPlugin::manifest();
        assert_eq!(m.id.as_str(), PLUGIN_ID);
        assert_eq!(m.routes.as_slice(), [RString::from(ROUTE)]);
        let key = m
            .parameters
            .iter()
            .find(|p| p.key.as_str() == API_KEY)
            .expect("the key is declared");
        assert!(key.sensitive);
    }

    /// The guide's Rust blocks are excerpts of this file, verbatim: when the
    /// code changes, the guide must change with it.
    #[test]
    fn the_guide_quotes_this_file() {
        let guide = include_str!("../../../docs/writing-a-plugin.md");
        let source = include_str!("lib.rs");
        let mut blocks = 0;
        let mut rest = guide;
        while let Some(start) = rest.find("```rust\n") {
            let body = &rest[start + "```rust\n".len()..];
            let end = body.find("```").expect("a closed code block");
            let block = &body[..end];
            assert!(
                source.contains(block),
                "this block of docs/writing-a-plugin.md is not in examples/hello-plugin/src/lib.rs:\n{block}"
            );
            blocks += 1;
            rest = &body[end + 3..];
        }
        assert!(blocks >= 8, "found only {blocks} Rust blocks in the guide");
    }

    #[test]
    fn openapi_document_describes_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(&HelloPlugin::openapi_json()).expect("JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for route in HelloPlugin::manifest().routes.iter() {
            assert!(paths.contains_key(route.as_str()), "{route} is documented");
        }
        assert!(
            doc.pointer("/paths/~1api~1hello/get/responses/200")
                .is_some()
        );
    }
}
