//! What crosses the wire: the request and response types of
//! `/api/secrets`, as poem-openapi documents them, and the payloads that
//! carry them.
//!
//! Nothing here depends on the rest of the crate; the handlers, the
//! renderer and the validator all build on these types.

use std::collections::BTreeMap;

use abi_stable::std_types::{RArc, RVec};
use host_api::{
    EnvSource, ErrorCode,
    json::{JsonError, from_slice_strict},
};
use poem::{FromRequest, IntoResponse, Request, RequestBody, Response, http::StatusCode};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, Enum, ExtractParamOptions, Object,
    error::{ContentTypeError, ParseRequestPayloadError},
    payload::{Json, ParsePayload, Payload},
    registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry},
    types::{Example, Type},
};
use serde_json::Value;

/// The content type of every JSON body of this API.
pub(crate) const JSON: &str = "application/json; charset=utf-8";

// The reasons a key of a `PUT` body is refused, as the client reads them in
// `rejected`. The host adds its own (invalid name, block list).

/// Reason: the key is not a sensitive parameter of any plugin.
pub(crate) const NOT_DECLARED: &str = "not declared as sensitive by any plugin";
/// Reason: the value is not a JSON string.
pub(crate) const NOT_A_STRING: &str = "value must be a string (\"\" clears the key)";
/// Reason: the value contains a NUL character.
pub(crate) const HAS_NUL: &str = "value contains a NUL character";
/// Reason: the value is only whitespace.
pub(crate) const BLANK: &str = "value is only whitespace";
/// Reason: the value is only invisible characters (zero-width spaces, byte
/// order marks, bidirectional controls, fillers), perhaps with whitespace.
pub(crate) const INVISIBLE: &str = "value is only invisible characters";
/// Reason: the value is the redacted form shown by `GET`.
pub(crate) const PLACEHOLDER: &str =
    "value is the masked placeholder shown by GET; send the real secret or leave the key out";
/// Reason: the key is the empty string.
pub(crate) const EMPTY_KEY: &str = "key is empty";

/// The most entries `rejected` lists; validation stops at that many
/// refusals, and the error counts the entries left out (`unlisted`).
pub(crate) const MAX_REJECTED: usize = 100;

/// Where the current value of a secret came from.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub(crate) enum SecretSource {
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
pub(crate) struct PluginRef {
    /// Plugin id.
    pub(crate) id: String,
    /// Display name.
    pub(crate) name: String,
    /// Whether the plugin is enabled now.
    pub(crate) enabled: bool,
}

/// One secret as `GET /api/secrets` shows it.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(crate) struct SecretInfo {
    /// `""` when unset; otherwise the redacted value: fewer than 16
    /// characters → `********`; 16–23 → `****...` + last 4; 24 or more →
    /// first 3 + `****...` + last 4 (e.g. `sk-****...wxyz`). Control and
    /// invisible characters show as `*`.
    pub(crate) value: String,
    /// Whether the runtime value is non-empty.
    pub(crate) set: bool,
    /// The plugin that declares the key: an enabled one if any, else the
    /// first in registry order.
    pub(crate) plugin_id: String,
    /// Whether that plugin is enabled now.
    pub(crate) plugin_enabled: bool,
    /// Every plugin that declares the key.
    pub(crate) used_by: Vec<PluginRef>,
    /// Whether an enabled plugin requires the key.
    pub(crate) required: bool,
    /// What the key is for.
    pub(crate) description: String,
    /// Where the current value came from (absent when unset).
    #[oai(skip_serializing_if_is_none)]
    pub(crate) source: Option<SecretSource>,
    /// Whether the host's config file stores the key encrypted (`{ age =
    /// "…" }`); `false` for a plaintext value, a value only in the process
    /// environment, or no value.
    pub(crate) encrypted: bool,
    /// Present when the stored value cannot be read (the secrets key is
    /// missing or another one, or the text is damaged): why. The key then
    /// shows as not set; the host keeps the stored bytes until a `PUT` of
    /// this key replaces them.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) unreadable: Option<String>,
    /// `hmac-sha256:` and 16 hex digits of an HMAC of the value under the
    /// host's fingerprint key (SPEC §8): equal values, equal fingerprints,
    /// on every host sharing the key; it reveals nothing of the value.
    /// Present when the key is set.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) fingerprint: Option<String>,
    /// When the value last changed (RFC 3339), when the host knows.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) updated_at: Option<String>,
    /// The process environment sets this key over a stored value: the
    /// process's value is the one in use, and wins again after a restart
    /// (the Milady rule), whatever a `PUT` stores.
    pub(crate) overridden_by_process: bool,
}

