//! The README's walk-throughs, read as tests: the commands of its `sh` blocks, and the
//! answer each promises on the `# →` comment line right under it (with the indented comment
//! lines that continue it).
//!
//! A promise is either JSON — the answer holds at least those fields, with those values; a
//! list shows every item, in order, each with at least the fields shown — or a line of text,
//! which some line of the output matches word for word (blanks between words do not count).
//! In both, `…` stands for anything (in text, for any number of words), and `<NAME>` in
//! capitals for a value captured from the answer and pasted, wherever `<NAME>` appears, into
//! the commands after it, as a reader does.

use std::collections::HashMap;

use serde_json::Value;

/// Values captured from answers, by placeholder name.
pub type Bound = HashMap<String, String>;

/// The text under the heading `heading` (a whole line, e.g. `## Quick start`), up to the
/// next heading of level two.
pub fn section<'a>(readme: &'a str, heading: &str) -> Result<&'a str, String> {
    let start = readme
        .match_indices(heading)
        .find(|(at, _)| {
            let line_end = readme[at + heading.len()..].starts_with('\n');
            (*at == 0 || readme[..*at].ends_with('\n')) && line_end
        })
        .ok_or_else(|| format!("the README has no `{heading}`"))?
        .0;
    let body = &readme[start + heading.len()..];
    Ok(body.split("\n## ").next().unwrap_or_default())
}

/// The `sh` blocks of `text`, in order.
pub fn sh_blocks(text: &str) -> Vec<&str> {
    text.split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .collect()
}

/// A command of a shell block or a comment.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// Its words, quotes removed.
    Command(Vec<String>),
    /// Its text as written, after the `#`.
    Comment(String),
}

/// The commands and comments of a shell block: words split on blanks, single and double
/// quotes (over several lines; no expansions inside double quotes), `\` line continuations,
/// `#` comments (a remark after a command, on its line, left out). Enough for commands that use
/// no shell syntax beyond that.
pub fn shell_items(block: &str) -> Vec<Item> {
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
                // A comment after a command, on its line, is a remark, unless it is a promise.
                if !words.is_empty() {
                    items.push(Item::Command(std::mem::take(&mut words)));
                    if !comment.trim_start().starts_with('→') {
                        continue;
                    }
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

/// A command of a walk-through and the answer promised under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The command's words.
    pub words: Vec<String>,
    /// The promise's text, continuation lines joined with two blanks.
    pub promise: Option<String>,
}

/// What the last comment line of a shell block followed.
#[derive(PartialEq)]
enum After {
    Command,
    Promise,
    Other,
}

/// The commands of a shell block, each with the promise under it, if any. A promise must
/// be right under its command (blank lines between are allowed, other comments are not);
/// comment lines indented by two blanks or more continue it. A promise must say something:
/// one that is empty or only `…` would match anything.
pub fn steps_of(block: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut after = After::Other;
    for item in shell_items(block) {
        match item {
            Item::Command(words) => {
                steps.push(Step {
                    words,
                    promise: None,
                });
                after = After::Command;
            }
            Item::Comment(text) => {
                let promise = steps.last_mut().map(|s| &mut s.promise);
                if let Some(rest) = text.trim_start().strip_prefix('→') {
                    let Some(promise) = promise.filter(|_| after == After::Command) else {
                        return Err(format!("`# →{rest}` is not right under a command"));
                    };
                    *promise = Some(rest.trim().to_string());
                    after = After::Promise;
                } else if after == After::Promise && text.starts_with("  ") {
                    // Two blanks: they end a failure's message, where prose may follow.
                    let promise = promise.and_then(Option::as_mut).expect("a promise is open");
                    promise.push_str("  ");
                    promise.push_str(text.trim());
                } else {
                    after = After::Other;
                }
            }
        }
    }
    for step in &steps {
        if let Some(promise) = &step.promise
            && promise.chars().all(|c| c == '…' || c.is_whitespace())
        {
            return Err(format!(
                "the promise under `{}` says nothing",
                step.words.join(" ")
            ));
        }
    }
    Ok(steps)
}

/// `text` with each `<NAME>` replaced by the value captured for it; an error names a
/// placeholder no answer gave.
pub fn substitute(text: &str, bound: &Bound) -> Result<String, String> {
    let mut out = text.to_string();
    for (name, value) in bound {
        out = out.replace(&format!("<{name}>"), value);
    }
    match placeholder_in(&out) {
        Some(name) => Err(format!("<{name}> is used before any answer gave it")),
        None => Ok(out),
    }
}

/// The first `<NAME>` in `text`: a capital letter, then capitals, digits or `_`.
pub fn placeholder_in(text: &str) -> Option<&str> {
    text.match_indices('<').find_map(|(start, _)| {
        let rest = &text[start + 1..];
        let name = &rest[..rest.find('>')?];
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        valid.then_some(name)
    })
}

/// The name of `text` when it is a placeholder and nothing else.
fn whole_placeholder(text: &str) -> Option<&str> {
    placeholder_in(text).filter(|name| text.len() == name.len() + 2)
}

/// The JSON object a promise starts with; prose may follow it, after a blank. An empty
/// object would match any answer, and is refused.
pub fn json_promise(promise: &str) -> Result<Value, String> {
    let mut values = serde_json::Deserializer::from_str(promise).into_iter::<Value>();
    let json = match values.next() {
        Some(Ok(v)) if v.as_object().is_some_and(|o| !o.is_empty()) => v,
        other => {
            return Err(format!(
                "`# → {promise}` does not start with a JSON object: {other:?}"
            ));
        }
    };
    let prose = &promise[values.byte_offset()..];
    if !prose.is_empty() && !prose.starts_with(char::is_whitespace) {
        return Err(format!("`# → {promise}`: `{prose}` follows the JSON"));
    }
    Ok(json)
}

/// Binds `name` to `value`, or checks it against the value bound before.
fn bind(name: &str, value: String, bound: &mut Bound) -> Result<(), String> {
    match bound.get(name) {
        Some(known) if *known != value => Err(format!("<{name}> was {known}, here {value}")),
        Some(_) => Ok(()),
        None => {
            bound.insert(name.to_string(), value);
            Ok(())
        }
    }
}

/// Whether `actual` holds at least what `expected` shows (see the module's comment);
/// captures placeholders into `bound`. `path` names where in the answer, for the error.
pub fn json_matches(
    expected: &Value,
    actual: &Value,
    path: &str,
    bound: &mut Bound,
) -> Result<(), String> {
    let placeholder = expected.as_str().and_then(whole_placeholder);
    match (expected, actual) {
        (_, Value::Null) if *expected != Value::Null => Err(format!("{path} is null")),
        (Value::String(e), _) if e == "…" => Ok(()),
        (Value::String(_), _) if let Some(name) = placeholder => {
            let text = match actual {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(format!("{path}: {other} cannot stand for <{name}>")),
            };
            bind(name, text, bound).map_err(|e| format!("{path}: {e}"))
        }
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let at = format!("{path}.{key}");
                let found = a.get(key).ok_or_else(|| format!("{at} is missing"))?;
                json_matches(value, found, &at, bound)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                json_matches(e, a, &format!("{path}[{i}]"), bound)?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path} is {a}, not {e}")),
    }
}

