//! Support for the end-to-end tests: builds the real `demo-host` binary and
//! plugin libraries once, starts the host as a child process on a free
//! loopback port with a temporary config and plugin folder, and captures its
//! log.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

mod at_rest;
pub mod openbao;

pub use at_rest::{Stored, TempHome, files_holding_pieces, identities, open, pieces, stored_env};

/// Paths of the built artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The `demo-host` executable.
    pub host: PathBuf,
    /// The secrets plugin library.
    pub secrets: PathBuf,
    /// The fixture plugin that panics on purpose.
    pub panicking: PathBuf,
    /// The fixture plugin built against an incompatible interface.
    pub incompatible: PathBuf,
    /// The example plugin of `docs/writing-a-plugin.md`.
    pub hello: PathBuf,
    /// A plugin built against the frozen host-api 0.1.0 (before `shutdown`).
    pub old_interface: PathBuf,
    /// A plugin built against the frozen host-api 0.1.1 (`handle_shared`,
    /// before parsed requests and scoped services).
    pub old_interface_0_1_1: PathBuf,
    /// The fixture plugin that uses the scoped services of host-api 0.1.2.
    pub scoped: PathBuf,
    /// A working plugin exported without layout information.
    pub no_layout: PathBuf,
    /// The fixture plugin that misbehaves at the boundary (bad headers,
    /// hangs, blocking, host services from `init` and its own thread).
    pub boundary: PathBuf,
    /// The minimal plugin the benchmark makes numbered copies of.
    pub numbered: PathBuf,
    /// A plugin that declares a key live and never acknowledges a change.
    pub silent: PathBuf,
    /// A plugin built against the frozen host-api 0.1.2 (before
    /// `init_live`), which applies its key live.
    pub old_interface_0_1_2: PathBuf,
}

fn lib_name(crate_name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// Builds (once per test binary) the host and the plugin libraries with the
/// same profile and target folder as the running tests.
pub fn artifacts() -> Result<&'static Artifacts> {
    static BUILT: OnceLock<std::result::Result<Artifacts, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("building the artifacts failed: {e}"))
}

fn build() -> Result<Artifacts> {
    // A test executable lives in <target>/<profile>/deps/, a tool run with
    // `cargo run` in <target>/<profile>/.
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe
        .parent()
        .context("unexpected test executable location")?
        .to_owned();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let target_dir = profile_dir.parent().context("no target folder")?.to_owned();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => bail!("unexpected profile folder"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--profile",
            &profile,
            "-p",
            "demo-host",
            "-p",
            "secrets-plugin",
            "-p",
            "panicking-plugin",
            "-p",
            "incompatible-plugin",
            "-p",
            "hello-plugin",
            "-p",
            "no-layout-plugin",
            "-p",
            "boundary-plugin",
            "-p",
            "numbered-plugin",
            "-p",
            "scoped-plugin",
            "-p",
            "silent-plugin",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    // Each older-interface plugin is its own workspace (Cargo cannot hold two
    // semver-compatible `host-api` packages in one lock file): build each
    // with its own lock file, into a folder of their own beside the others.
    let old_target = target_dir.join("old-interface");
    for fixture in ["old-plugin", "old-plugin-0.1.1", "old-plugin-0.1.2"] {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--locked",
                "--profile",
                &profile,
                "--manifest-path",
            ])
            .arg(
                workspace_root().join(format!("tests/fixtures/old-interface/{fixture}/Cargo.toml")),
            )
            .arg("--target-dir")
            .arg(&old_target)
            .status()
            .with_context(|| format!("running cargo build for the {fixture} fixture"))?;
        if !status.success() {
            bail!("cargo build of the {fixture} fixture failed: {status}");
        }
    }
    let old_profile_dir = old_target.join(profile_dir.file_name().context("no profile folder")?);
    let artifacts = Artifacts {
        host: profile_dir.join(format!("demo-host{}", std::env::consts::EXE_SUFFIX)),
        secrets: profile_dir.join(lib_name("secrets-plugin")),
        panicking: profile_dir.join(lib_name("panicking-plugin")),
        incompatible: profile_dir.join(lib_name("incompatible-plugin")),
        hello: profile_dir.join(lib_name("hello-plugin")),
        old_interface: old_profile_dir.join(lib_name("old-plugin")),
        old_interface_0_1_1: old_profile_dir.join(lib_name("old-plugin-0-1-1")),
        scoped: profile_dir.join(lib_name("scoped-plugin")),
        no_layout: profile_dir.join(lib_name("no-layout-plugin")),
        boundary: profile_dir.join(lib_name("boundary-plugin")),
        numbered: profile_dir.join(lib_name("numbered-plugin")),
        silent: profile_dir.join(lib_name("silent-plugin")),
        old_interface_0_1_2: old_profile_dir.join(lib_name("old-plugin-0-1-2")),
    };
    for path in [
        &artifacts.host,
        &artifacts.secrets,
        &artifacts.panicking,
        &artifacts.incompatible,
        &artifacts.hello,
        &artifacts.old_interface,
        &artifacts.old_interface_0_1_1,
        &artifacts.scoped,
        &artifacts.no_layout,
        &artifacts.boundary,
        &artifacts.numbered,
        &artifacts.silent,
        &artifacts.old_interface_0_1_2,
    ] {
        if !path.exists() {
            bail!("expected artifact {} is missing", path.display());
        }
    }
    Ok(artifacts)
}

