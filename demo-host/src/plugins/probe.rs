//! Checking a plugin library without risking the process that asks.
//!
//! A library is checked in a child process (`demo-host plugin probe FILE`,
//! hidden), never in the process that asks: loading a broken or hostile
//! library can crash the process that loads it (a truncated file can end in
//! `SIGBUS` inside `dlopen`, a library constructor can abort), and libraries
//! are never unloaded. The child runs the host's own loader (file check,
//! `abi_stable` layout check, manifest, OpenAPI document) and prints one JSON
//! line; a crash, a signal or a timeout of the child refuses the file.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::plugins::{
    loader::{self, LoadError},
    private_copy::PrivateCopy,
};

/// How long a probe child may take before it is killed and the file refused.
/// Loading takes milliseconds; the margin is for a busy machine.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub(crate) fn refused(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::default()
        }
    }
}

/// Checks `path` in this process with the host's loader. Only the hidden
/// `plugin probe` subcommand calls it: the process may not survive it.
pub fn probe_here(path: &Path) -> ProbeReport {
    probe_here_as(path, path)
}

/// What the hidden `plugin probe` subcommand does: checks `path` (known as
/// `label` in messages, e.g. the folder's file name when `path` is the
/// private copy `/proc/self/fd/0`), prints the report as one JSON line and
/// ends the process at once, without running the destructors of the library
/// it opened (see `loader::exit_now`).
pub fn probe_and_exit(path: &Path, label: Option<&Path>) -> ! {
    let report = probe_here_as(path, label.unwrap_or(path));
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("cannot print the probe report: {e}"),
    }
    loader::exit_now(0)
}

fn probe_here_as(path: &Path, label: &Path) -> ProbeReport {
    match loader::load_plugin_from(path, label) {
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
                LoadError::Incompatible { plugin_version, .. }
                | LoadError::NoLayout { plugin_version } => {
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
pub(crate) fn probe_in_child(exe: &Path, path: &Path, timeout: Duration) -> ProbeReport {
    let mut cmd = Command::new(exe);
    cmd.args(["plugin", "probe"])
        .arg(path)
        // The report is the child's only output that matters.
        .env("RUST_LOG", "off")
        .stdin(Stdio::null());
    run_probe(cmd, timeout)
}

/// Checks the private copy `copy` of the library `label` in a child
/// process, which loads that very copy (see `plugins::private_copy`).
pub(crate) fn probe_copy_in_child(
    exe: &Path,
    copy: &PrivateCopy,
    label: &Path,
    timeout: Duration,
) -> (ProbeReport, ProbeEnd) {
    let (path, stdin) = match copy.for_child() {
        Ok(target) => target,
        Err(e) => {
            return (
                ProbeReport::refused(format!("cannot hand the library to the probe process: {e}")),
                ProbeEnd::NotRun,
            );
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(["plugin", "probe", "--label"])
        .arg(label)
        .arg(path)
        .env("RUST_LOG", "off");
    cmd.stdin(stdin.map_or_else(Stdio::null, Stdio::from));
    run_probe_ended(cmd, timeout)
}

/// How a probe child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeEnd {
    /// It printed a report.
    Reported,
    /// It ended without a report (a crash, a signal, an exit).
    Crashed,
    /// It ran past the timeout and was stopped.
    TimedOut,
    /// It could not be started: says nothing about the library.
    NotRun,
}

/// Runs a prepared probe command and reads its report. A child that does
/// not print a report (it crashed, was killed by a signal, or ran past
/// `timeout`) refuses the file, with the reason.
pub(crate) fn run_probe(cmd: Command, timeout: Duration) -> ProbeReport {
    run_probe_ended(cmd, timeout).0
}

/// [`run_probe`], also telling how the child ended. A standard input set on
/// `cmd` is kept (the private copy a child loads as `/proc/self/fd/0`).
pub(crate) fn run_probe_ended(mut cmd: Command, timeout: Duration) -> (ProbeReport, ProbeEnd) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                ProbeReport::refused(format!("cannot start the probe process: {e}")),
                ProbeEnd::NotRun,
            );
        }
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
                break Err((
                    format!(
                        "checking the library did not finish within {} s (the probe process was stopped)",
                        timeout.as_secs_f64()
                    ),
                    ProbeEnd::TimedOut,
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err((
                    format!("cannot wait for the probe process: {e}"),
                    ProbeEnd::NotRun,
                ));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = match status {
        Ok(status) => status,
        Err((reason, end)) => return (ProbeReport::refused(reason), end),
    };
    if status.success()
        && let Some(report) = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<ProbeReport>(l.trim()).ok())
    {
        return (report, ProbeEnd::Reported);
    }
    let how = describe_exit(status);
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {}", truncate(l, 200)))
        .unwrap_or_default();
    (
        ProbeReport::refused(format!(
            "loading the library crashed the probe process ({how}){last}; the host would crash too"
        )),
        ProbeEnd::Crashed,
    )
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

/// A report of a plugin that passed every check, for tests.
#[cfg(test)]
pub(crate) fn sample_report(id: &str, routes: &[&str], paths: &[&str]) -> ProbeReport {
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::plugins::loader::LIBRARY_EXTENSION;

    fn plugin(id: &str, routes: &[&str], paths: &[&str]) -> ProbeReport {
        sample_report(id, routes, paths)
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
}