impl Example for SecretInfo {
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
            encrypted: true,
            unreadable: None,
            fingerprint: Some("hmac-sha256:3f2a9c0d81e4b7a6".into()),
            updated_at: Some("2025-01-31T12:00:00Z".into()),
            overridden_by_process: false,
        }
    }
}

/// Every known secret.
#[derive(Object)]
#[oai(example)]
pub(crate) struct SecretsView {
    /// Key → state, for every parameter that some plugin of the registry
    /// (catalog or loaded, enabled or not) declares as sensitive.
    pub(crate) secrets: BTreeMap<String, SecretInfo>,
}

impl Example for SecretsView {
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
            encrypted: false,
            unreadable: None,
            fingerprint: None,
            updated_at: None,
            overridden_by_process: false,
        };
        Self {
            secrets: BTreeMap::from([
                ("ANTHROPIC_API_KEY".to_owned(), unset),
                ("OPENAI_API_KEY".to_owned(), SecretInfo::example()),
            ]),
        }
    }
}

/// The body of `PUT /api/secrets`, as documented.
#[derive(Object)]
#[oai(rename = "SecretsUpdate", example)]
struct SecretsUpdateSchema {
    /// Key → new value. A non-empty string sets the key; `""` clears it
    /// (removed from the config file and the runtime environment). An empty
    /// object is a valid no-op.
    secrets: BTreeMap<String, String>,
}

impl Example for SecretsUpdateSchema {
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
/// its reason instead of failing on the first wrong type; and parsed
/// strictly: an object that names a key twice is refused
/// ([`DuplicateKey`]), where a plain parser would keep the last value.
pub(crate) struct SecretsUpdate(pub(crate) Value);

/// A body that names a key twice in one object (400 `duplicate_key`).
#[derive(Debug, thiserror::Error)]
#[error("{0}; send each key once")]
pub(crate) struct DuplicateKey(JsonError);

impl poem::error::ResponseError for DuplicateKey {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl Payload for SecretsUpdate {
    const CONTENT_TYPE: &'static str = JSON;

    fn check_content_type(content_type: &str) -> bool {
        <Json<Value> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        SecretsUpdateSchema::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SecretsUpdateSchema::register(registry);
    }
}

impl ParsePayload for SecretsUpdate {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        if data.is_empty() {
            return Ok(Self(Value::Null));
        }
        match from_slice_strict(&data) {
            Ok(value) => Ok(Self(value)),
            Err(duplicate @ JsonError::DuplicateKey { .. }) => Err(DuplicateKey(duplicate).into()),
            Err(syntax) => Err(ParseRequestPayloadError {
                reason: syntax.to_string(),
            }
            .into()),
        }
    }
}

// What poem-openapi's `Json<T>` extractor does, for a payload of our own:
// the content type is checked, then the body parsed.
impl<'a> ApiExtractor<'a> for SecretsUpdate {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: <Self as ParsePayload>::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(content_type) if Self::check_content_type(content_type) => {
                <Self as ParsePayload>::from_request(request, body).await
            }
            Some(content_type) => Err(ContentTypeError::NotSupported {
                content_type: content_type.to_owned(),
            }
            .into()),
            None => Err(ContentTypeError::ExpectContentType.into()),
        }
    }
}

