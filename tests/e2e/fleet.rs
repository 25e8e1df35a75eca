//! A fleet of hosts on one real OpenBao server (SPEC §9): `bao server -dev`
//! on loopback, real `demo-host` processes with `[store] backend =
//! "openbao"`. Without `bao` these print `SKIPPED` and pass, except in CI.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use e2e_tests::{
    HostProcess, HostSpec, client,
    openbao::{BaoApi, DevServer, require_bao, store_config},
};
use serde_json::{Value, json};

/// How long a change may take to reach another host (SPEC §9).
const PROPAGATION: Duration = Duration::from_secs(1);

/// A host of the fleet on `server`'s `path`, with a catalog declaring
/// `P<i>_KEY_<j>` keys.
fn fleet_host(addresses: &[String], token: &str, path: &str) -> Result<HostProcess> {
    let catalog = tempfile::NamedTempFile::new()?;
    e2e_tests::write_catalog(catalog.path(), 10, 3)?;
    let (_, catalog_path) = catalog.keep()?;
    HostProcess::start(
        HostSpec::with_secrets()?
            .catalog(&catalog_path)
            .config(&store_config(addresses, path))
            .env("BAO_TOKEN", token)
            .env("RUST_LOG", "info"),
    )
}

async fn get_secrets(h: &HostProcess) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
    let resp = client().get(h.url("/api/secrets")).send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Ok((status, headers, resp.json().await?))
}

async fn put(
    h: &HostProcess,
    secrets: Value,
    if_match: Option<&str>,
) -> Result<(u16, Option<String>, Value)> {
    let mut req = client()
        .put(h.url("/api/secrets"))
        .json(&json!({ "secrets": secrets }));
    if let Some(tag) = if_match {
        req = req.header("If-Match", tag);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, etag, resp.json().await.unwrap_or(Value::Null)))
}

/// Whether GET on `h` shows `key` as set (the secrets plugin's entry).
fn is_set(body: &Value, key: &str) -> bool {
    body["secrets"][key]["set"] == json!(true)
}

/// The fingerprint GET shows for `key`.
fn fingerprint(body: &Value, key: &str) -> Option<String> {
    body["secrets"][key]["fingerprint"]
        .as_str()
        .map(str::to_owned)
}

/// Waits (bounded) until `check` holds on `h`'s GET; how long it took.
async fn wait_until(
    h: &HostProcess,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let (_, _, body) = get_secrets(h).await?;
        if check(&body) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("not seen within {limit:?}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn store_data(api: &BaoApi, path: &str) -> Result<BTreeMap<String, String>> {
    Ok(api.kv_read("secret", path).await?.1)
}

#[tokio::test]
async fn three_hosts_share_one_store_and_if_match_works_across_them() -> Result<()> {
    let Some(bin) = require_bao("three_hosts_share_one_store")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let addrs = vec![bao.process.addr.clone()];
    let hosts = [
        fleet_host(&addrs, &bao.token, "fleet-a")?,
        fleet_host(&addrs, &bao.token, "fleet-a")?,
        fleet_host(&addrs, &bao.token, "fleet-a")?,
    ];

    // A PUT on host 0 is in the store and on hosts 1 and 2 within 1 s.
    let (status, _, body) =
        put(&hosts[0], json!({"P0_KEY_0": "sk-fleet-value-0001"}), None).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        store_data(&bao.api(), "fleet-a")
            .await?
            .get("P0_KEY_0")
            .map(String::as_str),
        Some("sk-fleet-value-0001")
    );
    for h in &hosts[1..] {
        wait_until(h, PROPAGATION, |b| is_set(b, "P0_KEY_0")).await?;
    }
    // One fingerprint key per fleet: equal values, equal fingerprints.
    let mut prints = Vec::new();
    for h in &hosts {
        prints.push(fingerprint(&get_secrets(h).await?.2, "P0_KEY_0"));
    }
    assert!(prints[0].is_some());
    assert!(prints.iter().all(|p| p == &prints[0]), "{prints:?}");

    // The ETag is the store's version: read on host 1, valid on host 2.
    let (_, headers, _) = get_secrets(&hosts[1]).await?;
    let tag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("no ETag")?
        .to_owned();
    let (status, new_tag, body) =
        put(&hosts[2], json!({"P1_KEY_0": "v-from-host-2"}), Some(&tag)).await?;
    assert_eq!(status, 200, "{body}");
    let new_tag = new_tag.context("no ETag on the PUT")?;
    assert_ne!(new_tag, tag);
    // Host 1's tag is stale now on every host: 412, nothing written.
    wait_until(&hosts[1], PROPAGATION, |b| is_set(b, "P1_KEY_0")).await?;
    for h in &hosts {
        let (status, _, body) = put(h, json!({"P2_KEY_0": "must-not-land"}), Some(&tag)).await?;
        assert_eq!(status, 412, "{body}");
    }
    assert!(
        !store_data(&bao.api(), "fleet-a")
            .await?
            .contains_key("P2_KEY_0")
    );
    // The tag the PUT returned is current on another host.
    let (status, _, body) = put(&hosts[0], json!({"P2_KEY_1": "fresh"}), Some(&new_tag)).await?;
    assert_eq!(status, 200, "{body}");

    // The token never reaches a plugin, a response or the log.
    for h in &hosts {
        assert!(!h.log().contains(&bao.token), "token in the log");
        let (_, _, body) = get_secrets(h).await?;
        assert!(!body.to_string().contains(&bao.token));
    }
    Ok(())
}

