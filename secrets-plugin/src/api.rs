//! `GET`/`PUT /api/secrets`, written with poem-openapi against the host's
//! services only.

use std::collections::BTreeMap;

use abi_stable::std_types::{RNone, RSome, RVec};
use host_api::{EnvChange, EnvSource, HostContextBox, HostError};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, Tags,
    param::Header,
    payload::Json,
    registry::{MetaSchemaRef, Registry},
    types::{ParseFromJSON, ParseResult, Type},
};
use serde_json::Value;

use crate::{
    index::{IndexCache, SecretIndex},
    redact::redact,
    validate::{self, Invalid},
};

/// The `Cache-Control` value of every response: secrets are never cached.
const NO_STORE: &str = "no-store";

/// The secrets API over the host's services.
pub struct SecretsApi {
    host: Option<HostContextBox>,
    index: IndexCache,
    bodies: crate::render::BodyCache,
    /// Distinguishes this process's ETags from those of an earlier run.
    boot: u64,
}

impl SecretsApi {
    /// The API over `host`; `None` builds it for its OpenAPI document only
    /// (every request then answers 503).
    pub fn new(host: Option<HostContextBox>) -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self {
            host,
            index: IndexCache::default(),
            bodies: Default::default(),
            boot,
        }
    }

    fn etag(&self, env_version: u64, registry_version: u64) -> String {
        format!("\"{:x}-{env_version}-{registry_version}\"", self.boot)
    }

    /// The environment version an `If-Match` value pins, if it is one of
    /// this process's tags for the current registry.
    fn expected_version(&self, if_match: &str, registry_version: u64) -> Option<u64> {
        let tag = if_match.trim().trim_start_matches("W/").trim_matches('"');
        let mut parts = tag.split('-');
        let boot = u64::from_str_radix(parts.next()?, 16).ok()?;
        let env: u64 = parts.next()?.parse().ok()?;
        let registry: u64 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && boot == self.boot && registry == registry_version).then_some(env)
    }
}

#[derive(Tags)]
enum SecretsTags {
    /// API keys and other secrets of the host's plugins.
    Secrets,
}

/// Where the current value of a secret came from.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum SecretSource {
    /// The host's process environment at start-up.
    Process,
    /// The `[env]` table of the config file.
    Config,
    /// Written through `PUT /api/secrets` since start-up.
    Api,
}

impl From<EnvSource> for SecretSource {
    fn from(s: EnvSource) -> Self {
        match s {
            EnvSource::Process => Self::Process,
            EnvSource::ConfigFile => Self::Config,
            EnvSource::Api => Self::Api,
        }
    }
}

/// A plugin that declares a secret.
#[derive(Object)]
pub struct PluginRef {
    /// Plugin id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether the plugin is enabled now.
    pub enabled: bool,
}

/// One secret as `GET /api/secrets` shows it.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub struct SecretInfo {
    /// `""` when unset; otherwise the redacted value: fewer than 16
    /// characters → `********`; 16–23 → `****...` + last 4; 24 or more →
    /// first 3 + `****...` + last 4 (e.g. `sk-****...wxyz`). Control and
    /// invisible characters show as `*`.
    pub value: String,
    /// Whether the runtime value is non-empty.
    pub set: bool,
    /// The plugin that declares the key: an enabled one if any, else the
    /// first in registry order.
    pub plugin_id: String,
    /// Whether that plugin is enabled now.
    pub plugin_enabled: bool,
    /// Every plugin that declares the key.
    pub used_by: Vec<PluginRef>,
    /// Whether an enabled plugin requires the key.
    pub required: bool,
    /// What the key is for.
    pub description: String,
    /// Where the current value came from (absent when unset).
    #[oai(skip_serializing_if_is_none)]
    pub source: Option<SecretSource>,
}

impl poem_openapi::types::Example for SecretInfo {
    fn example() -> Self {
        Self {
            value: "sk-****...wxyz".into(),
            set: true,
            plugin_id: "@elizaos/plugin-openai".into(),
            plugin_enabled: true,
            used_by: vec![PluginRef {
                id: "@elizaos/plugin-openai".into(),
                name: "OpenAI".into(),
                enabled: true,
            }],
            required: true,
            description: "API key for the OpenAI platform".into(),
            source: Some(SecretSource::Config),
        }
    }
}

