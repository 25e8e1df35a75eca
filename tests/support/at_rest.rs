//! Secrets at rest, as the tests see them: a temporary home for each host
//! (so no run touches the machine's own secrets key), and a reader of the
//! config file's `[env]` that opens encrypted values with the key file.
//!
//! The reader is written from the documented format, not with the host's
//! code: an entry `KEY = "…"` is plaintext; `KEY = { age = "<base64>" }` is
//! a binary age file (X25519) whose payload is `KEY || 0x00 || value`.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr as _,
};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;

/// A temporary `HOME` (with `XDG_DATA_HOME` inside it) for hosts and
/// commands; removed when dropped.
pub struct TempHome {
    dir: tempfile::TempDir,
}

impl TempHome {
    /// A fresh, empty home.
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    /// The home folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `XDG_DATA_HOME` of processes run in this home.
    pub fn data_home(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Where the host's default secrets key lives in this home.
    pub fn key_file(&self) -> PathBuf {
        self.data_home().join("milady").join("secrets.key")
    }

    /// Points `cmd` at this home: `HOME`, and `XDG_DATA_HOME` inside it,
    /// and no secrets key from the caller's environment.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("HOME", self.path())
            .env("XDG_DATA_HOME", self.data_home())
            .env_remove("MILADY_SECRETS_KEY")
            .env_remove("MILADY_SECRETS_KEY_FILE")
    }
}

/// One `[env]` entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A plaintext string.
    Plain(String),
    /// An encrypted value, opened.
    Encrypted(String),
    /// An encrypted value that the key cannot open, and why.
    Unreadable(String),
}

impl Stored {
    /// The value, whether stored plaintext or encrypted.
    pub fn value(&self) -> Option<&str> {
        match self {
            Self::Plain(v) | Self::Encrypted(v) => Some(v),
            Self::Unreadable(_) => None,
        }
    }
}

/// Every identity in the key file at `key` and, during a rotation, in
/// `key.next`.
pub fn identities(key: &Path) -> Result<Vec<age::x25519::Identity>> {
    let mut out = Vec::new();
    let next = PathBuf::from(format!("{}.next", key.display()));
    for path in [key.to_owned(), next] {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with("AGE-SECRET-KEY-1") {
                out.push(
                    age::x25519::Identity::from_str(line)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                );
            }
        }
    }
    Ok(out)
}

/// Opens the `age` field `text` of `key` with `identities`.
pub fn open(identities: &[age::x25519::Identity], key: &str, text: &str) -> Result<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("not base64")?;
    let decryptor = age::Decryptor::new_buffered(&bytes[..]).context("not an age file")?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .context("no key opens it")?;
    let mut payload = Vec::new();
    reader.read_to_end(&mut payload).context("damaged")?;
    let Some(value) = payload
        .strip_prefix(key.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\0"))
    else {
        bail!("encrypted for another key name");
    };
    Ok(String::from_utf8(value.to_vec())?)
}

/// The `[env]` table of the config file `config`, each encrypted value
/// opened with the key file `key` (and its `.next` file, if any).
pub fn stored_env(config: &Path, key: &Path) -> Result<BTreeMap<String, Stored>> {
    let text = std::fs::read_to_string(config).context("reading the config file")?;
    let doc: toml_edit::DocumentMut = text.parse().context("the config file is not TOML")?;
    let identities = identities(key)?;
    let mut out = BTreeMap::new();
    let Some(env) = doc.get("env").and_then(|e| e.as_table_like()) else {
        return Ok(out);
    };
    for (name, item) in env.iter() {
        let stored = if let Some(v) = item.as_str() {
            Stored::Plain(v.to_owned())
        } else if let Some(text) = item
            .as_table_like()
            .filter(|t| t.len() == 1)
            .and_then(|t| t.get("age"))
            .and_then(|a| a.as_str())
        {
            match open(&identities, name, text) {
                Ok(v) => Stored::Encrypted(v),
                Err(e) => Stored::Unreadable(format!("{e:#}")),
            }
        } else {
            bail!("[env] {name} is neither a string nor {{ age = \"...\" }}");
        };
        out.insert(name.to_owned(), stored);
    }
    Ok(out)
}

/// Every 8-character piece of `secret` (by characters).
pub fn pieces(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(8).map(|w| w.iter().collect()).collect()
}

/// Files under `dir` (recursively) holding any 8-character piece of
/// `secret`, with the piece found: what must stay empty.
pub fn files_holding_pieces(dir: &Path, secret: &str) -> Result<Vec<(PathBuf, String)>> {
    let pieces = pieces(secret);
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path())?;
                let text = String::from_utf8_lossy(&bytes);
                if let Some(piece) = pieces.iter().find(|p| text.contains(p.as_str())) {
                    found.push((entry.path(), piece.clone()));
                }
            }
        }
    }
    Ok(found)
}
