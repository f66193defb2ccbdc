//! The extender on its own: no Kubernetes, a snapshot file (reloaded when it
//! changes), HTTPS with a generated certificate, full-node requests.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::time::Duration;

use carbon_kube_extender::Args;
use clap::Parser;
use serde_json::Value;
use support::{fixture, green_de_dirty_texas};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

type Server = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Starts `extender --standalone ARGS` on a free local port; returns the
/// port, the shutdown trigger and the server task.
fn start_standalone(args: &[&str]) -> (u16, tokio::sync::oneshot::Sender<()>, Server) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let argv = ["extender", "--standalone"].iter().chain(args);
    let args = Cli::parse_from(argv).args;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(carbon_kube_extender::serve(args, listener, None, async {
        let _ = rx.await;
    }));
    (port, tx, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_from_a_snapshot_file_and_reloads_it() {
    carbon_kube_k8s::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (snap, _, _, _) = green_de_dirty_texas();
    // Replay the real hour as if measured now.
    let mut snap = snap;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    for r in snap.zones.values_mut() {
        r.timestamp = now - 60;
    }
    let snapshot_path = dir.path().join("snapshot.json");
    std::fs::write(&snapshot_path, snap.to_json()).unwrap();

    let (port, tx, server) = start_standalone(&[
        "--snapshot-file",
        snapshot_path.to_str().unwrap(),
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let ready =
        carbon_kube_testkit::wait_until("HTTPS /readyz", Duration::from_secs(30), || async {
            match client.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status() == 200 => carbon_kube_testkit::Progress::Done(()),
                Ok(r) => carbon_kube_testkit::Progress::Waiting(r.status().to_string()),
                Err(e) => carbon_kube_testkit::Progress::Waiting(e.to_string()),
            }
        })
        .await;
    ready.unwrap();
    let filter = |client: reqwest::Client| {
        let base = base.clone();
        async move {
            let r = client
                .post(format!("{base}/filter"))
                .header("content-type", "application/json")
                .body(fixture("filter-nodes.json"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["Nodes"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(filter(client.clone()).await, ["de-1", "gb-1"]);
    // Texas turns green in the file: the next decision follows.
    for r in snap.zones.values_mut() {
        r.carbon_intensity = carbon_kube_model::CarbonIntensity::new(100.0).unwrap();
    }
    std::fs::write(&snapshot_path, snap.to_json()).unwrap();
    carbon_kube_testkit::wait_until(
        "the snapshot file reload",
        Duration::from_secs(30),
        || async {
            let names = filter(client.clone()).await;
            if names.len() == 3 {
                carbon_kube_testkit::Progress::Done(())
            } else {
                carbon_kube_testkit::Progress::Waiting(format!("{names:?}"))
            }
        },
    )
    .await
    .unwrap();
    // The file disappears: neutral (everything passes).
    std::fs::remove_file(&snapshot_path).unwrap();
    carbon_kube_testkit::wait_until(
        "the snapshot file removal",
        Duration::from_secs(30),
        || async {
            let m = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if m.contains("carbon_kube_carbon_intensity_current{") {
                carbon_kube_testkit::Progress::Waiting("zones still exported".into())
            } else {
                carbon_kube_testkit::Progress::Done(())
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(filter(client.clone()).await.len(), 3);
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// `--metrics-listen`: /metrics, /healthz and /readyz on a second address,
/// where /filter is not served (the extender's own port can stay on
/// 127.0.0.1 beside kube-scheduler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_health_and_metrics_but_not_the_verbs() {
    carbon_kube_k8s::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let snapshot_path = dir.path().join("snapshot.json");
    let (snap, _, _, _) = green_de_dirty_texas();
    std::fs::write(&snapshot_path, snap.to_json()).unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (port, tx, server) = start_standalone(&[
        "--snapshot-file",
        snapshot_path.to_str().unwrap(),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let client = reqwest::Client::new();
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    carbon_kube_testkit::wait_until(
        "/readyz on --metrics-listen",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let url = format!("{metrics}/readyz");
            async move {
                match client.get(url).send().await {
                    Ok(r) if r.status() == 200 => carbon_kube_testkit::Progress::Done(()),
                    Ok(r) => carbon_kube_testkit::Progress::Waiting(r.status().to_string()),
                    Err(e) => carbon_kube_testkit::Progress::Waiting(e.to_string()),
                }
            }
        },
    )
    .await
    .unwrap();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    assert_eq!(get(format!("{metrics}/healthz")).await.status(), 200);
    let text = get(format!("{metrics}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("carbon_kube_carbon_intensity_current{zone=\"DE\"")
            && text.contains("carbon_kube_scheduler_nodes_cached"),
        "{text}"
    );
    let filter_status = |base: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/filter"))
                .header("content-type", "application/json")
                .body(fixture("filter-nodes.json"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        filter_status(metrics.clone()).await,
        404,
        "/filter must not be served on --metrics-listen"
    );
    // The main address still serves everything.
    assert_eq!(filter_status(format!("http://127.0.0.1:{port}")).await, 200);
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
