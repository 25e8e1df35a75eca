//! The audit lines the host's HTTP layer writes itself (SPEC §8): plugin
//! toggles (written before the toggle, fail closed, superseded by a
//! `rejected` or `failed` line of the same id when it does not happen), and
//! refused authentication on a secrets route (at most one line per client
//! address a minute, so a client guessing tokens cannot flood the log).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use abi_stable::std_types::Tuple2;
use host_api::{AuditEntry, AuthMethod, ClientInfo, PeerAddr};
use poem::Request;

use crate::{
    env::fingerprint::{self, Fingerprinter},
    store::audit::{self, AuditLog},
};

/// The audit of one plugin toggle.
pub(crate) struct ToggleAudit {
    log: Arc<AuditLog>,
    id: String,
    entry: AuditEntry,
}

impl ToggleAudit {
    /// The toggle of `plugin` to `enabled` asked by `client`, audited in
    /// the log of the config file `config`.
    pub(crate) fn new(config: &Path, client: ClientInfo, plugin: &str, enabled: bool) -> Self {
        Self {
            log: AuditLog::shared_for(config),
            id: audit::new_id(),
            entry: AuditEntry {
                time: fingerprint::rfc3339(std::time::SystemTime::now()).into(),
                action: "plugins.toggle".into(),
                outcome: "applied".into(),
                client,
                details_json: serde_json::json!({"target": plugin, "enabled": enabled})
                    .to_string()
                    .into(),
                ..AuditEntry::default()
            },
        }
    }

    /// Writes the line before the toggle; when it cannot be written, the
    /// message for the client (the toggle must then not happen).
    pub(crate) async fn write_ahead(&self) -> Result<(), String> {
        let (log, id, entry) = (Arc::clone(&self.log), self.id.clone(), self.entry.clone());
        match tokio::task::spawn_blocking(move || log.append_lines(&[(id, &entry)])).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit log unusable: the toggle is refused");
                Err(e.client_message())
            }
            Err(_) => Err("the audit log could not be written, so nothing was changed".into()),
        }
    }

    /// The toggle did not happen: `outcome` (`rejected` or `failed`) and why.
    pub(crate) async fn did_not_happen(mut self, outcome: &str, code: &str, why: &str) {
        self.entry.outcome = outcome.into();
        self.entry.reasons = vec![Tuple2(code.into(), why.into())].into();
        let Self { log, id, entry } = self;
        let written = tokio::task::spawn_blocking(move || log.append_lines(&[(id, &entry)])).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!("a toggle that did not happen could not be marked in the audit log");
        }
    }
}

/// How often a client's refused authentications are audited.
const REFUSALS_EVERY: Duration = Duration::from_secs(60);

/// The most client addresses remembered; beyond it the oldest are
/// forgotten (a client then gets one more line).
const MAX_CLIENTS: usize = 4096;

/// Refused authentications on secrets routes, audited at most once a
/// minute per client address.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

/// The refusals of this process.
pub(crate) fn refusals() -> &'static Refusals {
    static REFUSALS: std::sync::OnceLock<Refusals> = std::sync::OnceLock::new();
    REFUSALS.get_or_init(Refusals::default)
}

/// Whether `path` is a secrets route (audited when refused).
pub(crate) fn is_secrets_path(path: &str) -> bool {
    path == "/api/secrets" || path.starts_with("/api/secrets/")
}

impl Refusals {
    /// Whether a refusal of `peer` now is due a line (and notes it).
    fn due(&self, peer: IpAddr, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < REFUSALS_EVERY)
        {
            return false;
        }
        if last.len() >= MAX_CLIENTS {
            last.retain(|_, t| now.duration_since(*t) < REFUSALS_EVERY);
            if last.len() >= MAX_CLIENTS {
                last.clear();
            }
        }
        last.insert(peer, now);
        true
    }

    /// Audits the refusal of `req` (to the log of the config `config`)
    /// when due. Nothing was going to change, so a line that cannot be
    /// written is logged and the client still gets its 401.
    pub(crate) async fn refused(&self, config: &Path, req: &Request) {
        let addr = match req.remote_addr().0 {
            poem::Addr::SocketAddr(addr) => Some(addr),
            _ => None,
        };
        if !self.due(
            addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
            Instant::now(),
        ) {
            return;
        }
        let (auth, token_fingerprint) = match crate::http::auth::presented(req) {
            Some((method, token)) => (method, Fingerprinter::process().of(token)),
            None => (AuthMethod::NONE, String::new()),
        };
        let entry = AuditEntry {
            time: fingerprint::rfc3339(std::time::SystemTime::now()).into(),
            action: "auth".into(),
            outcome: "refused".into(),
            client: ClientInfo {
                peer: addr.map(PeerAddr::from).unwrap_or_default(),
                auth,
                token_fingerprint: token_fingerprint.into(),
            },
            reasons: vec![Tuple2(
                req.uri().path().into(),
                "missing or wrong API token (one line per client a minute)".into(),
            )]
            .into(),
            ..AuditEntry::default()
        };
        let log = AuditLog::shared_for(config);
        let written = tokio::task::spawn_blocking(move || log.append(&entry)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!("a refused authentication could not be audited");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refusal_line_per_client_a_minute() {
        let r = Refusals::default();
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let t = Instant::now();
        assert!(r.due(a, t));
        assert!(!r.due(a, t + Duration::from_secs(59)));
        assert!(r.due(b, t + Duration::from_secs(1)));
        assert!(r.due(a, t + Duration::from_secs(61)));
    }

    #[test]
    fn secrets_routes() {
        assert!(is_secrets_path("/api/secrets"));
        assert!(is_secrets_path("/api/secrets/audit"));
        assert!(!is_secrets_path("/api/secretsx"));
        assert!(!is_secrets_path("/api/plugins"));
    }
}