/// Every known secret.
#[derive(Object)]
#[oai(example)]
pub struct SecretsView {
    /// Key → state, for every parameter that some plugin of the registry
    /// (catalog or loaded, enabled or not) declares as sensitive.
    pub secrets: BTreeMap<String, SecretInfo>,
}

/// The body of `PUT /api/secrets`, as documented.
#[derive(Object)]
#[oai(rename = "SecretsUpdate", example)]
struct SecretsUpdateSchema {
    /// Key → new value. A non-empty string sets the key; `""` clears it
    /// (removed from the config file and the runtime environment).
    #[oai(validator(min_properties = 1))]
    secrets: BTreeMap<String, String>,
}

impl poem_openapi::types::Example for SecretsUpdateSchema {
    fn example() -> Self {
        Self {
            secrets: BTreeMap::from([
                ("OPENAI_API_KEY".to_owned(), "sk-new-value".to_owned()),
                ("ANTHROPIC_API_KEY".to_owned(), String::new()),
            ]),
        }
    }
}

/// The body as received. It is documented as [`SecretsUpdateSchema`] but
/// parsed as any JSON, so that validation can name every rejected key with
/// its reason instead of failing on the first wrong type.
pub struct SecretsUpdate(pub Value);

impl Type for SecretsUpdate {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        SecretsUpdateSchema::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        SecretsUpdateSchema::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SecretsUpdateSchema::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for SecretsUpdate {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(Self(value.unwrap_or(Value::Null)))
    }
}

/// The result of an update.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub struct UpdateResult {
    /// Always `true`.
    pub ok: bool,
    /// Keys that were set.
    pub updated: Vec<String>,
    /// Keys that were cleared.
    pub cleared: Vec<String>,
    /// Whether an enabled plugin declares a changed key (it reads its
    /// configuration at start, so the agent should be restarted).
    pub restart_required: bool,
    /// Ids of every plugin that declares a changed key.
    pub affected_plugins: Vec<String>,
}

/// The JSON error shape of this API.
#[derive(Object)]
#[oai(example)]
pub struct SecretsError {
    /// Human-readable message. Never contains a secret value.
    pub error: String,
    /// Machine-readable code.
    pub code: String,
    /// For `invalid_secrets`: every rejected key with its reason.
    #[oai(skip_serializing_if_is_none)]
    pub rejected: Option<BTreeMap<String, String>>,
}

impl poem_openapi::types::Example for SecretsView {
    fn example() -> Self {
        let unset = SecretInfo {
            value: String::new(),
            set: false,
            plugin_id: "@elizaos/plugin-anthropic".into(),
            plugin_enabled: false,
            used_by: vec![PluginRef {
                id: "@elizaos/plugin-anthropic".into(),
                name: "Anthropic".into(),
                enabled: false,
            }],
            required: false,
            description: "API key for the Anthropic API".into(),
            source: None,
        };
        Self {
            secrets: BTreeMap::from([
                ("ANTHROPIC_API_KEY".to_owned(), unset),
                ("OPENAI_API_KEY".to_owned(), SecretInfo::example()),
            ]),
        }
    }
}

impl poem_openapi::types::Example for UpdateResult {
    fn example() -> Self {
        Self {
            ok: true,
            updated: vec!["OPENAI_API_KEY".into()],
            cleared: vec!["ANTHROPIC_API_KEY".into()],
            restart_required: true,
            affected_plugins: vec![
                "@elizaos/plugin-anthropic".into(),
                "@elizaos/plugin-openai".into(),
            ],
        }
    }
}

impl poem_openapi::types::Example for SecretsError {
    fn example() -> Self {
        Self {
            error: "2 secrets rejected".into(),
            code: "invalid_secrets".into(),
            rejected: Some(BTreeMap::from([
                ("FOO".to_owned(), validate::NOT_DECLARED.to_owned()),
                ("LD_PRELOAD".to_owned(), "blocked by the host".to_owned()),
            ])),
        }
    }
}

fn error(code: &str, message: &str) -> Json<SecretsError> {
    Json(SecretsError {
        error: message.to_owned(),
        code: code.to_owned(),
        rejected: None,
    })
}