#[tokio::test]
async fn thirty_concurrent_puts_over_three_hosts_all_land_everywhere() -> Result<()> {
    let Some(bin) = require_bao("thirty_concurrent_puts")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let addrs = vec![bao.process.addr.clone()];
    let hosts = [
        fleet_host(&addrs, &bao.token, "fleet-b")?,
        fleet_host(&addrs, &bao.token, "fleet-b")?,
        fleet_host(&addrs, &bao.token, "fleet-b")?,
    ];
    let keys: Vec<String> = (0..10)
        .flat_map(|i| (0..3).map(move |j| format!("P{i}_KEY_{j}")))
        .collect();
    let mut tasks = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        let url = hosts[n % 3].url("/api/secrets");
        let body = json!({"secrets": {key.clone(): format!("value-{n}")}});
        tasks.push(tokio::spawn(async move {
            let resp = client().put(url).json(&body).send().await?;
            anyhow::Ok(resp.status().as_u16())
        }));
    }
    for task in tasks {
        assert_eq!(task.await??, 200);
    }
    let stored = store_data(&bao.api(), "fleet-b").await?;
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(stored.get(key), Some(&format!("value-{n}")), "{key}");
    }
    for h in &hosts {
        wait_until(h, PROPAGATION, |b| keys.iter().all(|k| is_set(b, k))).await?;
    }
    Ok(())
}