/// The C fixture libraries of `tests/fixtures/c/`, built with the system C
/// compiler (`$CC`, else `cc`).
#[derive(Debug, Clone)]
pub struct CLibraries {
    /// A constructor that calls `abort()`.
    pub ctor_abort: PathBuf,
    /// A constructor that dereferences NULL.
    pub ctor_segfault: PathBuf,
    /// A constructor that calls `exit(3)`.
    pub ctor_exit: PathBuf,
    /// A constructor that never returns.
    pub ctor_hang: PathBuf,
    /// No plugin root module, and a destructor that calls `abort()`.
    pub dtor_abort_no_root: PathBuf,
}

/// Builds (once per test binary) the C fixture libraries into
/// `<target>/<profile>/c-fixtures/`, beside the other artifacts.
pub fn c_libraries() -> Result<&'static CLibraries> {
    static BUILT: OnceLock<std::result::Result<CLibraries, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_c_libraries().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("building the C fixtures failed: {e}"))
}

fn build_c_libraries() -> Result<CLibraries> {
    let host = &artifacts()?.host;
    let out = host
        .parent()
        .context("no profile folder")?
        .join("c-fixtures");
    let build = |stem: &str| compile_c_fixture(stem, &out);
    Ok(CLibraries {
        ctor_abort: build("ctor_abort")?,
        ctor_segfault: build("ctor_segfault")?,
        ctor_exit: build("ctor_exit")?,
        ctor_hang: build("ctor_hang")?,
        dtor_abort_no_root: build("dtor_abort_no_root")?,
    })
}

