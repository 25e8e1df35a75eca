//! Secrets at rest (SPEC §7) against the real binary: every host runs with
//! its own `HOME` and `XDG_DATA_HOME` in a temporary folder, so its secrets
//! key is its own. Canaries are at least 32 random characters; "no piece"
//! means no 8-character piece of one in any file of the config folder, of
//! the key's home, or in the log.

use std::{io::Read as _, path::Path, process::Output};

use anyhow::{Context as _, Result, ensure};
use e2e_tests::{HostProcess, HostSpec, Stored, TempHome, artifacts, files_holding_pieces, pieces};
use serde_json::{Value, json};

use crate::{get, put};

/// `prefix` and 40 random letters and digits.
fn canary(prefix: &str) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 40];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().fold(prefix.to_owned(), |mut s, b| {
        s.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
        s
    }))
}

async fn secrets(h: &HostProcess) -> Result<Value> {
    let (status, body) = get(h, "/api/secrets").await?;
    ensure!(status == 200, "GET /api/secrets answered {status}");
    Ok(body["secrets"].clone())
}

async fn put_secrets(h: &HostProcess, secrets: Value) -> Result<()> {
    let (status, body) = put(h, "/api/secrets", &json!({ "secrets": secrets })).await?;
    ensure!(status == 200, "PUT answered {status}: {body}");
    Ok(())
}

/// No 8-character piece of `secret` under the config folder, under the
/// host's home (its key folder), or in its log.
fn assert_no_piece(h: &HostProcess, secret: &str) -> Result<()> {
    for folder in [h.dir.path(), h.home.path()] {
        let found = files_holding_pieces(folder, secret)?;
        ensure!(found.is_empty(), "pieces of a secret on disk: {found:?}");
    }
    let log = h.log();
    let leaked: Vec<String> = pieces(secret)
        .into_iter()
        .filter(|p| log.contains(p.as_str()))
        .collect();
    ensure!(
        leaked.is_empty(),
        "pieces of a secret in the log: {leaked:?}"
    );
    Ok(())
}

