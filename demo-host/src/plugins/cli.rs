//! `demo-host plugin install` and `demo-host plugin list`: checking plugin
//! libraries and installing them into the plugin folder.
//!
//! A library is checked in a child process (`demo-host plugin probe FILE`,
//! hidden), never in the process that asks: loading a broken or hostile
//! library can crash the process that loads it (a truncated file can end in
//! `SIGBUS` inside `dlopen`, a library constructor can abort), and libraries
//! are never unloaded. The child runs the host's own loader (file check,
//! `abi_stable` layout check, manifest, OpenAPI document) and prints one JSON
//! line; a crash, a signal or a timeout of the child refuses the file.
//!
//! Installing copies the library to a temporary file in the plugin folder
//! (a name the host never loads), syncs it to disk and renames it into place,
//! so a host starting meanwhile sees either no file or the whole file.

use std::{
    collections::BTreeSet,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    app::{HOST_ROUTES, overlaps},
    plugins::loader::{self, LIBRARY_EXTENSION, LoadError},
};

/// How long a probe child may take before it is killed and the file refused.
/// Loading takes milliseconds; the margin is for a busy machine.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a probe child may print; anything longer is not a probe report.
const MAX_PROBE_OUTPUT: u64 = 1024 * 1024;

/// What checking one library found: the hidden `plugin probe` subcommand
/// prints it as one JSON line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProbeReport {
    /// Every check passed: the host would load this library (unless it
    /// collides with another plugin, which the probe cannot see).
    pub ok: bool,
    /// The plugin id from its manifest.
    pub id: Option<String>,
    /// The plugin's display name.
    pub name: Option<String>,
    /// The plugin's own version.
    pub version: Option<String>,
    /// The `host-api` version the library was built against, when known.
    pub interface: Option<String>,
    /// `Some(true)`: the interface layout matches this host's; `Some(false)`:
    /// built against an incompatible `host-api`; `None`: not a plugin at all.
    pub compatible: Option<bool>,
    /// The route prefixes the plugin serves.
    pub routes: Vec<String>,
    /// The paths of its OpenAPI document.
    pub paths: Vec<String>,
    /// Why the library would be refused (one line, no file content).
    pub reason: Option<String>,
}

impl ProbeReport {
    fn refused(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::default()
        }
    }
}

/// Checks `path` in this process with the host's loader. Only the hidden
/// `plugin probe` subcommand calls it: the process may not survive it.
pub fn probe_here(path: &Path) -> ProbeReport {
    match loader::load_plugin(path) {
        Ok(plugin) => {
            let m = &plugin.manifest;
            ProbeReport {
                ok: true,
                id: Some(m.id.to_string()),
                name: Some(m.name.to_string()),
                version: Some(m.version.to_string()),
                interface: Some(plugin.interface_version.clone()),
                compatible: Some(true),
                routes: m.routes.iter().map(|r| r.to_string()).collect(),
                paths: plugin
                    .openapi
                    .get("paths")
                    .and_then(serde_json::Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default(),
                reason: None,
            }
        }
        Err(error) => {
            let (interface, compatible) = match &error {
                LoadError::Incompatible { plugin_version, .. } => {
                    (Some(plugin_version.clone()), Some(false))
                }
                // The layout check passed; the plugin's own code refused.
                LoadError::Entry { .. } | LoadError::Invalid { .. } => (None, Some(true)),
                _ => (None, None),
            };
            ProbeReport {
                interface,
                compatible,
                ..ProbeReport::refused(error.to_string())
            }
        }
    }
}

/// Checks `path` in a child process: `exe plugin probe PATH`, where `exe`
/// is this program (`std::env::current_exe()`).
pub fn probe_in_child(exe: &Path, path: &Path, timeout: Duration) -> ProbeReport {
    let mut cmd = Command::new(exe);
    cmd.args(["plugin", "probe"])
        .arg(path)
        // The report is the child's only output that matters.
        .env("RUST_LOG", "off");
    run_probe(cmd, timeout)
}

/// Runs a prepared probe command and reads its report. A child that does
/// not print a report (it crashed, was killed by a signal, or ran past
/// `timeout`) refuses the file, with the reason.
pub fn run_probe(mut cmd: Command, timeout: Duration) -> ProbeReport {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return ProbeReport::refused(format!("cannot start the probe process: {e}")),
    };
    // Read both pipes on their own threads so a chatty child cannot block.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_PROBE_OUTPUT).read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "checking the library did not finish within {} s (the probe process was stopped)",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("cannot wait for the probe process: {e}"));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = match status {
        Ok(status) => status,
        Err(reason) => return ProbeReport::refused(reason),
    };
    if status.success()
        && let Some(report) = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<ProbeReport>(l.trim()).ok())
    {
        return report;
    }
    let how = describe_exit(status);
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {}", truncate(l, 200)))
        .unwrap_or_default();
    ProbeReport::refused(format!(
        "loading the library crashed the probe process ({how}){last}; the host would crash too"
    ))
}

