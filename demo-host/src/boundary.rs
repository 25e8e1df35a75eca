//! The host's boundary settings (SPEC §5): how long a plugin library may
//! take to be probed, loaded and initialised, how long a plugin may take to
//! answer, how long a request body may take to arrive, how libraries are
//! probed before they are loaded, and which browser origins may call the
//! API. `docs/architecture.md` ("Plugin isolation and deadlines") explains
//! each.

use std::{path::PathBuf, time::Duration};

/// Default bound on probing, loading and initialising one library.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound on a plugin's handling of one request (then 504).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default bound on receiving a whole request body (then 408).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable listing the browser origins allowed to call
/// the API (comma-separated), as Milady names it.
pub const ALLOWED_ORIGINS_ENV: &str = "MILADY_ALLOWED_ORIGINS";

/// Deadlines, child-process probing and browser origins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundaryOptions {
    /// Bound on the child-process probe of a library, on loading it
    /// in-process and on its `init`: past it, the library is skipped.
    pub plugin_timeout: Duration,
    /// Bound on a plugin's handling of one request: past it, 504.
    pub request_timeout: Duration,
    /// Bound on receiving a whole request body: past it, 408.
    pub body_timeout: Duration,
    /// The program that probes each library in a child process before the
    /// host loads it (`<program> plugin probe`: the `demo-host` executable).
    /// `None`: no child-process probe, for hosts assembled in-process by
    /// tests and tools, which have no such program at hand.
    pub probe_program: Option<PathBuf>,
    /// The folder of the probe-result cache (created 0700); `None`: every
    /// start probes every library.
    pub probe_cache: Option<PathBuf>,
    /// Browser origins allowed to call the API, e.g.
    /// `http://localhost:5173` (see [`ALLOWED_ORIGINS_ENV`]).
    pub allowed_origins: Vec<String>,
}

impl Default for BoundaryOptions {
    fn default() -> Self {
        Self {
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            probe_program: None,
            probe_cache: None,
            allowed_origins: Vec::new(),
        }
    }
}

/// The default folder of the probe cache: `$XDG_CACHE_HOME/milady`, else
/// `$HOME/.cache/milady`; `None` when neither variable is set (or the
/// first is not an absolute path and `HOME` is unset).
pub fn default_cache_dir(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    // The XDG rule: a relative XDG_CACHE_HOME is invalid and ignored.
    let xdg = xdg_cache_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = match xdg {
        Some(dir) => dir,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("milady"))
}

/// Splits the comma-separated value of [`ALLOWED_ORIGINS_ENV`] into its
/// entries (blank entries dropped); the host checks each at start-up.
pub fn split_origins(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_folder_follows_xdg_then_home() {
        let dir = default_cache_dir(Some("/x/cache".into()), Some("/home/u".into()));
        assert_eq!(dir, Some(PathBuf::from("/x/cache/milady")));
        let dir = default_cache_dir(Some("relative".into()), Some("/home/u".into()));
        assert_eq!(dir, Some(PathBuf::from("/home/u/.cache/milady")));
        assert_eq!(default_cache_dir(None, None), None);
        assert_eq!(default_cache_dir(None, Some("".into())), None);
    }

    #[test]
    fn origins_are_split_on_commas() {
        assert_eq!(
            split_origins(" http://a:1 ,, https://b ,"),
            ["http://a:1", "https://b"]
        );
        assert!(split_origins("").is_empty());
    }
}
