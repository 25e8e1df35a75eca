//! Where the host keeps its state on disk: the TOML config file.

pub(crate) mod config_file;