fn truncate(line: &str, max_chars: usize) -> String {
    match line.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            let name = match signal {
                4 => " SIGILL",
                6 => " SIGABRT",
                7 if cfg!(target_os = "linux") => " SIGBUS",
                10 if !cfg!(target_os = "linux") => " SIGBUS",
                8 => " SIGFPE",
                9 => " SIGKILL",
                11 => " SIGSEGV",
                _ => "",
            };
            return format!("killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "no exit status".to_owned(),
    }
}

/// One library in the plugin folder and what the host would do with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedPlugin {
    /// The library file.
    pub file: PathBuf,
    /// What checking it found.
    #[serde(flatten)]
    pub report: ProbeReport,
    /// Whether the host would load it at start-up.
    pub loads: bool,
    /// Why the host would skip it (a failed check or a collision).
    pub skip_reason: Option<String>,
}

/// Checks every library in `dir` (each in its own child process) in the
/// order the host loads them, and marks those the host would skip: failed
/// checks, and collisions with the host's routes or an earlier plugin.
pub fn list(exe: &Path, dir: &Path) -> anyhow::Result<Vec<ListedPlugin>> {
    let files = loader::library_files(dir)
        .with_context(|| format!("cannot list the plugin folder {}", dir.display()))?;
    let mut accepted: Vec<(PathBuf, ProbeReport)> = Vec::new();
    let mut listed = Vec::new();
    for file in files {
        let report = probe_in_child(exe, &file, PROBE_TIMEOUT);
        let skip_reason = if report.ok {
            collision(&report, &accepted)
        } else {
            Some(report.reason.clone().unwrap_or_else(|| "refused".into()))
        };
        if skip_reason.is_none() {
            accepted.push((file.clone(), report.clone()));
        }
        listed.push(ListedPlugin {
            file,
            loads: skip_reason.is_none(),
            skip_reason,
            report,
        });
    }
    Ok(listed)
}

