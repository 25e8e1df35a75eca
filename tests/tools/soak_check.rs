//! The soak check: the real host on loopback under mixed traffic from many
//! connections for a bounded time (GET /api/secrets, PUT /api/secrets of a
//! key each connection owns, PUT /api/plugins/{id} toggling a plugin each
//! connection owns), then: zero errors, no lost update (the config file and
//! the API both hold every connection's last acknowledged write), resident
//! memory before and after.

use std::{
    fmt,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use super::child_host::{ChildHost, plugin_folder};

/// How to run the check.
pub(crate) struct Settings {
    /// How long the traffic lasts.
    pub duration: Duration,
    /// Concurrent connections (each its own client and its own key/plugin).
    pub connections: usize,
}

/// What a run measured.
pub(crate) struct Report {
    /// Connections used.
    pub connections: usize,
    /// Requests sent in the traffic phase.
    pub requests: u64,
    /// Of which GET /api/secrets.
    pub gets: u64,
    /// Of which PUT /api/secrets.
    pub puts: u64,
    /// Of which plugin toggles.
    pub toggles: u64,
    /// Requests that failed (transport error or a status other than 200).
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Connections whose last acknowledged secret or toggle is not what the
    /// host holds at the end.
    pub lost_updates: usize,
    /// Resident memory after warm-up, KiB.
    pub rss_before_kib: u64,
    /// Largest resident memory sampled during the traffic, KiB.
    pub rss_peak_kib: u64,
    /// Resident memory at the end, KiB.
    pub rss_after_kib: u64,
    /// Resident memory sampled during the traffic: (seconds, KiB).
    pub rss_timeline: Vec<(u64, u64)>,
    /// Median and 99th-percentile latency, µs.
    pub latency_p50_us: u64,
    /// See `latency_p50_us`.
    pub latency_p99_us: u64,
    /// Traffic phase duration.
    pub elapsed: Duration,
    /// The host exited cleanly on SIGTERM afterwards.
    pub clean_shutdown: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        write!(
            f,
            "soak: {:.0} s, {} connections, {} requests ({:.0}/s: {} GET, {} PUT secrets, \
             {} toggles), {} errors, {} lost updates, latency p50 {:.2} ms p99 {:.2} ms, \
             RSS {} KiB after warm-up -> {} KiB at the end (peak {} KiB), clean shutdown: {}",
            secs,
            self.connections,
            self.requests,
            self.requests as f64 / secs,
            self.gets,
            self.puts,
            self.toggles,
            self.errors,
            self.lost_updates,
            self.latency_p50_us as f64 / 1000.0,
            self.latency_p99_us as f64 / 1000.0,
            self.rss_before_kib,
            self.rss_after_kib,
            self.rss_peak_kib,
            self.clean_shutdown
        )?;
        let timeline: Vec<String> = self
            .rss_timeline
            .iter()
            .map(|(s, kib)| format!("{s}s:{kib}"))
            .collect();
        write!(f, "; RSS during the run (KiB): {}", timeline.join(" "))?;
        if let Some(e) = &self.first_error {
            write!(f, "; first error: {e}")?;
        }
        Ok(())
    }
}

/// One connection's outcome.
#[derive(Default)]
struct Outcome {
    gets: u64,
    puts: u64,
    toggles: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    /// The last value acknowledged for the connection's key.
    last_value: Option<String>,
    /// The last state acknowledged for the connection's plugin.
    last_enabled: Option<bool>,
}

fn value(c: usize, n: u64) -> String {
    // Long enough that GET shows the last 4 characters.
    format!("soak-value-c{c:03}-n{n:010}")
}

