//! Unit tests of `secrets encrypt` and `secrets rotate-key` on real files
//! (the import needs a plugin library: `tests/e2e/at_rest.rs` runs it).

use std::{collections::BTreeMap, fs, path::Path};

use age::x25519::Identity;
use secrecy::ExposeSecret as _;

use super::*;
use crate::store::secrets_key::{create_key_file, key_file_text, next_key_file, read_key_file};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const HAND_WRITTEN: &str = "# my notes about this host\n\
[env]\n\
# the main key\n\
OPENAI_API_KEY = \"sk-hand-written-0123456789abcdef\"  # keep this comment\n\
GROQ_API_KEY = 'gsk-literal-0123456789'\n\
EMPTY_ONE = \"\"\n\
\n\
[other]   # unrelated\n\
kept = [1, 2, 3]\n";

struct Setup {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn setup(config_text: &str) -> Result<Setup, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config").join("milady.toml");
    fs::create_dir_all(config.parent().ok_or("folder")?)?;
    fs::write(&config, config_text)?;
    let key = dir.path().join("data").join("milady").join("secrets.key");
    Ok(Setup {
        _dir: dir,
        config,
        key,
    })
}

/// An `[env]` entry: encrypted or not, and its value (an error string
/// when it does not open).
type Entry = (bool, Result<String, String>);

/// The `[env]` entries of `config`: plaintext ones as they are, encrypted
/// ones opened with `identities`.
fn stored(
    config: &Path,
    identities: &[Identity],
) -> Result<BTreeMap<String, Entry>, Box<dyn std::error::Error>> {
    let snapshot = ConfigStore::new(config).load()?;
    let mut out = BTreeMap::new();
    for (k, v) in snapshot.env {
        out.insert(k, (false, Ok(v)));
    }
    for (k, text) in snapshot.sealed {
        let opened = sealed::open(identities, &k, &text)
            .map(|v| v.expose_secret().to_owned())
            .map_err(|e| e.to_string());
        out.insert(k, (true, opened));
    }
    Ok(out)
}

