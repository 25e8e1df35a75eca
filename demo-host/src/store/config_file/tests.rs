//! Tests of the config-file store: what it reads, what its writes keep and
//! change, file modes, concurrent writers, and every failure (invalid or
//! wrongly shaped files, read-only folders, vanished files, injected faults)
//! leaving the file untouched and no secret in any message.

use super::*;
use proptest::prelude::*;
use std::error::Error;
use std::os::unix::fs::MetadataExt;

type TestResult = Result<(), Box<dyn Error>>;

/// The example file of the spec, with some odd formatting thrown in.
const SAMPLE: &str = r#"# comments anywhere must survive every write
[env]
OPENAI_API_KEY = "sk-old"      # secrets/env vars: string values
  INDENTED   =   'literal'   # odd formatting kept

[plugins.entries."@elizaos/plugin-openai"]
enabled = true

[security]
blocked_env_keys = ["MY_EXTRA_KEY", "*_SECRET_PATH"]   # optional

[other]   # unrelated tables must be kept byte for byte
x = [ 1,2 ,3 ]
y = { a = 1 }
# trailing comment
"#;

fn edit(key: &str, value: Option<&str>) -> EnvChange {
    match value {
        Some(value) => EnvChange::set(key, value),
        None => EnvChange::clear(key),
    }
}

fn mode(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.mode() & 0o777)
}

/// A store for `milady.toml` in a fresh temp folder (kept alive by the guard).
fn temp_store() -> io::Result<(tempfile::TempDir, ConfigStore)> {
    let dir = tempfile::tempdir()?;
    let store = ConfigStore::new(dir.path().join("milady.toml"));
    Ok((dir, store))
}

/// Names in `dir`, to check no temp file is left behind. The write lock
/// file every writer takes (`milady.toml.lock`, empty) is left out.
fn dir_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.as_ref().map_or(true, |n| n != "milady.toml.lock"))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

#[test]
fn load_of_missing_file_is_empty_and_creates_nothing() -> TestResult {
    let (dir, store) = temp_store()?;
    assert_eq!(store.load()?, ConfigSnapshot::default());
    assert!(!store.path().exists());
    // Removing from a missing file writes nothing either.
    store.apply_env(&[edit("GONE", None)])?;
    assert!(dir_names(dir.path())?.is_empty());
    Ok(())
}

#[test]
fn load_extracts_everything() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    let snapshot = store.load()?;
    assert_eq!(
        snapshot.env.get("OPENAI_API_KEY").map(String::as_str),
        Some("sk-old")
    );
    assert_eq!(
        snapshot.env.get("INDENTED").map(String::as_str),
        Some("literal")
    );
    assert_eq!(
        snapshot.plugin_enabled.get("@elizaos/plugin-openai"),
        Some(&true)
    );
    assert_eq!(snapshot.blocked_env_keys, ["MY_EXTRA_KEY", "*_SECRET_PATH"]);
    Ok(())
}