/// Compiles `tests/fixtures/c/<stem>.c` into the shared library
/// `<out>/lib<stem>.so` with the system C compiler (`$CC`, else `cc`).
pub fn compile_c_fixture(stem: &str, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let source = workspace_root().join(format!("tests/fixtures/c/{stem}.c"));
    let library = out.join(lib_name(stem));
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O0", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .with_context(|| format!("running the C compiler `{compiler}`"))?;
    if !output.status.success() {
        bail!(
            "{compiler} failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(library)
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Milady's real catalog, when the shared fixtures folder sits beside the
/// checkout; `None` (and a printed note) otherwise.
pub fn milady_catalog() -> Option<PathBuf> {
    let path = workspace_root().join("../shared/fixtures/milady-plugins.json");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: ../shared/fixtures/milady-plugins.json is absent (a bare clone); \
             this test needs Milady's real catalog"
        );
        None
    }
}

/// Writes a catalog in Milady's `plugins.json` format with `plugins` plugins,
/// each declaring `keys_per_plugin` sensitive keys (`P<i>_KEY_<j>`) and one
/// non-sensitive setting; plugin `i` is `@bench/plugin-<i>`.
pub fn write_catalog(path: &Path, plugins: usize, keys_per_plugin: usize) -> Result<()> {
    let list: Vec<serde_json::Value> = (0..plugins)
        .map(|i| {
            let mut params = serde_json::Map::new();
            for j in 0..keys_per_plugin {
                params.insert(
                    format!("P{i}_KEY_{j}"),
                    serde_json::json!({"type": "string", "description": format!("key {j} of plugin {i}"), "required": j == 0, "sensitive": true}),
                );
            }
            params.insert(
                format!("P{i}_SETTING"),
                serde_json::json!({"type": "string", "description": "a setting", "required": false, "sensitive": false}),
            );
            serde_json::json!({"id": format!("plugin-{i}"), "name": format!("Plugin {i}"), "npmName": format!("@bench/plugin-{i}"), "pluginParameters": params})
        })
        .collect();
    let doc = serde_json::json!({"$schema": "plugin-index-v1", "count": plugins, "plugins": list});
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    Ok(())
}

/// Names of the files [`broken_libraries`] makes, in order.
pub const BROKEN_LIBRARIES: [&str; 7] = [
    "junk.so",
    "empty.so",
    "trunc-64.so",
    "trunc-4k.so",
    "trunc-100k.so",
    "trunc-half.so",
    "trunc-last-byte.so",
];

/// Files that are not loadable plugins, named as in [`BROKEN_LIBRARIES`]:
/// junk, an empty file, and copies of `real` (a real plugin library)
/// truncated at 64 B, 4 KiB, 100 KiB, half its size and all but its last
/// byte. A naive `dlopen` of the middle sizes kills the process with SIGBUS.
pub fn broken_libraries(real: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let contents = [
        b"this is not a library".to_vec(),
        Vec::new(),
        real[..64].to_vec(),
        real[..4096].to_vec(),
        real[..100 * 1024].to_vec(),
        real[..real.len() / 2].to_vec(),
        real[..real.len() - 1].to_vec(),
    ];
    BROKEN_LIBRARIES.into_iter().zip(contents).collect()
}

/// A spawned `demo-host` that printed the address it listens on.
pub struct Launched {
    /// The process.
    pub child: Child,
    /// What followed `listening on ` in its output, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Every line it printed on the piped streams so far.
    pub log: Arc<Mutex<String>>,
}

/// Spawns `cmd`, collects every line of its piped stdout (and stderr, when
/// piped) into a shared log, and waits up to `timeout` for the
/// `listening on <url>` line. On timeout the child is killed and the error
/// carries its log.
pub fn spawn_listening(cmd: &mut Command, timeout: Duration) -> Result<Launched> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning demo-host")?;
    let log = Arc::new(Mutex::new(String::new()));
    let collect = |stream: Box<dyn std::io::Read + Send>,
                   tx: Option<std::sync::mpsc::Sender<String>>| {
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stream)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let (Some(tx), Some(rest)) = (&tx, line.split("listening on ").nth(1)) {
                    let _ = tx.send(rest.trim().to_owned());
                }
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
    };
    if let Some(stderr) = child.stderr.take() {
        collect(Box::new(stderr), None);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    collect(
        Box::new(child.stdout.take().context("no stdout")?),
        Some(tx),
    );
    match rx.recv_timeout(timeout) {
        Ok(base) => Ok(Launched { child, base, log }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            let log = log.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("demo-host did not start; its log:\n{log}")
        }
    }
}

/// How to start a host.
#[derive(Default, Clone)]
pub struct HostSpec {
    /// Libraries to copy into the plugin folder: (source, file name).
    pub plugins: Vec<(PathBuf, String)>,
    /// Raw files to write into the plugin folder: (file name, bytes).
    pub plugin_files: Vec<(String, Vec<u8>)>,
    /// `--catalog` arguments.
    pub catalogs: Vec<PathBuf>,
    /// Environment variables for the host process.
    pub env: Vec<(String, String)>,
    /// Initial config file content (none: no file).
    pub config: Option<String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// `--plugins-dir` instead of the temporary folder's `plugins/`.
    pub plugins_dir: Option<PathBuf>,
    /// `--bind` instead of `127.0.0.1:0`.
    pub bind: Option<String>,
}

impl HostSpec {
    /// A host with the secrets plugin.
    pub fn with_secrets() -> Result<Self> {
        let a = artifacts()?;
        Ok(Self {
            plugins: vec![(a.secrets.clone(), lib_name("secrets-plugin"))],
            ..Self::default()
        })
    }

    /// Adds a library to the plugin folder.
    pub fn plugin(mut self, source: &Path, name: &str) -> Self {
        self.plugins.push((source.to_owned(), name.to_owned()));
        self
    }

    /// Adds a catalog.
    pub fn catalog(mut self, path: &Path) -> Self {
        self.catalogs.push(path.to_owned());
        self
    }

    /// Sets an environment variable of the host process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the initial config file.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.into());
        self
    }
}

/// A running host. Killed when dropped.
pub struct HostProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The temporary folder holding `milady.toml` and `plugins/`.
    pub dir: tempfile::TempDir,
    /// The host's own `HOME` and `XDG_DATA_HOME` (its secrets key), kept
    /// across restarts.
    pub home: TempHome,
    log: Arc<Mutex<String>>,
    spec: HostSpec,
}

