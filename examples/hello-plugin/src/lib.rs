//! The plugin of `docs/writing-a-plugin.md`: `GET /api/hello` answers a
//! greeting.
//!
//! It declares two parameters: `HELLO_GREETING`, an ordinary setting, and
//! `HELLO_API_KEY`, a secret (so it shows up in `GET /api/secrets` and can be
//! set with `PUT /api/secrets`). The response tells whether the key is set,
//! never its value.
//!
//! It applies `HELLO_API_KEY` live: the host tells it of every change of
//! the key (`on_env_change`), and the plugin takes the new value at once,
//! as a plugin with a client built from the key would rebuild it. The
//! response shows what only those notices set: how many arrived, the last
//! version and when.

#![forbid(unsafe_code)]

use std::sync::{Mutex, OnceLock};

use host_api::{
    ChangeAck, EnvChangeNotice, ErrorCode, FfiRequest, FfiResponse, HostContextBox, HostError,
    LogLevel, ManifestExt, ParamSpec, Plugin, PluginManifest,
    abi_stable::std_types::{RString, RVec},
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

/// What the plugin has applied of its live key, and the notices that
/// brought it: written at `init` and by `on_env_change` only.
static APPLIED: Mutex<Applied> = Mutex::new(Applied::new());

/// The state a change notice updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether the key the plugin works with is set (as a client built
    /// from it would exist).
    pub api_key_set: bool,
    /// Change notices received since the plugin started.
    pub notices: u64,
    /// The environment version of the last notice.
    pub last_version: u64,
    /// When the last notice arrived, in milliseconds since the Unix epoch.
    pub last_at_ms: u64,
}

impl Applied {
    const fn new() -> Self {
        Self {
            api_key_set: false,
            notices: 0,
            last_version: 0,
            last_at_ms: 0,
        }
    }
}

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

    fn manifest_ext() -> ManifestExt {
        // A new HELLO_API_KEY takes effect without a restart (`on_env_change`).
        ManifestExt::default().with_live_key(API_KEY)
    }

    fn openapi_json() -> String {
        openapi().to_string()
    }

    fn init(host: HostContextBox) -> Result<(), HostError> {
        host.log(LogLevel::Info, "hello plugin ready".into());
        lock_applied().api_key_set = host.env().get(API_KEY).is_some();
        HOST.set(host)
            .map_err(|_| HostError::new(HostError::INIT, "the hello plugin was initialised twice"))
    }

    async fn on_env_change(notice: EnvChangeNotice) -> ChangeAck {
        match HOST.get() {
            Some(host) => apply_change(host, &notice),
            // Not initialised: nothing applied, so nothing acknowledged.
            None => ChangeAck::default(),
        }
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

/// Applies a change the host announced: reads the key again (where a real
/// plugin would rebuild its client) and records the notice. Acknowledges
/// only the keys applied live; a key left out needs a restart.
pub fn apply_change(host: &HostContextBox, notice: &EnvChangeNotice) -> ChangeAck {
    let mut applied = lock_applied();
    if notice.keys.iter().any(|k| k.as_str() == API_KEY) {
        applied.api_key_set = host.env().get(API_KEY).is_some();
    }
    applied.notices += 1;
    applied.last_version = notice.version;
    applied.last_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let applied_live: RVec<RString> = notice
        .keys
        .iter()
        .filter(|k| k.as_str() == API_KEY)
        .cloned()
        .collect();
    ChangeAck { applied_live }
}

/// What the plugin has applied so far.
pub fn applied() -> Applied {
    *lock_applied()
}

fn lock_applied() -> std::sync::MutexGuard<'static, Applied> {
    // Plain data: a panic elsewhere leaves nothing half-written.
    APPLIED.lock().unwrap_or_else(|e| e.into_inner())
}

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
    // Set by the change notices only: a plugin that merely read the
    // environment per request would have nothing to show here.
    let live = applied();
    let body = serde_json::json!({
        "greeting": format!("{word} from the hello plugin!"),
        "apiKeySet": api_key_set,
        "liveChanges": {
            "apiKeyApplied": live.api_key_set,
            "notices": live.notices,
            "lastVersion": live.last_version,
            "lastAtMs": live.last_at_ms,
        },
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
                            "description": "The greeting, whether HELLO_API_KEY is set, and the change notices applied",
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
            "required": ["greeting", "apiKeySet", "liveChanges"],
            "properties": {
                "greeting": { "type": "string" },
                "apiKeySet": { "type": "boolean" },
                "liveChanges": { "$ref": "#/components/schemas/HelloLiveChanges" }
            }
        }, "HelloLiveChanges": {
            "type": "object",
            "description": "What the plugin applied from the host's change notices",
            "required": ["apiKeyApplied", "notices", "lastVersion", "lastAtMs"],
            "properties": {
                "apiKeyApplied": { "type": "boolean", "description": "HELLO_API_KEY is set, as of the last notice" },
                "notices": { "type": "integer", "description": "Change notices received since the plugin started" },
                "lastVersion": { "type": "integer", "description": "The environment version of the last notice (0: none yet)" },
                "lastAtMs": { "type": "integer", "description": "When the last notice arrived, in milliseconds since the Unix epoch (0: none yet)" }
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
        let body = body(&resp);
        assert_eq!(body["greeting"], "Howdy from the hello plugin!");
        assert_eq!(body["apiKeySet"], true);
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

    fn notice(version: u64, keys: &[&str]) -> EnvChangeNotice {
        EnvChangeNotice {
            version,
            keys: keys.iter().map(|k| RString::from(*k)).collect(),
            origin: "api".into(),
        }
    }

    #[test]
    fn a_change_notice_is_applied_counted_and_acknowledged_for_the_live_key_only() {
        let before = applied().notices;
        let h = host(vec![(API_KEY, "sk-hello-CANARY-0123456789")]);
        let ack = apply_change(&h, &notice(41, &[API_KEY, GREETING]));
        // Only the key it applies live is acknowledged.
        assert_eq!(ack.applied_live.as_slice(), [RString::from(API_KEY)]);
        let now = applied();
        assert!(now.notices > before);
        assert!(now.last_at_ms > 0);
        let resp = respond(&h, &get("/api/hello"));
        let live = &body(&resp)["liveChanges"];
        assert!(
            live["notices"].as_u64().is_some_and(|n| n > before),
            "{live}"
        );
        assert!(!String::from_utf8_lossy(&resp.body).contains("CANARY"));
        // A notice about other keys applies nothing live.
        assert!(
            apply_change(&h, &notice(42, &[GREETING]))
                .applied_live
                .is_empty()
        );
        assert!(HelloPlugin::manifest_ext().applies_live(API_KEY));
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