#[test]
fn encrypt_rewrites_plaintext_and_keeps_everything_else() -> TestResult {
    let s = setup(HAND_WRITTEN)?;
    let report = encrypt(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    assert_eq!(report.encrypted, ["OPENAI_API_KEY", "GROQ_API_KEY"]);
    let text = fs::read_to_string(&s.config)?;
    assert!(text.starts_with("# my notes about this host\n[env]\n# the main key\n"));
    assert!(
        text.contains("[other]   # unrelated\nkept = [1, 2, 3]\n"),
        "{text}"
    );
    assert!(text.contains("OPENAI_API_KEY = { age = \""), "{text}");
    assert!(text.contains("}  # keep this comment\n"), "{text}");
    assert!(
        text.contains("EMPTY_ONE = \"\""),
        "empty values stay: {text}"
    );
    for secret in ["sk-hand-written-0123456789abcdef", "gsk-literal-0123456789"] {
        for piece in secret.as_bytes().windows(8) {
            let piece = std::str::from_utf8(piece)?;
            assert!(!text.contains(piece), "{piece:?} is in the file");
        }
    }
    let key = read_key_file(&s.key)?;
    let values = stored(&s.config, &[key])?;
    assert_eq!(
        values["OPENAI_API_KEY"],
        (true, Ok("sk-hand-written-0123456789abcdef".to_owned()))
    );
    assert_eq!(
        values["GROQ_API_KEY"],
        (true, Ok("gsk-literal-0123456789".to_owned()))
    );
    // A second run finds nothing left to do and writes nothing.
    let before = fs::read(&s.config)?;
    let again = encrypt(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    assert!(again.encrypted.is_empty());
    assert_eq!(again.already, 2);
    assert_eq!(fs::read(&s.config)?, before);
    Ok(())
}

#[test]
fn encrypt_respects_the_opt_out_and_writes_nothing() -> TestResult {
    let s = setup(&format!(
        "[security]\nencrypt_env = false\n\n{HAND_WRITTEN}"
    ))?;
    let before = fs::read(&s.config)?;
    let err = encrypt(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )
    .err()
    .ok_or("encrypted despite the opt-out")?;
    assert!(matches!(err, SecretsCommandError::EncryptionOff), "{err}");
    assert_eq!(fs::read(&s.config)?, before);
    assert!(!s.key.exists(), "no key created");
    Ok(())
}

#[test]
fn a_key_file_in_the_config_folder_is_refused() -> TestResult {
    let s = setup(HAND_WRITTEN)?;
    let beside = s.config.with_file_name("secrets.key");
    let err = encrypt(
        &s.config,
        SecretsKey::File(beside.clone()),
        FilePolicy::strict(),
    )
    .err()
    .ok_or("accepted")?;
    assert!(err.to_string().contains("config file's folder"), "{err}");
    assert!(!beside.exists());
    Ok(())
}

#[test]
fn rotate_key_re_encrypts_and_lists_what_it_cannot_open() -> TestResult {
    let s = setup(HAND_WRITTEN)?;
    encrypt(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    let old = read_key_file(&s.key)?;
    // A value encrypted to a stranger's key, and a plaintext one.
    let stranger = Identity::generate();
    let foreign = sealed::seal(&stranger.to_public(), "FOREIGN_KEY", "not-ours-value")?;
    let store = ConfigStore::new(&s.config);
    store.update(|doc| {
        if let Some(env) = doc.get_mut("env").and_then(Item::as_table_like_mut) {
            env.insert("FOREIGN_KEY", Item::Value(sealed::sealed_value(&foreign)));
            env.insert("PLAIN_KEY", Item::Value("typed-later".into()));
        }
    })?;
    let foreign_line = fs::read_to_string(&s.config)?
        .lines()
        .find(|l| l.starts_with("FOREIGN_KEY"))
        .map(str::to_owned)
        .ok_or("no FOREIGN_KEY line")?;

    let report = rotate_key(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    assert!(!report.resumed);
    assert_eq!(report.rotated, ["OPENAI_API_KEY", "GROQ_API_KEY"]);
    assert_eq!(report.plaintext, 1);
    assert_eq!(report.unreadable.len(), 1);
    assert_eq!(report.unreadable[0].0, "FOREIGN_KEY");

    let new = read_key_file(&s.key)?;
    assert_ne!(new.to_public(), old.to_public());
    assert_eq!(report.public_key, new.to_public().to_string());
    assert!(!next_key_file(&s.key).exists());
    let values = stored(&s.config, std::slice::from_ref(&new))?;
    assert_eq!(
        values["OPENAI_API_KEY"].1,
        Ok("sk-hand-written-0123456789abcdef".to_owned())
    );
    // The old key opens nothing any more.
    let with_old = stored(&s.config, &[old])?;
    assert!(with_old["OPENAI_API_KEY"].1.is_err());
    // The value no key opens is byte for byte what it was.
    let text = fs::read_to_string(&s.config)?;
    assert!(text.lines().any(|l| l == foreign_line), "{text}");
    assert!(text.contains("[other]   # unrelated\nkept = [1, 2, 3]\n"));
    Ok(())
}

#[test]
fn rotate_key_finishes_an_interrupted_rotation() -> TestResult {
    let s = setup(HAND_WRITTEN)?;
    encrypt(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    let old = read_key_file(&s.key)?;
    // Killed after step 2: the next key exists and one value is already
    // encrypted to it, the other still to the old key.
    let next = create_key_file(&next_key_file(&s.key))?;
    let moved = sealed::seal(&next.to_public(), "GROQ_API_KEY", "gsk-literal-0123456789")?;
    ConfigStore::new(&s.config).update(|doc| {
        if let Some(env) = doc.get_mut("env").and_then(Item::as_table_like_mut) {
            env.insert("GROQ_API_KEY", Item::Value(sealed::sealed_value(&moved)));
        }
    })?;
    // A host meanwhile reads every value with both keys.
    let ring = Keyring::new(SecretsKey::File(s.key.clone()));
    let both = ring.load()?.identities();
    assert!(stored(&s.config, &both)?.values().all(|(_, v)| v.is_ok()));

    let report = rotate_key(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    assert!(report.resumed);
    assert_eq!(report.rotated.len(), 2);
    assert_eq!(read_key_file(&s.key)?.to_public(), next.to_public());
    let values = stored(&s.config, &[next])?;
    assert!(values.values().all(|(_, v)| v.is_ok()), "{values:?}");
    assert!(stored(&s.config, &[old])?["OPENAI_API_KEY"].1.is_err());
    Ok(())
}

#[test]
fn rotate_key_refuses_while_a_host_holds_the_config() -> TestResult {
    let s = setup(HAND_WRITTEN)?;
    encrypt(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    let before = (fs::read(&s.config)?, fs::read(&s.key)?);
    let host = lock::hold_host_lock(&s.config)?;
    let err = rotate_key(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )
    .err()
    .ok_or("rotated under a running host")?;
    assert!(
        matches!(err, SecretsCommandError::HostRunning { .. }),
        "{err}"
    );
    assert_eq!((fs::read(&s.config)?, fs::read(&s.key)?), before);
    assert!(!next_key_file(&s.key).exists());
    drop(host);
    rotate_key(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )?;
    Ok(())
}

#[test]
fn rotate_key_needs_a_key_file() -> TestResult {
    let s = setup(HAND_WRITTEN)?;
    let inline = SecretsKey::choose(
        None,
        Some(key_file_text(&Identity::generate()).to_string()),
        None,
        None,
    )?;
    let err = rotate_key(&s.config, inline, FilePolicy::strict())
        .err()
        .ok_or("rotated an inline key")?;
    assert!(matches!(err, SecretsCommandError::InlineKey), "{err}");
    let missing = rotate_key(
        &s.config,
        SecretsKey::File(s.key.clone()),
        FilePolicy::strict(),
    )
    .err()
    .ok_or("rotated a missing key")?;
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    Ok(())
}
