//! An auditor verifies the event log with `scripts/verify-log.py`, written from
//! `docs/EVENTS.md` with nothing but Python's standard library, none of this project's code:
//! on both stores the log verifies intact, and a commit altered or inserted behind
//! `semsd`'s back is found, with its position.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use sems_proto::v1 as pb;
use sems_testkit::{Backend, on_both_stores};
use sqlx::Connection;
use support::Server;

on_both_stores!(an_auditor_verifies_the_log_without_our_code_and_finds_tampering);

/// The NATS configuration in `deploy/`, on a free port with a temporary store: semsd (its
/// credentials in the URL) writes the log; the auditor reads it from its own account and
/// can add nothing to it, not even through the reply subject of a request.
#[tokio::test]
async fn the_deployed_nats_config_lets_semsd_write_and_the_auditor_only_read() {
    let (port, monitor) = (sems_testkit::free_port(), sems_testkit::free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nats/nats-server.conf"
    ))
    .unwrap();
    let local = [
        (
            "listen: 127.0.0.1:4222",
            format!("listen: 127.0.0.1:{port}"),
        ),
        ("http: 127.0.0.1:8222", format!("http: 127.0.0.1:{monitor}")),
        (
            "store_dir: /var/lib/nats-server/jetstream",
            format!("store_dir: {}", dir.path().join("js").display()),
        ),
    ];
    let config = local.iter().fold(config, |c, (from, to)| {
        assert!(c.contains(from), "the deployed config has `{from}`");
        c.replace(from, to)
    });
    let path = dir.path().join("nats-server.conf");
    std::fs::write(&path, config).unwrap();
    let _nats = Killed(
        std::process::Command::new(sems_testkit::nats_server_binary())
            .arg("-c")
            .arg(&path)
            .arg("-l")
            .arg(dir.path().join("nats.log"))
            .env("SEMS_NATS_PASSWORD", "semsd-secret")
            .env("SEMS_NATS_AUDITOR_PASSWORD", "auditor-secret")
            .spawn()
            .unwrap(),
    );
    sems_testkit::wait_for_port(port, std::time::Duration::from_secs(10)).unwrap();

    let s = Server::start_with(Backend::JetStream, |c| {
        c.nats.nats_url = Some(format!("nats://semsd:semsd-secret@127.0.0.1:{port}"));
    })
    .await;
    let ingested = s
        .alerts()
        .ingest_alert(pb::IngestAlertRequest {
            alert: Some(pb::Alert {
                source: "zeek".into(),
                source_ref: "conn-1".into(),
                title: "Port scan".into(),
                severity: pb::Severity::Low as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ingested.position, 1);

    let auditor = |password: &str| {
        vec![
            "--nats".to_string(),
            format!("nats://auditor:{password}@127.0.0.1:{port}"),
            "--api-prefix".into(),
            "AUDIT.API".into(),
        ]
    };
    let read = verify(&auditor("auditor-secret")).await;
    assert_eq!(read.code, 0, "{}", read.out);
    assert!(
        read.out.contains("1 commits of 1 aggregates"),
        "{}",
        read.out
    );
    // A wrong password is refused, and is not "intact".
    let wrong = verify(&auditor("x")).await;
    assert_eq!(wrong.code, 2, "{}", wrong.out);

    // The auditor tries to write: straight to a subject of the log, and as the reply subject
    // of a request JetStream answers. Neither reaches the log.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    raw.write_all(
        b"CONNECT {\"user\":\"auditor\",\"pass\":\"auditor-secret\",\"verbose\":false}\r\n\
          PUB sems.ev.alert.forged 2\r\nhi\r\n\
          PUB AUDIT.API.DIRECT.GET.SEMS sems.ev.alert.forged 9\r\n{\"seq\":1}\r\n\
          PUB AUDIT.API.STREAM.INFO.SEMS sems.ev.incident.forged 0\r\n\r\nPING\r\n",
    )
    .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("PONG") {
        let mut chunk = [0; 4096];
        let n = raw.read(&mut chunk).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    // semsd's own user cannot delete the stream.
    let semsd = async_nats::ConnectOptions::new()
        .user_and_password("semsd".into(), "semsd-secret".into())
        .connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(semsd);
    let deleted = js.delete_stream("SEMS").await;
    assert!(deleted.is_err(), "semsd's user deleted the stream");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut stream = js.get_stream("SEMS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!((state.messages, state.last_sequence), (1, 1), "{state:?}");

    s.stop().await;
}

/// A child process killed when the test ends, also when it fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/verify-log.py");

struct Verdict {
    code: i32,
    out: String,
}

async fn verify(args: &[String]) -> Verdict {
    let out = tokio::process::Command::new("python3")
        .arg(VERIFIER)
        .args(args)
        .output()
        .await
        .expect("python3 (scripts/test.sh installs it)");
    Verdict {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap(),
    }
}

async fn an_auditor_verifies_the_log_without_our_code_and_finds_tampering(backend: Backend) {
    let s = Server::start(backend).await;
    // Some history: an alert that opens an incident (positions 1 and 2), acknowledged (3),
    // moved to TACTICAL (4).
    let alert = pb::IngestAlertRequest {
        alert: Some(pb::Alert {
            source: "suricata".into(),
            source_ref: "flow-1".into(),
            title: "C2 beacon from ws-17".into(),
            severity: pb::Severity::Critical as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let ingested = s.alerts().ingest_alert(alert).await.unwrap().into_inner();
    let incident_id = ingested.incident_id.clone();
    s.incidents()
        .acknowledge_incident(pb::AcknowledgeIncidentRequest {
            incident_id: incident_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.incidents()
        .change_level(pb::ChangeLevelRequest {
            incident_id: incident_id.clone(),
            to: pb::Level::Tactical as i32,
            reason: "two hosts".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let source = match backend {
        Backend::JetStream => vec!["--nats".into(), s.stores.nats_url().unwrap()],
        Backend::Embedded => {
            let db = s.stores.data_dir().join("events.db");
            vec!["--sqlite".into(), db.display().to_string()]
        }
    };
    let intact = verify(&source).await;
    assert_eq!(intact.code, 0, "{}", intact.out);
    assert!(
        intact
            .out
            .contains("4 commits of 2 aggregates, up to position 4: intact"),
        "{}",
        intact.out
    );
    let digest = intact
        .out
        .lines()
        .find_map(|l| l.strip_prefix("digest "))
        .expect("a digest")
        .to_string();
    assert!(digest.starts_with("4:"), "{digest}");

    // Behind semsd's back: on the embedded store, the incident's opening commit (position
    // 2) is rewritten after dropping the triggers that refuse it; on JetStream, where
    // stored messages cannot be rewritten, a copy of it is published again as a new commit.
    let found = match backend {
        Backend::Embedded => {
            let db = s.stores.data_dir().join("events.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            for drop in [
                "DROP TRIGGER commits_no_update",
                "DROP TRIGGER commits_no_delete",
            ] {
                sqlx::query(drop).execute(&mut c).await.unwrap();
            }
            let altered = sqlx::query(
                "UPDATE commits SET bytes = CAST(replace(CAST(bytes AS TEXT), 'C2 beacon', \
                 'Benign beacon') AS BLOB) WHERE position = 2",
            )
            .execute(&mut c)
            .await
            .unwrap();
            assert_eq!(altered.rows_affected(), 1);
            // The next commit of the incident no longer matches what precedes it.
            "TAMPERED: position 3: prev_hash"
        }
        Backend::JetStream => {
            let opening = s.log().await.read_at(2).await.unwrap();
            let client = async_nats::connect(s.stores.nats_url().unwrap())
                .await
                .unwrap();
            let js = async_nats::jetstream::new(client);
            let ack = js
                .publish(format!("sems.ev.incident.{incident_id}"), opening.bytes)
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(ack.sequence, 5);
            // And a commit of the alert, published under an incident's subject.
            let alert_commit = s.log().await.read_at(1).await.unwrap();
            let elsewhere = format!("sems.ev.incident.{}", uuid::Uuid::new_v4());
            js.publish(elsewhere, alert_commit.bytes)
                .await
                .unwrap()
                .await
                .unwrap();
            "TAMPERED: position 5: prev_hash"
        }
    };
    let tampered = verify(&source).await;
    assert_eq!(tampered.code, 1, "{}", tampered.out);
    assert!(tampered.out.contains(found), "{}", tampered.out);
    assert!(tampered.out.contains(": tampered"), "{}", tampered.out);
    if matches!(backend, Backend::JetStream) {
        assert!(
            tampered
                .out
                .contains("TAMPERED: position 6: the body names alert"),
            "{}",
            tampered.out
        );
    }
    // Against the digest recorded before: the whole log is checked, and its digest up to
    // the recorded position compared (the rewritten commit changes it; the forged one came
    // after it, and the chain finds it).
    let recorded = verify(&[source.clone(), vec!["--expect-digest".into(), digest]].concat()).await;
    assert_eq!(recorded.code, 1, "{}", recorded.out);
    assert!(recorded.out.contains(found), "{}", recorded.out);
    assert_eq!(
        recorded.out.contains("not the recorded"),
        matches!(backend, Backend::Embedded),
        "{}",
        recorded.out
    );

    // A log it cannot read is not called intact, nor tampered.
    let unreadable = match backend {
        Backend::Embedded => vec!["--sqlite".into(), "/nonexistent/events.db".into()],
        Backend::JetStream => [source.clone(), vec!["--stream".into(), "NOPE".into()]].concat(),
    };
    let missing = verify(&unreadable).await;
    assert_eq!(missing.code, 2, "{}", missing.out);
    s.stop().await;
}