#[test]
fn writes_preserve_everything_but_the_changed_lines() -> TestResult {
    let (dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    let snapshot = store.apply_env(&[
        edit("OPENAI_API_KEY", Some("sk-new")),
        edit("ADDED", Some("x")),
    ])?;
    store.set_plugin_enabled("@elizaos/plugin-openai", false)?;
    let expected = SAMPLE
        .replace(r#""sk-old"      #"#, r#""sk-new"      #"#)
        .replace(
            "# odd formatting kept\n",
            "# odd formatting kept\nADDED = \"x\"\n",
        )
        .replace("enabled = true", "enabled = false");
    assert_eq!(fs::read_to_string(store.path())?, expected);
    assert_eq!(snapshot.env.get("ADDED").map(String::as_str), Some("x"));
    assert_eq!(
        snapshot.env.get("OPENAI_API_KEY").map(String::as_str),
        Some("sk-new")
    );
    assert_eq!(
        store.load()?.plugin_enabled.get("@elizaos/plugin-openai"),
        Some(&false)
    );
    assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
    Ok(())
}

#[test]
fn set_overwrite_and_clear_a_key() -> TestResult {
    let (_dir, store) = temp_store()?;
    store.apply_env(&[edit("A", Some("1"))])?;
    assert_eq!(fs::read_to_string(store.path())?, "[env]\nA = \"1\"\n");
    let snapshot = store.apply_env(&[edit("A", Some("2")), edit("B", Some("3"))])?;
    assert_eq!(
        fs::read_to_string(store.path())?,
        "[env]\nA = \"2\"\nB = \"3\"\n"
    );
    assert_eq!(snapshot, store.load()?);
    store.apply_env(&[edit("A", None)])?;
    assert_eq!(fs::read_to_string(store.path())?, "[env]\nB = \"3\"\n");
    // Removing the last key keeps the header.
    let snapshot = store.apply_env(&[edit("B", None)])?;
    assert_eq!(fs::read_to_string(store.path())?, "[env]\n");
    assert!(snapshot.env.is_empty());
    Ok(())
}

#[test]
fn tricky_values_round_trip_as_basic_strings() -> TestResult {
    let (_dir, store) = temp_store()?;
    let tricky = "quote \" backslash \\ newline \n tab \t cr \r nul \0 del \u{7f} é 🦀 '''\"\"\"";
    store.apply_env(&[edit("TRICKY", Some(tricky))])?;
    assert_eq!(
        store.load()?.env.get("TRICKY").map(String::as_str),
        Some(tricky)
    );
    let text = fs::read_to_string(store.path())?;
    assert_eq!(
        text,
        "[env]\nTRICKY = \"quote \\\" backslash \\\\ newline \\n tab \\t cr \\r nul \\u0000 \
         del \\u007F é 🦀 '''\\\"\\\"\\\"\"\n"
    );
    Ok(())
}

#[test]
fn unchanged_value_is_not_rewritten() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    let before = fs::metadata(store.path())?.ino();
    store.apply_env(&[edit("INDENTED", Some("literal"))])?;
    store.set_plugin_enabled("@elizaos/plugin-openai", true)?;
    // Same inode: the file was not replaced, and the literal quoting stays.
    assert_eq!(fs::metadata(store.path())?.ino(), before);
    assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
    Ok(())
}

#[test]
fn plugin_toggle_creates_a_proper_header() -> TestResult {
    let (_dir, store) = temp_store()?;
    let snapshot = store.set_plugin_enabled("@elizaos/plugin-openai", true)?;
    assert_eq!(
        fs::read_to_string(store.path())?,
        "[plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n"
    );
    assert_eq!(
        snapshot.plugin_enabled.get("@elizaos/plugin-openai"),
        Some(&true)
    );
    store.set_plugin_enabled("@x/y", false)?;
    assert_eq!(
        fs::read_to_string(store.path())?,
        "[plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n\n\
         [plugins.entries.\"@x/y\"]\nenabled = false\n"
    );
    Ok(())
}

#[test]
fn plugin_toggle_next_to_existing_tables() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    store.set_plugin_enabled("@x/y", true)?;
    let expected = SAMPLE.replace(
        "enabled = true\n",
        "enabled = true\n\n[plugins.entries.\"@x/y\"]\nenabled = true\n",
    );
    assert_eq!(fs::read_to_string(store.path())?, expected);
    Ok(())
}

#[test]
fn plugin_entry_with_only_a_sub_table_gets_its_header() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(
        store.path(),
        "[plugins.entries.\"@x/y\".config]\nmodel = \"m\"\n",
    )?;
    store.set_plugin_enabled("@x/y", true)?;
    let text = fs::read_to_string(store.path())?;
    assert!(
        text.contains("[plugins.entries.\"@x/y\"]\nenabled = true\n"),
        "{text}"
    );
    assert!(
        text.contains("[plugins.entries.\"@x/y\".config]\nmodel = \"m\"\n"),
        "{text}"
    );
    assert_eq!(store.load()?.plugin_enabled.get("@x/y"), Some(&true));
    Ok(())
}