#[tokio::test]
async fn store_stopped_get_is_stale_put_is_503_and_the_host_catches_up() -> Result<()> {
    let Some(bin) = require_bao("store_stopped")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let addrs = vec![bao.process.addr.clone()];
    let host = fleet_host(&addrs, &bao.token, "fleet-c")?;
    let other = fleet_host(&addrs, &bao.token, "fleet-c")?;
    let (status, _, _) = put(&host, json!({"P0_KEY_0": "before-the-outage"}), None).await?;
    assert_eq!(status, 200);
    let (_, headers, body) = get_secrets(&host).await?;
    assert!(headers.get("milady-stale-seconds").is_none());
    assert!(body.get("stale").is_none());

    bao.process.pause()?;
    // GET answers from the snapshot, marked stale (header and field).
    let start = Instant::now();
    let (headers, body) = loop {
        let (status, headers, body) = get_secrets(&host).await?;
        assert_eq!(status, 200);
        if headers.get("milady-stale-seconds").is_some() {
            break (headers, body);
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("never marked stale: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(headers.contains_key("etag"));
    assert!(body["stale"]["since"].is_string(), "{body}");
    assert!(
        body["stale"]["reason"]
            .as_str()
            .is_some_and(|r| !r.contains(&bao.token))
    );
    assert!(is_set(&body, "P0_KEY_0"));
    // A PUT applies nothing: 503 store_unavailable.
    let (status, _, err) = put(&host, json!({"P0_KEY_1": "during-the-outage"}), None).await?;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], json!("store_unavailable"));
    let (_, _, body) = get_secrets(&host).await?;
    assert!(!is_set(&body, "P0_KEY_1"), "applied in memory: {body}");

    bao.process.resume()?;
    // Catch-up without a restart: a change made on the other host arrives.
    wait_until(&host, Duration::from_secs(10), |b| b.get("stale").is_none()).await?;
    wait_until(&other, Duration::from_secs(10), |b| {
        b.get("stale").is_none()
    })
    .await?;
    let (status, _, body) = put(&other, json!({"P1_KEY_0": "after-the-outage"}), None).await?;
    assert_eq!(status, 200, "{body}");
    wait_until(&host, PROPAGATION, |b| is_set(b, "P1_KEY_0")).await?;
    let stored = store_data(&bao.api(), "fleet-c").await?;
    assert!(
        !stored.contains_key("P0_KEY_1"),
        "the refused PUT reached the store"
    );
    assert!(host.log().contains("secret store"), "{}", host.log());
    assert!(!host.log().contains(&bao.token));
    Ok(())
}

#[tokio::test]
async fn a_host_started_while_the_store_is_down_serves_its_kept_snapshot() -> Result<()> {
    let Some(bin) = require_bao("kept_snapshot")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let addrs = vec![bao.process.addr.clone()];
    let host = fleet_host(&addrs, &bao.token, "fleet-d")?;
    let secret = "sk-kept-on-disk-value-77";
    let (status, _, _) = put(&host, json!({"P0_KEY_0": secret}), None).await?;
    assert_eq!(status, 200);
    // The snapshot kept beside the config holds no plaintext.
    let kept = host.dir.path().join("milady.store-snapshot.age");
    let text = std::fs::read_to_string(&kept).context("no kept snapshot")?;
    assert!(!text.contains(secret) && !text.contains(&secret[..8]));

    bao.process.pause()?;
    let host = host.restart()?;
    let (status, headers, body) = get_secrets(&host).await?;
    assert_eq!(status, 200);
    assert!(headers.get("milady-stale-seconds").is_some(), "{body}");
    assert!(is_set(&body, "P0_KEY_0"), "{body}");
    bao.process.resume()?;
    wait_until(&host, Duration::from_secs(10), |b| b.get("stale").is_none()).await?;
    Ok(())
}

#[tokio::test]
async fn a_sealed_store_marks_stale_refuses_writes_and_is_caught_up_once_unsealed() -> Result<()> {
    let Some(bin) = require_bao("store_sealed")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let api = bao.api();
    // The banner with the unseal key may come after the server answers.
    let waited = Instant::now();
    let unseal_key = loop {
        if let Some(key) = bao.unseal_key() {
            break key;
        }
        if waited.elapsed() > Duration::from_secs(10) {
            bail!("the dev server printed no unseal key");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let addrs = vec![bao.process.addr.clone()];
    let host = fleet_host(&addrs, &bao.token, "fleet-sealed")?;
    let (status, _, body) = put(&host, json!({"P0_KEY_0": "before-the-seal"}), None).await?;
    assert_eq!(status, 200, "{body}");

    let (status, answer) = api.post("sys/seal", json!({})).await?;
    assert!(status < 300, "seal answered {status}: {answer}");
    // GET answers from the snapshot, marked stale; a PUT applies nothing.
    wait_until(&host, Duration::from_secs(15), |b| b.get("stale").is_some()).await?;
    let (status, headers, body) = get_secrets(&host).await?;
    assert_eq!(status, 200);
    assert!(headers.get("milady-stale-seconds").is_some(), "{body}");
    assert!(is_set(&body, "P0_KEY_0"), "{body}");
    let (status, _, err) = put(&host, json!({"P0_KEY_1": "while-sealed"}), None).await?;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], json!("store_unavailable"));

    let (status, answer) = api.post("sys/unseal", json!({ "key": unseal_key })).await?;
    assert!(status < 300, "unseal answered {status}: {answer}");
    // Caught up without a restart: writes land again, the refused one never did.
    wait_until(&host, Duration::from_secs(15), |b| b.get("stale").is_none()).await?;
    let (status, _, body) = put(&host, json!({"P0_KEY_2": "after-the-unseal"}), None).await?;
    assert_eq!(status, 200, "{body}");
    let stored = store_data(&api, "fleet-sealed").await?;
    assert_eq!(
        stored.get("P0_KEY_0").map(String::as_str),
        Some("before-the-seal")
    );
    assert_eq!(
        stored.get("P0_KEY_2").map(String::as_str),
        Some("after-the-unseal")
    );
    assert!(
        !stored.contains_key("P0_KEY_1"),
        "the refused PUT reached the store"
    );
    assert!(!host.log().contains(&bao.token));
    Ok(())
}

#[tokio::test]
async fn a_short_lived_token_is_renewed_before_it_expires() -> Result<()> {
    let Some(bin) = require_bao("token_renewal")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    // A renewable token that expires 6 s after its last renewal.
    let (status, created) = bao
        .api()
        .post(
            "auth/token/create",
            json!({"ttl": "6s", "explicit_max_ttl": "10m", "renewable": true}),
        )
        .await?;
    assert!(status < 300, "token create answered {status}");
    let token = created["auth"]["client_token"]
        .as_str()
        .context("no client token in the answer")?
        .to_owned();
    let addrs = vec![bao.process.addr.clone()];
    let host = fleet_host(&addrs, &token, "fleet-renewal")?;
    let (status, _, body) = put(&host, json!({"P0_KEY_0": "early-value"}), None).await?;
    assert_eq!(status, 200, "{body}");
    // Three lifetimes later the token still works: the host renewed it.
    tokio::time::sleep(Duration::from_secs(18)).await;
    let (status, _, body) = put(&host, json!({"P0_KEY_1": "late-value"}), None).await?;
    assert_eq!(status, 200, "{body}");
    let (_, headers, body) = get_secrets(&host).await?;
    assert!(headers.get("milady-stale-seconds").is_none(), "{body}");
    let log = host.log();
    assert!(log.contains("renewed the store token"), "{log}");
    assert!(!log.contains(&token));
    let stored = store_data(&bao.api(), "fleet-renewal").await?;
    assert_eq!(
        stored.get("P0_KEY_1").map(String::as_str),
        Some("late-value")
    );
    Ok(())
}

#[tokio::test]
async fn a_store_over_tls_is_reached_through_its_ca_file_and_refused_without_it() -> Result<()> {
    let Some(bin) = require_bao("store_over_tls")? else {
        return Ok(());
    };
    let certs = tempfile::tempdir()?;
    let bao = DevServer::start_tls(&bin, certs.path()).await?;
    let api = bao.tls_api(certs.path())?;
    let addrs = vec![bao.process.addr.clone()];
    assert!(addrs[0].starts_with("https://"));
    let ca_line = format!(
        "ca_file = \"{}\"\n",
        certs.path().join("vault-ca.pem").display()
    );
    let config = store_config(&addrs, "fleet-tls") + &ca_line;
    let catalog = tempfile::NamedTempFile::new()?;
    e2e_tests::write_catalog(catalog.path(), 10, 3)?;
    let trusted = HostProcess::start(
        HostSpec::with_secrets()?
            .catalog(catalog.path())
            .config(&config)
            .env("BAO_TOKEN", &bao.token)
            .env("RUST_LOG", "info"),
    )?;
    let (status, _, body) = put(&trusted, json!({"P0_KEY_0": "over-tls-value"}), None).await?;
    assert_eq!(status, 200, "{body}");
    let stored = store_data(&api, "fleet-tls").await?;
    assert_eq!(
        stored.get("P0_KEY_0").map(String::as_str),
        Some("over-tls-value")
    );
    // Without the CA file the server's certificate is not trusted: the
    // host serves an empty, stale snapshot and writes nothing.
    let untrusted = fleet_host(&addrs, &bao.token, "fleet-tls")?;
    let (status, headers, body) = get_secrets(&untrusted).await?;
    assert_eq!(status, 200);
    assert!(headers.get("milady-stale-seconds").is_some(), "{body}");
    let (status, _, err) = put(&untrusted, json!({"P0_KEY_1": "never-sent"}), None).await?;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], json!("store_unavailable"));
    assert!(
        !store_data(&api, "fleet-tls")
            .await?
            .contains_key("P0_KEY_1")
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_token_marks_stale_and_refuses_writes() -> Result<()> {
    let Some(bin) = require_bao("token_refused")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let addrs = vec![bao.process.addr.clone()];
    let wrong = "not-a-valid-token-1234";
    let host = fleet_host(&addrs, wrong, "fleet-e")?;
    let (status, headers, body) = get_secrets(&host).await?;
    assert_eq!(status, 200);
    assert!(headers.get("milady-stale-seconds").is_some(), "{body}");
    assert!(
        body["stale"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{body}"
    );
    let (status, _, err) = put(&host, json!({"P0_KEY_0": "x-value"}), None).await?;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["code"], json!("store_unavailable"));
    assert_eq!(bao.api().kv_read("secret", "fleet-e").await?.0, 0);
    assert!(!host.log().contains(wrong), "{}", host.log());
    Ok(())
}

#[tokio::test]
async fn migrate_copies_env_without_overwriting_unless_asked() -> Result<()> {
    let Some(bin) = require_bao("migrate")? else {
        return Ok(());
    };
    let bao = DevServer::start(&bin).await?;
    let api = bao.api();
    api.kv_write(
        "secret",
        "fleet-f",
        &BTreeMap::from([("P0_KEY_0".to_owned(), "already-in-store".to_owned())]),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("milady.toml");
    std::fs::write(
        &config,
        format!(
            "[env]\nP0_KEY_0 = \"from-the-file\"\nP0_KEY_1 = \"only-in-the-file\"\n\n{}",
            store_config(std::slice::from_ref(&bao.process.addr), "fleet-f")
        ),
    )?;
    let home = e2e_tests::TempHome::new()?;
    let run = |overwrite: bool| -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(&e2e_tests::artifacts()?.host);
        cmd.args(["--config"])
            .arg(&config)
            .args(["secrets", "migrate", "--to", "openbao"])
            .env("BAO_TOKEN", &bao.token);
        home.apply(&mut cmd);
        if overwrite {
            cmd.arg("--overwrite");
        }
        Ok(cmd.output()?)
    };
    let out = run(false)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("copied 1") && stdout.contains("P0_KEY_1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kept 1") && stdout.contains("P0_KEY_0"),
        "{stdout}"
    );
    let stored = store_data(&api, "fleet-f").await?;
    assert_eq!(
        stored.get("P0_KEY_0").map(String::as_str),
        Some("already-in-store")
    );
    assert_eq!(
        stored.get("P0_KEY_1").map(String::as_str),
        Some("only-in-the-file")
    );

    let out = run(true)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let stored = store_data(&api, "fleet-f").await?;
    assert_eq!(
        stored.get("P0_KEY_0").map(String::as_str),
        Some("from-the-file")
    );
    assert!(!stdout.contains(&bao.token));
    Ok(())
}
