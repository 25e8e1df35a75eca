//! The audit lines of the runtime environment's write path (SPEC §8): who
//! asked for an update ([`Actor`]: the plugin and its client), and the line
//! each update leaves in the audit log.
//!
//! `env::runtime` calls [`EnvAudit`] at three points: a refused update (one
//! `rejected` line), a batch about to be committed (one line per update,
//! `applied` or `rejected` for a lost compare-and-set, written and synced
//! in one go *before* the config file is written: if that fails, the whole
//! batch fails and nothing is applied), and a commit that failed after its
//! lines were written (a `failed` line with the same id, which a query
//! reports instead). Lines carry keys, operations and fingerprints, never
//! a value.

use std::sync::Arc;

use abi_stable::std_types::{RVec, Tuple2};
use host_api::{AuditEntry, AuditKey, ClientInfo, EnvChange, HostError};

use crate::{
    env::fingerprint::{self, Fingerprinter},
    store::audit::{self, AuditLog},
};

/// The action of every line the write path writes.
pub(crate) const ACTION: &str = "env.update";

/// Who asked for an update: the plugin (empty for the host itself) and
/// the client of the request it served.
#[derive(Clone, Debug, Default)]
pub(crate) struct Actor {
    /// The plugin id.
    pub(crate) plugin: String,
    /// The client (peer address, auth method, token fingerprint).
    pub(crate) client: ClientInfo,
}

impl Actor {
    /// A plugin acting for `client`.
    pub(crate) fn plugin(plugin: &str, client: ClientInfo) -> Self {
        Self {
            plugin: plugin.to_owned(),
            client,
        }
    }
}

/// One line about to be written: its id, and the entry.
pub(crate) type Line = (String, AuditEntry);

/// The write path's audit log; none: not audited (benchmarks measuring
/// its cost, unit tests).
#[derive(Clone, Default)]
pub(crate) struct EnvAudit {
    log: Option<Arc<AuditLog>>,
    /// Appends (each one write and one fsync) made so far.
    writes: Arc<std::sync::atomic::AtomicU64>,
}

impl EnvAudit {
    /// Whether updates are audited (a log is set).
    pub(crate) fn enabled(&self) -> bool {
        self.log.is_some()
    }

    /// Audits into `log`.
    pub(crate) fn new(log: Arc<AuditLog>) -> Self {
        Self {
            log: Some(log),
            writes: Arc::default(),
        }
    }

    /// Appends (one fsync each) made so far.
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The line of an update by `actor` of `changes`, `outcome`, `reasons`.
    pub(crate) fn line(
        actor: &Actor,
        changes: &[EnvChange],
        outcome: &str,
        reasons: &[(String, String)],
    ) -> AuditEntry {
        let fingerprints = Fingerprinter::process();
        AuditEntry {
            time: fingerprint::rfc3339(std::time::SystemTime::now()).into(),
            plugin: actor.plugin.as_str().into(),
            action: ACTION.into(),
            outcome: outcome.into(),
            client: actor.client.clone(),
            keys: changes
                .iter()
                .map(|c| AuditKey {
                    key: c.key().into(),
                    operation: if c.value().is_some() { "set" } else { "clear" }.into(),
                    fingerprint: c
                        .value()
                        .map(|v| fingerprints.of(v))
                        .unwrap_or_default()
                        .into(),
                })
                .collect::<RVec<_>>(),
            reasons: reasons
                .iter()
                .map(|(item, why)| Tuple2(item.as_str().into(), why.as_str().into()))
                .collect(),
            details_json: Default::default(),
        }
    }

    /// Writes `lines` in one write and one fsync; the error a client gets
    /// when that fails (nothing may then be applied).
    pub(crate) fn write(&self, lines: &[Line]) -> Result<(), HostError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        if lines.is_empty() {
            return Ok(());
        }
        let refs: Vec<(String, &AuditEntry)> =
            lines.iter().map(|(id, e)| (id.clone(), e)).collect();
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log.append_lines(&refs).map_err(|e| unavailable(&e))
    }

    /// A refused update: one `rejected` line with the host's reasons.
    pub(crate) fn rejected(
        &self,
        actor: &Actor,
        changes: &[EnvChange],
        error: &HostError,
    ) -> Result<(), HostError> {
        let reasons: Vec<(String, String)> = error
            .details
            .iter()
            .map(|d| (d.0.to_string(), d.1.to_string()))
            .collect();
        self.write(&[(
            audit::new_id(),
            Self::line(actor, changes, "rejected", &reasons),
        )])
    }

    /// Lines that supersede lines already written (a commit that failed
    /// after them). Best effort: the change was not applied either way,
    /// so a failure here is logged and the client still gets the commit's
    /// own error.
    pub(crate) fn supersede(&self, lines: &[Line]) {
        if let Err(e) = self.write(lines) {
            tracing::error!(
                error = %e.message,
                "a failed write could not be marked failed in the audit log"
            );
        }
    }
}

/// The error of an update whose audit line could not be written.
pub(crate) fn unavailable(e: &audit::AuditError) -> HostError {
    // The path is for the host's log, not for the client.
    tracing::error!(error = %e, "audit log unusable: the change is refused");
    HostError::new(HostError::STORAGE, e.client_message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_holds_fingerprints_and_never_a_value() {
        let value = "sk-canary-VALUE-0123456789";
        let line = EnvAudit::line(
            &Actor::plugin("@p/x", ClientInfo::default()),
            &[EnvChange::set("A_KEY", value), EnvChange::clear("B_KEY")],
            "applied",
            &[],
        );
        assert_eq!(line.keys[0].operation.as_str(), "set");
        assert!(line.keys[0].fingerprint.starts_with(fingerprint::PREFIX));
        assert_eq!(line.keys[1].operation.as_str(), "clear");
        assert!(line.keys[1].fingerprint.is_empty());
        let text = format!("{line:?}");
        for piece in value.as_bytes().windows(8) {
            assert!(!text.contains(std::str::from_utf8(piece).unwrap_or("")));
        }
    }
}
