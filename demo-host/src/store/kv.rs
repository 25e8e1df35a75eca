//! The OpenBao / Vault KV version 2 store (SPEC §9): a small client of the
//! documented HTTP API over `reqwest` (rustls, the system's roots and an
//! optional CA file), with fail-over between the addresses of a cluster.
//!
//! Every key of the fleet lives in one KV v2 secret (`mount/path`), so a
//! write is one `POST mount/data/path` with `options.cas` set to the version
//! it was validated against: all or nothing, and no update lost between
//! hosts. OpenBao answers a `cas` mismatch with HTTP 400 ("check-and-set
//! parameter did not match"), which is [`KvError::CasMismatch`].
//!
//! The token is never logged, never part of an error and never printed by
//! `Debug`: it only goes into the `X-Vault-Token` header.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use reqwest::{
    StatusCode,
    blocking::{Client, RequestBuilder, Response},
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// The environment variables the token is read from, in order.
pub(crate) const TOKEN_VARS: [&str; 2] = ["BAO_TOKEN", "VAULT_TOKEN"];
/// The environment variables the default address is read from, in order.
pub(crate) const ADDR_VARS: [&str; 2] = ["BAO_ADDR", "VAULT_ADDR"];

/// Where the store is and how to reach it (`[store]`, SPEC §9).
#[derive(Clone)]
pub(crate) struct KvSettings {
    /// The store's addresses, tried in turn (a cluster's nodes).
    pub(crate) addresses: Vec<String>,
    /// The KV v2 mount.
    pub(crate) mount: String,
    /// The secret holding every key.
    pub(crate) path: String,
    /// An extra CA certificate (PEM) to trust beside the system roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// How long one request may take before the next address is tried.
    pub(crate) timeout: Duration,
    token: Zeroizing<String>,
}

// The token is a secret: never printed.
impl std::fmt::Debug for KvSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSettings")
            .field("addresses", &self.addresses)
            .field("mount", &self.mount)
            .field("path", &self.path)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl KvSettings {
    /// Settings with `token` (from `BAO_TOKEN` / `VAULT_TOKEN`, never from
    /// the config file).
    pub(crate) fn new(addresses: Vec<String>, mount: &str, path: &str, token: String) -> Self {
        Self {
            addresses: addresses
                .into_iter()
                .map(|a| a.trim_end_matches('/').to_owned())
                .collect(),
            mount: mount.trim_matches('/').to_owned(),
            path: path.trim_matches('/').to_owned(),
            ca_file: None,
            timeout: Duration::from_secs(2),
            token: Zeroizing::new(token),
        }
    }

    /// The token from the process environment: `BAO_TOKEN`, then
    /// `VAULT_TOKEN`.
    pub(crate) fn token_from(env: &BTreeMap<String, String>) -> Option<String> {
        TOKEN_VARS
            .iter()
            .find_map(|k| env.get(*k).filter(|v| !v.is_empty()).cloned())
    }
}

/// Why the store could not be used. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KvError {
    /// No address answered (connection refused, timed out, ...).
    #[error("the secret store is unreachable ({0})")]
    Unreachable(String),
    /// A write was sent but no answer came (a timeout, a connection cut
    /// mid-request): the store may still apply it. The caller fences it
    /// out before anything else (`env::runtime::fleet`).
    #[error("no answer to a write the secret store may still apply ({0})")]
    InDoubt(String),
    /// The store answered that it is sealed or has no active node.
    #[error("the secret store is sealed or has no leader ({0})")]
    Sealed(String),
    /// The store refused the token (403).
    #[error("the secret store refused the token ({0})")]
    Refused(String),
    /// Another write came first: the `cas` version is no longer current.
    #[error("the secret changed in the store since it was read")]
    CasMismatch,
    /// Any other answer.
    #[error("the secret store answered {status}: {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The store's error text.
        message: String,
    },
    /// The client could not be set up (a CA file that cannot be read).
    #[error("cannot set up the secret store client: {0}")]
    Setup(String),
}

