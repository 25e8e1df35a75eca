//! The at-rest form of one `[env]` value (SPEC §7).
//!
//! A value is stored either as a TOML string, which is always plaintext,
//! or as an inline table with one `age` field, which is always encrypted:
//!
//! ```toml
//! [env]
//! HAND_WRITTEN = "plaintext, as a user typed it"
//! OPENAI_API_KEY = { age = "YWdlLWVuY3J5cHRpb24ub3JnL3Yx..." }
//! ```
//!
//! The field holds standard base64 (one line, no armor) of a binary age
//! file encrypted to the host's X25519 recipient (`age` crate; never a
//! passphrase/scrypt recipient). The age payload is `NAME || 0x00 || value`:
//! the variable's name is bound into the ciphertext, so a ciphertext copied
//! to another key fails to open ([`OpenError::OtherName`]) instead of
//! lending its value to the wrong variable. Names are environment-variable
//! names, which never contain NUL, so the split is unambiguous.
//!
//! Plaintext the host owns here (the payload being sealed, the payload just
//! opened) lives in zeroizing buffers sized up front, so no reallocation
//! leaves a copy behind; an opened value is handed out as a
//! [`SecretString`].

use std::io::Read as _;

use age::x25519::{Identity, Recipient};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use secrecy::SecretString;
use toml_edit::{Item, Value};
use zeroize::Zeroizing;

/// The one field of an encrypted value's inline table.
pub(crate) const SEALED_FIELD: &str = "age";

/// An `[env]` entry as it is stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored<'a> {
    /// A TOML string: the value itself.
    Plain(&'a str),
    /// `{ age = "…" }`: the base64 ciphertext.
    Sealed(&'a str),
}

/// Reads an `[env]` entry: a string is [`Stored::Plain`], a table (inline
/// or not) whose only field is the string `age` is [`Stored::Sealed`];
/// anything else is `None` (the config's shape check names it).
pub(crate) fn read_item(item: &Item) -> Option<Stored<'_>> {
    if let Some(text) = item.as_str() {
        return Some(Stored::Plain(text));
    }
    let table = item.as_table_like()?;
    if table.len() != 1 {
        return None;
    }
    table
        .get(SEALED_FIELD)
        .and_then(Item::as_str)
        .map(Stored::Sealed)
}

/// The TOML value `{ age = "<sealed>" }` for a ciphertext made by [`seal`].
/// Parsed from its text, so the value carries that text and writing the
/// document copies it instead of working out how to quote a long string on
/// every later write.
pub(crate) fn sealed_value(sealed: &str) -> Value {
    if sealed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && let Ok(value) = format!("{{ {SEALED_FIELD} = \"{sealed}\" }}").parse::<Value>()
    {
        return value;
    }
    let mut table = toml_edit::InlineTable::new();
    table.insert(SEALED_FIELD, Value::from(sealed));
    table.fmt();
    Value::InlineTable(table)
}

/// Whether values written into `doc` are encrypted: unless it opts out
/// with `[security] encrypt_env = false`.
pub(crate) fn encrypts(doc: &toml_edit::DocumentMut) -> bool {
    doc.get("security")
        .and_then(Item::as_table_like)
        .and_then(|security| security.get("encrypt_env"))
        .and_then(Item::as_bool)
        != Some(false)
}

/// Why a value could not be encrypted. Never carries the value.
#[derive(Debug, thiserror::Error)]
#[error("the value of {key} could not be encrypted (age: {reason})")]
pub struct SealError {
    /// The variable's name.
    pub key: String,
    /// age's reason, without any value.
    reason: String,
}

/// Encrypts `value` of variable `key` to `recipient`; returns the base64
/// text for the `age` field.
pub(crate) fn seal(recipient: &Recipient, key: &str, value: &str) -> Result<String, SealError> {
    let mut payload = Zeroizing::new(Vec::with_capacity(key.len() + 1 + value.len()));
    payload.extend_from_slice(key.as_bytes());
    payload.push(0);
    payload.extend_from_slice(value.as_bytes());
    let ciphertext = age::encrypt(recipient, &payload).map_err(|err| SealError {
        key: key.to_owned(),
        reason: format!("{err:?}"),
    })?;
    Ok(STANDARD.encode(ciphertext))
}

