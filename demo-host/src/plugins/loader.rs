//! Finding and loading plugin libraries: the only module that touches
//! dynamic loading.
//!
//! Loading goes through `abi_stable`, which checks the root module's full
//! type layout (and `host-api`'s version) before handing it out. Two traps
//! shape this module:
//!
//! - A truncated shared object can kill the whole process with `SIGBUS`
//!   inside `dlopen` (the loader maps segments that lie past the end of the
//!   file). Every file is therefore parsed first, and refused unless every
//!   loadable segment lies inside it.
//! - `RootModule::load_from*` caches its first result process-wide, so each
//!   file is opened as a `RawLibrary` and checked with
//!   `lib_header_from_raw_library(..)?.init_root_module()`.
//!
//! Every library opened stays open, also when a check then refuses it:
//! its constructors have run, and unloading it would run its destructors
//! (which may do anything) and leave `abi_stable`'s `'static` references
//! dangling. (`lib_header_from_path` drops the handle when the root-module
//! symbol or the header check fails; this module never does.) A library
//! exported without layout information (`unsafe_no_layout_constant`) is
//! refused: no layout, no load. The host loads a private copy of each file
//! (`plugins::private_copy`), after a child process has probed it
//! (`plugins::probe`); replacing a file takes effect at the next start.

// The one module of the host allowed `unsafe` (the workspace denies it):
// opening libraries and reading their root modules is where the host trusts
// a file. Every block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use abi_stable::library::{LibHeader, LibraryError, RawLibrary, lib_header_from_raw_library};
use abi_stable::std_types::{RResult, RString};
use host_api::{
    ChangeAck, EnvChangeNotice, FfiFuture, FfiRequest, FfiResponse, FfiSharedResponse,
    HostContextBox, HostError, LiveServicesBox, ManifestExt, ParsedRequest, ParsedResponse,
    PluginManifest, PluginModRef, PluginServicesBox,
    legacy::{v0_1_0, v0_1_1, v0_1_2},
};
use object::{Object, ObjectKind, ObjectSegment, read::ReadCache};

/// The file-name extension of a shared library on this platform.
pub(crate) const LIBRARY_EXTENSION: &str = std::env::consts::DLL_EXTENSION;

/// Why a file was not loaded as a plugin. Messages name no secret, only
/// files, plugins and versions.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// Not a shared library this platform can load.
    #[error("not a loadable shared library ({0})")]
    NotALibrary(String),
    /// A loadable segment lies past the end of the file.
    #[error("truncated library: a segment needs {needed} bytes but the file has {actual}")]
    Truncated {
        /// Bytes the segments need.
        needed: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The library loaded but exports no plugin root module.
    #[error("not a demo-host plugin: {0}")]
    NotAPlugin(String),
    /// Built against an incompatible `host-api`.
    #[error(
        "incompatible plugin interface: the plugin was built against host-api {plugin_version}, this host has host-api {host_version}{detail}"
    )]
    Incompatible {
        /// The `host-api` version the plugin declares.
        plugin_version: String,
        /// This host's `host-api` version.
        host_version: String,
        /// A one-line hint of what differs.
        detail: String,
    },
    /// The plugin's own entry point failed.
    #[error("plugin `{plugin}` failed in `{entry}`: {error}")]
    Entry {
        /// The plugin id, or the file name before the manifest is known.
        plugin: String,
        /// The entry point.
        entry: &'static str,
        /// What it returned (the plugin's error message and code).
        error: String,
    },
    /// The manifest or OpenAPI document is unusable.
    #[error("plugin `{plugin}` is invalid: {reason}")]
    Invalid {
        /// The plugin id.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// The library carries no layout information (exported with
    /// `unsafe_no_layout_constant`), so its interface cannot be checked.
    #[error(
        "the library (host-api {plugin_version}) was exported without layout information (`unsafe_no_layout_constant`): its interface cannot be checked, so it is not loaded"
    )]
    NoLayout {
        /// The `host-api` version the library declares.
        plugin_version: String,
    },
    /// An entry point (or opening the library) ran past the plugin timeout.
    #[error("plugin `{plugin}`: `{entry}` did not finish within {seconds} s (--plugin-timeout)")]
    TimedOut {
        /// The plugin id, or the file name before the manifest is known.
        plugin: String,
        /// What ran too long, e.g. `init`.
        entry: &'static str,
        /// The timeout, in seconds.
        seconds: f64,
    },
}