/// One read of the fleet's secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvRead {
    /// The secret's current version; 0 when it does not exist yet.
    pub(crate) version: u64,
    /// Every key and value (empty for a deleted or absent version).
    pub(crate) data: BTreeMap<String, String>,
}

/// What the store says of the token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenInfo {
    /// Seconds left; 0 for a token that never expires.
    pub(crate) ttl: u64,
    /// Whether `renew-self` can extend it.
    pub(crate) renewable: bool,
}

/// The KV v2 client.
pub(crate) struct KvClient {
    settings: KvSettings,
    http: Client,
    /// The address that answered last; tried first.
    current: AtomicUsize,
}

impl std::fmt::Debug for KvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KvClient {
    /// A client for `settings`. Call it outside any async runtime (the
    /// blocking client owns one of its own).
    pub(crate) fn new(settings: KvSettings) -> Result<Self, KvError> {
        let mut builder = Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_millis(800)))
            // A standby redirects to the active node it knows, which may be
            // the one that just died: try the configured nodes instead.
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls();
        if let Some(ca) = &settings.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| KvError::Setup(format!("{}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| KvError::Setup(format!("{}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| KvError::Setup(e.to_string()))?;
        if settings.addresses.is_empty() {
            return Err(KvError::Setup(
                "no store address: set [store] address, BAO_ADDR or VAULT_ADDR".into(),
            ));
        }
        Ok(Self {
            settings,
            http,
            current: AtomicUsize::new(0),
        })
    }

    /// The settings (addresses, mount, path).
    pub(crate) fn settings(&self) -> &KvSettings {
        &self.settings
    }

    /// Sends the request `build` makes for an address, trying each address
    /// once from the one that answered last. A node that is unreachable,
    /// sealed or a standby without a leader passes the turn to the next.
    fn send(
        &self,
        build: impl Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<(StatusCode, Value), KvError> {
        self.send_as(false, build)
    }

    /// [`KvClient::send`]; for a `write`, a request that may have reached
    /// a node without an answer is not sent again elsewhere: the outcome is
    /// [`KvError::InDoubt`].
    fn send_as(
        &self,
        write: bool,
        build: impl Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<(StatusCode, Value), KvError> {
        let n = self.settings.addresses.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = KvError::Unreachable("no address tried".into());
        for i in 0..n {
            let index = (start + i) % n;
            let address = &self.settings.addresses[index];
            let request = build(&self.http, address)
                .header("X-Vault-Token", self.settings.token.as_str())
                .header("X-Vault-Request", "true");
            match request.send() {
                Ok(response) => {
                    let (status, body) = read_body(response);
                    match status.as_u16() {
                        // Sealed, standby without a leader, or still
                        // setting up: another node may serve.
                        307 | 500 | 502 | 503 | 429 | 473 => {
                            last = KvError::Sealed(error_text(status, &body));
                            continue;
                        }
                        _ => {
                            self.current.store(index, Ordering::Relaxed);
                            return Ok((status, body));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(address = %address, error = %without_url(&e), "store node failed");
                    // reqwest's text names the URL, never a header.
                    if write && !e.is_connect() {
                        self.current.store((index + 1) % n, Ordering::Relaxed);
                        return Err(KvError::InDoubt(without_url(&e)));
                    }
                    last = KvError::Unreachable(without_url(&e));
                }
            }
        }
        Err(last)
    }

    fn url(&self, address: &str, kind: &str, path: &str) -> String {
        format!("{address}/v1/{}/{kind}/{path}", self.settings.mount)
    }

    /// Reads the fleet's secret (its latest version).
    pub(crate) fn read(&self) -> Result<KvRead, KvError> {
        self.read_at(&self.settings.path)
    }

    /// Reads the secret at `path` under the mount.
    pub(crate) fn read_at(&self, path: &str) -> Result<KvRead, KvError> {
        let (status, body) = self.send(|c, a| c.get(self.url(a, "data", path)))?;
        match status.as_u16() {
            200 => {
                let version = body["data"]["metadata"]["version"].as_u64().unwrap_or(0);
                let data = body["data"]["data"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(KvRead { version, data })
            }
            // Absent, or its latest version deleted: the metadata knows
            // the version a write must name.
            404 => Ok(KvRead {
                version: self.version_at(path)?,
                data: BTreeMap::new(),
            }),
            _ => Err(failure(status, &body)),
        }
    }

    /// The fleet secret's current version from its metadata (cheap: no
    /// values); 0 when it does not exist.
    pub(crate) fn version(&self) -> Result<u64, KvError> {
        self.version_at(&self.settings.path)
    }

    fn version_at(&self, path: &str) -> Result<u64, KvError> {
        let (status, body) = self.send(|c, a| c.get(self.url(a, "metadata", path)))?;
        match status.as_u16() {
            200 => Ok(body["data"]["current_version"].as_u64().unwrap_or(0)),
            404 => Ok(0),
            _ => Err(failure(status, &body)),
        }
    }

    /// Writes `data` as the fleet's secret if its version is still `cas`
    /// (0: only if it does not exist); the new version.
    pub(crate) fn write(&self, data: &BTreeMap<String, String>, cas: u64) -> Result<u64, KvError> {
        self.write_at(&self.settings.path, data, cas)
    }

    /// [`KvClient::write`] for the secret at `path`.
    pub(crate) fn write_at(
        &self,
        path: &str,
        data: &BTreeMap<String, String>,
        cas: u64,
    ) -> Result<u64, KvError> {
        let body = Zeroizing::new(json!({ "options": { "cas": cas }, "data": data }).to_string());
        let (status, answer) = self.send_as(true, |c, a| {
            c.post(self.url(a, "data", path))
                .header("Content-Type", "application/json")
                .body(body.as_str().to_owned())
        })?;
        match status.as_u16() {
            200 | 204 => Ok(answer["data"]["version"].as_u64().unwrap_or(cas + 1)),
            400 if error_text(status, &answer).contains("check-and-set") => {
                Err(KvError::CasMismatch)
            }
            _ => Err(failure(status, &answer)),
        }
    }

    /// What the store says of the token (`auth/token/lookup-self`).
    pub(crate) fn lookup_self(&self) -> Result<TokenInfo, KvError> {
        let (status, body) = self.send(|c, a| c.get(format!("{a}/v1/auth/token/lookup-self")))?;
        match status.as_u16() {
            200 => Ok(TokenInfo {
                ttl: body["data"]["ttl"].as_u64().unwrap_or(0),
                renewable: body["data"]["renewable"].as_bool().unwrap_or(false),
            }),
            _ => Err(failure(status, &body)),
        }
    }

    /// Renews the token (`auth/token/renew-self`); the new TTL in seconds.
    pub(crate) fn renew_self(&self) -> Result<u64, KvError> {
        let (status, body) = self.send(|c, a| {
            c.post(format!("{a}/v1/auth/token/renew-self"))
                .header("Content-Type", "application/json")
                .body("{}")
        })?;
        match status.as_u16() {
            200 => Ok(body["auth"]["lease_duration"].as_u64().unwrap_or(0)),
            _ => Err(failure(status, &body)),
        }
    }
}

fn read_body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

/// The store's `errors` list as one line.
fn error_text(status: StatusCode, body: &Value) -> String {
    let joined = body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    if joined.is_empty() {
        status.to_string()
    } else {
        joined.replace('\n', " ")
    }
}

fn failure(status: StatusCode, body: &Value) -> KvError {
    let message = error_text(status, body);
    match status.as_u16() {
        401 | 403 => KvError::Refused(message),
        500 | 502 | 503 => KvError::Sealed(message),
        _ => KvError::Unexpected {
            status: status.as_u16(),
            message,
        },
    }
}

/// A transport error's kind and address, without the request path.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match e.url() {
        Some(url) => format!(
            "{kind}: {}://{}",
            url.scheme(),
            url.host_str()
                .map(|h| match url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
                .unwrap_or_default()
        ),
        None => kind.to_owned(),
    }
}
