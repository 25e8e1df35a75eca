//! `GET`/`PUT /api/secrets`, written with poem-openapi against the host's
//! services only.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use abi_stable::std_types::{RNone, ROption, RSome, RVec};
use host_api::{
    ApplyMode, ClientInfo, EnvChange, ErrorCode, HostContextBox, HostError, LiveServicesBox,
    PlanEntry, PluginServicesBox,
};
use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    param::{Header, Query},
    payload::Json,
};

use crate::{
    etag::{ETags, Precondition},
    fast::FastGet,
    index::{IndexCache, SecretIndex},
    model::{ApplyKind, DuplicateKey, ErrorBody, SecretsBody, SecretsUpdate, UpdateResult},
    render::BodyCache,
    validate::{self, Invalid},
};

/// The `Cache-Control` value of every response: secrets are never cached.
pub(crate) const NO_STORE: &str = "no-store";

/// The secrets API over the host's services.
pub struct SecretsApi {
    host: Option<HostContextBox>,
    /// The scoped services (host-api 0.1.2: key records, the audit log);
    /// absent in an older host.
    services: Option<PluginServicesBox>,
    /// The live-change services (0.1.3: restart plans, warnings); absent
    /// in an older host.
    live: Option<LiveServicesBox>,
    // Shared with the fast `GET` (`crate::fast`): one cache, one ETag.
    index: Arc<IndexCache>,
    bodies: Arc<BodyCache>,
    etags: Arc<ETags>,
}

impl SecretsApi {
    /// The API over `host`; `None` builds it for its OpenAPI document only
    /// (every request then answers 503).
    pub(crate) fn new(host: Option<HostContextBox>) -> Self {
        Self::with_services(host, None, None)
    }

    /// The API over `host` and the later services the host lent.
    pub(crate) fn with_services(
        host: Option<HostContextBox>,
        services: Option<PluginServicesBox>,
        live: Option<LiveServicesBox>,
    ) -> Self {
        Self {
            host,
            services,
            live,
            index: Arc::default(),
            bodies: Arc::default(),
            etags: Arc::new(ETags::new()),
        }
    }

    /// The fast `GET` over the same caches and tags; `None` without a host.
    pub(crate) fn fast_get(&self) -> Option<FastGet> {
        Some(FastGet::new(
            self.host.clone()?,
            self.services.clone(),
            Arc::clone(&self.index),
            Arc::clone(&self.bodies),
            Arc::clone(&self.etags),
        ))
    }
}

#[derive(Tags)]
enum SecretsTags {
    /// API keys and other secrets of the host's plugins.
    Secrets,
}

