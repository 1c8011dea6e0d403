//! The README's grpcurl walk-through, run as written with grpcurl against `semsd` on both
//! stores.
//!
//! Each command of the walk-through's `sh` block runs as the README shows it, with only the
//! address changed to the test server's and the `<NAME>`s filled in. Each `# → …` line right
//! under a command (with the indented comment lines after it) is the answer the README
//! promises, checked here:
//!
//! * `# → {json} prose`: the answer holds at least the JSON's fields, with those values; a
//!   list shows every item, in order, each with at least the fields shown. `"…"` stands for
//!   any value, and `"<NAME>"` for a value captured from the answer and substituted, wherever
//!   `<NAME>` appears, into the commands after it;
//! * `# → ERROR: Code: <code>  Message: <message>  prose`: the call fails with that status,
//!   and appends nothing; an `InvalidArgument` also carries a `google.rpc.BadRequest` naming
//!   the field the message names, which grpcurl shows under `Details`.
//!
//! grpcurl is taken from `SEMS_GRPCURL`, else from where `scripts/test.sh` fetches it
//! (`target/tools/`; `scripts/services.sh`, `sems_ensure_grpcurl`), else from `PATH`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use sems_testkit::{Backend, on_both_stores};
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
        .map(|step| Call::parse(&step.words).unwrap())
        .collect();
    let mut bound: HashMap<String, String> = HashMap::new();
    let mut reran_the_first_alert = false;
    for (step, call) in steps.iter().zip(&calls) {
        let what = step.words.join(" ");
        assert_eq!(
            step.words[call.address], default_listen,
            "{what}: the walk-through calls semsd's default address"
        );
        let mut words = step
            .words
            .iter()
            .map(|w| substitute(w, &bound))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        words[call.address] = s.grpc.clone();
        let messages_before = s.message_count().await;
        let answer = grpcurl(&words).await;
        let Some(method) = &call.method else {
            // `grpcurl … list`: every service the walk-through calls is listed.
            assert!(
                step.expect.is_none(),
                "{what}: a list's promise is not checked"
            );
            let listed: Vec<&str> = answer.as_ref().unwrap().lines().collect();
            for service in calls.iter().filter_map(|c| c.method.as_deref()) {
                let service = service.split('/').next().unwrap();
                assert!(listed.contains(&service), "{service} not in {listed:?}");
            }
            continue;
        };
        match (&step.expect, &answer) {
            (None, Ok(_)) => {}
            (None, Err(out)) => panic!("{what}: failed: {out}"),
            (Some(Expect::Answer(expected)), Ok(out)) => {
                let actual: Value = serde_json::from_str(out)
                    .unwrap_or_else(|e| panic!("{what}: the answer is not JSON ({e}): {out}"));
                matches(expected, &actual, "", &mut bound)
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

/// One command of the walk-through and the answer promised under it.
#[derive(Debug)]
struct Step {
    words: Vec<String>,
    expect: Option<Expect>,
}

#[derive(Debug)]
enum Expect {
    Answer(Value),
    Failure { code: String, message: String },
}

/// The commands of the README's walk-through, in order.
fn walk_through() -> Result<Vec<Step>, String> {
    let section = README
        .split_once(SECTION)
        .ok_or("the README has no grpcurl walk-through")?
        .1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .ok_or("the walk-through has no sh block")?
        .0;
    steps_of(block)
}

/// What the last comment line of a shell block followed.
#[derive(PartialEq)]
enum After {
    Command,
    Promise,
    Other,
}

/// The commands of a shell block, each with the promise under it, if any: a `# →` line and
/// the indented comment lines that continue it.
fn steps_of(block: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut promise: Option<String> = None;
    let mut after = After::Other;
    let keep = |steps: &mut Vec<Step>, promise: &mut Option<String>| -> Result<(), String> {
        if let (Some(step), Some(text)) = (steps.last_mut(), promise.take()) {
            step.expect = Some(expectation(&text)?);
        }
        Ok(())
    };
    for item in shell_items(block) {
        match item {
            Item::Command(words) => {
                keep(&mut steps, &mut promise)?;
                if words[0] != "grpcurl" {
                    return Err(format!("the walk-through runs only grpcurl: {words:?}"));
                }
                steps.push(Step {
                    words,
                    expect: None,
                });
                after = After::Command;
            }
            Item::Comment(text) => {
                if let Some(rest) = text.trim_start().strip_prefix('→') {
                    if after != After::Command {
                        return Err(format!("`# →{rest}` is not right under a command"));
                    }
                    promise = Some(rest.trim().to_string());
                    after = After::Promise;
                } else if after == After::Promise && text.starts_with("  ") {
                    // Two blanks: they end a failure's message, where prose may follow.
                    let promise = promise.as_mut().expect("a promise is open");
                    promise.push_str("  ");
                    promise.push_str(text.trim());
                } else {
                    keep(&mut steps, &mut promise)?;
                    after = After::Other;
                }
            }
        }
    }
    keep(&mut steps, &mut promise)?;
    Ok(steps)
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
    // The JSON comes first; prose may follow it, after a blank.
    let mut values = serde_json::Deserializer::from_str(promise).into_iter::<Value>();
    let json = match values.next() {
        Some(Ok(v)) if v.is_object() => v,
        other => {
            return Err(format!(
                "`# → {promise}` starts with neither a JSON object nor ERROR: {other:?}"
            ));
        }
    };
    let prose = &promise[values.byte_offset()..];
    if !prose.is_empty() && !prose.starts_with(char::is_whitespace) {
        return Err(format!("`# → {promise}`: `{prose}` follows the JSON"));
    }
    Ok(Expect::Answer(json))
}

enum Item {
    Command(Vec<String>),
    Comment(String),
}

/// The commands and comments of a shell block: words split on blanks, single and double
/// quotes (over several lines), `\` line continuations, `#` comments (their text as written,
/// after the `#`).
fn shell_items(block: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let (mut words, mut word): (Vec<String>, Option<String>) = (Vec::new(), None);
    let mut chars = block.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut Option<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => end_word(&mut words, &mut word),
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                end_word(&mut words, &mut word);
            }
            '\n' => {
                end_word(&mut words, &mut word);
                if !words.is_empty() {
                    items.push(Item::Command(std::mem::take(&mut words)));
                }
            }
            '#' if word.is_none() => {
                let comment: String = chars.by_ref().take_while(|c| *c != '\n').collect();
                if !words.is_empty() {
                    items.push(Item::Command(std::mem::take(&mut words)));
                }
                items.push(Item::Comment(comment.trim_end().to_string()));
            }
            '\'' | '"' => {
                let quoted: String = chars.by_ref().take_while(|q| *q != c).collect();
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut words, &mut word);
    if !words.is_empty() {
        items.push(Item::Command(words));
    }
    items
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

/// `text` with each `<NAME>` replaced by the value captured for it.
fn substitute(text: &str, bound: &HashMap<String, String>) -> Result<String, String> {
    let mut out = text.to_string();
    for (name, value) in bound {
        out = out.replace(&format!("<{name}>"), value);
    }
    match placeholder_in(&out) {
        Some(name) => Err(format!("<{name}> is used before any answer gave it")),
        None => Ok(out),
    }
}

fn placeholder_in(text: &str) -> Option<&str> {
    text.match_indices('<').find_map(|(start, _)| {
        let rest = &text[start + 1..];
        let name = &rest[..rest.find('>')?];
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        valid.then_some(name)
    })
}

/// Whether `actual` holds at least what `expected` shows (see the module's comment).
fn matches(
    expected: &Value,
    actual: &Value,
    path: &str,
    bound: &mut HashMap<String, String>,
) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(e), _) if e == "…" => match actual {
            Value::Null => Err(format!("{path} is missing")),
            _ => Ok(()),
        },
        (Value::String(e), _) if placeholder_in(e).is_some_and(|n| e.len() == n.len() + 2) => {
            let name = &e[1..e.len() - 1];
            let text = match actual {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Null => return Err(format!("{path} is missing")),
                other => return Err(format!("{path}: {other} cannot stand for <{name}>")),
            };
            match bound.get(name) {
                Some(known) if *known != text => {
                    Err(format!("{path} is {text}, but <{name}> was {known}"))
                }
                Some(_) => Ok(()),
                None => {
                    bound.insert(name.to_string(), text);
                    Ok(())
                }
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let at = format!("{path}.{key}");
                let found = a.get(key).unwrap_or(&Value::Null);
                matches(value, found, &at, bound)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                matches(e, a, &format!("{path}[{i}]"), bound)?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path} is {a}, not {e}")),
    }
}

#[test]
fn the_shell_reader_splits_commands_quotes_continuations_and_comments() {
    let block = "grpcurl -plaintext -d '{\n  \"a\": 1\n}' host:1 s.S/M\n# → {\"b\": \"<X>\"} more\n\
                 grpcurl -d '{}' \\\n  host:1 s.S/N\n#   other\n";
    let items = shell_items(block);
    let rendered: Vec<String> = items
        .iter()
        .map(|i| match i {
            Item::Command(w) => format!("C{w:?}"),
            Item::Comment(c) => format!("#{c}"),
        })
        .collect();
    assert_eq!(
        rendered,
        [
            r#"C["grpcurl", "-plaintext", "-d", "{\n  \"a\": 1\n}", "host:1", "s.S/M"]"#,
            "# → {\"b\": \"<X>\"} more",
            r#"C["grpcurl", "-d", "{}", "host:1", "s.S/N"]"#,
            "#   other",
        ]
    );
}

#[test]
fn a_promise_continues_on_indented_comment_lines() {
    let steps = steps_of(
        "grpcurl a\n# → {\"x\": 1,\n#    \"y\": [2]} and prose\n# aside\ngrpcurl b\n\n# → {}\n",
    )
    .unwrap();
    assert_eq!(steps.len(), 2);
    assert!(
        matches!(&steps[0].expect, Some(Expect::Answer(v)) if *v == serde_json::json!({"x": 1, "y": [2]}))
    );
    // A blank line between a command and its promise is allowed; a comment is not.
    assert!(matches!(&steps[1].expect, Some(Expect::Answer(_))));
    assert!(steps_of("grpcurl a\n# aside\n# → {}\n").is_err());
    assert!(steps_of("grpcurl a\n# → not json\n").is_err());
    assert!(steps_of("grpcurl a\n# → {\"x\": 1}}\n").is_err());
    assert!(steps_of("curl a\n").is_err());
    let failure = steps_of(
        "grpcurl a\n# → ERROR: Code: InvalidArgument  Message: invalid x: y  (and prose)\n",
    )
    .unwrap();
    assert!(matches!(&failure[0].expect,
        Some(Expect::Failure { code, message }) if code == "InvalidArgument" && message == "invalid x: y"));
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
fn answers_match_what_the_readme_shows_and_capture_placeholders() {
    let mut bound = HashMap::new();
    let expected = serde_json::json!({"id": "<ID>", "n": "2", "any": "…", "list": [{"k": true}]});
    let actual = serde_json::json!({"id": "x-1", "n": "2", "any": "v", "list": [{"k": true, "o": 1}], "extra": 0});
    matches(&expected, &actual, "", &mut bound).unwrap();
    assert_eq!(bound["ID"], "x-1");
    // A captured value must hold wherever the placeholder is shown again.
    let other = serde_json::json!({"id": "x-2", "n": "2", "any": "v", "list": [{"k": true}]});
    assert!(matches(&expected, &other, "", &mut bound).is_err());
    // Missing fields, other values and other list lengths do not match.
    let mut fresh = HashMap::new();
    for wrong in [
        serde_json::json!({"id": "x", "n": "3", "any": "v", "list": [{"k": true}]}),
        serde_json::json!({"id": "x", "n": "2", "list": [{"k": true}]}),
        serde_json::json!({"id": "x", "n": "2", "any": "v", "list": []}),
    ] {
        assert!(
            matches(&expected, &wrong, "", &mut fresh).is_err(),
            "{wrong}"
        );
    }
    assert_eq!(
        substitute(r#"{"id": "<ID>", "p": <P>}"#, &bound).unwrap_err(),
        "<P> is used before any answer gave it"
    );
    // A `<` that starts no placeholder does not hide one after it.
    assert_eq!(
        substitute(r#"{"a": "1 < 2", "p": <P>}"#, &bound).unwrap_err(),
        "<P> is used before any answer gave it"
    );
    bound.insert("P".into(), "7".into());
    assert_eq!(
        substitute(r#"{"id": "<ID>", "p": <P>}"#, &bound).unwrap(),
        r#"{"id": "x-1", "p": 7}"#
    );
}
