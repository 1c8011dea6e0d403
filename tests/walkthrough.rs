//! The README's grpcurl walk-through, run as written with grpcurl against `semsd` on both
//! stores.
//!
//! Each command of the walk-through's `sh` block runs as the README shows it, with only the
//! address changed to the test server's and the `<NAME>`s filled in. Each `# → …` promise
//! under a command (`sems_testkit::readme`) is checked: JSON that the answer holds, or
//! `ERROR: Code: <code>  Message: <message>  prose`, a refusal with that status that appends
//! nothing; an `InvalidArgument` also carries a `google.rpc.BadRequest` naming the field the
//! message names, which grpcurl shows under `Details`.
//!
//! grpcurl is taken from `SEMS_GRPCURL`, else from where `scripts/test.sh` fetches it
//! (`target/tools/`; `scripts/services.sh`, `sems_ensure_grpcurl`), else from `PATH`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use sems_testkit::{
    Backend, on_both_stores,
    readme::{self, Bound, Step},
};
use serde_json::Value;
use support::Server;

on_both_stores!(the_readme_grpcurl_walk_through_runs_as_written);

const README: &str = include_str!("../README.md");
const SECTION: &str = "## Walk-through with grpcurl";

async fn the_readme_grpcurl_walk_through_runs_as_written(backend: Backend) {
    let s = Server::start(backend).await;
    let steps = walk_through().unwrap();
    assert!(
        steps.len() >= 8,
        "the walk-through has {} commands",
        steps.len()
    );
    let default_listen = semsd::Config::defaults().grpc.listen.to_string();
    let calls: Vec<Call> = steps
        .iter()
        .map(|(step, _)| Call::parse(&step.words).unwrap())
        .collect();
    let mut bound = Bound::new();
    let mut reran_the_first_alert = false;
    for ((step, expect), call) in steps.iter().zip(&calls) {
        let what = step.words.join(" ");
        assert_eq!(
            step.words[call.address], default_listen,
            "{what}: the walk-through calls semsd's default address"
        );
        let mut words = step
            .words
            .iter()
            .map(|w| readme::substitute(w, &bound))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        words[call.address] = s.grpc.clone();
        let messages_before = s.message_count().await;
        let answer = grpcurl(&words).await;
        let Some(method) = &call.method else {
            // `grpcurl … list`: every service the walk-through calls is listed.
            assert!(expect.is_none(), "{what}: a list's promise is not checked");
            let listed: Vec<&str> = answer.as_ref().unwrap().lines().collect();
            for service in calls.iter().filter_map(|c| c.method.as_deref()) {
                let service = service.split('/').next().unwrap();
                assert!(listed.contains(&service), "{service} not in {listed:?}");
            }
            continue;
        };
        match (expect, &answer) {
            (None, Ok(_)) => {}
            (None, Err(out)) => panic!("{what}: failed: {out}"),
            (Some(Expect::Answer(expected)), Ok(out)) => {
                let actual: Value = serde_json::from_str(out)
                    .unwrap_or_else(|e| panic!("{what}: the answer is not JSON ({e}): {out}"));
                readme::json_matches(expected, &actual, "", &mut bound)
                    .unwrap_or_else(|e| panic!("{what}: the answer {actual} differs: {e}"));
            }
            (Some(Expect::Failure { code, message }), Err(out)) => {
                let field = |name: &str| {
                    out.lines()
                        .find_map(|l| l.trim().strip_prefix(name))
                        .map(str::trim)
                        .unwrap_or_else(|| panic!("{what}: no {name} in {out}"))
                };
                assert_eq!(field("Code:"), code, "{what}: {out}");
                assert_eq!(field("Message:"), message, "{what}: {out}");
                if code == "InvalidArgument" {
                    // The refused field, also as a `BadRequest` grpcurl can show: its type is
                    // reflected too.
                    let named = message
                        .strip_prefix("invalid ")
                        .and_then(|m| m.split_once(':'))
                        .unwrap_or_else(|| panic!("{what}: `{message}` names no field"))
                        .0;
                    // Newer grpcurl indents the details' JSON; 1.8.6 prints it on one line.
                    let compact: String = out.split_whitespace().collect();
                    assert!(
                        compact.contains("\"@type\":\"type.googleapis.com/google.rpc.BadRequest\"")
                            && compact.contains(&format!("\"field\":\"{named}\"")),
                        "{what}: no BadRequest naming {named}: {out}"
                    );
                }
                assert_eq!(
                    s.message_count().await,
                    messages_before,
                    "{what}: a refused command appends nothing"
                );
            }
            (Some(expected), answer) => {
                panic!("{what}: expected {expected:?}, got {answer:?}")
            }
        }

        // What the README says of running the first alert again, right after it: without its
        // request id it is a repeat of the same alert; with it, a replay that appends nothing.
        if method == "sems.v1.AlertService/IngestAlert" && !reran_the_first_alert {
            reran_the_first_alert = true;
            let data = call
                .data
                .map(|d| &words[d])
                .expect("the first alert has data");
            let first: Value = serde_json::from_str(answer.as_ref().unwrap()).unwrap();
            let mut without_id: Value = serde_json::from_str(data).unwrap();
            assert!(
                without_id
                    .as_object_mut()
                    .unwrap()
                    .remove("request_id")
                    .is_some(),
                "the first alert carries a request id"
            );
            let mut rerun = words.clone();
            rerun[call.data.unwrap()] = without_id.to_string();
            let repeat: Value = serde_json::from_str(&grpcurl(&rerun).await.unwrap()).unwrap();
            assert_eq!(repeat["repeat"], true, "{repeat}");
            assert_eq!(repeat["alertId"], first["alertId"], "{repeat}");
            assert_eq!(repeat["incidentId"], first["incidentId"], "{repeat}");
            let count = s.message_count().await;
            let replay: Value = serde_json::from_str(&grpcurl(&words).await.unwrap()).unwrap();
            assert_eq!(replay["replayed"], true, "{replay}");
            assert_eq!(replay["position"], first["position"], "{replay}");
            assert_eq!(s.message_count().await, count, "a replay appends nothing");
        }
    }
    assert!(reran_the_first_alert, "the walk-through ingests an alert");
    // Exactly these: a misspelt name in a promise would otherwise capture anything.
    let mut captured: Vec<&str> = bound.keys().map(String::as_str).collect();
    captured.sort_unstable();
    assert_eq!(captured, ["HANDOVER", "INCIDENT", "P", "P2", "P3"]);
    s.stop().await;
}

