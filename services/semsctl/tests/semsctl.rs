//! `semsctl` through its real interface — the binary, its arguments, its output and exit
//! codes — against `semsd` running in-process on both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, time::Duration};

use sems_testkit::{
    Backend, TestStores, on_both_stores,
    readme::{self, Bound, Step},
};
use serde_json::Value;
use tokio::sync::oneshot;

on_both_stores!(
    the_demo_leaves_a_resolved_tactical_incident_and_an_untriaged_alert,
    commands_print_json_that_reads_their_own_writes,
    errors_say_what_to_fix_and_exit_with_documented_codes,
    a_remembered_position_the_server_never_reached_is_reported_and_forgotten,
    the_handshake_and_the_cmc_log_from_the_command_line,
    an_incident_decision_log_from_the_command_line,
    risks_are_linked_listed_and_counted_from_the_command_line,
    a_statement_is_drafted_approved_sent_and_retracted_from_the_command_line,
    the_readme_quick_start_runs_as_written,
    the_readme_handshake_walk_through_runs_as_written,
    the_readme_webhook_post_runs_as_written,
    the_webhook_guide_examples_run_as_written,
    the_semsctl_guide_walk_through_runs_as_written,
    a_closed_output_stops_semsctl_quietly,
);

struct Server {
    _stores: TestStores,
    url: String,
    /// `http://127.0.0.1:<port>` of the webhooks.
    http: String,
    state: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, None).await
    }

    /// semsd authenticating callers with `tokens` (a tokens file's text), when given.
    async fn start_with(backend: Backend, tokens: Option<String>) -> Self {
        sems_telemetry::init_for_tests();
        let stores = TestStores::start(backend).await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut config = semsd::Config::defaults();
        if let Some(text) = tokens {
            let path = state.path().join("tokens");
            std::fs::write(&path, text).unwrap();
            config.grpc.tokens_file = Some(path);
        }
        config.nats.nats_url = stores.nats_url();
        config.database.database_url = stores.database_url();
        config.data_dir = stores.data_dir();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(semsd::run(
            config,
            semsd::Listeners {
                grpc: Some(listener),
                http: Some(http),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let server = Self {
            _stores: stores,
            url: format!("http://{addr}"),
            http: format!("http://{http_addr}"),
            state,
            stop: Some(stop),
        };
        // semsd answers once its stores are open.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !matches!(server.ctl(&["incidents", "list"]).await.code, 0 | 9) {
            assert!(std::time::Instant::now() < deadline, "semsd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    async fn ctl(&self, args: &[&str]) -> Run {
        run(&self.url, self.state.path(), args).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let r = self.ctl(&all).await;
        assert_eq!(r.code, 0, "semsctl {args:?}: {}", r.stderr);
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("semsctl {args:?} printed no JSON ({e}): {}", r.stdout))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn semsctl(server: &str, state: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_semsctl"));
    command
        .args(["--server", server])
        .args(args)
        .env("SEMSCTL_STATE_DIR", state)
        .env_remove("SEMS_SERVER")
        // Where a reader runs the README's commands (paths in them are from there).
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .kill_on_drop(true);
    command
}

async fn run(server: &str, state: &Path, args: &[&str]) -> Run {
    let out = semsctl(server, state, args).output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn the_demo_leaves_a_resolved_tactical_incident_and_an_untriaged_alert(backend: Backend) {
    let s = Server::start(backend).await;
    let demo = s.ctl(&["demo", "--pace-ms", "0"]).await;
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    assert!(
        demo.stdout.contains("repeat of a known alert"),
        "{}",
        demo.stdout
    );
    assert!(
        demo.stdout.contains("RESOLVED at TACTICAL level"),
        "{}",
        demo.stdout
    );

    let list = s.json(&["incidents", "list", "--level", "tactical"]).await;
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    let i = &incidents[0];
    assert_eq!(i["status"], "RESOLVED");
    assert_eq!(
        (i["severity"].as_str(), i["priority"].as_str()),
        (Some("CRITICAL"), Some("P1"))
    );
    assert_eq!(i["alert_count"], 1);
    assert_eq!(i["phase"], "CONTAIN");

    let id = i["incident_id"].as_str().unwrap();
    let detail = s.json(&["incidents", "show", id]).await;
    assert_eq!(
        detail["alerts"][0]["repeat_count"], 1,
        "the duplicate was counted"
    );
    assert_eq!(detail["roles"][0]["role"], "COMMANDER");
    assert_eq!(detail["notes"].as_array().unwrap().len(), 1);
    assert_eq!(detail["risks"][0]["risk_ref"], "R-017");
    assert_eq!(detail["decisions"][0]["level"], "TACTICAL");
    let card = s.ctl(&["incidents", "show", id]).await;
    assert!(
        card.stdout.contains("Decisions in force"),
        "{}",
        card.stdout
    );
    assert!(
        card.stdout.contains("(TACTICAL): Isolate vpn-gw-01"),
        "{}",
        card.stdout
    );
    let log = s.json(&["decision", "log", id]).await;
    assert_eq!(log["current"][0]["level"], "TACTICAL");
    assert_eq!(
        log["current"][0]["decision"],
        "Isolate vpn-gw-01 and fail VPN users over to vpn-gw-02"
    );

    let waiting = s.json(&["alerts", "list", "--status", "received"]).await;
    let alerts = waiting["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["source"], "crowdstrike");

    // The analyst finds the waiting alert part of the incident and merges it there.
    let alert_id = alerts[0]["alert_id"].as_str().unwrap();
    let merged = s
        .ctl(&[
            "alerts",
            "merge",
            alert_id,
            "--incident",
            id,
            "--reason",
            "same VPN gateway",
        ])
        .await;
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    let detail = s.json(&["incidents", "show", id]).await;
    assert_eq!(detail["alerts"].as_array().unwrap().len(), 2);
    let listed = s.json(&["alerts", "list", "--status", "merged"]).await;
    assert_eq!(listed["alerts"][0]["alert_id"], alert_id);
    let again = s
        .ctl(&[
            "alerts",
            "merge",
            alert_id,
            "--incident",
            id,
            "--reason",
            "x",
        ])
        .await;
    assert_ne!(again.code, 0, "merged once: {}", again.stdout);

    // A notification to an authority, recorded from the command line.
    let notified = s
        .ctl(&[
            "notify",
            id,
            "--authority",
            "national CSIRT",
            "--summary",
            "NIS2 early warning",
        ])
        .await;
    assert_eq!(notified.code, 0, "{}", notified.stderr);
    let detail = s.json(&["incidents", "show", id]).await;
    assert_eq!(detail["notifications"][0]["authority"], "national CSIRT");
    assert!(detail["incident"]["authority_notified_at"].is_string());

    // A second run plays again beside the first.
    assert_eq!(s.ctl(&["demo", "--pace-ms", "0"]).await.code, 0);
    let list = s.json(&["incidents", "list"]).await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 2);
}

async fn commands_print_json_that_reads_their_own_writes(backend: Backend) {
    let s = Server::start(backend).await;
    let alert = s
        .json(&[
            "ingest",
            "--source",
            "wazuh",
            "--ref",
            "rule-5712-host-7",
            "--title",
            "SSH brute force against bastion-2",
            "--severity",
            "high",
            "--observable",
            "ip=198.51.100.23",
            "--label",
            "site=AMS",
            "--raw",
            r#"{"rule": {"id": 5712, "level": 10}}"#,
        ])
        .await;
    assert_eq!(alert["repeat"], false);
    let id = alert["incident_id"].as_str().unwrap().to_owned();

    // Each write prints the incident as read at the write's own position.
    let ack = s.json(&["ack", &id]).await;
    assert_eq!(ack["incident"]["incident"]["status"], "ACKNOWLEDGED");
    assert_eq!(ack["commit"]["version"], 2);
    let assign = s
        .json(&[
            "assign",
            &id,
            "--role",
            "commander",
            "--person",
            "sam@example.org",
        ])
        .await;
    assert_eq!(assign["incident"]["roles"][0]["person"], "sam@example.org");
    let level = s
        .json(&["level", &id, "tactical", "--reason", "two sites affected"])
        .await;
    assert_eq!(level["incident"]["incident"]["level"], "TACTICAL");
    let classify = s
        .json(&[
            "classify",
            &id,
            "--severity",
            "critical",
            "--priority",
            "p1",
            "--rationale",
            "credential reuse confirmed",
        ])
        .await;
    assert_eq!(classify["incident"]["incident"]["severity"], "CRITICAL");
    let note = s
        .json(&["note", &id, "blocked 198.51.100.0/24 at the edge"])
        .await;
    assert_eq!(
        note["incident"]["notes"][0]["text"],
        "blocked 198.51.100.0/24 at the edge"
    );
    let resolve = s
        .json(&[
            "resolve",
            &id,
            "--resolution",
            "keys rotated, source blocked",
        ])
        .await;
    assert_eq!(resolve["incident"]["incident"]["status"], "RESOLVED");
    let close = s
        .json(&["close", &id, "--note", "post-incident review held"])
        .await;
    assert_eq!(close["incident"]["incident"]["status"], "CLOSED");

    // A read in a later run waits for this client's last write.
    let shown = s.json(&["incidents", "show", &id]).await;
    assert_eq!(shown["incident"]["position"], close["commit"]["position"]);

    // A request id makes a command idempotent.
    let first = s
        .json(&["reopen", &id, "--reason", "new IOC", "--request-id", "r-1"])
        .await;
    let again = s
        .json(&["reopen", &id, "--reason", "new IOC", "--request-id", "r-1"])
        .await;
    assert_eq!(again["commit"]["replayed"], true);
    assert_eq!(again["commit"]["position"], first["commit"]["position"]);

    let table = s.ctl(&["incidents", "list"]).await;
    assert!(table.stdout.starts_with("INCIDENT"), "{}", table.stdout);
    assert!(table.stdout.contains("SSH brute force against bastion-2"));
}

async fn errors_say_what_to_fix_and_exit_with_documented_codes(backend: Backend) {
    let s = Server::start(backend).await;
    // 2: wrong command line (clap).
    let r = s.ctl(&["ack"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    // 3: a value the server refuses, with the field named.
    let r = s
        .ctl(&[
            "ingest",
            "--source",
            "x",
            "--ref",
            "y",
            "--title",
            "",
            "--severity",
            "low",
        ])
        .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("alert.title"), "{}", r.stderr);
    let r = s.ctl(&["ack", "not-an-id"]).await;
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("incident_id"), "{}", r.stderr);
    // 4: no such incident.
    let r = s
        .ctl(&["ack", "00000000-0000-4000-8000-000000000000"])
        .await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    // 5: not allowed in the current state (closing an open incident).
    let opened = s
        .json(&[
            "incidents",
            "open",
            "--title",
            "Laptop stolen",
            "--severity",
            "medium",
        ])
        .await;
    let id = opened["commit"]["aggregate_id"].as_str().unwrap();
    let r = s.ctl(&["close", id]).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    // 7: nothing listens there.
    let port = sems_testkit::free_port();
    let r = run(
        &format!("http://127.0.0.1:{port}"),
        s.state.path(),
        &["incidents", "list"],
    )
    .await;
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.stderr.contains("is semsd running"), "{}", r.stderr);
    // Nothing refused was appended: only the opening is in the log.
    let list = s.json(&["alerts", "list"]).await;
    assert!(list["alerts"].as_array().unwrap().is_empty());
}

async fn a_remembered_position_the_server_never_reached_is_reported_and_forgotten(
    backend: Backend,
) {
    let s = Server::start(backend).await;
    std::fs::write(
        s.state.path().join("positions.json"),
        format!(r#"{{"{}": 999999}}"#, s.url),
    )
    .unwrap();
    let r = s.ctl(&["--timeout", "1", "incidents", "list"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("has not reached position 999999"),
        "{}",
        r.stderr
    );
    let state = std::fs::read_to_string(s.state.path().join("positions.json")).unwrap();
    assert!(!state.contains("999999"), "{state}");

    // A write after a stale position: its own position is what the read waits for.
    let opened = s
        .json(&[
            "incidents",
            "open",
            "--title",
            "Lost laptop",
            "--severity",
            "low",
        ])
        .await;
    let id = opened["commit"]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        s.state.path().join("positions.json"),
        format!(r#"{{"{}": 999999}}"#, s.url),
    )
    .unwrap();
    let r = s
        .ctl(&[
            "--timeout",
            "1",
            "--output",
            "json",
            "ack",
            &id,
            "--request-id",
            "ack-lost-laptop",
        ])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("below 999999") && r.stderr.contains("new store"),
        "{}",
        r.stderr
    );
    let acked: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(acked["incident"]["incident"]["status"], "ACKNOWLEDGED");
    let position = acked["commit"]["position"].as_u64().unwrap();
    let state = std::fs::read_to_string(s.state.path().join("positions.json")).unwrap();
    assert!(
        state.contains(&format!(": {position}")),
        "the run's own write is remembered: {state}"
    );

    // A later write, then the first one retried: its answer (the original, lower position)
    // says nothing about the store, and the later position stays remembered.
    let noted = s.json(&["note", &id, "found in a taxi"]).await;
    let later = noted["commit"]["position"].as_u64().unwrap();
    assert!(later > position);
    let r = s
        .ctl(&[
            "--timeout",
            "1",
            "--output",
            "json",
            "ack",
            &id,
            "--request-id",
            "ack-lost-laptop",
        ])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let retried: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(retried["commit"]["replayed"], true);
    assert_eq!(retried["commit"]["position"].as_u64(), Some(position));
    let state = std::fs::read_to_string(s.state.path().join("positions.json")).unwrap();
    assert!(state.contains(&format!(": {later}")), "{state}");
}

async fn the_handshake_and_the_cmc_log_from_the_command_line(backend: Backend) {
    let s = Server::start_with(backend, Some(tokens(&["tom.tactical", "carla.cmc"]))).await;
    // Without a token, nothing.
    let anonymous = s.ctl(&["incidents", "list"]).await;
    assert_eq!(anonymous.code, 9, "{}", anonymous.stderr);

    let ingested = s
        .json(&strs(&with_token(
            "t-tom.tactical",
            &[
                "ingest",
                "--source",
                "edr",
                "--ref",
                "cmc-1",
                "--title",
                "Ransomware on OT",
                "--severity",
                "critical",
            ],
        )))
        .await;
    let incident = ingested["incident_id"].as_str().unwrap().to_owned();
    for args in [
        vec!["ack", incident.as_str()],
        vec![
            "level",
            incident.as_str(),
            "tactical",
            "--reason",
            "two sites",
        ],
    ] {
        let r = s.ctl(&strs(&with_token("t-tom.tactical", &args))).await;
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    }
    let escalated = s
        .json(&strs(&with_token(
            "t-tom.tactical",
            &[
                "escalate",
                incident.as_str(),
                "--reason",
                "airside at risk",
                "--criteria",
                "C2",
            ],
        )))
        .await;
    let list = s
        .json(&strs(&with_token(
            "t-tom.tactical",
            &["handover", "list", "--pending", "--incident", &incident],
        )))
        .await;
    let handover = list["handovers"][0]["handover_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        escalated["handover_id"], handover,
        "the escalation names the handover it started"
    );
    assert_eq!(
        escalated["incident"]["incident"]["crisis_escalation_requested"],
        true
    );

    let brief = s.state.path().join("brief.json");
    let doc = serde_json::json!({
        "situation": "OT network encrypted", "situation_as_at": "2026-11-27T09:00:00Z",
        "confidence": "MEDIUM", "history": "h", "objectives": "o", "actions_taken": "a",
        "resources_committed": "r", "open_risks": "r", "open_actions": "a",
        "key_contacts": "k", "communications": "c", "constraints": "c",
        "potential_most_likely": "m", "potential_worst_case": "w",
        "authority_requested": "a", "known_unknowns": "",
    });
    std::fs::write(&brief, doc.to_string()).unwrap();
    let brief_arg = brief.to_str().unwrap();
    let incomplete = s
        .ctl(&strs(&with_token(
            "t-tom.tactical",
            &["handover", "offer", &handover, "--brief", brief_arg],
        )))
        .await;
    assert_eq!(incomplete.code, 3, "{}", incomplete.stderr);
    assert!(
        incomplete.stderr.contains("known_unknowns"),
        "{}",
        incomplete.stderr
    );
    // A misspelt section is named as such, before anything is sent.
    let mut typo = doc.clone();
    typo["objective"] = "o".into();
    std::fs::write(&brief, typo.to_string()).unwrap();
    let misspelt = s
        .ctl(&strs(&with_token(
            "t-tom.tactical",
            &["handover", "offer", &handover, "--brief", brief_arg],
        )))
        .await;
    assert_eq!(misspelt.code, 2, "{}", misspelt.stderr);
    assert!(
        misspelt.stderr.contains("unknown section \"objective\""),
        "{}",
        misspelt.stderr
    );
    // The example brief the docs point to is complete and accepted as it is.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/brief.json"
    );
    std::fs::copy(example, &brief).unwrap();
    let offered = s
        .ctl(&strs(&with_token(
            "t-tom.tactical",
            &["handover", "offer", &handover, "--brief", brief_arg],
        )))
        .await;
    assert_eq!(offered.code, 0, "{}", offered.stderr);
    let own = s
        .ctl(&strs(&with_token(
            "t-tom.tactical",
            &["handover", "accept", &handover, "--authority", "all"],
        )))
        .await;
    assert_eq!(
        own.code, 5,
        "the offering party cannot accept: {}",
        own.stderr
    );
    let accepted = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &[
                "handover",
                "accept",
                &handover,
                "--authority",
                "OT shutdown",
            ],
        )))
        .await;
    assert_eq!(accepted["status"], "ACCEPTED");
    let crisis = accepted["crisis_id"].as_str().unwrap().to_owned();

    let bad = s
        .ctl(&strs(&with_token(
            "t-carla.cmc",
            &[
                "crisis",
                "info",
                &crisis,
                "--source",
                "police",
                "--content",
                "x",
                "--grade",
                "B7",
            ],
        )))
        .await;
    assert_eq!(bad.code, 3, "{}", bad.stderr);
    assert!(bad.stderr.contains("grade.credibility"), "{}", bad.stderr);
    let info = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &[
                "crisis",
                "info",
                &crisis,
                "--source",
                "police",
                "--content",
                "gate closed",
                "--grade",
                "B2",
            ],
        )))
        .await;
    assert!(
        info["entries"][0]
            .as_str()
            .unwrap()
            .contains("[B2 Fact] police"),
        "{info}"
    );

    // A watcher started now prints the history, then the decision recorded after it.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_semsctl"))
        .args([
            "--server",
            &s.url,
            "--token",
            "t-carla.cmc",
            "crisis",
            "watch",
            &crisis,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let decided = s
        .ctl(&strs(&with_token(
            "t-carla.cmc",
            &[
                "crisis",
                "decide",
                &crisis,
                "--decision",
                "Shut the OT gateway",
                "--rationale",
                "stop the spread",
                "--maker",
                "carla.cmc",
                "--option",
                "monitor: too slow",
            ],
        )))
        .await;
    assert_eq!(decided.code, 0, "{}", decided.stderr);
    // The table names the decision the server chose the id of.
    let decision_id = decided
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("decision_id: "))
        .unwrap_or_else(|| panic!("no decision id printed: {}", decided.stdout))
        .to_owned();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("Decision by carla.cmc"))
    {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the watch printed nothing new")
            .unwrap()
            .unwrap();
        seen.push(line);
    }
    assert!(seen[0].contains("escalation"), "{seen:?}");
    watch.kill().await.unwrap();

    let stabilising = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &[
                "crisis",
                "stabilising",
                &crisis,
                "--reason",
                "spread contained",
            ],
        )))
        .await;
    assert_eq!(
        stabilising["entries"][0],
        "Crisis stabilising: spread contained"
    );
    let timeline = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &["crisis", "timeline", &crisis],
        )))
        .await;
    let kinds: Vec<&str> = timeline["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "escalation",
            "handover",
            "handover",
            "handover",
            "crisis",
            "information",
            "decision",
            "crisis"
        ]
    );
    let register = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &["crisis", "decisions", &crisis],
        )))
        .await;
    assert_eq!(register["current"][0]["decision"], "Shut the OT gateway");
    assert_eq!(register["current"][0]["decision_id"], decision_id.as_str());
    assert_eq!(register["current"][0]["options"][0]["why_not"], "too slow");

    // A second report confirms the first, a third replaces it; their ids are in the timeline.
    for content in ["gate closed, seen on CCTV", "gate reopened at 14:10"] {
        let logged = s
            .ctl(&strs(&with_token(
                "t-carla.cmc",
                &[
                    "crisis",
                    "info",
                    &crisis,
                    "--source",
                    "security desk",
                    "--content",
                    content,
                    "--grade",
                    "A1",
                ],
            )))
            .await;
        assert_eq!(logged.code, 0, "{}", logged.stderr);
    }
    let timeline = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &["crisis", "timeline", &crisis],
        )))
        .await;
    let items: Vec<String> = timeline["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "InformationReceived")
        .map(|e| e["detail"]["information_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items.len(), 3);
    for args in [
        vec![
            "crisis",
            "corroborate",
            &crisis,
            &items[0],
            "--by",
            &items[1],
            "--note",
            "CCTV",
        ],
        vec![
            "crisis",
            "supersede",
            &crisis,
            &items[0],
            "--by",
            &items[2],
            "--reason",
            "reopened",
        ],
    ] {
        let done = s.ctl(&strs(&with_token("t-carla.cmc", &args))).await;
        assert_eq!(done.code, 0, "{:?}: {}", args, done.stderr);
    }
    let timeline = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &["crisis", "timeline", &crisis],
        )))
        .await;
    let last: Vec<&str> = timeline["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(last, ["InformationSuperseded", "InformationCorroborated"]);

    // The stand-down returns command to TACTICAL and says where the crisis stands.
    let stood_down = s
        .json(&strs(&with_token(
            "t-carla.cmc",
            &[
                "crisis",
                "stand-down",
                &crisis,
                "--handed-to",
                "tom.tactical",
                "--decision",
                &decision_id,
            ],
        )))
        .await;
    assert_eq!(stood_down["status"], "STOOD_DOWN", "{stood_down}");
    assert_eq!(stood_down["handed_to"], "tom.tactical");
    let card = s
        .json(&strs(&with_token(
            "t-tom.tactical",
            &["incidents", "show", &incident],
        )))
        .await;
    assert_eq!(card["incident"]["level"], "TACTICAL");
}