/// The result of an update.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(crate) struct UpdateResult {
    /// Always `true`.
    pub(crate) ok: bool,
    /// Keys that were set.
    pub(crate) updated: Vec<String>,
    /// Keys that were cleared.
    pub(crate) cleared: Vec<String>,
    /// Whether an enabled plugin that uses a changed key did not take the
    /// change live (it reads its configuration at start): restart the
    /// agent for it. `false` when every such plugin applied it live.
    pub(crate) restart_required: bool,
    /// Ids of every plugin that declares a changed key, enabled or not.
    pub(crate) affected_plugins: Vec<String>,
    /// For each enabled plugin that uses a changed key: `live` when it
    /// applied the change without a restart (and acknowledged it within the
    /// host's plugin timeout), `restart` when it needs one.
    pub(crate) restart_plan: BTreeMap<String, ApplyKind>,
    /// Warnings per key, never refusals (SPEC §8): the value has the shape
    /// of another provider's key (an `sk-ant-` key sent as
    /// `OPENAI_API_KEY`) or not the shape of its key (the host's shape
    /// table, each row citing the provider's documentation), or the
    /// process environment sets the key and wins again after a restart.
    /// Empty when there is nothing to say. Never quotes a value.
    pub(crate) warnings: BTreeMap<String, String>,
}

/// How an enabled plugin takes a change of a key it uses.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub(crate) enum ApplyKind {
    /// Applied without a restart.
    Live,
    /// Needs a restart of the agent.
    Restart,
}

impl Example for UpdateResult {
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
            // The Anthropic plugin is disabled: not in the plan.
            restart_plan: BTreeMap::from([(
                "@elizaos/plugin-openai".to_owned(),
                ApplyKind::Restart,
            )]),
            warnings: BTreeMap::from([(
                "OPENAI_API_KEY".to_owned(),
                "the value has the shape of an Anthropic key, not of an OpenAI key: check that \
                 it belongs in `OPENAI_API_KEY` (https://docs.anthropic.com/en/api/overview#authentication). \
                 It was saved anyway."
                    .to_owned(),
            )]),
        }
    }
}

// Only documented (its doc comment is the schema's description): the
// bodies themselves are built by `ErrorBody`.
/// The JSON error shape of this API.
#[derive(Object)]
#[oai(example)]
struct SecretsError {
    /// Human-readable message. Never contains a secret value.
    error: String,
    /// Machine-readable code.
    code: String,
    /// For `invalid_secrets`: every rejected key with its reason, at most
    /// 100 of them.
    #[oai(skip_serializing_if_is_none)]
    rejected: Option<BTreeMap<String, String>>,
    /// For `invalid_secrets`, when `rejected` is cut short: how many more
    /// entries of the body it does not list. Validation stops at the 100th
    /// refusal, so these were not all checked; nothing was written.
    #[oai(skip_serializing_if_is_none)]
    unlisted: Option<u64>,
}

impl Example for SecretsError {
    fn example() -> Self {
        Self {
            error: "2 secrets rejected".into(),
            code: ErrorCode::InvalidSecrets.as_str().into(),
            rejected: Some(BTreeMap::from([
                ("FOO".to_owned(), NOT_DECLARED.to_owned()),
                ("LD_PRELOAD".to_owned(), "blocked by the host".to_owned()),
            ])),
            unlisted: None,
        }
    }
}

/// A JSON error, documented as `SecretsError` and built by
/// [`host_api::error_body`], the builder the host and every plugin share.
pub(crate) struct ErrorBody(String);

impl ErrorBody {
    /// `{"error": message, "code": code}`.
    pub(crate) fn new(code: ErrorCode, message: &str) -> Self {
        Self(host_api::error_body(code, message))
    }

    /// `invalid_secrets`, naming each rejected key with its reason: at most
    /// [`MAX_REJECTED`] of them (in key order), and `unlisted` counting the
    /// entries left out, when any were.
    pub(crate) fn rejected(
        rejected: impl IntoIterator<Item = (String, String)>,
        unlisted: usize,
    ) -> Self {
        let mut listed = BTreeMap::new();
        let mut unlisted = unlisted;
        for (key, reason) in rejected {
            if listed.len() < MAX_REJECTED {
                listed.insert(key, Value::String(reason));
            } else {
                unlisted += 1;
            }
        }
        let n = listed.len();
        let mut message = format!("{n} secret{} rejected", if n == 1 { "" } else { "s" });
        if unlisted > 0 {
            message.push_str(&format!(
                "; {unlisted} more entr{} not listed (validation stops at {MAX_REJECTED} refusals)",
                if unlisted == 1 { "y" } else { "ies" }
            ));
        }
        let body = host_api::error_body(ErrorCode::InvalidSecrets, &message);
        // The shared builder makes the two common fields; this API adds its own.
        let mut object: serde_json::Map<String, Value> =
            serde_json::from_str(&body).unwrap_or_default();
        object.insert(
            "rejected".into(),
            Value::Object(listed.into_iter().collect()),
        );
        if unlisted > 0 {
            object.insert("unlisted".into(), Value::from(unlisted));
        }
        Self(Value::Object(object).to_string())
    }
}

