//! Where the host keeps its state: today the TOML config file on disk.
//!
//! - `config_file`: the config-file store (`ConfigStore`: load, apply
//!   `[env]` changes, set a plugin's enabled switch, the general
//!   read-modify-write, the starter file), what it reads (`ConfigSnapshot`)
//!   and how it fails (`ConfigError`);
//! - `toml_doc`: the `toml_edit` helpers it edits with (keep decor, basic
//!   strings, child tables, error positions);
//! - `atomic`: the host's one atomic file replace (temp file in the
//!   destination folder, fsync, mode, rename, fsync of the folder) and the
//!   cleanup of temp files interrupted writes left, shared with the plugin
//!   installer;
//! - `fault_injection` (debug builds only): the `DEMO_HOST_FAULT_FILE` seam
//!   the disk-fault tests use.
//!
//! Only `config_file` knows the file's schema. A second backend (a secrets
//! store such as an OpenBao/Vault KV engine) belongs beside it as a module
//! of its own.

pub(crate) mod atomic;
pub(crate) mod config_file;
#[cfg(debug_assertions)]
mod fault_injection;
mod toml_doc;
