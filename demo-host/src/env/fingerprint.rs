//! Fingerprints of secret values and API tokens: `"hmac-sha256:"` and the
//! first 16 hex digits of an HMAC-SHA256 under a key no client sees.
//!
//! Equal values have equal fingerprints (a client can tell whether two
//! hosts hold the same key, or whether a key changed), and a fingerprint
//! reveals nothing of the value: without the HMAC key nobody can test a
//! guess against it. The key is the host's fingerprint key
//! (`store::fingerprint_key`), kept with the secrets key, so fingerprints
//! stay equal across restarts, key rotations and hosts sharing the key.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::{Zeroize as _, Zeroizing};

/// The prefix of every fingerprint.
pub(crate) const PREFIX: &str = "hmac-sha256:";

/// Makes fingerprints under one key.
pub(crate) struct Fingerprinter {
    /// The HMAC, keyed once and cloned for each value (keying it costs
    /// as much as the rest of a short value's fingerprint). `None`: no key
    /// could be made, and no fingerprint is given.
    mac: Option<Hmac<Sha256>>,
    /// The last fingerprint made for each variable, with the value it is
    /// of: re-rendering 10,000 keys after one changed recomputes one
    /// (SPEC §8's fingerprints are most of a re-render's work otherwise).
    /// The values are wiped when replaced or dropped.
    memo: Mutex<HashMap<String, (Zeroizing<String>, String)>>,
}

/// The most variables [`Fingerprinter::of_var`] remembers; past it the
/// memo starts over (a host has hundreds).
const MEMO_LIMIT: usize = 100_000;

impl Clone for Fingerprinter {
    fn clone(&self) -> Self {
        Self {
            mac: self.mac.clone(),
            memo: Mutex::default(),
        }
    }
}

// The key is a secret: never printed.
impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprinter").finish_non_exhaustive()
    }
}

impl Fingerprinter {
    /// Fingerprints under a fresh random key; `None` when the system has no
    /// randomness to give.
    pub(crate) fn random() -> Option<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        Some(Self::with_key(key))
    }

    /// The fingerprints of this process: under the key the host installed
    /// at start-up ([`Fingerprinter::install`]); before that (or without
    /// one), under a random key made at first use (without randomness there
    /// is no key and every fingerprint is empty, which the log says).
    pub(crate) fn process() -> std::sync::Arc<Self> {
        if let Some(installed) = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return std::sync::Arc::clone(installed);
        }
        static RANDOM: std::sync::OnceLock<std::sync::Arc<Fingerprinter>> =
            std::sync::OnceLock::new();
        std::sync::Arc::clone(RANDOM.get_or_init(|| {
            std::sync::Arc::new(Self::random().unwrap_or_else(|| {
                tracing::error!("no randomness for the fingerprint key; no fingerprints");
                Self {
                    mac: None,
                    memo: Mutex::default(),
                }
            }))
        }))
    }

    /// Makes `self` the fingerprints of this process (the host's stable
    /// key, at start-up). A process runs one host; tests that build several
    /// in one process share the last one installed.
    pub(crate) fn install(self) {
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(self));
    }

    /// Fingerprints under `key` (the host's fingerprint key, and tests).
    pub(crate) fn with_key(mut key: [u8; 32]) -> Self {
        // HMAC takes a key of any length: `new_from_slice` cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(&key).ok();
        key.zeroize();
        Self {
            mac,
            memo: Mutex::default(),
        }
    }

    /// The fingerprint of variable `key`'s value `value`: the one made
    /// last time when the value is the same.
    #[cfg(test)]
    pub(crate) fn of_var(&self, key: &str, value: &str) -> String {
        self.with_memo(|of_var| of_var(key, value))
    }

    /// Calls `f` with [`Fingerprinter::of_var`] taking the memo's lock once
    /// for any number of variables.
    pub(crate) fn with_memo<R>(
        &self,
        f: impl FnOnce(&mut dyn FnMut(&str, &str) -> String) -> R,
    ) -> R {
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut |key, value| self.remembered(&mut memo, key, value))
    }

    fn remembered(
        &self,
        memo: &mut HashMap<String, (Zeroizing<String>, String)>,
        key: &str,
        value: &str,
    ) -> String {
        if let Some((seen, fingerprint)) = memo.get(key)
            && seen.as_str() == value
        {
            return fingerprint.clone();
        }
        let fingerprint = self.of(value);
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(
            key.to_owned(),
            (Zeroizing::new(value.to_owned()), fingerprint.clone()),
        );
        fingerprint
    }

    /// The fingerprint of `value`.
    pub(crate) fn of(&self, value: &str) -> String {
        let Some(keyed) = &self.mac else {
            return String::new();
        };
        let mut mac = keyed.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(PREFIX.len() + 16);
        out.push_str(PREFIX);
        for byte in &digest[..8] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The fingerprints [`Fingerprinter::install`] set.
static INSTALLED: std::sync::RwLock<Option<std::sync::Arc<Fingerprinter>>> =
    std::sync::RwLock::new(None);

/// `t` as RFC 3339 in UTC with seconds, e.g. `2025-01-31T12:00:00Z`.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn equal_values_equal_fingerprints_and_nothing_of_the_value() {
        let f = Fingerprinter::with_key([7; 32]);
        let a = f.of("sk-secret-value-1234");
        assert_eq!(a, f.of("sk-secret-value-1234"));
        assert_ne!(a, f.of("sk-secret-value-1235"));
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 16, "{a}");
        assert!(!a.contains("1234"));
        // Another key, another fingerprint.
        assert_ne!(
            a,
            Fingerprinter::with_key([8; 32]).of("sk-secret-value-1234")
        );
    }

    #[test]
    fn remembered_fingerprints_follow_each_variables_value() {
        let f = Fingerprinter::with_key([7; 32]);
        let first = f.of_var("A", "value-one-1234");
        assert_eq!(first, f.of("value-one-1234"));
        assert_eq!(f.of_var("A", "value-one-1234"), first);
        // A new value of the same variable: its own fingerprint, at once.
        assert_eq!(f.of_var("A", "value-two-5678"), f.of("value-two-5678"));
        // Another variable with the first value: the same fingerprint.
        assert_eq!(f.of_var("B", "value-one-1234"), first);
        assert_eq!(f.of_var("A", "value-one-1234"), first);
        // Several at once under one lock, as a re-render asks.
        let both = f.with_memo(|of| [of("A", "x-value"), of("B", "y-value")]);
        assert_eq!(both, [f.of("x-value"), f.of("y-value")]);
    }

    #[test]
    fn the_hmac_is_the_standard_one() {
        // RFC 4231, test case 2 ("Jefe"), truncated to 8 bytes.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        let bytes = mac.finalize().into_bytes();
        assert_eq!(bytes[..4], [0x5b, 0xdc, 0xc1, 0x46]);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // a leap day
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }
}