/// Runs grpcurl with `words` (the first is `grpcurl` itself): its output when it succeeds,
/// else what it printed of the failure.
async fn grpcurl(words: &[String]) -> Result<String, String> {
    // Where scripts/test.sh puts it with the default target directory.
    let fetched = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/tools/grpcurl-1.8.6"
    );
    let program = std::env::var("SEMS_GRPCURL").unwrap_or_else(|_| {
        let fetched = std::path::Path::new(fetched);
        let name = if fetched.exists() {
            fetched.to_str()
        } else {
            None
        };
        name.unwrap_or("grpcurl").to_string()
    });
    let output = tokio::process::Command::new(&program)
        .args(&words[1..])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): scripts/test.sh provides grpcurl; or install it \
                 and put it on PATH, or name it in SEMS_GRPCURL"
            )
        });
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    if output.status.success() {
        Ok(text(output.stdout))
    } else {
        Err(text(output.stderr))
    }
}

#[derive(Debug)]
enum Expect {
    Answer(Value),
    Failure { code: String, message: String },
}

/// The commands of the README's walk-through, in order, each with its promise.
fn walk_through() -> Result<Vec<(Step, Option<Expect>)>, String> {
    let section = readme::section(README, SECTION)?;
    let block = readme::sh_blocks(section)
        .into_iter()
        .next()
        .ok_or("the walk-through has no sh block")?;
    readme::steps_of(block)?
        .into_iter()
        .map(|step| {
            if step.words[0] != "grpcurl" {
                return Err(format!(
                    "the walk-through runs only grpcurl: {:?}",
                    step.words
                ));
            }
            let expect = step.promise.as_deref().map(expectation).transpose()?;
            Ok((step, expect))
        })
        .collect()
}

