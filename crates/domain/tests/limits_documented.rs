//! Every field the domain checks against a size limit is in the size-limit table of
//! `docs/API.md`: a limit added in code without a line there fails this test.

use std::{fs, path::Path};

/// The field names given to `Text::required` and `Text::optional` in `source` (names built
/// with `format!`, such as `report.{name}`, are checked through their parts' rows by hand).
fn checked_fields(source: &str) -> Vec<String> {
    let mut fields = Vec::new();
    for call in ["Text::required(", "Text::optional("] {
        for (at, _) in source.match_indices(call) {
            let rest = source[at + call.len()..].trim_start();
            if let Some(quoted) = rest.strip_prefix('"')
                && let Some(end) = quoted.find('"')
            {
                fields.push(quoted[..end].to_owned());
            }
        }
    }
    fields
}

#[test]
fn every_limited_field_of_the_domain_is_in_the_api_size_limit_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let api = fs::read_to_string(root.join("../../docs/API.md")).expect("docs/API.md");
    let table = api
        .split("## Size limits")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a \"Size limits\" section in docs/API.md");
    let mut checked = 0;
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("src")).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let source = fs::read_to_string(&path).expect("source");
            for field in checked_fields(&source) {
                checked += 1;
                if !table.contains(&format!("`{field}`")) {
                    missing.push(format!("{field} ({})", path.display()));
                }
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} limited fields found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "limited fields without a row in docs/API.md's size limits: {missing:?}"
    );
}

#[test]
fn the_scan_finds_names_on_the_next_line_too() {
    let source = "Text::required(\"title\", t, L)?; Text::optional(\n    \"assumptions\",\n a)";
    assert_eq!(checked_fields(source), ["title", "assumptions"]);
}