/// `demo-host --config <config> [--plugins-dir <plugins>] <args>` in `home`.
fn cli(home: &TempHome, config: &Path, plugins: Option<&Path>, args: &[&str]) -> Result<Output> {
    let mut cmd = std::process::Command::new(&artifacts()?.host);
    cmd.arg("--config").arg(config);
    if let Some(dir) = plugins {
        cmd.arg("--plugins-dir").arg(dir);
    }
    cmd.args(args)
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    home.apply(&mut cmd);
    Ok(cmd.output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of `[env]` entry `key` in the config file.
fn line_of(h: &HostProcess, key: &str) -> Result<String> {
    std::fs::read_to_string(h.config_path())?
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .map(str::to_owned)
        .with_context(|| format!("no {key} line"))
}

fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// A key file of a new, unrelated identity at `path` (mode 0600).
fn write_stranger_key(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let id = age::x25519::Identity::generate();
    let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_owned();
    std::fs::write(path, format!("# another key\n{secret}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[tokio::test]
async fn a_put_secret_leaves_no_piece_of_itself_on_disk_or_in_logs() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    ensure!(
        !h.key_path().exists(),
        "the key is created on first use only"
    );
    let (openai, groq) = (canary("sk-")?, canary("gsk_")?);
    put_secrets(
        &h,
        json!({"OPENAI_API_KEY": &openai, "GROQ_API_KEY": &groq}),
    )
    .await?;

    // The key: 0600 in a 0700 folder of the host's home, not beside the config.
    let key = h.key_path();
    assert_eq!(mode(&key)?, 0o600);
    assert_eq!(mode(key.parent().context("key folder")?)?, 0o700);
    assert!(!h.dir.path().join("secrets.key").exists());
    let stored = h.stored_env()?;
    assert_eq!(stored["OPENAI_API_KEY"], Stored::Encrypted(openai.clone()));
    assert_eq!(stored["GROQ_API_KEY"], Stored::Encrypted(groq.clone()));
    assert!(line_of(&h, "OPENAI_API_KEY")?.starts_with("OPENAI_API_KEY = { age = \""));
    let shown = secrets(&h).await?;
    for key in ["OPENAI_API_KEY", "GROQ_API_KEY"] {
        assert_eq!(shown[key]["encrypted"], true, "{key}: {}", shown[key]);
        assert!(shown[key].get("unreadable").is_none(), "{}", shown[key]);
    }
    assert_eq!(shown["ANTHROPIC_API_KEY"]["encrypted"], false, "unset");
    for secret in [&openai, &groq] {
        assert_no_piece(&h, secret)?;
    }

    // Core dumps are off in the host.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", h.pid()))?;
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .context("no core limit")?;
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );

    // Across a restart: the same values (read once, at start-up), the same
    // redaction, now from the config file.
    let h = h.restart()?;
    let after = secrets(&h).await?;
    for key in ["OPENAI_API_KEY", "GROQ_API_KEY"] {
        assert_eq!(after[key]["set"], true, "{key}");
        assert_eq!(after[key]["value"], shown[key]["value"], "{key}");
        assert_eq!(after[key]["source"], "config", "{key}");
        assert_eq!(after[key]["encrypted"], true, "{key}");
    }
    for secret in [&openai, &groq] {
        assert_no_piece(&h, secret)?;
    }
    Ok(())
}

#[tokio::test]
async fn secrets_encrypt_rewrites_a_hand_written_file_keeping_its_comments() -> Result<()> {
    let (openai, groq) = (canary("sk-hand-")?, canary("gsk-hand-")?);
    let config = format!(
        "# my notes about this host\n[env]\n# the main provider\n\
         OPENAI_API_KEY = \"{openai}\"  # from the dashboard\n\
         GROQ_API_KEY = '{groq}'\n\n[other]   # unrelated\nkept = [1, 2, 3]\n"
    );
    let h = HostProcess::start(HostSpec::with_secrets()?.config(&config))?;
    let before = secrets(&h).await?;
    assert_eq!(before["OPENAI_API_KEY"]["set"], true);
    assert_eq!(
        before["OPENAI_API_KEY"]["encrypted"], false,
        "hand-written plaintext"
    );

    // While the host runs: both take the config's write lock.
    let out = cli(&h.home, &h.config_path(), None, &["secrets", "encrypt"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("encrypted 2 value(s)"),
        "{}",
        text(&out.stdout)
    );
    let written = std::fs::read_to_string(h.config_path())?;
    assert!(
        written.starts_with("# my notes about this host\n[env]\n# the main provider\n"),
        "{written}"
    );
    assert!(written.contains("}  # from the dashboard\n"), "{written}");
    assert!(written.contains("[other]   # unrelated\nkept = [1, 2, 3]\n"));
    let stored = h.stored_env()?;
    assert_eq!(stored["OPENAI_API_KEY"], Stored::Encrypted(openai.clone()));
    assert_eq!(stored["GROQ_API_KEY"], Stored::Encrypted(groq.clone()));
    for secret in [&openai, &groq] {
        ensure!(files_holding_pieces(h.dir.path(), secret)?.is_empty());
    }

    let h = h.restart()?;
    let after = secrets(&h).await?;
    for key in ["OPENAI_API_KEY", "GROQ_API_KEY"] {
        assert_eq!(after[key]["value"], before[key]["value"], "{key}");
        assert_eq!(after[key]["set"], true);
        assert_eq!(after[key]["encrypted"], true, "{key}");
    }
    Ok(())
}

#[tokio::test]
async fn rotate_key_waits_for_the_host_to_stop_then_re_encrypts_everything() -> Result<()> {
    let mut h = HostProcess::start(HostSpec::with_secrets()?)?;
    let values = [
        ("OPENAI_API_KEY", canary("sk-")?),
        ("ANTHROPIC_API_KEY", canary("sk-ant-")?),
        ("GROQ_API_KEY", canary("gsk_")?),
    ];
    put_secrets(
        &h,
        json!(
            values
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        ),
    )
    .await?;
    let shown = secrets(&h).await?;
    let (config_before, key_before) = (
        std::fs::read(h.config_path())?,
        std::fs::read(h.key_path())?,
    );

    let out = cli(&h.home, &h.config_path(), None, &["secrets", "rotate-key"])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("a host is running"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(h.config_path())?, config_before);
    assert_eq!(std::fs::read(h.key_path())?, key_before);

    h.terminate()?;
    let old = e2e_tests::identities(&h.key_path())?;
    let out = cli(&h.home, &h.config_path(), None, &["secrets", "rotate-key"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("re-encrypted 3 value(s)"),
        "{}",
        text(&out.stdout)
    );
    assert_ne!(std::fs::read(h.key_path())?, key_before);
    assert_eq!(mode(&h.key_path())?, 0o600);
    let stored = h.stored_env()?;
    for (key, value) in &values {
        assert_eq!(stored[*key], Stored::Encrypted(value.clone()), "{key}");
        let text = line_of(&h, key)?;
        let sealed = text.split('"').nth(1).context("no ciphertext")?;
        assert!(
            e2e_tests::open(&old, key, sealed).is_err(),
            "the old key still opens {key}"
        );
    }

    let h = h.restart()?;
    let after = secrets(&h).await?;
    for (key, _) in &values {
        assert_eq!(after[*key]["value"], shown[*key]["value"], "{key}");
    }
    Ok(())
}

/// Starts a host, writes three keys, stops it, lets `break_key` do its
/// worst to the key file, and starts it again: the host starts, reports
/// the keys as not set, names each key and the cause in its log, keeps
/// their bytes through a write of another key, and lets a PUT replace one.
async fn start_without_a_usable_key(break_key: fn(&Path) -> Result<()>, cause: &str) -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let values = [
        ("OPENAI_API_KEY", canary("sk-")?),
        ("ANTHROPIC_API_KEY", canary("sk-ant-")?),
    ];
    put_secrets(
        &h,
        json!(
            values
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        ),
    )
    .await?;
    let lines_before: Vec<String> = values
        .iter()
        .map(|(k, _)| line_of(&h, k))
        .collect::<Result<_>>()?;
    let mut h = h;
    h.terminate()?;
    break_key(&h.key_path())?;
    let h = h.restart()?;

    let shown = secrets(&h).await?;
    let log = h.log();
    for (key, value) in &values {
        assert_eq!(shown[*key]["set"], false, "{key}: not set with some value");
        assert_eq!(shown[*key]["value"], "", "{key}");
        assert_eq!(shown[*key]["encrypted"], true, "{key}");
        let reason = shown[*key]["unreadable"].as_str().unwrap_or_default();
        assert!(reason.contains(cause), "{key}: {}", shown[*key]);
        let line = log
            .lines()
            .find(|l| l.contains("cannot be read") && l.contains(key))
            .with_context(|| format!("no log line names {key}:\n{log}"))?;
        assert!(line.contains(cause), "{line}");
        assert_no_piece(&h, value)?;
    }

    // Writes of other keys leave the unreadable bytes alone.
    let groq = canary("gsk_")?;
    put_secrets(&h, json!({"GROQ_API_KEY": &groq})).await?;
    for ((key, _), before) in values.iter().zip(&lines_before) {
        assert_eq!(&line_of(&h, key)?, before, "{key} kept byte for byte");
    }
    assert_eq!(h.stored_env()?["GROQ_API_KEY"], Stored::Encrypted(groq));

    // A PUT of the key itself replaces it.
    let fresh = canary("sk-fresh-")?;
    put_secrets(&h, json!({"OPENAI_API_KEY": &fresh})).await?;
    assert_eq!(h.stored_env()?["OPENAI_API_KEY"], Stored::Encrypted(fresh));
    let after = secrets(&h).await?;
    assert_eq!(after["OPENAI_API_KEY"]["set"], true);
    assert!(after["OPENAI_API_KEY"].get("unreadable").is_none());
    assert!(after["ANTHROPIC_API_KEY"]["unreadable"].is_string());
    assert_eq!(line_of(&h, "ANTHROPIC_API_KEY")?, lines_before[1]);
    Ok(())
}

#[tokio::test]
async fn a_missing_key_loses_no_value() -> Result<()> {
    start_without_a_usable_key(|key| Ok(std::fs::remove_file(key)?), "does not exist").await
}

#[tokio::test]
async fn a_wrong_key_loses_no_value() -> Result<()> {
    start_without_a_usable_key(write_stranger_key, "another secrets key").await
}

#[tokio::test]
async fn a_copy_of_the_config_folder_under_a_fresh_home_reads_nothing() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let values = [
        ("OPENAI_API_KEY", canary("sk-")?),
        ("ANTHROPIC_API_KEY", canary("sk-ant-")?),
        ("TAVILY_API_KEY", canary("tvly-")?),
    ];
    put_secrets(
        &h,
        json!(
            values
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        ),
    )
    .await?;
    let copied = std::fs::read_to_string(h.config_path())?;
    drop(h);

    // Another machine: the same config, another HOME.
    let other = HostProcess::start(HostSpec::with_secrets()?.config(&copied))?;
    let shown = secrets(&other).await?;
    for (key, value) in &values {
        assert_eq!(shown[*key]["set"], false, "{key}");
        assert!(
            shown[*key]["unreadable"].is_string(),
            "{key}: {}",
            shown[*key]
        );
        assert!(
            matches!(other.stored_env()?[*key], Stored::Unreadable(_)),
            "{key}"
        );
        assert_no_piece(&other, value)?;
    }
    Ok(())
}

#[tokio::test]
async fn opting_out_stores_plaintext_and_needs_no_key() -> Result<()> {
    let h = HostProcess::start(
        HostSpec::with_secrets()?.config("[security]\nencrypt_env = false\n\n[env]\n"),
    )?;
    let value = canary("sk-plain-")?;
    put_secrets(&h, json!({"OPENAI_API_KEY": &value})).await?;
    assert_eq!(
        h.stored_env()?["OPENAI_API_KEY"],
        Stored::Plain(value.clone())
    );
    assert!(line_of(&h, "OPENAI_API_KEY")?.contains(&value));
    assert_eq!(secrets(&h).await?["OPENAI_API_KEY"]["encrypted"], false);
    assert!(!h.key_path().exists(), "no key is created");
    Ok(())
}

#[tokio::test]
async fn import_brings_in_a_dotenv_file_all_or_nothing() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    put_secrets(&h, json!({"GROQ_API_KEY": canary("gsk_")?})).await?;
    let plugins = h.dir.path().join("plugins");
    let files = tempfile::tempdir()?;

    // One refused key refuses the file: nothing is written.
    let (openai, anthropic) = (canary("sk-")?, canary("sk-ant-")?);
    let bad = files.path().join("bad.env");
    std::fs::write(
        &bad,
        format!("OPENAI_API_KEY={openai}\nPATH=/tmp/evil\nNOT_A_DECLARED_KEY=x-{anthropic}\n"),
    )?;
    let before = std::fs::read(h.config_path())?;
    let out = cli(
        &h.home,
        &h.config_path(),
        Some(&plugins),
        &["secrets", "import", bad.to_str().context("path")?],
    )?;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert!(
        stderr.contains("PATH") && stderr.contains("NOT_A_DECLARED_KEY"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&openai[..12]),
        "no value in the error: {stderr}"
    );
    assert_eq!(std::fs::read(h.config_path())?, before);

    // A good file, with the forms elizaOS users have, is imported encrypted.
    let good = files.path().join(".env");
    std::fs::write(
        &good,
        format!(
            "# my agent\nexport OPENAI_API_KEY={openai}\nANTHROPIC_API_KEY=\"{anthropic}\"  # main\n\
             TAVILY_API_KEY=\n"
        ),
    )?;
    let out = cli(
        &h.home,
        &h.config_path(),
        Some(&plugins),
        &["secrets", "import", good.to_str().context("path")?],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("imported 2 secret(s)"), "{stdout}");
    assert!(
        stdout.contains("skipped 1 empty value(s): TAVILY_API_KEY"),
        "{stdout}"
    );
    let stored = h.stored_env()?;
    assert_eq!(stored["OPENAI_API_KEY"], Stored::Encrypted(openai.clone()));
    assert_eq!(
        stored["ANTHROPIC_API_KEY"],
        Stored::Encrypted(anthropic.clone())
    );
    assert!(matches!(stored["GROQ_API_KEY"], Stored::Encrypted(_)));

    // The running host's next write keeps what the import wrote.
    put_secrets(&h, json!({"ELEVENLABS_API_KEY": canary("el-")?})).await?;
    let stored = h.stored_env()?;
    assert_eq!(stored["OPENAI_API_KEY"], Stored::Encrypted(openai.clone()));
    let h = h.restart()?;
    let shown = secrets(&h).await?;
    for key in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GROQ_API_KEY",
        "ELEVENLABS_API_KEY",
    ] {
        assert_eq!(shown[key]["set"], true, "{key}");
    }
    for secret in [&openai, &anthropic] {
        assert_no_piece(&h, secret)?;
    }
    Ok(())
}

#[tokio::test]
async fn the_key_may_come_from_the_environment_and_stays_hidden() -> Result<()> {
    let id = age::x25519::Identity::generate();
    let key_text = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_owned();
    let h = HostProcess::start(HostSpec::with_secrets()?.env("MILADY_SECRETS_KEY", &key_text))?;
    let value = canary("sk-")?;
    put_secrets(&h, json!({"OPENAI_API_KEY": &value})).await?;
    let sealed = line_of(&h, "OPENAI_API_KEY")?;
    let sealed = sealed.split('"').nth(1).context("no ciphertext")?;
    assert_eq!(e2e_tests::open(&[id], "OPENAI_API_KEY", sealed)?, value);
    assert!(!h.key_path().exists(), "no key file when the key is given");
    // The API cannot write it, and no piece of the key is on disk or logged.
    let (status, _) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"MILADY_SECRETS_KEY": "AGE-SECRET-KEY-1X"}}),
    )
    .await?;
    assert_eq!(status, 400);
    assert_no_piece(&h, &key_text)?;

    // Plugins never see it in the runtime environment.
    let dir = tempfile::tempdir()?;
    let mut options = demo_host::HostOptions::new(dir.path().join("cfg").join("milady.toml"));
    options.secrets_key = demo_host::SecretsKey::File(dir.path().join("key").join("secrets.key"));
    let host = demo_host::Host::build(options, vec![("MILADY_SECRETS_KEY".to_owned(), key_text)])?;
    assert!(host.env.snapshot().get("MILADY_SECRETS_KEY").is_none());
    Ok(())
}

#[tokio::test]
async fn a_key_file_beside_the_config_is_refused_at_start_up() -> Result<()> {
    let home = TempHome::new()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("milady.toml");
    let out = cli(
        &home,
        &config,
        Some(&dir.path().join("plugins")),
        &[
            "--secrets-key",
            dir.path().join("secrets.key").to_str().context("path")?,
            "openapi",
        ],
    )?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("config file's folder"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}