#[test]
fn inline_tables_are_read_and_edited() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(
        store.path(),
        "env = { A = \"1\" }\nplugins = { entries = {} }\n",
    )?;
    store.apply_env(&[edit("B", Some("2"))])?;
    let snapshot = store.set_plugin_enabled("@x/y", true)?;
    assert_eq!(snapshot.env.len(), 2);
    assert_eq!(snapshot.plugin_enabled.get("@x/y"), Some(&true));
    assert_eq!(store.load()?, snapshot);
    Ok(())
}

#[test]
fn missing_folder_is_created_0700_and_file_is_0600() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("state").join("milady");
    let store = ConfigStore::new(folder.join("milady.toml"));
    store.apply_env(&[edit("K", Some("v"))])?;
    assert_eq!(mode(&folder)?, 0o700);
    assert_eq!(mode(store.path())?, 0o600);
    Ok(())
}

#[test]
fn looser_existing_mode_is_fixed() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    fs::set_permissions(store.path(), Permissions::from_mode(0o644))?;
    store.apply_env(&[edit("K", Some("v"))])?;
    assert_eq!(mode(store.path())?, 0o600);
    // Also when the write is skipped because nothing changed.
    fs::set_permissions(store.path(), Permissions::from_mode(0o644))?;
    store.apply_env(&[edit("K", Some("v"))])?;
    assert_eq!(mode(store.path())?, 0o600);
    Ok(())
}

#[test]
fn concurrent_writers_lose_nothing() -> TestResult {
    const THREADS: usize = 16;
    const KEYS: usize = 4;
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                scope.spawn(move || -> Result<(), ConfigError> {
                    for k in 0..KEYS {
                        store.apply_env(&[EnvChange::set(
                            format!("K_{t}_{k}"),
                            format!("v{t}.{k}"),
                        )])?;
                    }
                    store.set_plugin_enabled(&format!("@p/{t}"), t % 2 == 0)?;
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("writer thread panicked")?;
        }
        Ok::<_, ConfigError>(())
    })?;
    let snapshot = store.load()?;
    for t in 0..THREADS {
        for k in 0..KEYS {
            assert_eq!(
                snapshot.env.get(&format!("K_{t}_{k}")),
                Some(&format!("v{t}.{k}"))
            );
        }
        assert_eq!(
            snapshot.plugin_enabled.get(&format!("@p/{t}")),
            Some(&(t % 2 == 0))
        );
    }
    assert_eq!(snapshot.env.len(), THREADS * KEYS + 2);
    assert!(
        fs::read_to_string(store.path())?.starts_with(SAMPLE.lines().next().unwrap_or_default())
    );
    Ok(())
}

#[test]
fn hand_edit_between_writes_survives() -> TestResult {
    let (_dir, store) = temp_store()?;
    store.apply_env(&[edit("A", Some("1"))])?;
    let mut text = fs::read_to_string(store.path())?;
    text.push_str("HAND = \"edited\" # by hand\n\n[mine]\nz = 1\n");
    fs::write(store.path(), &text)?;
    store.apply_env(&[edit("B", Some("2"))])?;
    assert_eq!(
        fs::read_to_string(store.path())?,
        "[env]\nA = \"1\"\nHAND = \"edited\" # by hand\nB = \"2\"\n\n[mine]\nz = 1\n"
    );
    Ok(())
}

#[test]
fn parse_error_has_position_and_no_secret() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(
        store.path(),
        "[env]\nA = \"ok\"\nSECRET = \"sk-live-abc123\" oops\n",
    )?;
    let err = store.load().expect_err("invalid TOML must not load");
    let ConfigError::Parse {
        line,
        column,
        ref reason,
        ..
    } = err
    else {
        panic!("expected a Parse error, got {err:?}");
    };
    assert_eq!((line, column), (3, 27));
    assert!(!reason.is_empty());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("sk-live"), "{text}");
        assert!(!text.contains("oops"), "{text}");
    }
    Ok(())
}