#[derive(ApiResponse)]
enum GetResponse {
    /// Every known secret, redacted.
    #[oai(status = 200)]
    Ok(
        SecretsBody,
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
    Unauthorized(ErrorBody),
    /// The plugin is not initialised.
    #[oai(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_audit_query")]
enum AuditResponse {
    /// The matching entries, newest first.
    #[oai(status = 200)]
    Ok(
        Json<crate::audit_route::AuditList>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `limit` is not a number from 1 to 1000.
    #[oai(status = 400)]
    BadRequest(ErrorBody),
    /// The API token is missing or wrong (only when the host has one).
    #[allow(dead_code)] // produced by the host's auth layer
    #[oai(status = 401)]
    Unauthorized(ErrorBody),
    /// The audit log could not be read.
    #[oai(status = 500)]
    Storage(ErrorBody),
    /// The plugin is not initialised, or the host has no audit services.
    #[oai(status = 503)]
    Unavailable(ErrorBody),
}

fn bad_audit_query(_: poem::Error) -> AuditResponse {
    AuditResponse::BadRequest(ErrorBody::new(
        ErrorCode::BadRequest,
        "`limit` must be a number from 1 to 1000",
    ))
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_put")]
enum PutResponse {
    /// Every change was written to the config file and applied to the
    /// runtime environment. `{"secrets": {}}` is a no-op: nothing is
    /// written or audited and the ETag does not move.
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
    /// Nothing was changed. `code` is `unsupported_media_type` (the body is
    /// not sent as `application/json`), `invalid_json`, `duplicate_key` (an
    /// object of the body names a key twice; the message names it),
    /// `invalid_body`, `missing_secrets`, `invalid_secrets_type`, or
    /// `invalid_secrets` with `rejected` naming each
    /// refused key and why (at most 100; `unlisted` counts the rest): not a
    /// valid variable name, blocked by the host (loader, proxy, TLS, shell
    /// and path variables, the host's own token), not declared as sensitive
    /// by any plugin, not a string, contains NUL, only whitespace, only
    /// invisible characters, longer than the host's maximum (64 KiB by
    /// default), or equal to the masked placeholder `GET` shows for that key.
    #[oai(status = 400)]
    BadRequest(ErrorBody),
    /// The API token is missing or wrong (only when the host has one).
    #[allow(dead_code)] // produced by the host's auth layer
    #[oai(status = 401)]
    Unauthorized(ErrorBody),
    /// `If-Match` names a state that is no longer current; nothing changed.
    #[oai(status = 412)]
    PreconditionFailed(ErrorBody),
    /// The body stalled mid-way for longer than the host allows; nothing changed.
    #[allow(dead_code)] // produced by the host before the plugin sees the body
    #[oai(status = 408)]
    BodyTimeout(ErrorBody),
    /// The body exceeds the host's limit (1 MiB by default).
    #[allow(dead_code)] // produced by the host before the plugin sees the body
    #[oai(status = 413)]
    TooLarge(ErrorBody),
    /// The config file or the audit log could not be written; the file,
    /// the runtime environment and the log are unchanged (a change that
    /// cannot be audited is not made).
    #[oai(status = 500)]
    Storage(ErrorBody),
    /// The plugin is not initialised (`not_initialised`), or the fleet's
    /// secret store is unreachable, sealed or refuses the host's token
    /// (`store_unavailable`); nothing was changed.
    #[oai(status = 503)]
    Unavailable(ErrorBody),
}

fn bad_put(err: poem::Error) -> PutResponse {
    // Never pass the parser's message on: it could quote the body.
    if let Some(duplicate) = err.downcast_ref::<DuplicateKey>() {
        // The key is quoted printable and cut short; never a value.
        return PutResponse::BadRequest(ErrorBody::new(
            ErrorCode::DuplicateKey,
            &duplicate.to_string(),
        ));
    }
    let (code, message) = if err.is::<poem_openapi::error::ParseRequestPayloadError>() {
        (ErrorCode::InvalidJson, "the body is not valid JSON")
    } else if err.is::<poem_openapi::error::ContentTypeError>() {
        (
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        )
    } else {
        (ErrorCode::BadRequest, "the request is malformed")
    };
    PutResponse::BadRequest(ErrorBody::new(code, message))
}

fn unavailable() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotInitialised,
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
        let body = self.bodies.get(
            &registry,
            &env,
            || self.index.get(&registry),
            || crate::stored_keys(self.services.as_ref()),
        );
        GetResponse::Ok(
            body,
            NO_STORE.into(),
            self.etags.tag(env.version, registry.version),
        )
    }

    /// The audit log, newest first
    ///
    /// One entry per `PUT /api/secrets` attempt (applied, rejected or
    /// failed), plugin toggle, environment change a plugin made, and
    /// refused authentication on a secrets route (at most one a minute per
    /// client): time, outcome, reasons, each key with its operation and the
    /// fingerprint of the value set, the plugin and the client. Never a
    /// value. `limit` defaults to 100 (at most 1000); `key` keeps the
    /// entries that name that key.
    #[oai(
        path = "/api/secrets/audit",
        method = "get",
        tag = "SecretsTags::Secrets"
    )]
    async fn get_audit(
        &self,
        /// At most this many entries (default 100, at most 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// Only the entries that name this key.
        key: Query<Option<String>>,
    ) -> AuditResponse {
        let Some(services) = &self.services else {
            return AuditResponse::Unavailable(unavailable());
        };
        match crate::audit_route::query(services, limit.0, key.0).await {
            Ok(list) => AuditResponse::Ok(Json(list), NO_STORE.into()),
            Err(_) => AuditResponse::Storage(ErrorBody::new(
                ErrorCode::StorageError,
                "the audit log could not be read",
            )),
        }
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
        req: &poem::Request,
        body: SecretsUpdate,
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
        let changes = match validate::validate(&body.0, &index, &env, |k| {
            host.check_env_key(k.into())
                .into_option()
                .map(|r| r.into_string())
        }) {
            Ok(changes) => changes,
            // Refusals are audited before they are answered (SPEC §8).
            Err(Invalid::Body(code, message)) => {
                let reasons = [(code.as_str().to_owned(), message.to_owned())];
                let response = PutResponse::BadRequest(ErrorBody::new(code, message));
                return refused(self.services.as_ref(), req, &body.0, reasons, response).await;
            }
            Err(Invalid::Keys(rejected, unlisted)) => {
                let reasons = rejected.clone();
                let response = PutResponse::BadRequest(ErrorBody::rejected(rejected, unlisted));
                return refused(self.services.as_ref(), req, &body.0, reasons, response).await;
            }
        };
        // An `If-Match` naming a state that is gone: refused, and audited.
        let refuse_stale = || {
            refused(
                self.services.as_ref(),
                req,
                &body.0,
                stale_reason(),
                stale_response(),
            )
        };
        // After validation: a malformed body is a 400 whatever `If-Match` says.
        let expected = match self
            .etags
            .precondition(if_match.0.as_deref(), registry.version)
        {
            Precondition::Any => RNone,
            Precondition::EnvVersion(v) => RSome(v),
            Precondition::Stale => {
                return refuse_stale().await;
            }
        };
        // `{"secrets": {}}`: a no-op (SPEC §8). Nothing goes to the host, so
        // nothing is written or audited and the ETag stays; a stale
        // `If-Match` is still refused.
        if changes.is_empty() {
            if let RSome(v) = expected
                && v != env.version
            {
                return refuse_stale().await;
            }
            return PutResponse::Ok(
                Json(summarise(&changes, &index)),
                NO_STORE.into(),
                self.etags.tag(env.version, registry.version),
            );
        }
        let mut summary = summarise(&changes, &index);
        // Asked before the write (the host's shape table, precedence).
        if let Some(services) = &self.live {
            summary.warnings = services
                .value_warnings_v1(changes.clone().into())
                .into_iter()
                .map(|w| (w.0.into_string(), w.1.into_string()))
                .collect();
        }
        let client = req.extensions().get::<ClientInfo>().cloned();
        match apply(host, self.live.as_ref(), changes, expected, client).await {
            Ok((version, plan)) => {
                if let Some(plan) = plan {
                    summary.take_plan(&plan);
                }
                PutResponse::Ok(
                    Json(summary),
                    NO_STORE.into(),
                    self.etags.tag(version, registry.version),
                )
            }
            Err(e) => host_failure(e),
        }
    }
}