#[derive(ApiResponse)]
enum GetResponse {
    /// Every known secret, redacted.
    #[oai(status = 200)]
    Ok(
        crate::render::SecretsBody,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
        /// A tag of the current secrets state, for `If-Match` on `PUT`.
        #[oai(header = "ETag")]
        String,
    ),
    /// The API token is missing or wrong (only when the host has one).
    #[allow(dead_code)] // produced by the host's auth layer
    #[oai(status = 401)]
    Unauthorized(Json<SecretsError>),
    /// The plugin is not initialised.
    #[oai(status = 503)]
    Unavailable(Json<SecretsError>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_put")]
enum PutResponse {
    /// Every change was written to the config file and applied to the
    /// runtime environment.
    #[oai(status = 200)]
    Ok(
        Json<UpdateResult>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
        /// The tag of the new state.
        #[oai(header = "ETag")]
        String,
    ),
    /// Nothing was changed. `code` is `invalid_json`, `invalid_body`,
    /// `missing_secrets`, `invalid_secrets_type`, `empty_secrets`, or
    /// `invalid_secrets` with `rejected` naming every refused key and why:
    /// not a valid variable name, blocked by the host (loader, proxy, TLS,
    /// shell and path variables, the host's own token), not declared as
    /// sensitive by any plugin, not a string, contains NUL, only whitespace,
    /// or equal to the masked placeholder `GET` shows for that key.
    #[oai(status = 400)]
    BadRequest(Json<SecretsError>),
    /// The API token is missing or wrong (only when the host has one).
    #[allow(dead_code)] // produced by the host's auth layer
    #[oai(status = 401)]
    Unauthorized(Json<SecretsError>),
    /// `If-Match` names a state that is no longer current; nothing changed.
    #[oai(status = 412)]
    PreconditionFailed(Json<SecretsError>),
    /// The body stalled mid-way for longer than the host allows; nothing changed.
    #[allow(dead_code)] // produced by the host before the plugin sees the body
    #[oai(status = 408)]
    BodyTimeout(Json<SecretsError>),
    /// The body exceeds the host's limit (1 MiB by default).
    #[allow(dead_code)] // produced by the host before the plugin sees the body
    #[oai(status = 413)]
    TooLarge(Json<SecretsError>),
    /// The config file could not be written; the file and the runtime
    /// environment are unchanged.
    #[oai(status = 500)]
    Storage(Json<SecretsError>),
    /// The plugin is not initialised.
    #[oai(status = 503)]
    Unavailable(Json<SecretsError>),
}

fn bad_put(err: poem::Error) -> PutResponse {
    // Never pass the parser's message on: it could quote the body.
    let (code, message) = if err.is::<poem_openapi::error::ParseRequestPayloadError>() {
        ("invalid_json", "the body is not valid JSON")
    } else if err.is::<poem_openapi::error::ContentTypeError>() {
        ("invalid_content_type", "send the body as application/json")
    } else {
        ("invalid_request", "the request is malformed")
    };
    PutResponse::BadRequest(error(code, message))
}

fn unavailable() -> Json<SecretsError> {
    error(
        "not_initialised",
        "the secrets plugin has not been initialised by the host",
    )
}

#[OpenApi]
impl SecretsApi {
    /// List every known secret, redacted
    ///
    /// One entry per key that some plugin in the host's registry declares as
    /// sensitive, with the declaring plugin and its state read at request
    /// time. Values are redacted (see `value`); the response is never
    /// cached.
    #[oai(path = "/api/secrets", method = "get", tag = "SecretsTags::Secrets")]
    async fn get_secrets(&self) -> GetResponse {
        let Some(host) = &self.host else {
            return GetResponse::Unavailable(unavailable());
        };
        let registry = host.registry();
        let env = host.env();
        // Rendered once per (registry, environment) version pair.
        let body = self
            .bodies
            .get(&registry, &env, || self.index.get(&registry));
        GetResponse::Ok(
            body,
            NO_STORE.into(),
            self.etag(env.version, registry.version),
        )
    }

    /// Set or clear secrets
    ///
    /// A non-empty string sets a key, `""` clears it. The whole body is
    /// validated first: if any entry is refused, nothing is written and the
    /// error names every refused key. Accepted changes are written to the
    /// config file (atomically, mode 0600) and applied to the runtime
    /// environment before the response is sent. With `If-Match`, the update
    /// is applied only if the state still has that ETag (412 otherwise).
    #[oai(path = "/api/secrets", method = "put", tag = "SecretsTags::Secrets")]
    async fn put_secrets(
        &self,
        body: Json<SecretsUpdate>,
        /// An `ETag` from `GET /api/secrets`: apply only if nothing changed since.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> PutResponse {
        let Some(host) = &self.host else {
            return PutResponse::Unavailable(unavailable());
        };
        let registry = host.registry();
        let env = host.env();
        let index = self.index.get(&registry);
        let changes = match validate::validate(&body.0.0, &index, &env, |k| {
            host.check_env_key(k.into())
                .into_option()
                .map(|r| r.into_string())
        }) {
            Ok(changes) => changes,
            Err(Invalid::Body(code, message)) => {
                return PutResponse::BadRequest(error(code, message));
            }
            Err(Invalid::Keys(rejected)) => return PutResponse::BadRequest(rejection(rejected)),
        };
        // After validation: a malformed body is a 400 whatever `If-Match` says.
        let expected = match if_match.0.as_deref().map(str::trim) {
            None | Some("*") => None,
            Some(tag) => match self.expected_version(tag, registry.version) {
                Some(v) => Some(v),
                None => return PutResponse::PreconditionFailed(stale()),
            },
        };
        let ffi_changes: RVec<EnvChange> = changes
            .iter()
            .map(|(key, value)| EnvChange {
                key: key.as_str().into(),
                value: match value {
                    Some(v) => RSome(v.as_str().into()),
                    None => RNone,
                },
            })
            .collect();
        let expected = match expected {
            Some(v) => RSome(v),
            None => RNone,
        };
        match host.update_env(ffi_changes, expected).await.into_result() {
            Ok(outcome) => PutResponse::Ok(
                Json(summarise(&changes, &index)),
                NO_STORE.into(),
                self.etag(outcome.version, registry.version),
            ),
            Err(e) => host_failure(e),
        }
    }
}

fn stale() -> Json<SecretsError> {
    error(
        "precondition_failed",
        "the secrets changed since the ETag in If-Match was read; GET them again",
    )
}

fn rejection(rejected: BTreeMap<String, String>) -> Json<SecretsError> {
    let n = rejected.len();
    Json(SecretsError {
        error: format!("{n} secret{} rejected", if n == 1 { "" } else { "s" }),
        code: "invalid_secrets".into(),
        rejected: Some(rejected),
    })
}

fn host_failure(e: HostError) -> PutResponse {
    match e.code.as_str() {
        HostError::CONFLICT => PutResponse::PreconditionFailed(stale()),
        HostError::REJECTED => PutResponse::BadRequest(rejection(
            e.details
                .iter()
                .map(|d| (d.0.to_string(), d.1.to_string()))
                .collect(),
        )),
        _ => PutResponse::Storage(error(
            e.code.as_str(),
            &format!("the secrets could not be saved: {}", e.message),
        )),
    }
}

/// Builds the `GET` view from the index and the environment.
pub fn view(index: &SecretIndex, env: &host_api::EnvSnapshot) -> SecretsView {
    let secrets = index
        .keys
        .iter()
        .map(|(key, info)| {
            let var = env.get(key);
            let primary = info.primary();
            let entry = SecretInfo {
                value: var.map(|v| redact(&v.value)).unwrap_or_default(),
                set: var.is_some_and(|v| !v.value.is_empty()),
                plugin_id: primary.id.clone(),
                plugin_enabled: primary.enabled,
                used_by: info
                    .declared_by
                    .iter()
                    .map(|d| PluginRef {
                        id: d.id.clone(),
                        name: d.name.clone(),
                        enabled: d.enabled,
                    })
                    .collect(),
                required: info.required(),
                description: info.description().to_owned(),
                source: var.map(|v| v.source.into()),
            };
            (key.clone(), entry)
        })
        .collect();
    SecretsView { secrets }
}

fn summarise(changes: &[validate::Change], index: &SecretIndex) -> UpdateResult {
    let mut updated = Vec::new();
    let mut cleared = Vec::new();
    let mut affected = std::collections::BTreeSet::new();
    let mut restart_required = false;
    for (key, value) in changes {
        if value.is_some() {
            updated.push(key.clone());
        } else {
            cleared.push(key.clone());
        }
        if let Some(info) = index.keys.get(key) {
            for d in &info.declared_by {
                affected.insert(d.id.clone());
                restart_required |= d.enabled;
            }
        }
    }
    UpdateResult {
        ok: true,
        updated,
        cleared,
        restart_required,
        affected_plugins: affected.into_iter().collect(),
    }
}
