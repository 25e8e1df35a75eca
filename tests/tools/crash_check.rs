//! The crash-safety check: start the real host, fire PUTs from several
//! connections at once, kill the host with SIGKILL at a random moment, and
//! check the config file it leaves: it parses as TOML, is mode 0600, keeps
//! the hand-written parts, and every key holds either its last acknowledged
//! value or the value of the one PUT that was in flight (never a torn,
//! mixed or empty file), stored encrypted and opened with the host's key
//! (the host runs in a home of its own). Then start again on the same
//! file, many times.

use std::{
    collections::BTreeMap,
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::child_host::{ChildHost, Rng, plugin_folder};

/// Concurrent writers; writer `w` owns keys `P0_KEY_{2w}` and `P0_KEY_{2w+1}`.
const WRITERS: usize = 4;
/// Upper bound of PUTs per writer per iteration (the kill comes far sooner).
const MAX_PUTS_PER_ITERATION: u64 = 5_000;

/// The hand-written parts every file must keep.
pub(crate) const PREAMBLE: &str = "# crash-test: these notes must survive every kill\n\
[other]   # an unrelated table\nkept = [1, 2, 3]\n\n[env]\n";

/// How to run the check.
pub(crate) struct Settings {
    /// Start/kill cycles.
    pub iterations: usize,
    /// Seed of the kill delays.
    pub seed: u64,
    /// Kill delays are drawn uniformly from zero to this, after the host
    /// reports it is listening.
    pub max_kill_delay: Duration,
}

/// What a run saw.
pub(crate) struct Report {
    /// Start/kill cycles completed, every one checked.
    pub iterations: usize,
    /// PUTs answered 200 before their host was killed.
    pub acknowledged_puts: u64,
    /// Writers whose in-flight PUT (unanswered at the kill) was found on disk.
    pub in_flight_landed: u64,
    /// Writers whose in-flight PUT was not on disk (the old value was).
    pub in_flight_lost: u64,
    /// Temporary files killed writes left in the config folder (each
    /// removed by the next start, which the check verifies).
    pub leftover_temp_files: usize,
    /// Lines of the audit log after the last kill, every one whole.
    pub audit_lines: usize,
    /// Seed used.
    pub seed: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash-safety: {} iterations (SIGKILL at a random moment), every file parsed, \
             mode 0600, every key old-or-new, audit log whole with a line for every \
             acknowledged PUT ({} lines): PASS; {} PUTs acknowledged, in-flight PUTs at \
             the kill: {} landed / {} not; {} temp files of killed writes, all removed at the next start; seed {:#x}; {:.1} s",
            self.iterations,
            self.audit_lines,
            self.acknowledged_puts,
            self.in_flight_landed,
            self.in_flight_lost,
            self.leftover_temp_files,
            self.seed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The two values writer `w` sets in its PUT number `n` (`None`: cleared).
/// Lengths vary so a torn write could not pass for a whole one.
fn values(w: usize, iteration: usize, n: u64) -> [Option<String>; 2] {
    let pad = "x".repeat((n % 37) as usize);
    let a = Some(format!("crash-w{w}-i{iteration}-n{n}-a-{pad}"));
    let b = (!n.is_multiple_of(5)).then(|| format!("crash-w{w}-i{iteration}-n{n}-b-{pad}{pad}"));
    [a, b]
}

fn keys(w: usize) -> [String; 2] {
    [format!("P0_KEY_{}", 2 * w), format!("P0_KEY_{}", 2 * w + 1)]
}

/// One writer's progress in an iteration.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
}

/// Runs the check; the first broken property is an error naming the
/// iteration and the key.
pub(crate) async fn run(settings: &Settings) -> Result<Report> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let plugins = plugin_folder(dir.path())?;
    let catalog = dir.path().join("catalog.json");
    e2e_tests::write_catalog(&catalog, 1, 2 * WRITERS)?;
    let config = dir.path().join("config").join("milady.toml");
    std::fs::create_dir_all(config.parent().context("config folder")?)?;
    std::fs::write(&config, PREAMBLE)?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
    let log = dir.path().join("host.log");
    let home = e2e_tests::TempHome::new()?;

    let mut rng = Rng::new(settings.seed);
    // What each key held on disk after the previous kill.
    let mut on_disk: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut report = Report {
        iterations: 0,
        acknowledged_puts: 0,
        in_flight_landed: 0,
        in_flight_lost: 0,
        leftover_temp_files: 0,
        audit_lines: 0,
        seed: settings.seed,
        elapsed: Duration::ZERO,
    };
    let folder = config.parent().context("config folder")?.to_owned();
    for iteration in 0..settings.iterations {
        let mut host = ChildHost::start(
            &config,
            &plugins,
            std::slice::from_ref(&catalog),
            &log,
            &home,
        )
        .with_context(|| format!("iteration {iteration}: start"))?;
        // The host removes what killed writes left before it serves.
        ensure!(
            temp_files(&folder)? == 0,
            "iteration {iteration}: temp files of killed writes survived a start"
        );
        let progress: Arc<Vec<Progress>> =
            Arc::new((0..WRITERS).map(|_| Progress::default()).collect());
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let url = host.url("/api/secrets");
            let progress = Arc::clone(&progress);
            tasks.push(tokio::spawn(async move {
                writer(w, iteration, &url, &progress[w]).await
            }));
        }
        // Every other kill window opens only once a PUT was acknowledged,
        // so that a slow first write on a loaded machine still leaves
        // acknowledged writes to check; the others may kill before any.
        if iteration % 2 == 0 {
            let waited = Instant::now();
            while progress.iter().all(|p| p.acked.load(Ordering::SeqCst) == 0) {
                ensure!(
                    waited.elapsed() < Duration::from_secs(30),
                    "iteration {iteration}: no PUT acknowledged in 30 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let max_ms = settings.max_kill_delay.as_millis().max(1) as u64;
        tokio::time::sleep(Duration::from_millis(rng.below(max_ms + 1))).await;
        host.kill();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("a writer did not stop after the kill")???;
        }

        report.leftover_temp_files += temp_files(&folder)?;
        let file = read_checked(&config, &home.key_file())
            .with_context(|| format!("iteration {iteration}"))?;
        // The audit log: whole lines, and a line for every acknowledged PUT.
        let audit = super::crash_audit::AuditFile::read(&folder.join("audit.jsonl"), &home)
            .with_context(|| format!("iteration {iteration}"))?;
        report.audit_lines = audit.lines;
        for (w, p) in progress.iter().enumerate() {
            let (sent, acked) = (
                p.sent.load(Ordering::SeqCst),
                p.acked.load(Ordering::SeqCst),
            );
            report.acknowledged_puts += acked;
            for n in 1..=acked {
                let [a, _] = values(w, iteration, n);
                ensure!(
                    audit.has_applied(&keys(w)[0], a.as_deref().unwrap_or(""))?,
                    "iteration {iteration}: writer {w}'s acknowledged PUT {n} has no audit line"
                );
            }
            let keys = keys(w);
            let found = [file.get(&keys[0]).cloned(), file.get(&keys[1]).cloned()];
            let expect = |n: u64| -> [Option<String>; 2] {
                if n == 0 {
                    [
                        on_disk.get(&keys[0]).cloned().flatten(),
                        on_disk.get(&keys[1]).cloned().flatten(),
                    ]
                } else {
                    values(w, iteration, n)
                }
            };
            if found == expect(acked) {
                if sent > acked {
                    report.in_flight_lost += 1;
                }
            } else if sent > acked && found == expect(sent) {
                report.in_flight_landed += 1;
            } else {
                bail!(
                    "iteration {iteration}: keys {keys:?} hold neither their acknowledged \
                     value (PUT {acked}) nor the in-flight one (PUT {sent}): found {found:?}"
                );
            }
            for (i, key) in keys.iter().enumerate() {
                on_disk.insert(key.clone(), found[i].clone());
            }
        }
        report.iterations += 1;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Temporary files of interrupted writes in the config folder.
fn temp_files(folder: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(folder)?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(".milady.toml.") && name.ends_with(".tmp")
        })
        .count())
}

/// PUTs as fast as one connection allows until the host is gone.
async fn writer(w: usize, iteration: usize, url: &str, progress: &Progress) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let keys = keys(w);
    for n in 1..=MAX_PUTS_PER_ITERATION {
        let [a, b] = values(w, iteration, n);
        let body = serde_json::json!({"secrets": {
            &keys[0]: a.unwrap_or_default(),
            &keys[1]: b.unwrap_or_default(),
        }});
        progress.sent.store(n, Ordering::SeqCst);
        match client.put(url).json(&body).send().await {
            Ok(resp) if resp.status() == 200 => progress.acked.store(n, Ordering::SeqCst),
            Ok(resp) => {
                // The host answered with an error: a failure, not a kill.
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                bail!("writer {w}: PUT {n} answered {status}: {text}");
            }
            // Connection refused or reset: the host was killed.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Reads the config file and checks mode, syntax and the hand-written
/// parts; returns `[env]`, every value encrypted and opened with the key
/// file `key` (or its `.next` file during a rotation).
pub(crate) fn read_checked(config: &Path, key: &Path) -> Result<BTreeMap<String, String>> {
    let meta = std::fs::metadata(config).context("the config file is missing")?;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600,
        "mode {:o}",
        meta.permissions().mode() & 0o777
    );
    let text = std::fs::read_to_string(config).context("reading the config file")?;
    ensure!(!text.is_empty(), "the config file is empty");
    let doc: toml_edit::DocumentMut = text.parse().context("the config file is not TOML")?;
    ensure!(
        text.starts_with("# crash-test: these notes must survive every kill\n")
            && text.contains("[other]   # an unrelated table\nkept = [1, 2, 3]\n"),
        "the hand-written parts were lost"
    );
    ensure!(
        doc.get("env").and_then(|e| e.as_table_like()).is_some(),
        "no [env] table"
    );
    e2e_tests::stored_env(config, key)?
        .into_iter()
        .map(|(k, stored)| match stored {
            e2e_tests::Stored::Encrypted(v) => {
                ensure!(!v.is_empty(), "{k} is empty");
                Ok((k, v))
            }
            e2e_tests::Stored::Plain(_) => anyhow::bail!("{k} was written in plaintext"),
            e2e_tests::Stored::Unreadable(why) => anyhow::bail!("{k} cannot be read: {why}"),
        })
        .collect()
}