impl Payload for ErrorBody {
    const CONTENT_TYPE: &'static str = JSON;

    fn schema_ref() -> MetaSchemaRef {
        SecretsError::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SecretsError::register(registry);
    }
}

impl IntoResponse for ErrorBody {
    fn into_response(self) -> Response {
        Response::builder()
            .header(poem::http::header::CONTENT_TYPE, Self::CONTENT_TYPE)
            .body(self.0)
    }
}

/// A rendered body behind an ABI-stable shared pointer: sent natively as a
/// `Bytes` that borrows it, and handed to the host as it is (see
/// `Plugin::handle_shared`), so a cached body is never copied.
#[derive(Clone)]
pub(crate) struct SharedBody(pub(crate) RArc<RVec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A `GET` body ready to send: JSON documented as [`SecretsView`].
pub(crate) struct SecretsBody(pub(crate) SharedBody);

impl SecretsBody {
    /// The shared buffer itself, for a response that crosses to the host.
    pub(crate) fn into_shared(self) -> RArc<RVec<u8>> {
        (self.0).0
    }

    /// The JSON bytes.
    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl Payload for SecretsBody {
    const CONTENT_TYPE: &'static str = JSON;

    fn schema_ref() -> MetaSchemaRef {
        SecretsView::schema_ref()
    }

    fn register(registry: &mut Registry) {
        SecretsView::register(registry);
    }
}

impl IntoResponse for SecretsBody {
    fn into_response(self) -> Response {
        let mut resp = Response::builder()
            .header(poem::http::header::CONTENT_TYPE, Self::CONTENT_TYPE)
            // A reference to the cached buffer, not a copy of it.
            .body(poem::Body::from_bytes(bytes::Bytes::from_owner(
                self.0.clone(),
            )));
        // Lets the plugin's `handle_shared` pass the buffer itself on.
        resp.extensions_mut().insert(self.0);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(resp: Response) -> Value {
        let bytes = resp.into_body().into_bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    /// The bodies are what `Json<SecretsError>` produced before they were
    /// built by the shared builder.
    #[tokio::test]
    async fn error_bodies_have_the_documented_shape() {
        let resp = ErrorBody::new(ErrorCode::NotInitialised, "not yet").into_response();
        assert_eq!(
            resp.headers().get("content-type").map(|v| v.as_bytes()),
            Some(JSON.as_bytes())
        );
        assert_eq!(
            json_of(resp).await,
            serde_json::json!({"error": "not yet", "code": "not_initialised"})
        );
        let rejected = BTreeMap::from([("A".to_owned(), BLANK.to_owned())]);
        let resp = ErrorBody::rejected(rejected, 0).into_response();
        assert_eq!(
            json_of(resp).await,
            serde_json::json!({
                "error": "1 secret rejected",
                "code": "invalid_secrets",
                "rejected": {"A": BLANK},
            })
        );
    }

    #[tokio::test]
    async fn the_rejected_map_is_capped_and_counts_the_rest() {
        let many = (0..150).map(|i| (format!("K{i:03}"), BLANK.to_owned()));
        let v = json_of(ErrorBody::rejected(many, 7).into_response()).await;
        let listed = v["rejected"].as_object().map(|m| m.len());
        assert_eq!(listed, Some(MAX_REJECTED));
        assert_eq!(v["rejected"]["K000"], BLANK);
        assert_eq!(v["unlisted"], 57);
        let message = v["error"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("100 secrets rejected; 57 more entries"),
            "{message}"
        );
        let one =
            json_of(ErrorBody::rejected([("A".to_owned(), BLANK.to_owned())], 0).into_response())
                .await;
        assert!(one.get("unlisted").is_none(), "{one}");
    }
}