/// Writes `changes` through the host. With the live-change services of
/// host-api 0.1.3 the host also tells the plugins that use the keys, waits
/// (bounded by its plugin timeout) for those that apply them live, and
/// answers the restart plan; an older host answers none.
async fn apply(
    host: &HostContextBox,
    live: Option<&LiveServicesBox>,
    changes: Vec<EnvChange>,
    expected: ROption<u64>,
    client: Option<ClientInfo>,
) -> Result<(u64, Option<RVec<PlanEntry>>), HostError> {
    match live {
        Some(live) => {
            let update = live
                .update_env_v2(changes.into(), expected, client.unwrap_or_default())
                .await
                .into_result()?;
            Ok((update.version, Some(update.plan)))
        }
        None => {
            let update = host
                .update_env(changes.into(), expected)
                .await
                .into_result()?;
            Ok((update.version, None))
        }
    }
}

/// Audits a `PUT` the plugin refuses, then answers `response`; when the
/// line cannot be written, a 500 instead (fail closed). A host older than
/// 0.1.2 has no audit services: `response` as it is.
async fn refused(
    services: Option<&PluginServicesBox>,
    req: &poem::Request,
    body: &serde_json::Value,
    reasons: impl IntoIterator<Item = (String, String)>,
    response: PutResponse,
) -> PutResponse {
    let Some(services) = services else {
        return response;
    };
    let client = req
        .extensions()
        .get::<ClientInfo>()
        .cloned()
        .unwrap_or_default();
    match crate::audit_route::record_refusal(services, client, Some(body), reasons).await {
        Ok(()) => response,
        Err(e) => PutResponse::Storage(audit_unusable(&e)),
    }
}

