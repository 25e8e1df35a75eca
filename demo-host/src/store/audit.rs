//! The audit log: `audit.jsonl` beside the config file, one JSON object per
//! line, appended and on disk (fsync) before an append returns.
//!
//! Plugins append and query it through their services
//! (`host_api::PluginServices::audit_append` / `audit_query`). An entry
//! carries keys, operations, fingerprints, reasons and the client, never a
//! value: the plugin hands over fingerprints, the host adds the time and
//! the plugin's id. The file is created owner-only (0600).

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
};

use abi_stable::std_types::{RString, RVec, Tuple2};
use host_api::{AuditEntry, AuditKey, AuditQuery, AuthMethod, ClientInfo, PeerAddr};
use serde_json::{Value, json};

/// The default number of entries a query returns.
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// The largest audit file a query reads (older lines beyond it are not
/// returned), so a query's memory stays bounded.
const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;

/// The audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    /// The file could not be opened, written, synced or read.
    #[error("the audit log {path} could not be {action}: {source}")]
    Io {
        /// The audit file.
        path: PathBuf,
        /// `written` or `read`.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The audit log of one host.
#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    /// One appender at a time: each line is one write, in order.
    append_lock: Mutex<()>,
}

impl AuditLog {
    /// The one log of the config file `config` in this process (every
    /// plugin's services share it, and with it the append lock).
    pub(crate) fn shared_for(config: &Path) -> Arc<Self> {
        static LOGS: Mutex<Vec<Weak<AuditLog>>> = Mutex::new(Vec::new());
        let wanted = Self::beside(config);
        let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        logs.retain(|l| l.strong_count() > 0);
        if let Some(log) = logs
            .iter()
            .filter_map(Weak::upgrade)
            .find(|l| l.path == wanted.path)
        {
            return log;
        }
        let log = Arc::new(wanted);
        logs.push(Arc::downgrade(&log));
        log
    }

    /// The log `audit.jsonl` in the folder of the config file `config`.
    pub(crate) fn beside(config: &Path) -> Self {
        let path = config
            .parent()
            .map(|dir| dir.join("audit.jsonl"))
            .unwrap_or_else(|| PathBuf::from("audit.jsonl"));
        Self {
            path,
            append_lock: Mutex::new(()),
        }
    }

    /// The file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line and syncs it to disk. Blocking.
    pub(crate) fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut line = to_json(entry).to_string();
        line.push('\n');
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            action: "written",
            source,
        };
        let _guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path).map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// The entries matching `query`, newest first. A missing file holds
    /// none; a line that is not an entry is skipped. Blocking.
    pub(crate) fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            action: "read",
            source,
        };
        let text = match std::fs::File::open(&self.path) {
            Ok(file) => {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(file, MAX_READ_BYTES),
                    &mut text,
                )
                .map_err(io)?;
                text
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n as usize,
        };
        let key = query.key.as_str();
        Ok(text
            .lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| from_json(&v))
            .filter(|e| key.is_empty() || e.keys.iter().any(|k| k.key.as_str() == key))
            .take(limit)
            .collect())
    }
}

fn client_json(client: &ClientInfo) -> Value {
    json!({
        "peer": client.peer.to_socket_addr().map(|a| a.to_string()),
        "auth": client.auth.name(),
        "tokenFingerprint": client.token_fingerprint.as_str(),
    })
}

fn to_json(entry: &AuditEntry) -> Value {
    let details = serde_json::from_str::<Value>(&entry.details_json)
        .ok()
        .filter(Value::is_object);
    json!({
        "time": entry.time.as_str(),
        "plugin": entry.plugin.as_str(),
        "action": entry.action.as_str(),
        "outcome": entry.outcome.as_str(),
        "client": client_json(&entry.client),
        "keys": entry.keys.iter().map(|k| json!({
            "key": k.key.as_str(),
            "operation": k.operation.as_str(),
            "fingerprint": k.fingerprint.as_str(),
        })).collect::<Vec<_>>(),
        "reasons": entry.reasons.iter().map(|r| json!({
            "item": r.0.as_str(),
            "reason": r.1.as_str(),
        })).collect::<Vec<_>>(),
        "details": details,
    })
}

