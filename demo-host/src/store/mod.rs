//! Where the host keeps its state: today the TOML config file on disk.
//!
//! - `config_file`: the config-file store (`ConfigStore`: load, apply
//!   `[env]` changes, set a plugin's enabled switch, the general
//!   read-modify-write, the starter file), what it reads (`ConfigSnapshot`)
//!   and how it fails (`ConfigError`);
//! - `toml_doc`: the `toml_edit` helpers it edits with (keep decor, basic
//!   strings, child tables, error positions);
//! - `file_safety`: StrictModes for the config file, its folder, the plugin
//!   folder and its libraries (owner, mode, links, file type) and bounded
//!   reads that never block on a FIFO;
//! - `atomic`: the host's one atomic file replace (temp file in the
//!   destination folder, fsync, mode, rename, fsync of the folder) and the
//!   cleanup of temp files interrupted writes left, shared with the plugin
//!   installer;
//! - `sealed`: the at-rest form of an `[env]` value (a string is
//!   plaintext, `{ age = "…" }` is encrypted with the key's name bound in);
//! - `secrets_key`: the secrets key kept apart from the config (where it
//!   lives, created on first use, read, checked);
//! - `lock`: the advisory locks beside the config, shared by the host and
//!   every command that writes it;
//! - `audit`: the audit log (`audit.jsonl` beside the config file), written
//!   by the host's write path and appended to and queried by plugins
//!   through their services, with size-based rotation (`audit::rotation`);
//! - `fingerprint_key`: the HMAC key of fingerprints, kept with the secrets
//!   key, exported and imported on purpose;
//! - `fault_injection` (debug builds only): the `DEMO_HOST_FAULT_FILE` seam
//!   the disk-fault tests use.
//!
//! - `backend`: the store seam: `[store] backend = "file"` (the default,
//!   `config_file`'s `[env]`) or `"openbao"` (SPEC §9);
//! - `kv`: the OpenBao / Vault KV v2 client (one secret holds every key,
//!   writes with `cas`, fail-over between a cluster's addresses).
//!
//! Only `config_file` knows the file's schema; only `kv` speaks to the
//! secret store. The runtime environment's side of the KV store (group
//! commit into one `cas` write, following other hosts' writes) is
//! `env::runtime::fleet`.

pub(crate) mod atomic;
pub(crate) mod audit;
pub(crate) mod backend;
pub(crate) mod config_file;
#[cfg(debug_assertions)]
mod fault_injection;
pub(crate) mod file_safety;
pub(crate) mod fingerprint_key;
pub(crate) mod kv;
pub(crate) mod lock;
pub(crate) mod sealed;
pub(crate) mod secrets_key;
pub(crate) mod toml_doc;