/// Why an encrypted value could not be opened. Never carries a value; the
/// `Display` is the reason GET and the log give for an unreadable key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// No key to open it with (missing, unreadable or invalid key file).
    #[error("no usable secrets key: {0}")]
    NoKey(String),
    /// Encrypted to another key than the host's.
    #[error("encrypted with another secrets key than the one the host has")]
    WrongKey,
    /// Encrypted for another variable (a ciphertext copied between keys).
    #[error("encrypted for another variable name (copied from another entry?)")]
    OtherName,
    /// Encrypted with a passphrase (scrypt), which the host never uses.
    #[error("encrypted with a passphrase, which the host does not accept")]
    Passphrase,
    /// Not base64, not an age file, or altered after it was written.
    #[error("the encrypted text is damaged ({0})")]
    Damaged(&'static str),
}

/// Opens the `age` field `sealed` of variable `key` with any of
/// `identities` (the host's key, and the next key of an unfinished
/// rotation).
pub(crate) fn open(
    identities: &[Identity],
    key: &str,
    sealed: &str,
) -> Result<SecretString, OpenError> {
    let bytes = STANDARD
        .decode(sealed.trim())
        .map_err(|_| OpenError::Damaged("not base64"))?;
    let decryptor = age::Decryptor::new_buffered(&bytes[..]).map_err(|err| match err {
        age::DecryptError::UnknownFormat => OpenError::Damaged("not an age v1 file"),
        _ => OpenError::Damaged("invalid age header"),
    })?;
    if decryptor.is_scrypt() {
        return Err(OpenError::Passphrase);
    }
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|err| match err {
            age::DecryptError::NoMatchingKeys => OpenError::WrongKey,
            age::DecryptError::InvalidMac => OpenError::Damaged("header authentication failed"),
            _ => OpenError::Damaged("key unwrap failed"),
        })?;
    // The plaintext is shorter than the ciphertext: no reallocation, so no
    // stray copy of it.
    let mut payload = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader
        .read_to_end(&mut payload)
        .map_err(|_| OpenError::Damaged("payload authentication failed"))?;
    let name_len = key.len();
    if payload.len() <= name_len || &payload[..name_len] != key.as_bytes() || payload[name_len] != 0
    {
        return Err(OpenError::OtherName);
    }
    let value = std::str::from_utf8(&payload[name_len + 1..])
        .map_err(|_| OpenError::Damaged("the value is not UTF-8"))?;
    Ok(SecretString::from(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secrecy::ExposeSecret as _;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn opened(identities: &[Identity], key: &str, sealed: &str) -> Result<String, OpenError> {
        open(identities, key, sealed).map(|v| v.expose_secret().to_owned())
    }

    /// The `[env]` entry `key` of `doc`.
    fn entry<'a>(doc: &'a toml_edit::DocumentMut, key: &str) -> Option<Stored<'a>> {
        doc.get("env")?
            .as_table_like()?
            .get(key)
            .and_then(read_item)
    }

    #[test]
    fn strings_are_plain_and_age_tables_sealed() -> TestResult {
        let doc: toml_edit::DocumentMut = r#"
[env]
A = "plain"
B = { age = "c2VhbGVk" }
C = { age = "x", other = 1 }
D = { age = 3 }
E = 4

[env.F]
age = "dGFibGU="
"#
        .parse()?;
        assert_eq!(entry(&doc, "A"), Some(Stored::Plain("plain")));
        assert_eq!(entry(&doc, "B"), Some(Stored::Sealed("c2VhbGVk")));
        assert_eq!(entry(&doc, "C"), None);
        assert_eq!(entry(&doc, "D"), None);
        assert_eq!(entry(&doc, "E"), None);
        assert_eq!(entry(&doc, "F"), Some(Stored::Sealed("dGFibGU=")));
        Ok(())
    }

    #[test]
    fn a_passphrase_file_is_refused_without_running_scrypt() -> TestResult {
        let passphrase = age::scrypt::Recipient::new(SecretString::from("pass".to_owned()));
        // The lowest work factor keeps the test fast; the host never gets
        // to scrypt whatever the factor.
        let mut passphrase = passphrase;
        passphrase.set_work_factor(2);
        let ciphertext = age::encrypt(&passphrase, b"NAME\0value")?;
        let sealed = STANDARD.encode(ciphertext);
        let err = opened(&[Identity::generate()], "NAME", &sealed).expect_err("scrypt");
        assert_eq!(err, OpenError::Passphrase);
        Ok(())
    }

    #[test]
    fn damaged_texts_name_the_damage() -> TestResult {
        let id = Identity::generate();
        let sealed = seal(&id.to_public(), "KEY", "value")?;
        let cases = [
            ("not base64 at all!".to_owned(), "not base64"),
            (STANDARD.encode(b"hello"), "invalid age header"),
            (sealed[..sealed.len() - 8].to_owned(), "base64"),
        ];
        for (text, _) in &cases {
            let err = opened(std::slice::from_ref(&id), "KEY", text).expect_err("damaged");
            assert!(matches!(err, OpenError::Damaged(_)), "{err:?}");
        }
        Ok(())
    }

    #[test]
    fn the_next_key_of_a_rotation_opens_too() -> TestResult {
        let (old, new) = (Identity::generate(), Identity::generate());
        let sealed = seal(&new.to_public(), "KEY", "v")?;
        assert_eq!(opened(&[old.clone(), new], "KEY", &sealed)?, "v");
        assert_eq!(opened(&[old], "KEY", &sealed), Err(OpenError::WrongKey));
        Ok(())
    }

    fn env_name() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,40}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any value of any variable comes back as it went in, and its
        /// ciphertext carries no 8-character piece of it.
        #[test]
        fn sealing_round_trips(key in env_name(), value in any::<String>()) {
            let id = Identity::generate();
            let sealed = seal(&id.to_public(), &key, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(opened(std::slice::from_ref(&id), &key, &sealed), Ok(value.clone()));
            let chars: Vec<char> = value.chars().collect();
            for piece in chars.windows(8) {
                let piece: String = piece.iter().collect();
                prop_assert!(!sealed.contains(&piece));
            }
        }

        /// A ciphertext copied to another variable never opens there.
        #[test]
        fn a_ciphertext_is_bound_to_its_name(a in env_name(), b in env_name(), value in ".*") {
            prop_assume!(a != b);
            let id = Identity::generate();
            let sealed = seal(&id.to_public(), &a, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(opened(std::slice::from_ref(&id), &b, &sealed), Err(OpenError::OtherName));
        }

        /// Another key never opens it.
        #[test]
        fn another_key_cannot_open(key in env_name(), value in ".*") {
            let sealed = seal(&Identity::generate().to_public(), &key, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(opened(&[Identity::generate()], &key, &sealed), Err(OpenError::WrongKey));
        }

        /// Any change of one character of the text is refused, never read
        /// as another value.
        #[test]
        fn a_changed_character_never_opens(key in env_name(), value in ".*", at in any::<prop::sample::Index>(), by in 1u8..64) {
            let id = Identity::generate();
            let sealed = seal(&id.to_public(), &key, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut bytes = sealed.clone().into_bytes();
            let i = at.index(bytes.len());
            let pos = ALPHABET.iter().position(|&c| c == bytes[i]);
            bytes[i] = match pos {
                Some(p) => ALPHABET[(p + usize::from(by)) % 64],
                None => b'A',
            };
            let changed = String::from_utf8(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Canonical base64 only: a changed character is changed bytes
            // (or no base64 at all), which age's authentication refuses.
            prop_assert_ne!(STANDARD.decode(&changed).ok(), STANDARD.decode(&sealed).ok());
            prop_assert!(opened(std::slice::from_ref(&id), &key, &changed).is_err());
        }

        /// Written into a document and parsed back, a sealed value is read
        /// as sealed with the same text; a string, whatever it holds, is
        /// always read as plaintext.
        #[test]
        fn the_toml_form_is_unambiguous(key in env_name(), value in ".*") {
            let id = Identity::generate();
            let sealed = seal(&id.to_public(), &key, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut doc = toml_edit::DocumentMut::new();
            let mut env = toml_edit::Table::new();
            env.insert(&key, Item::Value(sealed_value(&sealed)));
            env.insert("PLAIN", Item::Value(Value::from(value.as_str())));
            doc.insert("env", Item::Table(env));
            let text = doc.to_string();
            let back: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| TestCaseError::fail(e.to_string()))?;
            if key != "PLAIN" {
                prop_assert_eq!(entry(&back, &key), Some(Stored::Sealed(sealed.as_str())));
            }
            prop_assert_eq!(entry(&back, "PLAIN"), Some(Stored::Plain(value.as_str())));
        }
    }
}
