//! The report: table rows, number formatting, the header lines describing
//! the machine and the run, and the Markdown rendering.

use std::path::Path;

use bench::stats::Spread;

use crate::context::Ctx;

/// One line of the table.
pub(crate) struct Row {
    measure: String,
    value: String,
    reference: String,
    ratio: String,
    target: String,
    met: String,
}

impl Row {
    /// A row with what is measured and its value; other cells empty.
    pub(crate) fn new(measure: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            measure: measure.into(),
            value: value.into(),
            reference: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: String::new(),
        }
    }

    /// The figure the value is compared with.
    pub(crate) fn reference(mut self, r: impl Into<String>) -> Self {
        self.reference = r.into();
        self
    }

    /// Value over reference, per round.
    pub(crate) fn ratio(mut self, r: Spread) -> Self {
        self.ratio = fmt_spread(r, 2, "×");
        self
    }

    /// The target and whether it was met.
    pub(crate) fn target(mut self, t: impl Into<String>, met: bool) -> Self {
        self.target = t.into();
        self.met = if met { "yes" } else { "**no**" }.into();
        self
    }
}

/// `median [min–max]` with `decimals` and a unit suffix.
pub(crate) fn fmt_spread(s: Spread, decimals: usize, unit: &str) -> String {
    format!(
        "{:.d$}{unit} [{:.d$}–{:.d$}]",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

/// The lines above the table: machine, catalog and disk, run settings.
pub(crate) fn header(ctx: &Ctx) -> Vec<String> {
    let mut header = machine();
    header.push(format!(
        "catalog: {}; config files on {}",
        ctx.catalog.label,
        filesystem_of(ctx.work.path())
    ));
    header.push(format!(
        "rounds: {} × {} s per load round, A/B order alternating; GET load: {} keep-alive connections; figures are median [min–max] over rounds",
        ctx.args.rounds, ctx.args.seconds, ctx.args.connections
    ));
    header
}

/// The header as a list, then one table with a title row per section.
pub(crate) fn render(header: &[String], table: &[(String, Vec<Row>)]) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str(&format!("- {line}\n"));
    }
    out.push('\n');
    out.push_str("| measure | measured | reference | ratio | target | met |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for (title, rows) in table {
        out.push_str(&format!("| **{title}** | | | | | |\n"));
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.measure, r.value, r.reference, r.ratio, r.target, r.met
            ));
        }
    }
    out
}

fn machine() -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    vec![format!("machine: {cores} cores ({cpu}), Linux {kernel}")]
}

/// The type and device of the filesystem holding `path` (from the mount table).
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at)
                .then(|| (at.len(), format!("{kind} ({dev})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "an unknown filesystem".into(), |(_, d)| d)
}
