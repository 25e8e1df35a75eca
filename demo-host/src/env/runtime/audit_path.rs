//! The audit around a group commit (SPEC §8): every update of a batch
//! leaves its line, all of them written and synced in one go before the
//! batch is committed (so 32 concurrent writers still share one audit
//! fsync, as they share one config write). When that fails, every update
//! of the batch fails and nothing is applied (fail closed). An update the
//! commit then refuses (a lost compare-and-set) or fails (the store could
//! not be written) gets a second line with the same id saying so, which a
//! query reports in its place.

use std::sync::Arc;

use host_api::{EnvChange, HostError};

use super::{Outcome, Pending, RuntimeEnv};
use crate::beside::beside;
use crate::{
    env::audited::{Actor, EnvAudit, Line},
    store::audit::AuditLog,
};

impl RuntimeEnv {
    /// The same environment, leaving a line in `log` for every update.
    pub(crate) fn with_audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = EnvAudit::new(log);
        self
    }

    /// [`RuntimeEnv::with_audit`] when there is a log (`None`: a benchmark
    /// measuring the cost of auditing).
    pub(crate) fn with_audit_if(self, log: Option<Arc<AuditLog>>) -> Self {
        match log {
            Some(log) => self.with_audit(log),
            None => self,
        }
    }

    /// Audit appends (one write and one fsync each) made so far; with
    /// concurrent updates, fewer than the updates, as config writes are.
    /// For tests and the benchmark (`bench` feature) only.
    #[cfg(any(test, feature = "bench"))]
    pub fn audit_writes(&self) -> u64 {
        self.audit.writes()
    }

    /// Audits an update refused before it reached the environment (a key
    /// outside the plugin's scope): one `rejected` line.
    pub(crate) fn audit_rejected(
        &self,
        actor: &Actor,
        changes: &[EnvChange],
        error: &HostError,
    ) -> Result<(), HostError> {
        self.audit.rejected(actor, changes, error)
    }

    /// Writes the batch's audit lines and encrypts the values the batch
    /// sets (about 0.1 ms of CPU each, one key agreement per value) at the
    /// same time: the lines are written and synced on another thread while
    /// this one encrypts, so a write pays for the two one after the other
    /// only when the encryption is faster than the disk.
    fn write_audit_sealing(&self, lines: &[Line], batch: &mut [Pending]) -> Result<(), HostError> {
        if !self.audit.enabled()
            || self.fleet.is_some()
            || !self.config.seals_values()
            || !batch
                .iter()
                .any(|p| p.changes.iter().any(|c| c.value().is_some()))
        {
            return self.audit.write(lines);
        }
        let writing = {
            let (audit, lines) = (self.audit.clone(), lines.to_vec());
            beside(move || audit.write(&lines))
        };
        for pending in batch.iter_mut() {
            pending.presealed = self.config.preseal(&pending.changes).unwrap_or_default();
        }
        writing.join().unwrap_or_else(|| {
            Err(HostError::new(
                HostError::INTERNAL,
                "writing the audit log failed",
            ))
        })
    }

    /// [`RuntimeEnv::commit`] with the batch's audit lines written first.
    pub(super) fn commit_audited(&self, mut batch: Vec<Pending>) -> Vec<(u64, Outcome)> {
        let lines: Vec<Line> = batch
            .iter()
            .map(|p| {
                (
                    p.audit_id.clone(),
                    EnvAudit::line(&p.actor, &p.changes, "applied", &[]),
                )
            })
            .collect();
        if let Err(error) = self.write_audit_sealing(&lines, &mut batch) {
            return batch
                .iter()
                .map(|p| (p.ticket, Err(error.clone())))
                .collect();
        }
        let mut lines = lines;
        let tickets: Vec<u64> = batch.iter().map(|p| p.ticket).collect();
        let outcomes = self.commit(batch);
        let superseding: Vec<Line> = outcomes
            .iter()
            .filter_map(|(ticket, outcome)| {
                let error = outcome.as_ref().err()?;
                let index = tickets.iter().position(|t| t == ticket)?;
                let (id, mut entry) = lines.get_mut(index).map(std::mem::take)?;
                entry.outcome = if error.code.as_str() == HostError::CONFLICT {
                    "rejected"
                } else {
                    "failed"
                }
                .into();
                entry.reasons = vec![abi_stable::std_types::Tuple2(
                    error.code.clone(),
                    error.message.clone(),
                )]
                .into();
                Some((id, entry))
            })
            .collect();
        self.audit.supersede(&superseding);
        outcomes
    }
}