/// A plugin's root module, of the current interface or of an older,
/// compatible one (see `host_api::legacy`).
#[derive(Clone, Copy)]
pub enum PluginModule {
    /// Built against this host's `host-api`.
    Current(PluginModRef),
    /// Built against `host-api` 0.1.2 (no live-change services).
    V0_1_2(v0_1_2::PluginModRef),
    /// Built against `host-api` 0.1.1 (no parsed requests, scoped
    /// services, manifest extension or change notices).
    V0_1_1(v0_1_1::PluginModRef),
    /// Built against `host-api` 0.1.0 (no `shutdown`).
    V0_1_0(v0_1_0::PluginModRef),
}

impl PluginModule {
    /// The `manifest` entry point.
    pub fn manifest(&self) -> extern "C" fn() -> RResult<PluginManifest, HostError> {
        match self {
            Self::Current(m) => m.manifest(),
            Self::V0_1_2(m) => m.manifest(),
            Self::V0_1_1(m) => m.manifest(),
            Self::V0_1_0(m) => m.manifest(),
        }
    }

    /// The `openapi_json` entry point.
    pub fn openapi_json(&self) -> extern "C" fn() -> RResult<RString, HostError> {
        match self {
            Self::Current(m) => m.openapi_json(),
            Self::V0_1_2(m) => m.openapi_json(),
            Self::V0_1_1(m) => m.openapi_json(),
            Self::V0_1_0(m) => m.openapi_json(),
        }
    }

    /// The `init` entry point.
    pub fn init(&self) -> extern "C" fn(HostContextBox) -> RResult<(), HostError> {
        match self {
            Self::Current(m) => m.init(),
            Self::V0_1_2(m) => m.init(),
            Self::V0_1_1(m) => m.init(),
            Self::V0_1_0(m) => m.init(),
        }
    }

    /// The `handle` entry point.
    pub fn handle(&self) -> extern "C" fn(FfiRequest) -> FfiFuture<FfiResponse> {
        match self {
            Self::Current(m) => m.handle(),
            Self::V0_1_2(m) => m.handle(),
            Self::V0_1_1(m) => m.handle(),
            Self::V0_1_0(m) => m.handle(),
        }
    }

    /// The `handle_shared` entry point, when the plugin has one (since 0.1.1).
    pub fn handle_shared(
        &self,
    ) -> Option<extern "C" fn(FfiRequest) -> FfiFuture<FfiSharedResponse>> {
        match self {
            Self::Current(m) => m.handle_shared(),
            Self::V0_1_2(m) => m.handle_shared(),
            Self::V0_1_1(m) => m.handle_shared(),
            Self::V0_1_0(_) => None,
        }
    }

    /// The `shutdown` entry point, when the plugin has one (since 0.1.1).
    pub fn shutdown(&self) -> Option<extern "C" fn()> {
        match self {
            Self::Current(m) => m.shutdown(),
            Self::V0_1_2(m) => m.shutdown(),
            Self::V0_1_1(m) => m.shutdown(),
            Self::V0_1_0(_) => None,
        }
    }

    /// The `manifest_ext` entry point, when the plugin has one (since 0.1.2).
    pub fn manifest_ext(&self) -> Option<extern "C" fn() -> RResult<ManifestExt, HostError>> {
        match self {
            Self::Current(m) => m.manifest_ext(),
            Self::V0_1_2(m) => m.manifest_ext(),
            Self::V0_1_1(_) | Self::V0_1_0(_) => None,
        }
    }

    /// The `init_services` entry point, when the plugin has one (since 0.1.2).
    pub fn init_services(
        &self,
    ) -> Option<extern "C" fn(PluginServicesBox) -> RResult<(), HostError>> {
        match self {
            Self::Current(m) => m.init_services(),
            Self::V0_1_2(m) => m.init_services(),
            Self::V0_1_1(_) | Self::V0_1_0(_) => None,
        }
    }

    /// The `handle_parsed` entry point, when the plugin has one (since 0.1.2).
    pub fn handle_parsed(
        &self,
    ) -> Option<extern "C" fn(ParsedRequest) -> FfiFuture<ParsedResponse>> {
        match self {
            Self::Current(m) => m.handle_parsed(),
            Self::V0_1_2(m) => m.handle_parsed(),
            Self::V0_1_1(_) | Self::V0_1_0(_) => None,
        }
    }

