//! The audit log (SPEC §8): `audit.jsonl` beside the config file (or
//! `--audit-log PATH`), one JSON object per line, appended and on disk
//! (fsync) before an append returns.
//!
//! The host writes it where every change passes: the runtime
//! environment's commit path (`env::runtime`, one line per update, written
//! with the batch of a group commit in one write and one fsync, *before*
//! the config file is written, so a change is never applied without its
//! line), plugin toggles, and refused authentication on secrets routes.
//! Plugins append (the secrets plugin its rejections) and query it through
//! their services (`host_api::PluginServices::audit_append` /
//! `audit_query`). An entry carries keys, operations, fingerprints,
//! reasons and the client, never a value. The file is created owner-only
//! (0600), opened for each append (a folder that vanished, or a path that
//! became a folder, fails the append, and the caller fails closed).
//!
//! Every line has an `id`. A write whose line was written but whose config
//! write then failed gets a second line with the same `id` and the outcome
//! `failed`; a query reports the newest line of each `id` only, so each
//! attempt is one entry.
//!
//! Rotation (`audit::rotation`): when the file reaches its size limit
//! (16 MiB by default) it becomes `audit.jsonl.1`, older ones shift up to
//! `audit.jsonl.4`, and the oldest is deleted: at most five files, about
//! 80 MiB, are retained. Queries read them all, newest first.

mod rotation;

use std::{
    collections::HashSet,
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
};

use abi_stable::std_types::{RString, RVec, Tuple2};
use host_api::{AuditEntry, AuditKey, AuditQuery, AuthMethod, ClientInfo, PeerAddr};
use serde_json::{Value, json};

pub(crate) use rotation::Rotation;

/// The default number of entries a query returns.
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// The most entries a query returns, whatever it asks for.
pub(crate) const MAX_LIMIT: usize = 10_000;

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

impl AuditError {
    /// The cause for an API client, without the file's path (the host's
    /// log has it): e.g. `no storage space`, `read-only filesystem`.
    pub(crate) fn cause(&self) -> String {
        match self {
            Self::Io { source, .. } => match source.raw_os_error() {
                Some(code) => format!("{} (os error {code})", source.kind()),
                None => source.kind().to_string(),
            },
        }
    }

    /// The message for an API client whose change the log refused.
    pub(crate) fn client_message(&self) -> String {
        format!(
            "the audit log could not be written ({}), so nothing was changed",
            self.cause()
        )
    }
}

/// The audit log of one host.
#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    rotation: Rotation,
    /// One appender at a time: each batch of lines is one write, in order.
    append_lock: Mutex<()>,
}

/// The logs of this process, by config file (see [`AuditLog::shared_for`]).
static LOGS: Mutex<Vec<(PathBuf, Weak<AuditLog>)>> = Mutex::new(Vec::new());

impl AuditLog {
    /// The one log of the config file `config` in this process (every
    /// plugin's services, the toggles and the auth layer share it, and
    /// with it the append lock): the one [`AuditLog::open_for`] set up, or
    /// else `audit.jsonl` beside the config.
    pub(crate) fn shared_for(config: &Path) -> Arc<Self> {
        let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        logs.retain(|(_, l)| l.strong_count() > 0);
        if let Some(log) = logs
            .iter()
            .filter(|(c, _)| c == config)
            .find_map(|(_, l)| l.upgrade())
        {
            return log;
        }
        let log = Arc::new(Self::beside(config));
        logs.push((config.to_owned(), Arc::downgrade(&log)));
        log
    }

    /// Sets up the log of the config file `config` at `path` (`None`:
    /// beside the config) for this process; later [`AuditLog::shared_for`]
    /// calls get it.
    pub(crate) fn open_for(config: &Path, path: Option<&Path>) -> Arc<Self> {
        let log = Arc::new(match path {
            Some(path) => Self::at(path.to_owned()),
            None => Self::beside(config),
        });
        let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        logs.retain(|(c, l)| l.strong_count() > 0 && c != config);
        logs.push((config.to_owned(), Arc::downgrade(&log)));
        log
    }

    /// The log `audit.jsonl` in the folder of the config file `config`.
    pub(crate) fn beside(config: &Path) -> Self {
        let path = config
            .parent()
            .map(|dir| dir.join("audit.jsonl"))
            .unwrap_or_else(|| PathBuf::from("audit.jsonl"));
        Self::at(path)
    }

    /// The log at `path`.
    pub(crate) fn at(path: PathBuf) -> Self {
        Self {
            path,
            rotation: Rotation::default(),
            append_lock: Mutex::new(()),
        }
    }