/// Whether `line` matches the text promise `template`, word for word; `…` matches any
/// number of words, `<NAME>` one word (captured into `bound`, or checked against it).
pub fn line_matches(template: &str, line: &str, bound: &mut Bound) -> bool {
    fn go(t: &[&str], l: &[&str], caps: &mut Bound) -> bool {
        let Some((word, rest)) = t.split_first() else {
            return l.is_empty();
        };
        if *word == "…" {
            return (0..=l.len()).any(|skip| go(rest, &l[skip..], caps));
        }
        let Some((first, others)) = l.split_first() else {
            return false;
        };
        let Some(name) = whole_placeholder(word) else {
            return word == first && go(rest, others, caps);
        };
        match caps.get(name) {
            Some(known) => known == first && go(rest, others, caps),
            None => {
                caps.insert(name.to_string(), first.to_string());
                let matched = go(rest, others, caps);
                if !matched {
                    caps.remove(name);
                }
                matched
            }
        }
    }
    let t: Vec<&str> = template.split_whitespace().collect();
    let l: Vec<&str> = line.split_whitespace().collect();
    let mut caps = bound.clone();
    let matched = go(&t, &l, &mut caps);
    if matched {
        *bound = caps;
    }
    matched
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_shell_reader_splits_commands_quotes_continuations_and_comments() {
        let block = "grpcurl -plaintext -d '{\n  \"a\": 1\n}' host:1 s.S/M\n# → {\"b\": \"<X>\"} more\n\
                     grpcurl -d \"{}\" \\\n  host:1 s.S/N\n#   other\n";
        let c = |w: &[&str]| Item::Command(w.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            shell_items(block),
            [
                c(&[
                    "grpcurl",
                    "-plaintext",
                    "-d",
                    "{\n  \"a\": 1\n}",
                    "host:1",
                    "s.S/M"
                ]),
                Item::Comment(" → {\"b\": \"<X>\"} more".into()),
                c(&["grpcurl", "-d", "{}", "host:1", "s.S/N"]),
                Item::Comment("   other".into()),
            ]
        );
    }

    #[test]
    fn a_promise_is_right_under_its_command_and_continues_on_indented_lines() {
        let steps = steps_of(
            "run a\n# → {\"x\": 1,\n#    \"y\": [2]}  and prose\n# aside\nrun b  # a remark\n\n# → {\"z\": 1}\n",
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[0].promise.as_deref(),
            Some("{\"x\": 1,  \"y\": [2]}  and prose")
        );
        assert_eq!(
            json_promise(steps[0].promise.as_deref().unwrap()).unwrap(),
            json!({"x": 1, "y": [2]})
        );
        assert_eq!(steps[1].promise.as_deref(), Some("{\"z\": 1}"));
        assert!(steps_of("run a\n# aside\n# → {\"z\": 1}\n").is_err());
        // A promise on the command's own line counts; one that says nothing is refused.
        let inline = steps_of("run a  # → status: OK\n").unwrap();
        assert_eq!(inline[0].promise.as_deref(), Some("status: OK"));
        assert!(steps_of("run a\n# →\n").is_err());
        assert!(steps_of("run a\n# → …  …\n").is_err());
        assert!(json_promise("not json").is_err());
        assert!(json_promise("{\"x\": 1}}").is_err());
        assert!(json_promise("{}").is_err());
        assert!(json_promise("[1]").is_err());
    }

    #[test]
    fn json_answers_match_what_the_readme_shows_and_capture_placeholders() {
        let mut bound = Bound::new();
        let expected = json!({"id": "<ID>", "n": "2", "any": "…", "list": [{"k": true}]});
        let actual =
            json!({"id": "x-1", "n": "2", "any": "v", "list": [{"k": true, "o": 1}], "extra": 0});
        json_matches(&expected, &actual, "", &mut bound).unwrap();
        assert_eq!(bound["ID"], "x-1");
        // A captured value must hold wherever the placeholder is shown again.
        let other = json!({"id": "x-2", "n": "2", "any": "v", "list": [{"k": true}]});
        assert!(json_matches(&expected, &other, "", &mut bound).is_err());
        // Missing fields, other values and other list lengths do not match.
        let mut fresh = Bound::new();
        for wrong in [
            json!({"id": "x", "n": "3", "any": "v", "list": [{"k": true}]}),
            json!({"id": "x", "n": "2", "list": [{"k": true}]}),
            json!({"n": "2", "any": "v", "list": [{"k": true}]}),
            json!({"id": "x", "n": "2", "any": "v", "list": []}),
            json!({"id": "x", "n": "2", "any": null, "list": [{"k": true}]}),
        ] {
            assert!(
                json_matches(&expected, &wrong, "", &mut fresh).is_err(),
                "{wrong}"
            );
        }
        // A null promised is a field that is there, and null.
        let mut none = Bound::new();
        json_matches(&json!({"a": null}), &json!({"a": null}), "", &mut none).unwrap();
        assert!(json_matches(&json!({"a": null}), &json!({}), "", &mut none).is_err());
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

    #[test]
    fn text_answers_match_word_for_word_and_capture_placeholders() {
        let mut bound = Bound::new();
        assert!(line_matches(
            "Handover <H> started: …",
            "Handover 1b0a started: brief the CMC with `x`",
            &mut bound
        ));
        assert_eq!(bound["H"], "1b0a");
        assert!(line_matches(
            "… information STRATEGIC carla.cmc [B2 Fact] police: gate closed",
            "12.0  2026-11-29T02:10:14Z  information   STRATEGIC   carla.cmc   [B2 Fact] police: gate closed",
            &mut bound
        ));
        // Every word counts, and a bound placeholder must hold.
        for (template, line) in [
            ("Handover <H> started: …", "Handover 2c1b started: x"),
            ("status: OFFERED", "status: OFFERED now"),
            ("status: OFFERED", "  status: ACCEPTED"),
            ("<A> and <A>", "x and y"),
        ] {
            assert!(
                !line_matches(template, line, &mut bound),
                "{template} ~ {line}"
            );
        }
        assert!(line_matches(
            "  status: OFFERED",
            "status:   OFFERED",
            &mut bound
        ));
        assert!(line_matches(
            "… (CURRENT): Isolate",
            "id (CURRENT): Isolate",
            &mut bound
        ));
        // A bound placeholder after `…` is looked for, not taken from the first word.
        assert!(line_matches("… <H> …", "a 1b0a c", &mut bound));
        assert!(!line_matches("… <H> …", "a b c", &mut bound));
        // A failed match captures nothing.
        assert!(!line_matches("<NEW> x", "y z", &mut bound));
        assert!(!bound.contains_key("NEW"));
    }

    #[test]
    fn sections_and_blocks_are_found_by_heading() {
        let readme = "# T\n## Quick start\ntext\n```sh\na\n```\n```sh\nb\nc\n```\n## Quick start, again\n```sh\nz\n```\n";
        let quick = section(readme, "## Quick start").unwrap();
        assert_eq!(sh_blocks(quick), ["a", "b\nc"]);
        assert!(section(readme, "## Quick").is_err());
    }
}