    /// The `init_live` entry point, when the plugin has one (since 0.1.3).
    pub fn init_live(&self) -> Option<extern "C" fn(LiveServicesBox) -> RResult<(), HostError>> {
        match self {
            Self::Current(m) => m.init_live(),
            Self::V0_1_2(_) | Self::V0_1_1(_) | Self::V0_1_0(_) => None,
        }
    }

    /// The `on_env_change` entry point, when the plugin has one (since 0.1.2).
    pub fn on_env_change(&self) -> Option<extern "C" fn(EnvChangeNotice) -> FfiFuture<ChangeAck>> {
        match self {
            Self::Current(m) => m.on_env_change(),
            Self::V0_1_2(m) => m.on_env_change(),
            Self::V0_1_1(_) | Self::V0_1_0(_) => None,
        }
    }
}

/// A plugin library that passed every check, not yet initialised.
pub struct LoadedPlugin {
    /// The file it came from.
    pub path: PathBuf,
    /// Its root module.
    pub module: PluginModule,
    /// Its manifest.
    pub manifest: PluginManifest,
    /// Its OpenAPI document.
    pub openapi: serde_json::Value,
    /// The `host-api` version it was built against.
    pub interface_version: String,
    /// What it declares beyond its manifest; `None` for a plugin built
    /// before host-api 0.1.2, which cannot declare anything more.
    pub manifest_ext: Option<ManifestExt>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("id", &self.manifest.id)
            .field("interface_version", &self.interface_version)
            .finish_non_exhaustive()
    }
}

/// Every file in `dir` with this platform's library extension, sorted by name.
/// A missing folder holds no plugins.
pub(crate) fn library_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == LIBRARY_EXTENSION) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks, without loading it, that `path` is a shared library whose
/// loadable segments all lie inside the file.
pub(crate) fn inspect_file(path: &Path) -> Result<(), LoadError> {
    let file = File::open(path)?;
    let actual = file.metadata()?.len();
    let cache = ReadCache::new(file);
    let object = object::File::parse(&cache).map_err(|e| LoadError::NotALibrary(e.to_string()))?;
    if object.kind() != ObjectKind::Dynamic {
        return Err(LoadError::NotALibrary(format!(
            "{:?} object, not a shared library",
            object.kind()
        )));
    }
    for segment in object.segments() {
        let (offset, size) = segment.file_range();
        let needed = offset.saturating_add(size);
        if needed > actual {
            return Err(LoadError::Truncated { needed, actual });
        }
    }
    Ok(())
}

/// Loads and checks one plugin library: file inspection, `abi_stable`'s
/// layout check, then the manifest and OpenAPI document. The library stays
/// open whatever the outcome.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, LoadError> {
    load_plugin_from(path, path)
}

