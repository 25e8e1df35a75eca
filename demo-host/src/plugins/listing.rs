//! `demo-host plugin list`: what the host would do with each library in
//! its plugin folder, and the table that shows it.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    http::HOST_ROUTES,
    plugins::{
        folder::{self, FolderError, Library},
        loader::LIBRARY_EXTENSION,
        mount::overlaps,
        probe::{PROBE_TIMEOUT, ProbeReport, probe_in_child},
    },
    store::file_safety::{FilePolicy, UnsafeFile},
    text::escape_controls,
};

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

/// The plugin folder could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Listing or inspecting it failed.
    #[error("cannot list the plugin folder {}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The folder is not safe to trust (StrictModes); the host would not
    /// start with it.
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
}

/// Checks every library in `dir` (each in its own child process) in the
/// order the host loads them, and marks those the host would skip: files
/// the file rules (`policy`) refuse, which are not run at all, failed
/// checks, and collisions with the host's routes or an earlier plugin.
pub fn list(exe: &Path, dir: &Path, policy: FilePolicy) -> Result<Vec<ListedPlugin>, ListError> {
    let libraries = folder::libraries(dir, policy).map_err(|e| match e {
        FolderError::Unsafe(e) => ListError::Unsafe(e),
        FolderError::Io { path, source } => ListError::Io { path, source },
    })?;
    let mut accepted: Vec<(PathBuf, ProbeReport)> = Vec::new();
    let mut listed = Vec::new();
    for library in libraries {
        let file = match library {
            Library::Trusted(file) => file,
            Library::Refused(file, reason) => {
                listed.push(ListedPlugin {
                    file,
                    report: ProbeReport::refused(reason.clone()),
                    loads: false,
                    skip_reason: Some(reason),
                });
                continue;
            }
        };
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
pub(crate) fn collision(
    candidate: &ProbeReport,
    others: &[(PathBuf, ProbeReport)],
) -> Option<String> {
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

/// The table `demo-host plugin list` prints.
pub fn render_list(dir: &Path, listed: &[ListedPlugin]) -> String {
    let mut out = format!(
        "plugin folder: {} (this host: host-api {})\n",
        escape_controls(&dir.display().to_string()),
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
        // File names, ids and reasons come from the folder and the
        // libraries: printed escaped, so none can drive the terminal.
        .map(|row: [String; 6]| row.map(|cell| escape_controls(&cell).into_owned()))
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
    use crate::plugins::probe::sample_report as plugin;

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