/// The error when the audit log cannot be written.
/// The host's message says why (no path, no value).
fn audit_unusable(e: &HostError) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::StorageError,
        &format!("the request was refused: {}", e.message),
    )
}

fn stale_reason() -> [(String, String); 1] {
    [(
        "If-Match".to_owned(),
        "the ETag names a state that is no longer current".to_owned(),
    )]
}

fn stale_response() -> PutResponse {
    PutResponse::PreconditionFailed(stale())
}

fn stale() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::PreconditionFailed,
        "the secrets changed since the ETag in If-Match was read; GET them again",
    )
}

fn host_failure(e: HostError) -> PutResponse {
    match e.code.as_str() {
        HostError::CONFLICT => PutResponse::PreconditionFailed(stale()),
        // The fleet's secret store did not take the write (SPEC §9).
        code if code == ErrorCode::StoreUnavailable.as_str() => {
            PutResponse::Unavailable(ErrorBody::new(ErrorCode::StoreUnavailable, &e.message))
        }
        HostError::REJECTED => PutResponse::BadRequest(ErrorBody::rejected(
            e.details
                .iter()
                .map(|d| (d.0.to_string(), d.1.to_string()))
                .collect::<BTreeMap<_, _>>(),
            0,
        )),
        // The host's storage and internal failures carry codes of the
        // shared table; anything else is reported as internal.
        code => PutResponse::Storage(ErrorBody::new(
            ErrorCode::from_code(code).unwrap_or(ErrorCode::InternalError),
            &format!("the secrets could not be saved: {}", e.message),
        )),
    }
}

impl UpdateResult {
    /// Takes the host's restart plan instead of the estimate of
    /// [`summarise`]. A mode this plugin does not know counts as restart.
    fn take_plan(&mut self, plan: &[PlanEntry]) {
        self.restart_plan = plan
            .iter()
            .map(|e| {
                let kind = if e.mode == ApplyMode::LIVE {
                    ApplyKind::Live
                } else {
                    ApplyKind::Restart
                };
                (e.plugin.to_string(), kind)
            })
            .collect();
        self.restart_required = self.restart_plan.values().any(|k| *k == ApplyKind::Restart);
    }
}

/// What an update changes, and whom: without the host's plan, every
/// enabled plugin that declares a changed key needs a restart.
fn summarise(changes: &[EnvChange], index: &SecretIndex) -> UpdateResult {
    let mut updated = Vec::new();
    let mut cleared = Vec::new();
    let mut affected = BTreeSet::new();
    let mut restart_plan = BTreeMap::new();
    for change in changes {
        let key = change.key();
        if change.value().is_some() {
            updated.push(key.to_owned());
        } else {
            cleared.push(key.to_owned());
        }
        if let Some(info) = index.keys.get(key) {
            for d in &info.declared_by {
                affected.insert(d.id.clone());
                if d.enabled {
                    restart_plan.insert(d.id.clone(), ApplyKind::Restart);
                }
            }
        }
    }
    UpdateResult {
        ok: true,
        updated,
        cleared,
        restart_required: !restart_plan.is_empty(),
        affected_plugins: affected.into_iter().collect(),
        restart_plan,
        warnings: BTreeMap::new(),
    }
}