/// [`load_plugin`] for the library at `load_path` (a private copy), known
/// in reports and logs as `origin` (the file of the plugin folder).
pub(crate) fn load_plugin_from(load_path: &Path, origin: &Path) -> Result<LoadedPlugin, LoadError> {
    inspect_file(load_path)?;
    let header = open_library(load_path)?;
    let plugin_version = header.version_strings().version.to_string();
    // Without its layout, `init_root_module` would trust the cast blindly.
    if header.layout().is_none() {
        return Err(LoadError::NoLayout { plugin_version });
    }
    let module = match header.init_root_module::<PluginModRef>() {
        Ok(module) => PluginModule::Current(module),
        // An older plugin has fewer root-module fields than this host
        // expects, which abi_stable refuses; try the frozen older layouts.
        Err(LibraryError::AbiInstability(_)) if plugin_version.starts_with("0.1.2") => header
            .init_root_module::<v0_1_2::PluginModRef>()
            .map(PluginModule::V0_1_2)
            .map_err(|e| classify(e, Some(&plugin_version)))?,
        Err(LibraryError::AbiInstability(_)) if plugin_version.starts_with("0.1.1") => header
            .init_root_module::<v0_1_1::PluginModRef>()
            .map(PluginModule::V0_1_1)
            .map_err(|e| classify(e, Some(&plugin_version)))?,
        Err(LibraryError::AbiInstability(_)) if plugin_version.starts_with("0.1.0") => header
            .init_root_module::<v0_1_0::PluginModRef>()
            .map(PluginModule::V0_1_0)
            .map_err(|e| classify(e, Some(&plugin_version)))?,
        Err(e) => return Err(classify(e, Some(&plugin_version))),
    };
    let file_label = origin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = module.manifest()()
        .into_result()
        .map_err(|error: HostError| LoadError::Entry {
            plugin: file_label,
            entry: "manifest",
            error: error.to_string(),
        })?;
    let id = manifest.id.to_string();
    validate_manifest(&manifest)?;
    let openapi_text = module.openapi_json()()
        .into_result()
        .map_err(|error: HostError| LoadError::Entry {
            plugin: id.clone(),
            entry: "openapi_json",
            error: error.to_string(),
        })?;
    let openapi: serde_json::Value =
        serde_json::from_str(&openapi_text).map_err(|e| LoadError::Invalid {
            plugin: id.clone(),
            reason: format!("its OpenAPI document is not JSON ({e})"),
        })?;
    if !openapi.is_object() {
        return Err(LoadError::Invalid {
            plugin: id,
            reason: "its OpenAPI document is not a JSON object".into(),
        });
    }
    let manifest_ext = match module.manifest_ext() {
        Some(entry) => {
            Some(
                entry()
                    .into_result()
                    .map_err(|error: HostError| LoadError::Entry {
                        plugin: id.clone(),
                        entry: "manifest_ext",
                        error: error.to_string(),
                    })?,
            )
        }
        None => None,
    };
    Ok(LoadedPlugin {
        path: origin.to_owned(),
        module,
        manifest,
        openapi,
        interface_version: plugin_version,
        manifest_ext,
    })
}

/// Opens the library at `path` and reads its `abi_stable` header. The
/// library is never closed, also when this fails after opening it.
fn open_library(path: &Path) -> Result<&'static LibHeader, LoadError> {
    let raw = RawLibrary::load_at(path).map_err(|e| classify(e, None))?;
    // Never unloaded (see the module notes): the handle is leaked, and with
    // it the library's mapping, for the life of the process.
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));
    // SAFETY: the header's `'static` references point into the library,
    // which is leaked above and so is never unloaded; the symbol's type is
    // the one `abi_stable` exports under that name (its header is checked
    // for compatibility before it is upgraded to a `LibHeader`).
    unsafe { lib_header_from_raw_library(raw) }.map_err(|e| classify(e, None))
}