/// Why `candidate` could not be served next to `others` (libraries the
/// host loads, with their files) and the host's own routes; `None` when it
/// can.
pub fn collision(candidate: &ProbeReport, others: &[(PathBuf, ProbeReport)]) -> Option<String> {
    let file = |f: &Path| {
        f.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let id = candidate.id.as_deref().unwrap_or("?");
    if let Some((f, other)) = others.iter().find(|(_, o)| o.id == candidate.id) {
        return Some(format!(
            "plugin `{id}` is already installed (version {}, {})",
            other.version.as_deref().unwrap_or("?"),
            file(f)
        ));
    }
    for prefix in &candidate.routes {
        if let Some(host) = HOST_ROUTES.iter().find(|h| overlaps(h, prefix)) {
            return Some(format!(
                "route prefix `{prefix}` collides with the host's own `{host}`"
            ));
        }
        for (f, other) in others {
            if let Some(r) = other.routes.iter().find(|r| overlaps(r, prefix)) {
                return Some(format!(
                    "route prefix `{prefix}` collides with `{r}` of plugin `{}` ({})",
                    other.id.as_deref().unwrap_or("?"),
                    file(f)
                ));
            }
        }
    }
    let mine: BTreeSet<&str> = candidate.paths.iter().map(String::as_str).collect();
    for (f, other) in others {
        if let Some(p) = other.paths.iter().find(|p| mine.contains(p.as_str())) {
            return Some(format!(
                "OpenAPI path `{p}` is already documented by plugin `{}` ({})",
                other.id.as_deref().unwrap_or("?"),
                file(f)
            ));
        }
    }
    None
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    /// The library's path in the plugin folder.
    pub path: PathBuf,
    /// What checking it found.
    pub report: ProbeReport,
    /// The file of the same plugin it replaced (`--replace`), if any.
    pub replaced: Option<PathBuf>,
}

/// Checks `source` in a child process and, when the host would load it next
/// to the plugins already in `dir`, copies it into `dir` atomically.
///
/// Refuses (with the reason) a file that is not a compatible plugin, and a
/// plugin whose id, route prefixes or OpenAPI paths collide with an
/// installed plugin's or the host's. With `replace`, an installed plugin
/// with the same id is replaced in place (its file is atomically swapped).
pub fn install(exe: &Path, dir: &Path, source: &Path, replace: bool) -> anyhow::Result<Installed> {
    let meta = fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", source.display());
    }
    let report = probe_in_child(exe, source, PROBE_TIMEOUT);
    if !report.ok {
        let reason = report.reason.as_deref().unwrap_or("refused");
        bail!(
            "{} is not a plugin this host can load: {reason}",
            source.display()
        );
    }
    let id = report.id.clone().unwrap_or_default();

    let source_canon = fs::canonicalize(source)?;
    let mut installed = Vec::new();
    let mut same_id = Vec::new();
    for file in loader::library_files(dir)
        .with_context(|| format!("cannot list the plugin folder {}", dir.display()))?
    {
        if fs::canonicalize(&file).ok().as_ref() == Some(&source_canon) {
            bail!("{} is already in the plugin folder", source.display());
        }
        let existing = probe_in_child(exe, &file, PROBE_TIMEOUT);
        // Files the host skips anyway cannot collide with anything.
        if !existing.ok {
            continue;
        }
        if replace && existing.id.as_deref() == Some(id.as_str()) {
            same_id.push(file);
            continue;
        }
        installed.push((file, existing));
    }
    if same_id.len() > 1 {
        let names: Vec<String> = same_id.iter().map(|f| f.display().to_string()).collect();
        bail!(
            "several files hold plugin `{id}` ({}); remove all but one first",
            names.join(", ")
        );
    }
    let replaced = same_id.pop();
    if let Some(reason) = collision(&report, &installed) {
        let hint = if installed
            .iter()
            .any(|(_, o)| o.id.as_deref() == Some(id.as_str()))
        {
            " (use --replace to replace the installed version)"
        } else {
            ""
        };
        bail!("plugin `{id}` would not be served: {reason}{hint}");
    }

    let dest = match &replaced {
        Some(old) => old.clone(),
        None => dir.join(library_file_name(source)?),
    };
    if replaced.is_none()
        && let Some((file, other)) = installed.iter().find(|(f, _)| f == &dest)
    {
        bail!(
            "{} already holds plugin `{}`; rename the new file or use --replace for the same plugin",
            file.display(),
            other.id.as_deref().unwrap_or("?")
        );
    }
    if replaced.is_none() && dest.exists() {
        bail!(
            "{} already exists in the plugin folder (a library the host skips); remove it first",
            dest.display()
        );
    }
    copy_atomically(source, dir, &dest)?;
    Ok(Installed {
        path: dest,
        report,
        replaced,
    })
}

/// The file name a library gets in the plugin folder: its own, with this
/// platform's library extension added when missing (the host loads only
/// files with that extension).
pub fn library_file_name(source: &Path) -> anyhow::Result<String> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", source.display()))?;
    if source.extension().is_some_and(|e| e == LIBRARY_EXTENSION) {
        Ok(name.to_owned())
    } else {
        Ok(format!("{name}.{LIBRARY_EXTENSION}"))
    }
}

