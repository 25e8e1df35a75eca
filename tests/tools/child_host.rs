//! A `demo-host` child process for the reliability tools: started on a free
//! loopback port with a given config file, plugin folder and catalogs,
//! killed (SIGKILL) or stopped (SIGTERM) through its own handle, and
//! measured through `/proc`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// A running host; killed when dropped.
pub(crate) struct ChildHost {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl ChildHost {
    /// Starts the built host with `config`, the plugin folder `plugins` and
    /// `catalogs`, in `home` (its own `HOME` and secrets key); its log (at
    /// `warn`) goes to `log`.
    pub(crate) fn start(
        config: &Path,
        plugins: &Path,
        catalogs: &[PathBuf],
        log: &Path,
        home: &e2e_tests::TempHome,
    ) -> Result<Self> {
        let artifacts = e2e_tests::artifacts()?;
        let mut cmd = Command::new(&artifacts.host);
        cmd.arg("--config")
            .arg(config)
            .arg("--plugins-dir")
            .arg(plugins)
            .args(["--bind", "127.0.0.1:0"])
            .env_remove("MILADY_API_TOKEN")
            .env_remove("MILADY_CONFIG_PATH")
            .env_remove("MILADY_API_BIND")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log)?));
        for c in catalogs {
            cmd.arg("--catalog").arg(c);
        }
        home.apply(&mut cmd);
        let launched = e2e_tests::spawn_listening(&mut cmd, Duration::from_secs(30))?;
        Ok(Self {
            child: launched.child,
            base: launched.base,
        })
    }

    /// The URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (10 s at most) for a graceful exit.
    pub(crate) fn terminate(&mut self) -> Result<ExitStatus> {
        // Not yet reaped, so the id still names this child.
        if self.child.try_wait()?.is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                self.kill();
                bail!("demo-host did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the process in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ChildHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A folder with the secrets plugin installed (copied, then renamed).
pub(crate) fn plugin_folder(parent: &Path) -> Result<PathBuf> {
    let artifacts = e2e_tests::artifacts()?;
    let dir = parent.join("plugins");
    std::fs::create_dir_all(&dir)?;
    let name = artifacts.secrets.file_name().context("library name")?;
    let tmp = dir.join(".installing");
    std::fs::copy(&artifacts.secrets, &tmp)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(dir)
}

/// A small deterministic generator (xorshift64*): the tools print their seed
/// so a run can be repeated.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a constant).
    pub(crate) fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next number.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