#[test]
fn parse_error_column_counts_characters() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), "# é🦀\n[env]\nK = \"é🦀\" x\n")?;
    let err = store.load().expect_err("invalid TOML must not load");
    assert!(
        matches!(
            err,
            ConfigError::Parse {
                line: 3,
                column: 10,
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn invalid_utf8_is_a_parse_error() -> TestResult {
    let (_dir, store) = temp_store()?;
    fs::write(store.path(), b"[env]\nK = \"ab\xff\"\n")?;
    let err = store.load().expect_err("invalid UTF-8 must not load");
    assert!(
        matches!(
            err,
            ConfigError::Parse {
                line: 2,
                column: 8,
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn invalid_file_at_write_time_is_left_untouched() -> TestResult {
    let (dir, store) = temp_store()?;
    let bad = "# mine\n[env]\nA = \"sk-secret\n";
    fs::write(store.path(), bad)?;
    let err = store
        .apply_env(&[edit("B", Some("2"))])
        .expect_err("writing over invalid TOML must fail");
    assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err:?}");
    assert!(!err.to_string().contains("sk-secret"));
    assert_eq!(fs::read(store.path())?, bad.as_bytes());
    assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
    Ok(())
}

#[test]
fn read_only_folder_fails_without_changes() -> TestResult {
    let (dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    fs::set_permissions(dir.path(), Permissions::from_mode(0o500))?;
    let result = store.apply_env(&[edit("K", Some("v"))]);
    // Restore first so the temp folder can be cleaned up whatever happens.
    fs::set_permissions(dir.path(), Permissions::from_mode(0o700))?;
    match result {
        Err(err) => {
            assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
            assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
            assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
        }
        Ok(_) => println!(
            "note: write into a 0500 folder succeeded (running as root bypasses \
             permissions); read-only assertion skipped"
        ),
    }
    Ok(())
}

#[test]
fn folder_in_place_of_the_file_is_an_io_error() -> TestResult {
    let (dir, store) = temp_store()?;
    fs::create_dir(store.path())?;
    let err = store.load().expect_err("a folder is not a config file");
    assert!(
        matches!(err, ConfigError::Io { action: "read", .. }),
        "{err:?}"
    );
    let err = store
        .apply_env(&[edit("K", Some("v"))])
        .expect_err("a folder cannot be replaced");
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(store.path().is_dir());
    assert!(dir_names(store.path())?.is_empty());
    assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
    assert!(!store.create_default_if_missing()?);
    Ok(())
}

#[test]
fn folder_in_place_of_the_file_fails_at_rename_too() -> TestResult {
    // Reach the rename step: the read succeeds on a file, which is swapped
    // for a folder by the edit callback.
    let (dir, store) = temp_store()?;
    fs::write(store.path(), "")?;
    let path = store.path().to_path_buf();
    let err = store
        .update(|doc| {
            let swapped = fs::remove_file(&path).and_then(|()| fs::create_dir(&path));
            swapped.expect("swap file for folder");
            doc.insert("x", toml_edit::value(1));
        })
        .expect_err("a folder cannot be replaced");
    assert!(
        matches!(
            err,
            ConfigError::Io {
                action: "replace",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(store.path().is_dir());
    assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
    Ok(())
}

#[test]
fn shape_errors_name_the_key_not_the_value() -> TestResult {
    let (_dir, store) = temp_store()?;
    let cases = [
        ("env = 3\n", "`env`"),
        ("[env]\nX = 5\n", "\"X\""),
        (
            "[plugins.entries.\"@x/y\"]\nenabled = \"yes\"\n",
            "`enabled`",
        ),
        ("[plugins]\nentries = 7\n", "`plugins.entries`"),
        (
            "[security]\nblocked_env_keys = [\"A\", 9]\n",
            "blocked_env_keys",
        ),
    ];
    for (text, names) in cases {
        fs::write(store.path(), text)?;
        let err = store.load().expect_err("wrong shape must not load");
        let ConfigError::Shape { ref message, .. } = err else {
            panic!("expected a Shape error for {text:?}, got {err:?}");
        };
        assert!(message.contains(names), "{message}");
        for value in ["3", "5", "yes", "7", "9"] {
            assert!(!message.contains(value), "{message} contains {value}");
        }
        // A write refuses too and leaves the file alone.
        assert!(matches!(
            store.apply_env(&[edit("OTHER", Some("v"))]),
            Err(ConfigError::Shape { .. })
        ));
        assert_eq!(fs::read_to_string(store.path())?, text);
    }
    Ok(())
}

#[test]
fn update_cannot_write_a_wrong_shape() -> TestResult {
    let (dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    let before = dir_names(dir.path())?;
    for _ in 0..2 {
        let err = store
            .update(|doc| {
                doc["env"]["N"] = toml_edit::value(5);
            })
            .expect_err("the edit breaks the shape");
        assert!(matches!(err, ConfigError::Shape { .. }), "{err:?}");
        // The text was synced to a temporary file while it was checked: the
        // refusal removed it and left the file as it was.
        assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
        assert_eq!(dir_names(dir.path())?, before);
    }
    store.apply_env(&[edit("FINE", Some("after-the-refusals"))])?;
    assert_eq!(store.load()?.env["FINE"], "after-the-refusals");
    Ok(())
}

#[test]
fn debug_of_snapshot_shows_keys_not_values() -> TestResult {
    let (_dir, store) = temp_store()?;
    let snapshot = store.apply_env(&[edit("OPENAI_API_KEY", Some("sk-very-secret"))])?;
    let debug = format!("{snapshot:?}");
    assert!(debug.contains("OPENAI_API_KEY"), "{debug}");
    assert!(!debug.contains("sk-very-secret"), "{debug}");
    Ok(())
}

#[test]
fn default_file_is_created_once_and_stays_editable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("new");
    let store = ConfigStore::new(folder.join("milady.toml"));
    assert!(store.create_default_if_missing()?);
    assert_eq!(mode(store.path())?, 0o600);
    assert_eq!(mode(&folder)?, 0o700);
    assert_eq!(fs::read_to_string(store.path())?, DEFAULT_CONFIG);
    assert_eq!(store.load()?, ConfigSnapshot::default());
    assert!(!store.create_default_if_missing()?);

    store.apply_env(&[edit("OPENAI_API_KEY", Some("sk-1"))])?;
    store.set_plugin_enabled("@elizaos/plugin-openai", true)?;
    let expected = format!(
        "{DEFAULT_CONFIG}OPENAI_API_KEY = \"sk-1\"\n\n\
         [plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n"
    );
    assert_eq!(fs::read_to_string(store.path())?, expected);
    // An existing file is never overwritten.
    assert!(!store.create_default_if_missing()?);
    assert_eq!(fs::read_to_string(store.path())?, expected);
    Ok(())
}

#[test]
fn symlinked_file_is_written_through() -> TestResult {
    let dir = tempfile::tempdir()?;
    let real = dir.path().join("dotfiles").join("milady.toml");
    fs::create_dir(dir.path().join("dotfiles"))?;
    fs::write(&real, SAMPLE)?;
    let link = dir.path().join("milady.toml");
    std::os::unix::fs::symlink(&real, &link)?;
    let store = ConfigStore::new(&link);
    store.apply_env(&[edit("K", Some("v"))])?;
    assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
    assert_eq!(store.load()?.env.get("K").map(String::as_str), Some("v"));
    assert_eq!(mode(&real)?, 0o600);
    Ok(())
}

#[test]
fn a_file_removed_while_running_is_not_recreated() -> TestResult {
    let (dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    store.load()?;
    fs::remove_file(store.path())?;
    let err = store
        .apply_env(&[edit("K", Some("sk-canary-value"))])
        .expect_err("recreating would drop every other secret from disk");
    assert!(matches!(err, ConfigError::Vanished { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("removed while the host was running")
    );
    assert!(store.set_plugin_enabled("p", true).is_err());
    assert!(dir_names(dir.path())?.is_empty());
    // Restored by hand: writes work again.
    fs::write(store.path(), SAMPLE)?;
    store.apply_env(&[edit("K", Some("v"))])?;
    assert_eq!(store.load()?.env.get("K").map(String::as_str), Some("v"));
    Ok(())
}

#[test]
fn temp_files_of_interrupted_writes_are_removed_on_load() -> TestResult {
    let (dir, store) = temp_store()?;
    fs::write(store.path(), SAMPLE)?;
    fs::write(
        dir.path().join(".milady.toml.a1B2c3.tmp"),
        "sk-half-written",
    )?;
    fs::write(dir.path().join(".other.toml.x.tmp"), "not ours")?;
    fs::write(dir.path().join("notes.tmp"), "not ours")?;
    store.load()?;
    assert_eq!(
        dir_names(dir.path())?,
        [".other.toml.x.tmp", "milady.toml", "notes.tmp"]
    );
    Ok(())
}

#[cfg(debug_assertions)]
#[test]
fn injected_faults_fail_the_write_and_change_nothing() -> TestResult {
    let (dir, mut store) = temp_store()?;
    let fault = tempfile::NamedTempFile::new()?;
    store.fault_file = Some(fault.path().to_owned());
    fs::write(store.path(), SAMPLE)?;
    for (mode_name, action) in [
        ("disk-full", "write"),
        ("read-only", "create temp file for"),
    ] {
        fs::write(fault.path(), mode_name)?;
        let err = store
            .apply_env(&[edit("OPENAI_API_KEY", Some("sk-canary-value"))])
            .expect_err("the injected fault fails the write");
        assert!(
            matches!(&err, ConfigError::Io { action: a, .. } if *a == action),
            "{err:?}"
        );
        assert!(!err.to_string().contains("sk-canary-value"));
        assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
        assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
    }
    fs::write(fault.path(), "")?;
    store.apply_env(&[edit("OPENAI_API_KEY", Some("sk-new"))])?;
    assert_eq!(
        store.load()?.env.get("OPENAI_API_KEY").map(String::as_str),
        Some("sk-new")
    );
    Ok(())
}

fn env_edits() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    proptest::collection::vec(
        (
            "[A-Z_][A-Z0-9_]{0,20}",
            proptest::option::weighted(0.8, any::<String>()),
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn env_edits_round_trip(batches in proptest::collection::vec(env_edits(), 1..4)) {
        let (_dir, store) = temp_store().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let comment = "# keep me: 'quotes' \"and\" = [brackets]\n";
        fs::write(store.path(), format!("{comment}[env]\n"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = BTreeMap::new();
        for edits in &batches {
            for (key, value) in edits {
                match value {
                    Some(value) => model.insert(key.clone(), value.clone()),
                    None => model.remove(key),
                };
            }
            let changes: Vec<EnvChange> = edits
                .iter()
                .map(|(key, value)| edit(key, value.as_deref()))
                .collect();
            let written = store
                .apply_env(&changes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&written.env, &model);
            let loaded = store.load().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&loaded.env, &model);
            let text = fs::read_to_string(store.path())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(text.starts_with(comment));
            // One line per key: values never span lines.
            prop_assert_eq!(text.lines().count(), 2 + model.len());
        }
    }
}

#[test]
fn client_messages_name_the_cause_but_not_the_path() {
    let path = PathBuf::from("/srv/private-folder/milady.toml");
    let errors = [
        ConfigError::Io {
            action: "replace",
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::StorageFull, "/srv/private-folder/.tmp"),
        },
        ConfigError::Parse {
            path: path.clone(),
            line: 3,
            column: 7,
            reason: "invalid string".into(),
        },
        ConfigError::Vanished { path: path.clone() },
        ConfigError::Shape {
            path,
            message: "`env.X` must be a string".into(),
        },
    ];
    for e in &errors {
        let m = e.client_message();
        assert!(!m.contains("private-folder"), "{m}");
        assert!(
            e.to_string().contains("private-folder"),
            "the log keeps the path"
        );
    }
    assert!(errors[0].client_message().contains("no storage space"));
    assert!(errors[1].client_message().contains("line 3, column 7"));
}

/// One write of [`cached_and_fresh_writes_agree`]: `[env]` changes, or a
/// plugin switch.
#[derive(Clone, Debug)]
enum Write {
    Env(Vec<(String, Option<String>)>),
    Plugin(String, bool),
}

fn writes() -> impl Strategy<Value = Write> {
    let key = prop_oneof![
        Just("OPENAI_API_KEY".to_owned()),
        Just("INDENTED".to_owned()),
        "[A-Z][A-Z0-9_]{0,6}",
    ];
    prop_oneof![
        4 => proptest::collection::vec(
            (key, proptest::option::weighted(0.8, "[ -~]{1,12}")),
            1..5,
        )
        .prop_map(Write::Env),
        1 => ("@elizaos/plugin-[a-c]", any::<bool>()).prop_map(|(id, on)| Write::Plugin(id, on)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A store writes from the document it last wrote (not parsed again);
    /// a fresh store parses the file. Both must write the same bytes for
    /// the same edits, encrypted values (sealed ahead to fixed texts here,
    /// so the bytes can be compared) or plaintext ones (a file that opts
    /// out).
    #[test]
    fn cached_and_fresh_writes_agree(
        steps in proptest::collection::vec(writes(), 1..8),
        opt_out in any::<bool>(),
    ) {
        let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
        let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
        let ring = std::sync::Arc::new(crate::store::secrets_key::Keyring::new(
            crate::store::secrets_key::SecretsKey::File(dir.path().join("key").join("secrets.key")),
        ));
        let (a, b) = (dir.path().join("a").join("milady.toml"), dir.path().join("b").join("milady.toml"));
        for path in [&a, &b] {
            fs::create_dir_all(path.parent().ok_or_else(|| fail(&"no folder"))?).map_err(|e| fail(&e))?;
            let text = if opt_out {
                SAMPLE.replace("[security]\n", "[security]\nencrypt_env = false\n")
            } else {
                SAMPLE.to_owned()
            };
            fs::write(path, text).map_err(|e| fail(&e))?;
        }
        let cached = ConfigStore::new(&a).with_keyring(std::sync::Arc::clone(&ring));
        for (n, step) in steps.iter().enumerate() {
            let fresh = ConfigStore::new(&b).with_keyring(std::sync::Arc::clone(&ring));
            for store in [&cached, &fresh] {
                match step {
                    Write::Env(edits) => {
                        let changes: Vec<EnvChange> = edits
                            .iter()
                            .map(|(key, value)| edit(key, value.as_deref()))
                            .collect();
                        let ahead: Vec<Option<String>> = edits
                            .iter()
                            .enumerate()
                            .map(|(i, (_, value))| {
                                value.as_ref().map(|_| format!("c2VhbGVk{n:02}{i:02}QUJDRA=="))
                            })
                            .collect();
                        store.apply_env_presealed(&changes, &ahead).map_err(|e| fail(&e))?;
                    }
                    Write::Plugin(id, on) => {
                        store.set_plugin_enabled(id, *on).map_err(|e| fail(&e))?;
                    }
                }
            }
            let (left, right) = (
                fs::read_to_string(&a).map_err(|e| fail(&e))?,
                fs::read_to_string(&b).map_err(|e| fail(&e))?,
            );
            prop_assert_eq!(left, right, "after step {} ({:?})", n, step);
        }
    }
}
