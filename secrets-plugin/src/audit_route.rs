//! The plugin's part of the audit log (SPEC §8), through the host's audit
//! services: the `GET /api/secrets/audit` view, and the lines of `PUT`s the
//! plugin refuses itself (validation, a stale `If-Match`, a body that is
//! not JSON) — the host writes the lines of every update that reaches it.
//! A line carries keys, operations and reasons, never a value.

use std::collections::BTreeMap;

use abi_stable::std_types::{RVec, Tuple2};
use host_api::{
    AuditEntry, AuditKey, AuditQuery, ClientInfo, HostError, ParsedResponse, PluginServicesBox,
};
use poem_openapi::{Object, types::Example};
use serde_json::Value;

/// The action of the lines the plugin writes, as the host names updates.
const ACTION: &str = "env.update";

/// `{"entries": [...]}`: audit entries, newest first.
#[derive(Object, Clone, Debug)]
#[oai(example)]
pub(crate) struct AuditList {
    /// Newest first; at most `limit`.
    pub(crate) entries: Vec<AuditView>,
}

/// One audit entry: what was attempted, by whom, on which keys, and how it
/// ended. Never a value.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub(crate) struct AuditView {
    /// When (RFC 3339, UTC).
    pub(crate) time: String,
    /// `env.update` (a change of secrets), `plugins.toggle`, `auth`.
    pub(crate) action: String,
    /// `applied`, `rejected`, `failed` (or `refused` for `auth`).
    pub(crate) outcome: String,
    /// The plugin that asked (empty: the host itself).
    pub(crate) plugin: String,
    /// Who asked.
    pub(crate) client: AuditClient,
    /// Each key with its operation and the fingerprint of the value set.
    pub(crate) keys: Vec<AuditKeyView>,
    /// Why it was refused or failed: item (a key, a code, a route) → reason.
    pub(crate) reasons: BTreeMap<String, String>,
    /// Anything else the writer recorded (e.g. a toggle's target).
    #[oai(skip_serializing_if_is_none)]
    pub(crate) details: Option<Value>,
}

/// The client of an audited request.
#[derive(Object, Clone, Debug)]
#[oai(rename_all = "camelCase")]
pub(crate) struct AuditClient {
    /// Peer address, when known.
    #[oai(skip_serializing_if_is_none)]
    pub(crate) peer: Option<String>,
    /// `none`, `bearer`, `milady_token` or `api_key`.
    pub(crate) auth: String,
    /// The fingerprint of the token it presented (never the token); empty
    /// when none.
    pub(crate) token_fingerprint: String,
}

/// One key of an audit entry.
#[derive(Object, Clone, Debug)]
pub(crate) struct AuditKeyView {
    /// The key.
    pub(crate) key: String,
    /// `set` or `clear`.
    pub(crate) operation: String,
    /// `hmac-sha256:` and 16 hex digits; empty for `clear` and for a
    /// refused write.
    pub(crate) fingerprint: String,
}

impl Example for AuditList {
    fn example() -> Self {
        Self {
            entries: vec![AuditView {
                time: "2025-01-31T12:00:00Z".into(),
                action: ACTION.into(),
                outcome: "applied".into(),
                plugin: crate::PLUGIN_ID.into(),
                client: AuditClient {
                    peer: Some("127.0.0.1:51234".into()),
                    auth: "bearer".into(),
                    token_fingerprint: "hmac-sha256:9b1c0e7d4a2f8e61".into(),
                },
                keys: vec![AuditKeyView {
                    key: "OPENAI_API_KEY".into(),
                    operation: "set".into(),
                    fingerprint: "hmac-sha256:3f2a9c0d81e4b7a6".into(),
                }],
                reasons: BTreeMap::new(),
                details: None,
            }],
        }
    }
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            time: e.time.into_string(),
            action: e.action.into_string(),
            outcome: e.outcome.into_string(),
            plugin: e.plugin.into_string(),
            client: AuditClient {
                peer: e.client.peer.to_socket_addr().map(|a| a.to_string()),
                auth: e.client.auth.name().to_owned(),
                token_fingerprint: e.client.token_fingerprint.into_string(),
            },
            keys: e
                .keys
                .into_iter()
                .map(|k| AuditKeyView {
                    key: k.key.into_string(),
                    operation: k.operation.into_string(),
                    fingerprint: k.fingerprint.into_string(),
                })
                .collect(),
            reasons: e
                .reasons
                .into_iter()
                .map(|Tuple2(item, why)| (item.into_string(), why.into_string()))
                .collect(),
            details: serde_json::from_str::<Value>(&e.details_json)
                .ok()
                .filter(Value::is_object),
        }
    }
}

