//! The host's own API: the plugin registry (`/api/plugins`) and health.

use std::sync::Arc;

use host_api::ErrorCode;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use crate::{http::audit_lines::ToggleAudit, registry::Registry, store::config_file::ConfigStore};

/// The host's own routes, documented with poem-openapi.
pub(crate) struct HostApi {
    /// The registry the routes read and toggle.
    pub registry: Arc<Registry>,
    /// Where toggles are persisted.
    pub config: Arc<ConfigStore>,
}

/// One parameter a plugin declares.
#[derive(Object)]
struct ParameterInfo {
    /// Environment-variable name.
    key: String,
    /// `string`, `boolean` or `number`.
    #[oai(rename = "type")]
    kind: String,
    /// What the parameter is for.
    description: String,
    /// Whether the plugin needs it.
    required: bool,
    /// Whether it is a secret (listed by `GET /api/secrets`).
    sensitive: bool,
}

/// One plugin of the registry.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct PluginInfo {
    /// Plugin id (npm package name for catalog plugins).
    id: String,
    /// Display name.
    name: String,
    /// Current runtime state.
    enabled: bool,
    /// `true` for a library loaded from the plugin folder, `false` for a catalog entry.
    loaded: bool,
    /// Parameters the plugin declares.
    parameters: Vec<ParameterInfo>,
    /// `true` when the plugin's library was replaced by another version
    /// while the host runs: libraries are never unloaded, so the loaded
    /// version keeps serving until the host restarts.
    pending_restart: bool,
    /// The version waiting for the restart (with `pendingRestart`).
    #[oai(skip_serializing_if_is_none)]
    pending_version: Option<String>,
}

/// Every plugin the host knows.
#[derive(Object)]
#[oai(example)]
struct PluginList {
    /// Catalog plugins in catalog order, then loaded plugins.
    plugins: Vec<PluginInfo>,
}

/// Body of `PUT /api/plugins/{id}`. Unknown fields are ignored.
#[derive(Object)]
#[oai(example)]
struct TogglePlugin {
    /// The new state.
    enabled: bool,
}

/// Result of a toggle.
#[derive(Object)]
#[oai(example)]
struct ToggleResult {
    /// Always `true`.
    ok: bool,
    /// The plugin id.
    id: String,
    /// The state now in force (and persisted).
    enabled: bool,
}

/// The JSON error shape.
#[derive(Object)]
#[oai(example)]
pub(crate) struct ErrorBody {
    /// Human-readable message; never contains a secret value.
    pub error: String,
    /// Machine-readable code.
    pub code: String,
}

/// Health of the host.
#[derive(Object)]
#[oai(example)]
struct Health {
    /// Always `ok` when the host answers.
    status: String,
    /// Ids of the loaded plugins.
    plugins: Vec<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_toggle")]
enum ToggleResponse {
    /// The plugin's state was changed and persisted.
    #[oai(status = 200)]
    Ok(Json<ToggleResult>),
    /// The body is not `{"enabled": bool}` (`bad_request`), or names a key
    /// twice (`duplicate_key`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No plugin has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The body did not arrive in full in time (`body_timeout`); nothing
    /// changed.
    #[allow(dead_code)] // produced by the host's body limits, before the route
    #[oai(status = 408)]
    BodyTimeout(Json<ErrorBody>),
    /// The body exceeds the host's limit (1 MiB by default;
    /// `payload_too_large`); nothing changed.
    #[allow(dead_code)] // produced by the host's body limits, before the route
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody>),
    /// The config file or the audit log could not be written; nothing
    /// changed.
    #[oai(status = 500)]
    Storage(Json<ErrorBody>),
}

impl poem_openapi::types::Example for PluginList {
    fn example() -> Self {
        Self {
            plugins: vec![PluginInfo {
                id: "@elizaos/plugin-openai".into(),
                name: "OpenAI".into(),
                enabled: true,
                loaded: false,
                parameters: vec![ParameterInfo {
                    key: "OPENAI_API_KEY".into(),
                    kind: "string".into(),
                    description: "API key for the OpenAI platform".into(),
                    required: true,
                    sensitive: true,
                }],
                pending_restart: false,
                pending_version: None,
            }],
        }
    }
}

impl poem_openapi::types::Example for TogglePlugin {
    fn example() -> Self {
        Self { enabled: true }
    }
}

impl poem_openapi::types::Example for ToggleResult {
    fn example() -> Self {
        Self {
            ok: true,
            id: "@elizaos/plugin-openai".into(),
            enabled: true,
        }
    }
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        Self {
            error: "no plugin with this id is known to the host".into(),
            code: ErrorCode::PluginNotFound.to_string(),
        }
    }
}

