//! A host on a real three-node OpenBao cluster (Raft storage on loopback
//! ports, one unseal key) whose leader is killed during a stream of PUTs
//! (SPEC §9): every acknowledged PUT is in the store afterwards, the rest
//! failed cleanly (503 `store_unavailable`) and left nothing behind.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e_tests::{
    HostProcess, HostSpec, client,
    openbao::{Cluster, require_bao, store_config},
};
use serde_json::{Value, json};

#[tokio::test]
async fn leader_killed_during_puts_loses_no_acknowledged_write() -> Result<()> {
    let Some(bin) = require_bao("cluster_leader_killed")? else {
        return Ok(());
    };
    let mut cluster = Cluster::start(&bin).await?;
    let leader = cluster.leader().await.context("no leader")?;
    // The host knows every node; the leader first, so losing it is felt.
    let mut addrs = vec![cluster.addrs[leader].clone()];
    addrs.extend(
        (0..3)
            .filter(|&i| i != leader)
            .map(|i| cluster.addrs[i].clone()),
    );
    let catalog = tempfile::NamedTempFile::new()?;
    e2e_tests::write_catalog(catalog.path(), 10, 4)?;
    let host = HostProcess::start(
        HostSpec::with_secrets()?
            .catalog(catalog.path())
            .config(&store_config(&addrs, "fleet-cluster"))
            .env("BAO_TOKEN", &cluster.token),
    )?;

    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for n in 0..40 {
        if n == 6 {
            cluster.kill(leader);
        }
        let key = format!("P{}_KEY_{}", n / 4, n % 4);
        let value = format!("value-{n}");
        let resp = client()
            .put(host.url("/api/secrets"))
            .json(&json!({"secrets": {key.clone(): value.clone()}}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200 => acknowledged.push((key, value)),
            503 if body["code"] == json!("store_unavailable") => failed.push(key),
            other => bail!("PUT {n} answered {other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(acknowledged.len() >= 6, "{acknowledged:?}");
    assert!(
        acknowledged.len() > 6,
        "no PUT succeeded after the leader was killed: {failed:?}\n{}",
        host.log()
    );

    // The host settles any write left without an answer once the store
    // answers again; then the store is read from a surviving node.
    let start = Instant::now();
    loop {
        let resp = client().get(host.url("/api/secrets")).send().await?;
        let fresh = resp.headers().get("milady-stale-seconds").is_none();
        if fresh {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the host never caught up:\n{}", host.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let survivor = (0..3).find(|&i| i != leader).context("no survivor")?;
    let (_, stored) = cluster
        .api(survivor)
        .kv_read("secret", "fleet-cluster")
        .await?;
    for (key, value) in &acknowledged {
        assert_eq!(stored.get(key), Some(value), "acknowledged {key} lost");
    }
    for key in &failed {
        assert!(!stored.contains_key(key), "failed {key} is in the store");
    }
    eprintln!(
        "cluster: {} acknowledged, {} failed cleanly after the leader was killed",
        acknowledged.len(),
        failed.len()
    );
    Ok(())
}