/// A tokens file for `people`: each one's token is `t-` and their name.
fn tokens(people: &[&str]) -> String {
    people
        .iter()
        .map(|p| {
            format!(
                "{p} sha256:{}\n",
                sems_app::sha256_hex(format!("t-{p}").as_bytes())
            )
        })
        .collect()
}

fn with_token(token: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--token".to_owned(), token.to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn an_incident_decision_log_from_the_command_line(backend: Backend) {
    let s = Server::start(backend).await;
    let opened = s
        .json(&[
            "incidents",
            "open",
            "--title",
            "Ransomware on FS-01",
            "--severity",
            "critical",
        ])
        .await;
    let id = opened["commit"]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.json(&["ack", &id]).await;

    let first = s
        .json(&[
            "decision",
            "record",
            &id,
            "--decision",
            "Isolate FS-01",
            "--rationale",
            "encryption is spreading over SMB",
            "--option",
            "monitor only: every hour costs another share",
            "--maker",
            "tom.tactical",
        ])
        .await;
    let first_id = first["decision"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first["decision"]["level"], "TACTICAL");
    assert_eq!(
        first["decision"]["options"][0]["why_not"],
        "every hour costs another share"
    );
    let second = s
        .json(&[
            "decision",
            "record",
            &id,
            "--decision",
            "Isolate the file-server VLAN",
            "--rationale",
            "FS-02 encrypting too",
            "--maker",
            "tom.tactical",
            "--supersedes",
            &first_id,
        ])
        .await;
    let second_id = second["decision"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A run repeated with its request id answers the decision the first run recorded.
    let retry = [
        "decision",
        "record",
        &id,
        "--decision",
        "Call in the IR retainer",
        "--rationale",
        "two sites",
        "--maker",
        "tom.tactical",
        "--level",
        "operational",
        "--request-id",
        "call-retainer",
    ];
    let once = s.json(&retry).await;
    let again = s.json(&retry).await;
    assert_eq!(again["commit"]["replayed"], true);
    assert_eq!(again["commit"]["position"], once["commit"]["position"]);
    assert_eq!(again["decision"], once["decision"]);
    assert_eq!(once["decision"]["level"], "OPERATIONAL");
    let retainer_id = once["decision"]["decision_id"].as_str().unwrap().to_owned();
    let reviewed = s
        .json(&[
            "decision",
            "review",
            &id,
            &first_id,
            "--outcome",
            "too narrow",
        ])
        .await;
    assert_eq!(reviewed["decision"]["status"], "SUPERSEDED");
    assert_eq!(reviewed["decision"]["reviews"][0], "too narrow");

    // Refusals exit 3 (a field) or 5 (the state) and name what to fix.
    let r = s
        .ctl(&[
            "decision",
            "amend",
            &id,
            &first_id,
            "--amendment",
            "x",
            "--reason",
            "y",
        ])
        .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("superseded"), "{}", r.stderr);
    let r = s
        .ctl(&[
            "decision",
            "record",
            &id,
            "--decision",
            "x",
            "--rationale",
            "",
            "--maker",
            "tom",
        ])
        .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("rationale"), "{}", r.stderr);

    let log = s.json(&["decision", "log", &id]).await;
    let ids = |k: &str| -> Vec<String> {
        log[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["decision_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("current"), vec![second_id.clone(), retainer_id]);
    assert_eq!(ids("superseded"), vec![first_id.clone()]);
    let table = s.ctl(&["decision", "log", &id]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("Isolate the file-server VLAN"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains(&format!("superseded by {second_id}")),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("reviewed: too narrow"),
        "{}",
        table.stdout
    );
}

async fn risks_are_linked_listed_and_counted_from_the_command_line(backend: Backend) {
    let s = Server::start(backend).await;
    let mut ids = Vec::new();
    for title in ["Phished finance clerk", "Phished HR officer"] {
        let opened = s
            .json(&["incidents", "open", "--title", title, "--severity", "high"])
            .await;
        ids.push(
            opened["commit"]["aggregate_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let linked = s
        .json(&[
            "risk",
            "link",
            &ids[0],
            "R-042",
            "--rationale",
            "credential phishing",
        ])
        .await;
    assert_eq!(linked["incident"]["risks"][0]["risk_ref"], "R-042");
    assert_eq!(linked["incident"]["incident"]["risk_refs"][0], "R-042");
    s.json(&["risk", "link", &ids[1], "R-042", "--rationale", "same"])
        .await;
    let r = s
        .ctl(&["risk", "link", &ids[1], "R-042", "--rationale", "again"])
        .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    s.json(&[
        "risk",
        "unlink",
        &ids[1],
        "R-042",
        "--reason",
        "wrong entry",
    ])
    .await;

    let listed = s.json(&["incidents", "list", "--risk", "R-042"]).await;
    let listed: Vec<&str> = listed["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["incident_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[0].as_str()]);
    let counts = s.json(&["risk", "counts"]).await;
    assert_eq!(
        counts["risks"],
        serde_json::json!([{"risk_ref": "R-042", "incidents": 1, "open": 1}])
    );
    let table = s.ctl(&["incidents", "show", &ids[0]]).await;
    assert!(
        table.stdout.contains("Register risks realised"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("credential phishing"),
        "{}",
        table.stdout
    );
}

async fn a_statement_is_drafted_approved_sent_and_retracted_from_the_command_line(
    backend: Backend,
) {
    let s = Server::start_with(backend, Some(tokens(&["tom.tactical", "carla.cmc"]))).await;
    let carla = |args: &[&str]| with_token("t-carla.cmc", args);
    let tom = |args: &[&str]| with_token("t-tom.tactical", args);
    let opened = s
        .json(&strs(&tom(&[
            "incidents",
            "open",
            "--title",
            "Customer data exposed",
            "--severity",
            "critical",
        ])))
        .await;
    let incident = opened["commit"]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let declared = s
        .json(&strs(&carla(&[
            "crisis",
            "declare",
            "--title",
            "Data breach",
            "--incident",
            &incident,
            "--criteria",
            "C1: personal data of customers",
        ])))
        .await;
    let crisis = declared["commit"]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Tom speaks for communications, logged present by Carla; Carla leads, logged by Tom;
    // Carla drafts and sends.
    for args in [
        carla(&[
            "crisis",
            "attend",
            &crisis,
            "--person",
            "tom.tactical",
            "--role",
            "communications",
        ]),
        tom(&[
            "crisis",
            "attend",
            &crisis,
            "--person",
            "carla.cmc",
            "--role",
            "crisis-lead",
        ]),
    ] {
        let r = s.ctl(&strs(&args)).await;
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    }
    let draft = carla(&[
        "crisis",
        "communicate",
        &crisis,
        "--audience",
        "staff",
        "--channel",
        "intranet",
        "--tlp",
        "green",
        "--content",
        "Do not open mail from payroll-update.example",
        "--request-id",
        "staff-warning",
    ]);
    let drafted = s.json(&strs(&draft)).await;
    // The command names what it created; run again with its request id, the same.
    let message = drafted["communication_id"].as_str().unwrap().to_owned();
    let again = s.json(&strs(&draft)).await;
    assert_eq!(again["commit"]["replayed"], true);
    assert_eq!(again["communication_id"], message.as_str());
    let shown = s.json(&strs(&carla(&["crisis", "show", &crisis]))).await;
    assert_eq!(shown["communications"][0]["communication_id"], message);
    // The drafter approves nothing of her own.
    let r = s
        .ctl(&strs(&carla(&[
            "crisis",
            "approve",
            &crisis,
            &message,
            "--role",
            "crisis-lead",
        ])))
        .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("other than its drafter"), "{}", r.stderr);
    for args in [
        tom(&[
            "crisis",
            "approve",
            &crisis,
            &message,
            "--role",
            "communications",
        ]),
        carla(&["crisis", "send", &crisis, &message]),
        tom(&[
            "crisis",
            "retract",
            &crisis,
            &message,
            "--reason",
            "the sender domain was wrong",
            "--role",
            "communications",
        ]),
    ] {
        let r = s.ctl(&strs(&args)).await;
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    }
    let shown = s.json(&strs(&carla(&["crisis", "show", &crisis]))).await;
    let m = &shown["communications"][0];
    assert_eq!(m["status"], "RETRACTED", "{m}");
    assert_eq!(m["approved_by"], "tom.tactical");
    assert_eq!(m["retracted_by"], "tom.tactical");
    assert_eq!(m["retraction_reason"], "the sender domain was wrong");
    assert!(m["retracted_at"].is_string(), "{m}");
}

const README: &str = include_str!("../../../README.md");

/// The README's quick-start `sh` block that holds `marker`.
fn quick_start_block(marker: &str) -> &'static str {
    let section = readme::section(README, "## Quick start").unwrap();
    readme::sh_blocks(section)
        .into_iter()
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no quick-start block holds `{marker}`"))
}

/// Runs the README's semsctl commands `steps`, each starting with the words `program` (how
/// the README runs semsctl), as written but for the `<NAME>`s, and checks each promise: a
/// line of the output that matches it or, for a promise starting with `{`, JSON the output
/// holds. Returns the values the promises captured.
async fn run_readme_steps(s: &Server, steps: &[Step], program: &[&str]) -> Bound {
    let mut bound = Bound::new();
    for step in steps {
        let what = step.words.join(" ");
        assert!(
            step.words.iter().take(program.len()).eq(program.iter()),
            "`{what}` does not run semsctl as {program:?}"
        );
        let args = step.words[program.len()..]
            .iter()
            .map(|w| readme::substitute(w, &bound))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let args = strs(&args);
        if args.windows(2).any(|w| w == ["crisis", "watch"]) {
            let promise = step.promise.as_deref().expect("a watch promises a line");
            watch_until(s, &args, promise, &mut bound).await;
            continue;
        }
        let r = s.ctl(&args).await;
        assert_eq!(r.code, 0, "{what}: {}{}", r.stdout, r.stderr);
        let Some(promise) = step.promise.as_deref() else {
            continue;
        };
        if promise.starts_with('{') {
            let expected = readme::json_promise(promise).unwrap();
            let actual: Value = serde_json::from_str(&r.stdout)
                .unwrap_or_else(|e| panic!("{what}: printed no JSON ({e}): {}", r.stdout));
            readme::json_matches(&expected, &actual, "", &mut bound)
                .unwrap_or_else(|e| panic!("{what}: {e}: {actual}"));
        } else {
            assert!(
                r.stdout
                    .lines()
                    .any(|line| readme::line_matches(promise, line, &mut bound)),
                "{what}: no line matches `{promise}` in:\n{}",
                r.stdout
            );
        }
    }
    bound
}

/// Runs a command that watches (it never ends by itself) until a line of its output matches
/// `promise`, then stops it.
async fn watch_until(s: &Server, args: &[&str], promise: &str, bound: &mut Bound) {
    use tokio::io::AsyncBufReadExt;
    let mut child = semsctl(&s.url, s.state.path(), args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if readme::line_matches(promise, &line, bound) {
                return true;
            }
            seen.push(line);
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "{args:?}: no line matches `{promise}` in {seen:#?}"
    );
    child.kill().await.unwrap();
}

/// Exactly the names captured: a misspelt name in a promise would capture anything.
fn assert_captured(bound: &Bound, names: &[&str]) {
    let mut captured: Vec<&str> = bound.keys().map(String::as_str).collect();
    captured.sort_unstable();
    let mut names = names.to_vec();
    names.sort_unstable();
    assert_eq!(captured, names);
}

async fn the_readme_quick_start_runs_as_written(backend: Backend) {
    let s = Server::start(backend).await;
    let steps = readme::steps_of(quick_start_block("semsctl -- demo")).unwrap();
    assert!(steps.len() >= 4, "{steps:?}");
    let program = ["cargo", "run", "--release", "-p", "semsctl", "--"];
    let bound = run_readme_steps(&s, &steps, &program).await;
    assert_captured(&bound, &["INCIDENT"]);
}

async fn the_readme_handshake_walk_through_runs_as_written(backend: Backend) {
    let block = quick_start_block("--tokens-file");
    // The lines before semsd starts write the tokens file; they run as written, in a
    // directory of their own.
    let (setup, rest) = block
        .split_once("cargo run --release -p semsd -- --tokens-file tokens")
        .expect("the walk-through starts semsd with its tokens file");
    let dir = tempfile::tempdir().unwrap();
    let status = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", setup])
        .current_dir(dir.path())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{setup}");
    let tokens = std::fs::read_to_string(dir.path().join("tokens")).unwrap();
    assert_eq!(tokens.lines().count(), 2, "{tokens}");
    let s = Server::start_with(backend, Some(tokens)).await;
    let (defined, commands) = rest
        .split_once("ctl() { cargo run -q --release -p semsctl -- \"$@\"; }\n")
        .expect("the walk-through runs semsctl as `ctl`");
    assert!(
        defined
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')),
        "only remarks between semsd and ctl: {defined}"
    );
    let steps = readme::steps_of(commands).unwrap();
    assert!(steps.len() >= 9, "{steps:?}");
    let bound = run_readme_steps(&s, &steps, &["ctl"]).await;
    assert_captured(&bound, &["CRISIS", "HANDOVER", "INCIDENT"]);
}

async fn the_readme_webhook_post_runs_as_written(backend: Backend) {
    let s = Server::start(backend).await;
    let steps = readme::steps_of(quick_start_block("curl ")).unwrap();
    let [post, list] = steps.as_slice() else {
        panic!("the webhook block posts, then lists: {steps:?}");
    };
    let mut bound = Bound::new();
    post_as_written(&s, post, &mut bound).await;
    // The incident list shows what the post opened.
    let program = ["cargo", "run", "--release", "-p", "semsctl", "--"];
    bound.extend(run_readme_steps(&s, std::slice::from_ref(list), &program).await);
    assert_captured(&bound, &["INCIDENT"]);
}

/// Every `sh` block of `docs/WEBHOOKS.md` (posts with curl), each on a fresh store.
async fn the_webhook_guide_examples_run_as_written(backend: Backend) {
    let guide = include_str!("../../../docs/WEBHOOKS.md");
    let blocks = readme::sh_blocks(guide);
    assert!(blocks.len() >= 2, "{blocks:?}");
    for block in blocks {
        let s = Server::start(backend).await;
        let mut bound = Bound::new();
        for step in readme::steps_of(block).unwrap() {
            post_as_written(&s, &step, &mut bound).await;
        }
        assert_captured(&bound, &[]);
    }
}

/// Runs `step`, a curl command, as written but to the test server's webhooks instead of
/// semsd's default address, and checks its JSON promise.
async fn post_as_written(s: &Server, step: &Step, bound: &mut Bound) {
    let listen = semsd::Config::defaults().grpc.http_listen.0;
    let default = format!("http://{}", listen.expect("webhooks are served by default"));
    assert_eq!(step.words[0], "curl", "{step:?}");
    let words: Vec<String> = step.words[1..]
        .iter()
        .map(|w| match w.strip_prefix(&default) {
            Some(path) => format!("{}{path}", s.http),
            None => w.clone(),
        })
        .collect();
    assert_ne!(words, step.words[1..], "the post goes to {default}");
    let out = tokio::process::Command::new("curl")
        .args(&words)
        .output()
        .await
        .expect("curl (scripts/test.sh installs it)");
    let answer = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{answer}");
    let promise = step.promise.as_deref().expect("a post promises an answer");
    let actual: Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{:?}: no JSON ({e}): {answer}", step.words));
    readme::json_matches(&readme::json_promise(promise).unwrap(), &actual, "", bound)
        .unwrap_or_else(|e| panic!("{:?}: {e}: {answer}", step.words));
}

async fn the_semsctl_guide_walk_through_runs_as_written(backend: Backend) {
    let guide = include_str!("../../../docs/SEMSCTL.md");
    let block = readme::sh_blocks(guide)[0];
    let (build, walk) = block.split_once('\n').unwrap();
    assert_eq!(build, "cargo build --release -p semsctl");
    let s = Server::start(backend).await;
    let steps = readme::steps_of(walk).unwrap();
    assert!(steps.len() >= 12, "{steps:?}");
    let bound = run_readme_steps(&s, &steps, &["target/release/semsctl"]).await;
    assert_captured(&bound, &["ALERT", "DEMO", "INCIDENT"]);
}

async fn a_closed_output_stops_semsctl_quietly(backend: Backend) {
    let s = Server::start(backend).await;
    let demo = s.ctl(&["demo", "--pace-ms", "0"]).await;
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    // The reading end is closed before semsctl writes (as `head` closes it once it has
    // enough): no panic, exit 141.
    let closed = async |args: &[&str]| {
        let mut child = semsctl(&s.url, s.state.path(), args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (_, stderr) = closed(&["incidents", "show", "--help"]).await;
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, stderr) = closed(&["alerts", "list"]).await;
    assert_eq!(code, Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