/// Copies `source` to `dest` (in `dir`) through a temporary file in `dir`:
/// write, fsync, rename, fsync the folder. The temporary name has no library
/// extension, so a host starting meanwhile never tries to load it.
pub fn copy_atomically(source: &Path, dir: &Path, dest: &Path) -> anyhow::Result<()> {
    create_private_dir(dir)
        .with_context(|| format!("cannot create the plugin folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".install-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut input =
        fs::File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
    std::io::copy(&mut input, tmp.as_file_mut())
        .with_context(|| format!("cannot copy {}", source.display()))?;
    tmp.as_file_mut().flush()?;
    let perms = fs::metadata(source)?.permissions();
    fs::set_permissions(tmp.path(), perms)?;
    tmp.as_file()
        .sync_all()
        .context("cannot sync the copied library to disk")?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the copy to {}", dest.display()))?;
    // The rename is durable once the folder itself is synced.
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the plugin folder {}", dir.display()))?;
    Ok(())
}

/// Creates `dir` and any missing parent, owner-only (0700) like the config
/// file's folder: a plugin folder runs code in the host.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The table `demo-host plugin list` prints.
pub fn render_list(dir: &Path, listed: &[ListedPlugin]) -> String {
    let mut out = format!(
        "plugin folder: {} (this host: host-api {})\n",
        dir.display(),
        host_api::INTERFACE_VERSION
    );
    if listed.is_empty() {
        out.push_str(&format!("no *.{LIBRARY_EXTENSION} libraries in it\n"));
        return out;
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|p| {
            let r = &p.report;
            [
                p.file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                dash(&r.id),
                dash(&r.version),
                dash(&r.interface),
                match r.compatible {
                    Some(true) => "compatible".into(),
                    Some(false) => "incompatible".into(),
                    None => "not a plugin".into(),
                },
                match &p.skip_reason {
                    None => "loads".into(),
                    Some(reason) => format!("skipped: {reason}"),
                },
            ]
        })
        .collect();
    let header = ["FILE", "ID", "VERSION", "HOST-API", "INTERFACE", "STATUS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(id: &str, routes: &[&str], paths: &[&str]) -> ProbeReport {
        ProbeReport {
            ok: true,
            id: Some(id.into()),
            version: Some("1.0.0".into()),
            compatible: Some(true),
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            paths: paths.iter().map(|r| (*r).to_owned()).collect(),
            ..ProbeReport::default()
        }
    }

    #[test]
    fn collisions_are_found_by_id_route_and_path() {
        let a = [(
            PathBuf::from("/p/libone.so"),
            plugin("@a/one", &["/api/one"], &["/api/one"]),
        )];
        assert_eq!(
            collision(&plugin("@b/two", &["/api/two"], &["/api/two"]), &a),
            None
        );
        let same_id = collision(&plugin("@a/one", &["/api/x"], &[]), &a);
        assert!(same_id.is_some_and(|r| r.contains("`@a/one` is already installed")));
        let nested = collision(&plugin("@c/c", &["/api/one/sub"], &[]), &a);
        assert!(nested.is_some_and(|r| r.contains("`/api/one`") && r.contains("libone.so")));
        let host = collision(&plugin("@d/d", &["/api/plugins"], &[]), &[]);
        assert!(host.is_some_and(|r| r.contains("host's own")));
        let docs = collision(&plugin("@d/d", &["/docs"], &[]), &[]);
        assert!(docs.is_some());
        let path = collision(&plugin("@e/e", &["/api/e"], &["/api/one"]), &a);
        assert!(path.is_some_and(|r| r.contains("OpenAPI path")));
        // A shared first segment is not an overlap.
        assert!(!overlaps("/api/one", "/api/onex"));
    }

    #[test]
    fn a_probe_report_survives_the_json_line() {
        let report = plugin("@a/one", &["/api/one"], &["/api/one"]);
        let line = serde_json::to_string(&report).expect("serialises");
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<ProbeReport>(&line).expect("parses"),
            report
        );
    }

    #[cfg(unix)]
    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[cfg(unix)]
    #[test]
    fn a_child_killed_by_a_signal_refuses_the_file() {
        let r = run_probe(
            sh("echo 'about to crash' >&2; kill -BUS $$"),
            Duration::from_secs(20),
        );
        assert!(!r.ok);
        let reason = r.reason.expect("a reason");
        assert!(reason.contains("crashed"), "{reason}");
        assert!(reason.contains("signal"), "{reason}");
        assert!(reason.contains("about to crash"), "{reason}");
    }

    #[cfg(unix)]
    #[test]
    fn a_child_that_hangs_is_stopped_and_refuses_the_file() {
        let started = Instant::now();
        let r = run_probe(sh("exec sleep 30"), Duration::from_millis(300));
        assert!(!r.ok);
        assert!(r.reason.expect("a reason").contains("did not finish"));
        assert!(started.elapsed() < Duration::from_secs(25));
    }

    #[cfg(unix)]
    #[test]
    fn a_child_without_a_report_refuses_the_file() {
        let r = run_probe(sh("echo not json; exit 3"), Duration::from_secs(20));
        assert!(!r.ok);
        assert!(r.reason.expect("a reason").contains("exit status 3"));
        let r = run_probe(sh("echo not json"), Duration::from_secs(20));
        assert!(!r.ok);
    }

    #[cfg(unix)]
    #[test]
    fn a_report_line_is_read_back() {
        let line = serde_json::to_string(&plugin("@a/one", &["/api/one"], &[])).expect("json");
        let r = run_probe(
            sh(&format!("echo noise; echo '{line}'")),
            Duration::from_secs(20),
        );
        assert!(r.ok);
        assert_eq!(r.id.as_deref(), Some("@a/one"));
    }

    #[test]
    fn junk_is_refused_by_the_in_process_probe_without_loading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join(format!("junk.{LIBRARY_EXTENSION}"));
        fs::write(&junk, b"definitely not a library").expect("write");
        let r = probe_here(&junk);
        assert!(!r.ok);
        assert_eq!(r.compatible, None);
        assert!(r.reason.expect("reason").contains("not a loadable"));
    }

    #[test]
    fn atomic_copy_leaves_only_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.bin");
        fs::write(&source, b"library bytes").expect("write");
        let plugins = dir.path().join("plugins");
        let dest = plugins.join(library_file_name(&source).expect("name"));
        copy_atomically(&source, &plugins, &dest).expect("copied");
        assert_eq!(fs::read(&dest).expect("read"), b"library bytes");
        let names: Vec<_> = fs::read_dir(&plugins)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(
            dest.extension().and_then(|e| e.to_str()),
            Some(LIBRARY_EXTENSION)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&plugins).expect("folder").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "a new plugin folder is owner-only");
        }
    }

    #[test]
    fn the_table_names_every_file_and_reason() {
        let listed = vec![
            ListedPlugin {
                file: PathBuf::from("/p/libgood.so"),
                report: ProbeReport {
                    interface: Some("0.1.0".into()),
                    ..plugin("@a/good", &["/api/good"], &[])
                },
                loads: true,
                skip_reason: None,
            },
            ListedPlugin {
                file: PathBuf::from("/p/junk.so"),
                report: ProbeReport::refused("not a loadable shared library (x)"),
                loads: false,
                skip_reason: Some("not a loadable shared library (x)".into()),
            },
        ];
        let text = render_list(Path::new("/p"), &listed);
        assert!(text.contains("libgood.so"));
        assert!(text.contains("@a/good"));
        assert!(text.contains("compatible"));
        assert!(text.contains("loads"));
        assert!(text.contains("junk.so"));
        assert!(text.contains("not a plugin"));
        assert!(text.contains("skipped: not a loadable shared library (x)"));
    }
}