    /// The same log, rotated by `rotation`.
    #[cfg(test)]
    pub(crate) fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = rotation;
        self
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the log can be appended to (opens it, creating it
    /// 0600), so a host whose log is unusable says so at start-up.
    pub(crate) fn check_writable(&self) -> Result<(), AuditError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.open_append().map(drop)
    }

    /// Appends `entry` as one line (with a fresh id) and syncs it to disk.
    /// Blocking.
    pub(crate) fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        self.append_lines(&[(new_id(), entry)])
    }

    /// Appends one line per `(id, entry)`, in order, in one write, and
    /// syncs them to disk once (a group commit's lines). Blocking.
    pub(crate) fn append_lines(&self, entries: &[(String, &AuditEntry)]) -> Result<(), AuditError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for (id, entry) in entries {
            text.push_str(&to_json(id, entry).to_string());
            text.push('\n');
        }
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            action: "written",
            source,
        };
        let _guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.open_append()?;
        let size = file.metadata().map_err(io)?.len();
        if self.rotation.due(size, text.len()) {
            drop(file);
            self.rotation.rotate(&self.path).map_err(io)?;
            file = self.open_append()?;
        }
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }

    fn open_append(&self) -> Result<std::fs::File, AuditError> {
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&self.path).map_err(|source| AuditError::Io {
            path: self.path.clone(),
            action: "written",
            source,
        })
    }

    /// The entries matching `query`, newest first, the newest line of each
    /// id only (see the module notes). Missing files hold none; a line that
    /// is not an entry is skipped. Blocking.
    pub(crate) fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => (n as usize).min(MAX_LIMIT),
        };
        let key = query.key.as_str();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut budget = MAX_READ_BYTES;
        for file in self.rotation.files_newest_first(&self.path) {
            if out.len() >= limit || budget == 0 {
                break;
            }
            let text = self.read(&file, budget)?;
            budget = budget.saturating_sub(text.len() as u64);
            for v in text
                .lines()
                .rev()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            {
                // The newest line of an id stands for the attempt.
                if let Some(id) = v.get("id").and_then(Value::as_str)
                    && !seen.insert(id.to_owned())
                {
                    continue;
                }
                let Some(entry) = from_json(&v) else {
                    continue;
                };
                if key.is_empty() || entry.keys.iter().any(|k| k.key.as_str() == key) {
                    out.push(entry);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn read(&self, file: &Path, budget: u64) -> Result<String, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            action: "read",
            source,
        };
        match std::fs::File::open(file) {
            Ok(f) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, budget), &mut bytes)
                    .map_err(io)?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io(e)),
        }
    }
}

/// A fresh line id: 16 random hex digits (a counter when the system has no
/// randomness, unique within the process).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = n.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn client_json(client: &ClientInfo) -> Value {
    json!({
        "peer": client.peer.to_socket_addr().map(|a| a.to_string()),
        "auth": client.auth.name(),
        "tokenFingerprint": client.token_fingerprint.as_str(),
    })
}

fn to_json(id: &str, entry: &AuditEntry) -> Value {
    let details = serde_json::from_str::<Value>(&entry.details_json)
        .ok()
        .filter(Value::is_object);
    json!({
        "id": id,
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

    #[test]
    fn a_later_line_of_the_same_id_stands_for_the_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::beside(&dir.path().join("milady.toml"));
        let (applied, other, failed) = (
            entry("A", "applied"),
            entry("B", "applied"),
            entry("A", "failed"),
        );
        log.append_lines(&[("1".into(), &applied), ("2".into(), &other)])
            .expect("appended");
        log.append_lines(&[("1".into(), &failed)])
            .expect("appended");
        let all = log.query(&AuditQuery::default()).expect("read");
        let outcomes: Vec<(&str, &str)> = all
            .iter()
            .map(|e| (e.keys[0].key.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(outcomes, [("A", "failed"), ("B", "applied")]);
        let text = std::fs::read_to_string(log.path()).expect("read");
        assert_eq!(text.lines().count(), 3, "the file keeps every line");
    }

    #[test]
    fn an_unusable_path_fails_the_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A folder where the file should be.
        let log = AuditLog::at(dir.path().to_owned());
        assert!(log.append(&entry("A", "applied")).is_err());
        assert!(log.check_writable().is_err());
        // A folder that is gone.
        let gone = AuditLog::at(dir.path().join("gone").join("audit.jsonl"));
        assert!(gone.append(&entry("A", "applied")).is_err());
    }
}