/// Ends this process at once with `code`, without running `atexit`
/// handlers or the destructors of the libraries it opened. The probe child
/// ends this way: it has opened a library it does not trust yet, whose
/// destructor may crash and would then hide the report already printed.
/// Standard output and error are flushed first.
pub(crate) fn exit_now(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process without returning; nothing of this
    // process runs afterwards, so no Rust state can be observed half-done,
    // and the output that matters was flushed above.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

fn validate_manifest(m: &PluginManifest) -> Result<(), LoadError> {
    let invalid = |reason: String| LoadError::Invalid {
        plugin: m.id.to_string(),
        reason,
    };
    if m.id.trim().is_empty() {
        return Err(invalid("its manifest has an empty id".into()));
    }
    if m.routes.is_empty() {
        return Err(invalid("its manifest declares no route".into()));
    }
    for route in &m.routes {
        let ok = route.starts_with('/')
            && route.len() > 1
            && !route.ends_with('/')
            && !route.contains("//")
            && route
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
        if !ok {
            return Err(invalid(format!(
                "route prefix `{route}` is not a plain absolute path"
            )));
        }
    }
    Ok(())
}

/// Turns `abi_stable`'s (very long) errors into one line.
fn classify(error: LibraryError, plugin_version: Option<&str>) -> LoadError {
    let host_version = host_api::INTERFACE_VERSION.to_owned();
    match error {
        LibraryError::OpenError { err, .. } => LoadError::NotALibrary(err.to_string()),
        LibraryError::GetSymbolError { .. } => {
            LoadError::NotAPlugin("the library exports no abi_stable root module".into())
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => LoadError::Incompatible {
            plugin_version: actual_version.to_string(),
            host_version,
            detail: String::new(),
        },
        // abi_stable's report is a multi-page layout dump: keep one line.
        LibraryError::AbiInstability(_) => LoadError::Incompatible {
            plugin_version: plugin_version.unwrap_or("unknown").to_owned(),
            host_version,
            detail: " (the root module's layout differs)".to_owned(),
        },
        LibraryError::InvalidAbiHeader(h) => LoadError::Incompatible {
            plugin_version: format!("with abi_stable header {h:?}"),
            host_version,
            detail: String::new(),
        },
        LibraryError::RootModule { err, .. } => LoadError::Entry {
            plugin: "unknown".into(),
            entry: "root module",
            error: err.to_string(),
        },
        other => LoadError::NotAPlugin(
            other
                .to_string()
                .lines()
                .next()
                .unwrap_or("unknown error")
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::{library::LibraryError, sabi_types::VersionNumber, std_types::RBoxError};
    use host_api::{ParamSpec, PluginManifest};

    use super::{LoadError, classify, inspect_file, library_files, validate_manifest};

    fn version(major: u32, minor: u32, patch: u32) -> VersionNumber {
        VersionNumber {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn a_version_mismatch_names_both_versions() {
        let err = classify(
            LibraryError::IncompatibleVersionNumber {
                library_name: "host_api",
                expected_version: version(0, 1, 1),
                actual_version: version(0, 2, 0),
            },
            None,
        );
        assert!(matches!(err, LoadError::Incompatible { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("host-api 0.2.0"), "{text}");
        assert!(
            text.contains(&format!("host-api {}", host_api::INTERFACE_VERSION)),
            "{text}"
        );
    }

    #[test]
    fn a_layout_mismatch_is_one_line_with_the_plugin_version() {
        let dump = "a\nmulti-line\nlayout report\n".repeat(50);
        let err = classify(
            LibraryError::AbiInstability(RBoxError::from_fmt(&dump)),
            Some("0.1.7"),
        );
        let text = err.to_string();
        assert!(matches!(err, LoadError::Incompatible { .. }), "{err:?}");
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.contains("0.1.7") && text.contains("layout differs"),
            "{text}"
        );
    }

    #[test]
    fn other_errors_keep_only_their_first_line() {
        let err = classify(
            LibraryError::Many(
                vec![LibraryError::AbiInstability(RBoxError::from_fmt(&"x"))].into(),
            ),
            None,
        );
        assert!(matches!(err, LoadError::NotAPlugin(_)), "{err:?}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn files_that_are_not_libraries_are_refused_before_loading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.so");
        std::fs::write(&junk, b"not an ELF file").expect("write");
        assert!(matches!(
            inspect_file(&junk),
            Err(LoadError::NotALibrary(_))
        ));
        let missing = dir.path().join("missing.so");
        assert!(matches!(inspect_file(&missing), Err(LoadError::Io(_))));
    }

    #[test]
    fn library_files_lists_only_libraries_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ext = super::LIBRARY_EXTENSION;
        for name in [format!("b.{ext}"), format!("a.{ext}"), "notes.txt".into()] {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        std::fs::create_dir(dir.path().join(format!("dir.{ext}"))).expect("mkdir");
        let names: Vec<String> = library_files(dir.path())
            .expect("listed")
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(names, [format!("a.{ext}"), format!("b.{ext}")]);
        assert!(
            library_files(&dir.path().join("absent"))
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn manifests_need_an_id_and_plain_route_prefixes() {
        let ok = PluginManifest::new("@a/b", "B", "1.0.0")
            .with_route("/api/b")
            .with_param(ParamSpec::secret("B_KEY", "key", false));
        assert!(validate_manifest(&ok).is_ok());
        let no_id = PluginManifest::new(" ", "B", "1.0.0").with_route("/api/b");
        assert!(matches!(
            validate_manifest(&no_id),
            Err(LoadError::Invalid { .. })
        ));
        let no_route = PluginManifest::new("@a/b", "B", "1.0.0");
        assert!(validate_manifest(&no_route).is_err());
        for bad in ["api/b", "/", "/api/b/", "/api//b", "/api/b?x", "/api/{id}"] {
            let m = PluginManifest::new("@a/b", "B", "1.0.0").with_route(bad);
            let err = validate_manifest(&m).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