impl HostProcess {
    /// Starts a host in a fresh temporary folder.
    pub fn start(spec: HostSpec) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins)?;
        for (source, name) in &spec.plugins {
            std::fs::copy(source, plugins.join(name))
                .with_context(|| format!("copying {}", source.display()))?;
        }
        for (name, bytes) in &spec.plugin_files {
            std::fs::write(plugins.join(name), bytes)?;
        }
        if let Some(text) = &spec.config {
            std::fs::write(dir.path().join("milady.toml"), text)?;
        }
        Self::launch(dir, TempHome::new()?, spec)
    }

    /// Starts a host again on the same folder (config and plugins kept).
    pub fn restart(mut self) -> Result<Self> {
        self.terminate()?;
        let dir = tempfile::tempdir()?;
        let old = std::mem::replace(&mut self.dir, dir);
        let home = std::mem::replace(&mut self.home, TempHome::new()?);
        let spec = self.spec.clone();
        drop(self);
        Self::launch(old, home, spec)
    }

    fn launch(dir: tempfile::TempDir, home: TempHome, spec: HostSpec) -> Result<Self> {
        let a = artifacts()?;
        let mut cmd = Command::new(&a.host);
        cmd.arg("--config")
            .arg(dir.path().join("milady.toml"))
            .arg("--plugins-dir")
            .arg(
                spec.plugins_dir
                    .clone()
                    .unwrap_or_else(|| dir.path().join("plugins")),
            )
            .arg("--bind")
            .arg(spec.bind.as_deref().unwrap_or("127.0.0.1:0"))
            .args(&spec.args)
            .env_remove("MILADY_API_TOKEN")
            .env_remove("MILADY_CONFIG_PATH")
            .env_remove("MILADY_API_BIND")
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            // Probe results are cached per host folder, not in ~/.cache.
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env_remove("MILADY_ALLOWED_ORIGINS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        for c in &spec.catalogs {
            cmd.arg("--catalog").arg(c);
        }
        home.apply(&mut cmd);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let Launched { child, base, log } = spawn_listening(&mut cmd, Duration::from_secs(30))?;
        Ok(Self {
            child,
            base,
            dir,
            home,
            log,
            spec,
        })
    }

    /// The host's secrets key file (in its own home).
    pub fn key_path(&self) -> PathBuf {
        self.home.key_file()
    }

    /// The config file's `[env]`, encrypted values opened with the host's
    /// key.
    pub fn stored_env(&self) -> Result<std::collections::BTreeMap<String, Stored>> {
        stored_env(&self.config_path(), &self.key_path())
    }

    /// The path of the config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("milady.toml")
    }

    /// Everything the host printed so far (stderr and stdout).
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (or the timeout passes).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for a graceful exit; returns the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                self.child.kill()?;
                bail!("demo-host did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A reqwest client with a short timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// `numbered`, the bytes of the numbered fixture library, with its slot
/// marker (`SLOT0000`) replaced by `n` (`SLOT0001`, ...): a distinct plugin,
/// `@fixtures/numbered-SLOTnnnn` serving `GET /api/numbered-SLOTnnnn`, that
/// loads beside the others.
pub fn numbered_copy(numbered: &[u8], n: usize) -> Result<Vec<u8>> {
    const SLOT: &[u8] = b"SLOT0000";
    let replacement = format!("SLOT{n:04}").into_bytes();
    if replacement.len() != SLOT.len() {
        bail!("slot number {n} too large");
    }
    let mut out = numbered.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + SLOT.len() <= out.len() {
        if &out[i..i + SLOT.len()] == SLOT {
            out[i..i + SLOT.len()].copy_from_slice(&replacement);
            found += 1;
            i += SLOT.len();
        } else {
            i += 1;
        }
    }
    if found == 0 {
        bail!("the numbered fixture holds no slot marker");
    }
    Ok(out)
}

/// Drops a library into a plugin folder the way an installer should:
/// written to a temporary name the host never loads, then renamed into
/// place as `name`.
pub fn drop_library(plugins_dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let temp = plugins_dir.join(format!(".{name}.partial"));
    std::fs::write(&temp, bytes)?;
    let dest = plugins_dir.join(name);
    std::fs::rename(&temp, &dest)?;
    Ok(dest)
}

/// A fixed-width file name for a library on this platform.
pub fn library_file_name(stem: &str) -> String {
    format!("{stem}{}", std::env::consts::DLL_SUFFIX)
}
