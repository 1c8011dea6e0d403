//! `docs/API.md`'s size-limit table against the code: every text field the domain checks
//! against a limit has a row there that states that limit's number, and so does every list
//! the domain bounds. A limit added or changed in code without its row fails this test.
//! (Fields whose names are built at run time, such as `brief.{name}` or `questions[{i}]`,
//! are left to the rows written for them by hand.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, fs, path::Path};

const TEXT_CHECKS: [&str; 6] = [
    "Text::required(",
    "Text::optional(",
    "Text::required_as(",
    "Text::optional_as(",
    "Text::required_owned(",
    "Text::optional_owned(",
];

/// The lists the domain bounds, with the names their rows give them.
const LIST_LIMITS: [(&str, &str); 9] = [
    ("OBSERVABLES", "`alert.observables`"),
    ("LABELS", "`alert.labels`"),
    ("ALERT_IDS", "`alert_ids`"),
    ("QUESTIONS", "`questions`"),
    ("OBJECTIVES", "`objectives`"),
    ("INFORMATION_ITEMS", "`information_ids`"),
    ("OPTIONS", "`options`"),
    ("RISKS", "`risk_ref`"),
    ("CRISIS_INCIDENTS", "crisis `incident_ids`"),
];

/// `Limits`' constants with a literal value.
fn limits(values_rs: &str) -> BTreeMap<String, usize> {
    values_rs
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": usize = ")?;
            let value = value.strip_suffix(';')?.replace('_', "");
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Each text field given by name to one of `Text`'s checks in `source` (as `"name"` or
/// `|| f("name")`), with the `Limits` constant the call passes.
fn checked_fields(source: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for call in TEXT_CHECKS {
        for (at, _) in source.match_indices(call) {
            let args = &source[at + call.len()..];
            let args = &args[..args.find(")?").unwrap_or(args.len()).min(400)];
            let name = args.trim_start();
            let name = name.strip_prefix("|| f(").unwrap_or(name);
            let Some(quoted) = name.strip_prefix('"') else {
                continue;
            };
            let Some(end) = quoted.find('"') else {
                continue;
            };
            let Some(limit) = args.split("Limits::").nth(1) else {
                continue;
            };
            let limit: String = limit
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            fields.push((quoted[..end].to_owned(), limit));
        }
    }
    fields
}

/// `n` as the table writes it: `4,000`, `200`.
fn written(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The rows of the size-limit table naming `field` (as `` `field` `` or `` `x.field` ``).
fn rows_naming<'t>(table: &'t str, field: &str) -> Vec<&'t str> {
    let plain = format!("`{field}`");
    let prefixed = format!(".{field}`");
    table
        .lines()
        .filter(|l| l.starts_with('|') && (l.contains(&plain) || l.contains(&prefixed)))
        .collect()
}

fn row_states(row: &str, n: usize) -> bool {
    let w = written(n);
    // The number as a whole: `100` in a row must not be read in `1,000` or `2,000`.
    row.match_indices(&w).any(|(at, _)| {
        let before = row[..at].chars().next_back();
        let after = row[at + w.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == ',')
            && !after.is_some_and(|c| c.is_ascii_digit() || c == ',')
    })
}

fn api_table(root: &Path) -> String {
    let api = fs::read_to_string(root.join("../../docs/API.md")).expect("docs/API.md");
    api.split("## Size limits")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a \"Size limits\" section in docs/API.md")
        .to_owned()
}

#[test]
fn every_limited_text_field_has_a_row_stating_its_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = api_table(root);
    let limits = limits(&fs::read_to_string(root.join("src/values.rs")).expect("values.rs"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for entry in fs::read_dir(root.join("src")).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = fs::read_to_string(&path).expect("source");
        for (field, limit) in checked_fields(&source) {
            if field.contains('{') {
                continue;
            }
            checked += 1;
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let Some(&n) = limits.get(&limit) else {
                wrong.push(format!(
                    "{field} ({file}): Limits::{limit} has no literal value"
                ));
                continue;
            };
            let rows = rows_naming(&table, &field);
            if !rows.iter().any(|r| row_states(r, n)) {
                wrong.push(format!(
                    "{field} ({file}, Limits::{limit} = {}): {} rows name it, none says {}",
                    n,
                    rows.len(),
                    written(n)
                ));
            }
        }
    }
    assert!(
        checked > 60,
        "only {checked} limited fields found: the scan is broken"
    );
    assert!(
        wrong.is_empty(),
        "docs/API.md's size limits disagree with the code:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_bounded_list_has_a_row_stating_its_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = api_table(root);
    let limits = limits(&fs::read_to_string(root.join("src/values.rs")).expect("values.rs"));
    for (limit, name) in LIST_LIMITS {
        let n = limits[limit];
        let rows: Vec<&str> = table.lines().filter(|l| l.contains(name)).collect();
        assert!(
            rows.iter().any(|r| row_states(r, n)),
            "no row naming {name} says {} (Limits::{limit}): {rows:#?}",
            written(n)
        );
    }
}

#[test]
fn the_scan_reads_each_form_of_call() {
    let source = "Text::required(\"title\", t, Limits::TITLE)?; Text::optional(\n    \
                  \"assumptions\",\n a, Limits::RATIONALE)?; Text::required_owned(|| f(\"source\"), \
                  take(&mut s), Limits::SOURCE)?; Text::required(&format!(\"q[{i}]\"), q, \
                  Limits::RATIONALE)?;";
    assert_eq!(
        checked_fields(source),
        [
            ("title".into(), "TITLE".into()),
            ("assumptions".into(), "RATIONALE".into()),
            ("source".into(), "SOURCE".into()),
        ]
    );
    assert_eq!(written(4000), "4,000");
    assert_eq!(written(200), "200");
    assert_eq!(written(1_000_000), "1,000,000");
    assert!(row_states("| `x` | 1–100 |", 100));
    assert!(!row_states("| `x` | 1–1,000 |", 100));
    assert!(!row_states("| `x` | 1–100,000 |", 100));
}