/// The most entries one query returns.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The entries matching `limit` (default 100, at most [`MAX_LIMIT`]) and
/// `key`, newest first.
pub(crate) async fn query(
    services: &PluginServicesBox,
    limit: Option<u32>,
    key: Option<String>,
) -> Result<AuditList, HostError> {
    let query = AuditQuery {
        limit: limit.unwrap_or(0).min(MAX_LIMIT),
        key: key.unwrap_or_default().into(),
    };
    let entries = services.audit_query(query).await.into_result()?;
    Ok(AuditList {
        entries: entries.into_iter().map(AuditView::from).collect(),
    })
}

/// Records a `PUT` the plugin refused: the keys the body named (with the
/// operation their value asked for, no fingerprint: a refused value is
/// never looked at again) and the reasons. Resolves once the line is on
/// disk; an error means it is not, and the request must fail.
pub(crate) async fn record_refusal(
    services: &PluginServicesBox,
    client: ClientInfo,
    body: Option<&Value>,
    reasons: impl IntoIterator<Item = (String, String)>,
) -> Result<(), HostError> {
    let keys: RVec<AuditKey> = body
        .and_then(|b| b.get("secrets"))
        .and_then(Value::as_object)
        .map(|secrets| {
            secrets
                .iter()
                .take(crate::model::MAX_REJECTED)
                .map(|(key, value)| AuditKey {
                    key: crate::validate::printable_key(key).into(),
                    operation: if value.as_str() == Some("") {
                        "clear"
                    } else {
                        "set"
                    }
                    .into(),
                    fingerprint: Default::default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let entry = AuditEntry {
        action: ACTION.into(),
        outcome: "rejected".into(),
        client,
        keys,
        reasons: reasons
            .into_iter()
            .map(|(item, why)| Tuple2(item.into(), why.into()))
            .collect(),
        ..AuditEntry::default()
    };
    services.audit_append(entry).await.into_result()
}

/// The codes of a `PUT` refused before the handler saw the body.
const UNREAD_BODY: [&str; 4] = [
    "invalid_json",
    "unsupported_media_type",
    "duplicate_key",
    "bad_request",
];

/// Audits `response` when it refuses a `PUT` whose body was never read
/// (not JSON, wrong content type, a duplicate key): a `rejected` line with
/// the error's code and message, which quote no value. When the line
/// cannot be written, a 500 instead.
pub(crate) async fn unread_body(
    services: &PluginServicesBox,
    client: ClientInfo,
    response: ParsedResponse,
) -> ParsedResponse {
    if !matches!(response.status, 400 | 415) {
        return response;
    }
    let Ok(error) = serde_json::from_slice::<Value>(response.body.as_slice()) else {
        return response;
    };
    let code = error.get("code").and_then(Value::as_str).unwrap_or("");
    if !UNREAD_BODY.contains(&code) {
        return response;
    }
    let message = error.get("error").and_then(Value::as_str).unwrap_or("");
    let reasons = [(code.to_owned(), message.to_owned())];
    match record_refusal(services, client, None, reasons).await {
        Ok(()) => response,
        Err(e) => ParsedResponse::error(
            500,
            host_api::ErrorCode::StorageError,
            &format!("the request was refused: {}", e.message),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::{AuthMethod, PeerAddr};

    #[test]
    fn an_entry_is_shown_with_its_client_keys_and_reasons() {
        let view = AuditView::from(AuditEntry {
            time: "2025-01-01T00:00:00Z".into(),
            plugin: "@p/x".into(),
            action: ACTION.into(),
            outcome: "rejected".into(),
            client: ClientInfo {
                peer: PeerAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 9))),
                auth: AuthMethod::API_KEY,
                token_fingerprint: "hmac-sha256:0011223344556677".into(),
            },
            keys: vec![AuditKey {
                key: "K".into(),
                operation: "set".into(),
                fingerprint: "".into(),
            }]
            .into(),
            reasons: vec![Tuple2("K".into(), "why".into())].into(),
            details_json: "not an object".into(),
        });
        assert_eq!(view.client.peer.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(view.client.auth, "api_key");
        assert_eq!(view.reasons.get("K").map(String::as_str), Some("why"));
        assert!(view.details.is_none());
    }
}
