//! `semsd` as a process. `kill -9` while alerts stream in, on both stores: every alert whose
//! call was acknowledged is in the log and, after a restart, in the read model; none twice.
//! And with no store flags it starts embedded and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc::RecvTimeoutError},
    time::Duration,
};

use sems_app::Envelope;
use sems_proto::v1::{
    self as pb, alert_service_client::AlertServiceClient,
    incident_query_service_client::IncidentQueryServiceClient,
};
use sems_testkit::{Backend, TestStores, free_port, on_both_stores, wait_for_port};
use tonic::transport::Channel;
use uuid::Uuid;

on_both_stores!(kill_9_loses_no_acknowledged_alert_and_duplicates_none);

fn semsd(stores: &TestStores, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_semsd"))
        .env_remove("SEMS_NATS_URL")
        .env_remove("SEMS_DATABASE_URL")
        .env_remove("SEMS_DATA_DIR")
        .envs(stores.env())
        .env("SEMS_LISTEN", format!("127.0.0.1:{port}"))
        .env("SEMS_HTTP_LISTEN", "off")
        .env("SEMS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// With no store flags, `semsd` runs on the embedded store under `./sems-data` of its
/// working directory, and says at start which store it uses and where; its log is plain text
/// when it does not go to a terminal; `SIGTERM` stops it cleanly.
#[test]
fn with_no_store_flags_semsd_runs_embedded_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_semsd"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("SEMS_") || n == "RUST_LOG") {
        command.env_remove(name);
    }
    let mut child = command
        .current_dir(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http-listen",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Arc::new(Mutex::new(child));
    // Whatever happens below, semsd does not outlive the test: the guard kills it when the
    // test ends (nothing once it has been waited for), the watchdog after a minute.
    let _guard = KillOnDrop(child.clone());
    let (finished, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let child = child.clone();
        std::thread::spawn(move || {
            if watch.recv_timeout(Duration::from_secs(60)) == Err(RecvTimeoutError::Timeout) {
                let _ = child.lock().unwrap().kill();
            }
        })
    };
    let mut log = Vec::new();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("semsd started");
        log.push(line);
        if started {
            break;
        }
    }
    assert!(
        wait_for_port(port, Duration::from_secs(5)).is_ok(),
        "{log:#?}"
    );
    let pid = child.lock().unwrap().id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    // The log ends when semsd does.
    log.extend(lines.map(Result::unwrap));
    let status = loop {
        if let Some(status) = child.lock().unwrap().try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(finished);
    watchdog.join().unwrap();

    assert!(status.success(), "{status:?}: {log:#?}");
    let said = |text: &str| log.iter().any(|l| l.contains(text));
    assert!(
        said(
            "store: embedded SQLite; event log ./sems-data/events.db, \
             read model ./sems-data/readmodel-sems.db"
        ),
        "{log:#?}"
    );
    assert!(said(&format!("addr=127.0.0.1:{port}")), "{log:#?}");
    assert!(said("semsd stopped"), "{log:#?}");
    assert!(
        log.iter().all(|l| !l.contains('\u{1b}')),
        "no terminal colour codes in a piped log: {log:#?}"
    );
    assert!(dir.path().join("sems-data/events.db").is_file());
}

/// Kills and reaps the child when dropped (nothing, once it has been waited for).
struct KillOnDrop(Arc<Mutex<Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(mut child) = self.0.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn channel(port: u16) -> Channel {
    wait_for_port(port, Duration::from_secs(30)).unwrap();
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn alert(n: usize) -> pb::IngestAlertRequest {
    pb::IngestAlertRequest {
        alert: Some(pb::Alert {
            source: "zeek".into(),
            source_ref: format!("conn-{n}"),
            title: format!("Beaconing to rare domain {n}"),
            severity: if n.is_multiple_of(50) {
                pb::Severity::High as i32
            } else {
                pb::Severity::Low as i32
            },
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

async fn kill_9_loses_no_acknowledged_alert_and_duplicates_none(backend: Backend) {
    let stores = TestStores::start(backend).await.unwrap();
    let port = free_port();
    let mut child = semsd(&stores, port);
    let ch = channel(port).await;

    // Eight clients send alerts one call at a time; each acknowledged alert is recorded.
    let acked: Arc<Mutex<Vec<(usize, String, u64)>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (ch, acked) = (ch.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let mut client = AlertServiceClient::new(ch);
            for k in 0..100_000 {
                let n = c * 1_000_000 + k;
                match client.ingest_alert(alert(n)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        acked.lock().unwrap().push((n, r.alert_id, r.position));
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Let alerts flow, then kill -9 mid-stream.
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Every acknowledged alert is in the log, exactly once.
    let test_log = stores.log().await.unwrap();
    let log = test_log.port();
    for (_, alert_id, position) in &acked {
        let commits = log
            .read_aggregate("alert", Uuid::parse_str(alert_id).unwrap())
            .await
            .unwrap();
        assert_eq!(commits.len(), 1, "alert {alert_id} stored once");
        assert!(
            commits[0].position <= *position,
            "the answer covers the alert's commit"
        );
        assert_eq!(
            Envelope::decode(&commits[0].bytes).unwrap().events[0].event_type,
            "AlertReceived"
        );
    }

    // After a restart, the read model catches up and holds each of them once.
    let port = free_port();
    let mut child = semsd(&stores, port);
    let ch = channel(port).await;
    let (_, last) = test_log.state().await.unwrap();
    let mut queries = IncidentQueryServiceClient::new(ch);
    let mut seen = HashSet::new();
    let mut token = String::new();
    loop {
        let mut request = tonic::Request::new(pb::ListAlertsRequest {
            page_size: 500,
            page_token: token.clone(),
            consistency: Some(pb::Consistency {
                min_position: last,
                latest: false,
            }),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(30));
        let page = queries.list_alerts(request).await.unwrap().into_inner();
        for a in &page.alerts {
            assert!(
                seen.insert(a.alert_id.clone()),
                "alert {} listed twice",
                a.alert_id
            );
            assert_eq!(a.repeat_count, 0);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    for (_, alert_id, _) in &acked {
        assert!(
            seen.contains(alert_id),
            "acknowledged alert {alert_id} missing from the read model"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