impl poem_openapi::types::Example for Health {
    fn example() -> Self {
        Self {
            status: "ok".into(),
            plugins: vec!["@milady/plugin-secrets".into()],
        }
    }
}

fn bad_toggle(_: poem::Error) -> ToggleResponse {
    ToggleResponse::BadRequest(error_body(
        ErrorCode::BadRequest,
        "the body must be a JSON object `{\"enabled\": true|false}`",
    ))
}

fn error_body(code: ErrorCode, message: &str) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: message.to_owned(),
        code: code.as_str().to_owned(),
    })
}

/// Tags of the host's operations.
#[derive(poem_openapi::Tags)]
enum HostTags {
    /// The plugin registry.
    Plugins,
    /// The host itself.
    Host,
}

#[OpenApi]
impl HostApi {
    /// List every plugin
    ///
    /// Catalog plugins and loaded plugins, with the parameters they declare
    /// and their current enabled state. A plugin added to the plugin folder
    /// while the host runs is listed as soon as it is mounted; a loaded
    /// plugin whose library was replaced shows `pendingRestart`.
    #[oai(path = "/api/plugins", method = "get", tag = "HostTags::Plugins")]
    async fn list_plugins(&self) -> Json<PluginList> {
        let snapshot = self.registry.snapshot();
        Json(PluginList {
            plugins: snapshot
                .plugins
                .iter()
                .map(|p| (p, self.registry.pending_restart(p.id.as_str())))
                .map(|(p, pending)| PluginInfo {
                    id: p.id.to_string(),
                    name: p.name.to_string(),
                    enabled: p.enabled,
                    loaded: p.loaded,
                    parameters: p
                        .parameters
                        .iter()
                        .map(|q| ParameterInfo {
                            key: q.key.to_string(),
                            kind: q.kind.to_string(),
                            description: q.description.to_string(),
                            required: q.required,
                            sensitive: q.sensitive,
                        })
                        .collect(),
                    pending_restart: pending.is_some(),
                    pending_version: pending.map(|p| p.version),
                })
                .collect(),
        })
    }

    /// Enable or disable a plugin
    ///
    /// Persists `[plugins.entries."<id>"] enabled` in the config file, then
    /// applies it at once (a following `GET /api/secrets` shows it). The id
    /// contains `@` and `/`, so send it percent-encoded:
    /// `/api/plugins/%40elizaos%2Fplugin-openai`.
    #[oai(path = "/api/plugins/:id", method = "put", tag = "HostTags::Plugins")]
    async fn toggle_plugin(
        &self,
        req: &poem::Request,
        /// The plugin id, percent-encoded.
        id: Path<String>,
        body: Json<TogglePlugin>,
    ) -> ToggleResponse {
        let id = id.0;
        let enabled = body.0.enabled;
        // On disk before the toggle; no line, no toggle (SPEC §8).
        let audit = ToggleAudit::new(
            self.config.path(),
            crate::plugins::parsed::client_of(req),
            &id,
            enabled,
        );
        if let Err(message) = audit.write_ahead().await {
            return ToggleResponse::Storage(error_body(ErrorCode::StorageError, &message));
        }
        let registry = Arc::clone(&self.registry);
        let config = Arc::clone(&self.config);
        let task_id = id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            registry.set_enabled(&task_id, enabled, || {
                config.set_plugin_enabled(&task_id, enabled).map(|_| ())
            })
        })
        .await;
        match outcome {
            Ok(Ok(Some(entry))) => {
                tracing::info!(plugin = %entry.id, enabled, "plugin toggled");
                ToggleResponse::Ok(Json(ToggleResult {
                    ok: true,
                    id,
                    enabled: entry.enabled,
                }))
            }
            Ok(Ok(None)) => {
                let why = "no plugin with this id is known to the host";
                audit
                    .did_not_happen("rejected", ErrorCode::PluginNotFound.as_str(), why)
                    .await;
                ToggleResponse::NotFound(error_body(ErrorCode::PluginNotFound, why))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not persist a plugin toggle");
                let why = e.client_message();
                audit
                    .did_not_happen("failed", ErrorCode::StorageError.as_str(), &why)
                    .await;
                ToggleResponse::Storage(error_body(ErrorCode::StorageError, &why))
            }
            Err(_) => {
                let why = "the toggle task failed";
                audit
                    .did_not_happen("failed", ErrorCode::InternalError.as_str(), why)
                    .await;
                ToggleResponse::Storage(error_body(ErrorCode::InternalError, why))
            }
        }
    }

    /// Health check
    #[oai(path = "/api/health", method = "get", tag = "HostTags::Host")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
            plugins: self
                .registry
                .snapshot()
                .plugins
                .iter()
                .filter(|p| p.loaded)
                .map(|p| p.id.to_string())
                .collect(),
        })
    }
}