fn expectation(promise: &str) -> Result<Expect, String> {
    let failure = promise.strip_prefix("ERROR:").map(str::trim_start);
    if let Some(rest) = failure.and_then(|f| f.strip_prefix("Code:")) {
        let (code, message) = rest
            .split_once("Message:")
            .ok_or_else(|| format!("`{promise}` has no Message:"))?;
        // The message ends at two blanks, where prose may follow it.
        let message = message.trim().split("  ").next().unwrap_or_default();
        return Ok(Expect::Failure {
            code: code.trim().to_string(),
            message: message.to_string(),
        });
    }
    readme::json_promise(promise).map(Expect::Answer)
}

/// Where the parts of a grpcurl command line are: `grpcurl -plaintext [-d JSON] ADDRESS
/// (list | SERVICE/METHOD)`, flags before the address (grpcurl reads no flag after it).
struct Call {
    /// Index of the `-d` JSON.
    data: Option<usize>,
    /// Index of the address.
    address: usize,
    /// The method; `None` for `list`.
    method: Option<String>,
}

impl Call {
    fn parse(words: &[String]) -> Result<Self, String> {
        let (mut data, mut plaintext, mut i) = (None, false, 1);
        while let Some(flag) = words.get(i).filter(|w| w.starts_with('-')) {
            match flag.as_str() {
                "-plaintext" => plaintext = true,
                "-d" if i + 1 < words.len() => {
                    i += 1;
                    data = Some(i);
                }
                other => return Err(format!("unexpected flag {other}")),
            }
            i += 1;
        }
        if !plaintext {
            return Err("semsd serves plaintext here: -plaintext is needed".into());
        }
        match &words[i..] {
            [_, verb] if verb == "list" => Ok(Self {
                data,
                address: i,
                method: None,
            }),
            [_, method] if method.contains('/') => Ok(Self {
                data,
                address: i,
                method: Some(method.clone()),
            }),
            other => Err(format!(
                "expected ADDRESS METHOD after the flags, got {other:?}"
            )),
        }
    }
}

#[test]
fn grpcurl_command_lines_are_read_as_grpcurl_reads_them() {
    let words = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
    let call = Call::parse(&words("grpcurl -plaintext -d {} host:1 s.S/M")).unwrap();
    assert_eq!(
        (call.data, call.address, call.method.as_deref()),
        (Some(3), 4, Some("s.S/M"))
    );
    let list = Call::parse(&words("grpcurl -plaintext host:1 list")).unwrap();
    assert_eq!((list.address, list.method), (2, None));
    for wrong in [
        "grpcurl host:1 -plaintext list",
        "grpcurl -d {} host:1 s.S/M",
        "grpcurl -plaintext -v host:1 s.S/M",
        "grpcurl -plaintext host:1 s.S/M extra",
    ] {
        assert!(Call::parse(&words(wrong)).is_err(), "{wrong}");
    }
}

#[test]
fn promises_are_json_answers_or_grpcurl_errors() {
    let failure =
        expectation("ERROR: Code: InvalidArgument  Message: invalid x: y  (and prose)").unwrap();
    assert!(matches!(failure,
        Expect::Failure { code, message } if code == "InvalidArgument" && message == "invalid x: y"));
    assert!(matches!(
        expectation("{\"a\": 1}  prose"),
        Ok(Expect::Answer(_))
    ));
    assert!(expectation("Code: InvalidArgument").is_err());
    assert!(expectation("the answer").is_err());
}
