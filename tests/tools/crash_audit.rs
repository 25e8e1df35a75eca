//! The audit log's side of the crash check (SPEC §8): after every kill,
//! `audit.jsonl` holds whole lines only (no line torn by the kill) and
//! every acknowledged PUT has its `applied` line, found by the fingerprint
//! of the value it set (computed here with the host's fingerprint key, from
//! its home), so the check needs no value in the log to find it.

use std::{collections::HashSet, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, Result, ensure};
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;

/// The audit log as a kill left it.
pub(crate) struct AuditFile {
    /// `(key, fingerprint)` of every `applied` line (the newest line of
    /// each id).
    applied: HashSet<(String, String)>,
    key: Vec<u8>,
    /// Lines read.
    pub(crate) lines: usize,
}

impl AuditFile {
    /// Reads `path`, checking that every line is whole JSON and the file is
    /// owner-only; `home` holds the host's fingerprint key.
    pub(crate) fn read(path: &Path, home: &e2e_tests::TempHome) -> Result<Self> {
        let mode = std::fs::metadata(path)
            .context("the audit log is missing")?
            .permissions()
            .mode();
        ensure!(mode & 0o777 == 0o600, "audit log mode {:o}", mode & 0o777);
        let text = std::fs::read_to_string(path).context("reading the audit log")?;
        ensure!(
            text.is_empty() || text.ends_with('\n'),
            "the audit log ends in a torn line"
        );
        let mut newest: Vec<Value> = Vec::new();
        let mut seen = HashSet::new();
        let mut lines = 0;
        for (n, line) in text
            .lines()
            .enumerate()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("audit line {} is torn: not JSON", n + 1))?;
            lines += 1;
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id) {
                newest.push(v);
            }
        }
        let applied = newest
            .iter()
            .filter(|v| v["action"] == "env.update" && v["outcome"] == "applied")
            .flat_map(|v| v["keys"].as_array().cloned().unwrap_or_default())
            .map(|k| {
                (
                    k["key"].as_str().unwrap_or_default().to_owned(),
                    k["fingerprint"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let key_file = home.data_home().join("milady").join("fingerprint.key");
        let key_text = std::fs::read_to_string(&key_file).context("the fingerprint key")?;
        let hex = key_text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .context("no key line")?;
        let key = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .context("the fingerprint key is not hex")?;
        Ok(Self {
            applied,
            key,
            lines,
        })
    }

    /// The host's fingerprint of `value`.
    fn fingerprint(&self, value: &str) -> Result<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).context("hmac key")?;
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("hmac-sha256:{hex}"))
    }

    /// Whether an `applied` line sets `key` to `value`.
    pub(crate) fn has_applied(&self, key: &str, value: &str) -> Result<bool> {
        Ok(self
            .applied
            .contains(&(key.to_owned(), self.fingerprint(value)?)))
    }
}