/// Runs the traffic and checks the end state.
pub(crate) async fn run(settings: &Settings) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let plugins = plugin_folder(dir.path())?;
    let catalog = dir.path().join("catalog.json");
    e2e_tests::write_catalog(&catalog, settings.connections, 1)?;
    let config = dir.path().join("milady.toml");
    let log = dir.path().join("host.log");
    let home = e2e_tests::TempHome::new()?;
    let mut host = ChildHost::start(
        &config,
        &plugins,
        std::slice::from_ref(&catalog),
        &log,
        &home,
    )?;

    // Warm-up, so allocator pools and caches exist before the first sample.
    let client = reqwest::Client::new();
    for _ in 0..200 {
        client.get(host.url("/api/secrets")).send().await?;
    }
    let rss_before = host.rss_kib().context("no /proc RSS")?;

    let deadline = Instant::now() + settings.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..settings.connections {
        let base = host.base.clone();
        tasks.push(tokio::spawn(
            async move { connection(c, &base, deadline).await },
        ));
    }
    let mut rss_peak = rss_before;
    let mut rss_timeline = Vec::new();
    let step = (settings.duration / 6).max(Duration::from_millis(250));
    let mut next_sample = started + step;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = host.rss_kib().unwrap_or(0);
        rss_peak = rss_peak.max(rss);
        if Instant::now() >= next_sample {
            rss_timeline.push((started.elapsed().as_secs(), rss));
            next_sample += step;
        }
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(
            tokio::time::timeout(settings.duration + Duration::from_secs(60), task)
                .await
                .context("a connection did not stop")??,
        );
    }
    let elapsed = started.elapsed();
    let rss_after = host.rss_kib().context("no /proc RSS")?;

    // No lost update: the API and the file hold every last acknowledged write.
    let secrets: serde_json::Value = client
        .get(host.url("/api/secrets"))
        .send()
        .await?
        .json()
        .await?;
    let listed: serde_json::Value = client
        .get(host.url("/api/plugins"))
        .send()
        .await?
        .json()
        .await?;
    let text = std::fs::read_to_string(&config)?;
    let doc: toml_edit::DocumentMut = text.parse().context("config file is not TOML")?;
    // Values are stored encrypted: read them through the host's key.
    let stored = e2e_tests::stored_env(&config, &home.key_file())?;
    let mut lost_updates = 0;
    for (c, o) in outcomes.iter().enumerate() {
        let key = format!("P{c}_KEY_0");
        let id = format!("@bench/plugin-{c}");
        let in_file = match stored.get(&key) {
            Some(e2e_tests::Stored::Encrypted(v)) => Some(v.as_str()),
            // Plaintext or unreadable: not what the host writes.
            Some(_) => Some(""),
            None => None,
        };
        let shown = secrets["secrets"][&key]["value"].as_str().unwrap_or("");
        let value_ok = match &o.last_value {
            Some(v) => {
                let tail: String = v
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                in_file == Some(v.as_str()) && shown.ends_with(&tail)
            }
            None => in_file.is_none() && shown.is_empty(),
        };
        let enabled_in_file = doc
            .get("plugins")
            .and_then(|p| p.get("entries"))
            .and_then(|e| e.get(&id))
            .and_then(|e| e.get("enabled"))
            .and_then(|v| v.as_bool());
        let enabled_listed = listed["plugins"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["id"] == id.as_str()))
            .and_then(|p| p["enabled"].as_bool());
        let toggle_ok = match o.last_enabled {
            Some(e) => enabled_in_file == Some(e) && enabled_listed == Some(e),
            None => enabled_in_file.is_none(),
        };
        if !(value_ok && toggle_ok) {
            lost_updates += 1;
        }
    }
    let clean_shutdown = host.terminate()?.success();

    let mut latencies: Vec<u32> = outcomes
        .iter()
        .flat_map(|o| o.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> u64 {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0, |v| u64::from(*v))
    };
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let report = Report {
        connections: settings.connections,
        gets: sum(|o| o.gets),
        puts: sum(|o| o.puts),
        toggles: sum(|o| o.toggles),
        requests: sum(|o| o.gets + o.puts + o.toggles + o.errors),
        errors: sum(|o| o.errors),
        first_error: outcomes.iter().find_map(|o| o.first_error.clone()),
        lost_updates,
        rss_before_kib: rss_before,
        rss_peak_kib: rss_peak.max(rss_after),
        rss_after_kib: rss_after,
        rss_timeline,
        latency_p50_us: pct(0.50),
        latency_p99_us: pct(0.99),
        elapsed,
        clean_shutdown,
    };
    ensure!(
        report.errors == 0 && report.lost_updates == 0 && report.clean_shutdown,
        "soak failed: {report}"
    );
    Ok(report)
}

/// One connection: 6 GETs, 3 PUTs, 1 toggle in every 10 requests, until
/// `deadline` (and at most a million requests).
async fn connection(c: usize, base: &str, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    let Ok(client) = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
    else {
        out.errors += 1;
        out.first_error = Some("cannot build a client".into());
        return out;
    };
    let secrets = format!("{base}/api/secrets");
    let toggle = format!("{base}/api/plugins/%40bench%2Fplugin-{c}");
    let mut enabled = false;
    for n in 0..1_000_000u64 {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        let (request, put_value, toggled) = match n % 10 {
            0..=5 => (client.get(&secrets), None, None),
            6..=8 => {
                let v = value(c, n);
                let body = serde_json::json!({"secrets": {format!("P{c}_KEY_0"): v}});
                (client.put(&secrets).json(&body), Some(v), None)
            }
            _ => {
                let next = !enabled;
                let body = serde_json::json!({"enabled": next});
                (client.put(&toggle).json(&body), None, Some(next))
            }
        };
        match request.send().await {
            Ok(resp) if resp.status() == 200 => {
                // Read the body: a response is only complete with it.
                if let Err(e) = resp.bytes().await {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| format!("body: {e}"));
                    continue;
                }
                if let Some(v) = put_value {
                    out.puts += 1;
                    out.last_value = Some(v);
                } else if let Some(next) = toggled {
                    out.toggles += 1;
                    enabled = next;
                    out.last_enabled = Some(next);
                } else {
                    out.gets += 1;
                }
            }
            Ok(resp) => {
                out.errors += 1;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                out.first_error
                    .get_or_insert_with(|| format!("{status}: {text}"));
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        out.latencies_us
            .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    out
}
