//! Which environment variables the API may write: a valid name that is not
//! on the host's block list.
//!
//! The block list guards against environment injection: a variable that
//! changes how the host, its child processes or its TLS stack behave must
//! never be settable through an HTTP API, even by an authenticated client.

/// Patterns blocked by default. `PREFIX*` and `*SUFFIX` match by prefix or
/// suffix; everything is compared case-insensitively.
pub(crate) const DEFAULT_BLOCKED: &[&str] = &[
    // dynamic loader
    "LD_*",
    "DYLD_*",
    // search paths and shells
    "PATH",
    "HOME",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "BASH_FUNC_*",
    "IFS",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "TMPDIR",
    "GCONV_PATH",
    "MALLOC_*",
    // interpreters' injection hooks
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "GIT_*",
    // proxies
    "*_PROXY",
    // TLS trust
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "NODE_TLS_REJECT_UNAUTHORIZED",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    // the host's own settings, its API token first
    "MILADY_API_TOKEN",
    // the secrets key, and where it is read from (SPEC §7)
    "MILADY_SECRETS_KEY",
    "MILADY_SECRETS_KEY_FILE",
    "MILADY_*",
    // the fleet's secret-store token (SPEC §9)
    "BAO_TOKEN",
    "VAULT_TOKEN",
];

/// The longest variable name the API accepts.
pub(crate) const MAX_KEY_LEN: usize = 256;

/// The default longest value the API may write: 64 KiB. A secret is a few
/// hundred bytes at most; the limit keeps the config file (read whole at
/// every write) and every plugin's snapshot small.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;

/// The host's rules for writable environment keys and their values.
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    blocked: Vec<String>,
    max_value_bytes: usize,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self::new(std::iter::empty::<&str>())
    }
}

impl KeyPolicy {
    /// The default block list plus `extra` patterns (from the config file).
    pub fn new<S: AsRef<str>>(extra: impl IntoIterator<Item = S>) -> Self {
        let blocked = DEFAULT_BLOCKED
            .iter()
            .map(|p| p.to_ascii_uppercase())
            .chain(
                extra
                    .into_iter()
                    .map(|p| p.as_ref().trim().to_ascii_uppercase()),
            )
            .filter(|p| !p.is_empty())
            .collect();
        Self {
            blocked,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }

    /// The same rules with another longest value, in bytes.
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// `Some(reason)` when the API must not write `value` (checked after
    /// the key): longer than the host's maximum. The reason names the limit,
    /// never the value.
    pub fn check_value(&self, value: &str) -> Option<String> {
        (value.len() > self.max_value_bytes).then(|| {
            format!(
                "value is longer than the host's maximum of {} bytes",
                self.max_value_bytes
            )
        })
    }

    /// `Some(reason)` when the API must not write `key`.
    pub fn check(&self, key: &str) -> Option<&'static str> {
        if !is_valid_env_name(key) {
            return Some("not a valid environment variable name");
        }
        let upper = key.to_ascii_uppercase();
        self.blocked
            .iter()
            .any(|p| pattern_matches(p, &upper))
            .then_some("blocked by the host")
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_KEY_LEN`] bytes.
pub(crate) fn is_valid_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && key.len() <= MAX_KEY_LEN
}

fn pattern_matches(pattern: &str, upper_key: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        upper_key.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        upper_key.ends_with(suffix)
    } else {
        pattern == upper_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_block_injection_vectors_case_insensitively() {
        let p = KeyPolicy::default();
        for key in [
            "LD_PRELOAD",
            "ld_preload",
            "Path",
            "HTTPS_PROXY",
            "http_proxy",
            "no_proxy",
            "SSL_CERT_FILE",
            "MILADY_API_TOKEN",
            "milady_api_token",
            "MILADY_SECRETS_KEY",
            "milady_secrets_key_file",
            "BAO_TOKEN",
            "vault_token",
            "DYLD_INSERT_LIBRARIES",
            "NODE_OPTIONS",
            "BASH_FUNC_x%%",
        ] {
            assert!(p.check(key).is_some(), "{key} should be refused");
        }
        assert_eq!(p.check("OPENAI_API_KEY"), None);
        assert_eq!(p.check("PATHFINDER_KEY"), None);
    }

    #[test]
    fn extra_patterns_from_config() {
        let p = KeyPolicy::new(["corp_*", "*_INTERNAL", "EXACT"]);
        assert!(p.check("CORP_TOKEN").is_some());
        assert!(p.check("A_internal").is_some());
        assert!(p.check("exact").is_some());
        assert!(p.check("EXACTLY").is_none());
    }

    #[test]
    fn invalid_names() {
        let p = KeyPolicy::default();
        for key in ["", "1ABC", "A-B", "A B", "A=B", "É", "A\0"] {
            assert_eq!(
                p.check(key),
                Some("not a valid environment variable name"),
                "{key:?}"
            );
        }
        assert!(p.check(&"A".repeat(MAX_KEY_LEN + 1)).is_some());
    }

    proptest! {
        #[test]
        fn check_never_panics_and_valid_names_match_the_grammar(key in "\\PC*") {
            let verdict = KeyPolicy::default().check(&key);
            if verdict.is_none() {
                prop_assert!(is_valid_env_name(&key));
            }
        }
    }
}