fn text(v: &Value, field: &str) -> RString {
    v.get(field).and_then(Value::as_str).unwrap_or("").into()
}

fn from_json(v: &Value) -> Option<AuditEntry> {
    let client = v.get("client")?;
    let auth = match client.get("auth").and_then(Value::as_str) {
        Some("bearer") => AuthMethod::BEARER,
        Some("milady_token") => AuthMethod::MILADY_TOKEN,
        Some("api_key") => AuthMethod::API_KEY,
        _ => AuthMethod::NONE,
    };
    let peer = client
        .get("peer")
        .and_then(Value::as_str)
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .map(PeerAddr::from)
        .unwrap_or_default();
    let keys: RVec<AuditKey> = v
        .get("keys")?
        .as_array()?
        .iter()
        .map(|k| AuditKey {
            key: text(k, "key"),
            operation: text(k, "operation"),
            fingerprint: text(k, "fingerprint"),
        })
        .collect();
    let reasons: RVec<Tuple2<RString, RString>> = v
        .get("reasons")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| Tuple2(text(r, "item"), text(r, "reason")))
                .collect()
        })
        .unwrap_or_default();
    Some(AuditEntry {
        time: text(v, "time"),
        plugin: text(v, "plugin"),
        action: text(v, "action"),
        outcome: text(v, "outcome"),
        client: ClientInfo {
            peer,
            auth,
            token_fingerprint: text(client, "tokenFingerprint"),
        },
        keys,
        reasons,
        details_json: v
            .get("details")
            .filter(|d| d.is_object())
            .map(|d| RString::from(d.to_string()))
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, outcome: &str) -> AuditEntry {
        AuditEntry {
            time: "2025-01-01T00:00:00Z".into(),
            plugin: "@p/x".into(),
            action: "secrets.update".into(),
            outcome: outcome.into(),
            client: ClientInfo {
                peer: PeerAddr::from(
                    "127.0.0.1:5000"
                        .parse::<std::net::SocketAddr>()
                        .expect("addr"),
                ),
                auth: AuthMethod::BEARER,
                token_fingerprint: "hmac-sha256:0011223344556677".into(),
            },
            keys: RVec::from(vec![AuditKey {
                key: key.into(),
                operation: "set".into(),
                fingerprint: "hmac-sha256:8899aabbccddeeff".into(),
            }]),
            reasons: RVec::from(vec![Tuple2("K".into(), "why".into())]),
            details_json: r#"{"n":1}"#.into(),
        }
    }

    #[test]
    fn entries_round_trip_newest_first_filtered_and_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::beside(&dir.path().join("milady.toml"));
        assert!(log.query(&AuditQuery::default()).expect("empty").is_empty());
        for (i, key) in ["A", "B", "A"].iter().enumerate() {
            log.append(&entry(key, &format!("o{i}"))).expect("appended");
        }
        let all = log.query(&AuditQuery::default()).expect("read");
        let outcomes: Vec<&str> = all.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["o2", "o1", "o0"]);
        assert_eq!(all[0], entry("A", "o2"));
        let only_a = log
            .query(&AuditQuery {
                limit: 1,
                key: "A".into(),
            })
            .expect("read");
        assert_eq!(only_a.len(), 1);
        assert_eq!(only_a[0].outcome.as_str(), "o2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(log.path())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn lines_that_are_not_entries_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::beside(&dir.path().join("milady.toml"));
        log.append(&entry("A", "ok")).expect("appended");
        let mut text = std::fs::read_to_string(log.path()).expect("read");
        text.push_str("not json\n{\"x\":1}\n");
        std::fs::write(log.path(), text).expect("write");
        assert_eq!(log.query(&AuditQuery::default()).expect("read").len(), 1);
    }
}
