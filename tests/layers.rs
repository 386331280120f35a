//! The module graph of `src/` matches the layer table in `src/lib.rs`: every `crate::`
//! path from one module to another goes to a module on a lower row of the table. A module
//! missing from the table, or an edge that runs sideways or up, fails with the edge named.
//!
//! The test reads the sources as text: `use crate::a::b;`, `use crate::{a, b::c};` and
//! paths in code (`crate::a::f()`) count; comments do not; `crate::f()` (a function of
//! the crate root) is not a module edge. `loom_models.rs` is a test harness that drives
//! every layer and is left out.

use std::collections::BTreeMap;
use std::path::Path;

/// Modules not bound by the table (test harnesses).
const EXEMPT: &[&str] = &["loom_models"];

/// The rows of the layer table: module name -> row (0 at the top).
fn layer_rows(lib_rs: &str) -> BTreeMap<String, usize> {
    let start = lib_rs
        .find("//! # Layers")
        .expect("src/lib.rs has a `# Layers` section");
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    let mut row = 0;
    for line in lib_rs[start..].lines() {
        let Some(text) = line.strip_prefix("//!") else {
            break;
        };
        let text = text.trim_start();
        if text.starts_with("```") {
            if in_table {
                break;
            }
            in_table = true;
            continue;
        }
        if !in_table || text.is_empty() {
            continue;
        }
        // "a.rs, b.rs   what they do": the names end at the first double space.
        let names = text.split("  ").next().unwrap();
        for name in names.split(',') {
            let module = name
                .trim()
                .strip_suffix(".rs")
                .unwrap_or_else(|| panic!("layer table row {line:?}: {name:?} is not a file name"));
            rows.insert(module.to_string(), row);
        }
        row += 1;
    }
    assert!(row > 5, "the layer table in src/lib.rs was not found");
    rows
}

/// Drops `//` comments (doc comments included). The sources hold no `//` inside strings.
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first names of the items of a `{...}` use group starting at `group[0] == '{'`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if expect_head && depth == 1 && !c.is_whitespace() => {
                heads.push(identifier_at(&group[i..]).to_string());
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The modules `source` names through `crate::`.
fn used_modules(source: &str) -> Vec<String> {
    let code = without_comments(source);
    let mut used = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            used.extend(group_heads(rest));
            continue;
        }
        let name = identifier_at(rest);
        let after = rest[name.len()..].trim_start();
        // `crate::f()` and `crate::CONST` are items of the crate root, not modules.
        if after.starts_with("::") || after.starts_with(';') || after.starts_with(" as") {
            used.push(name.to_string());
        }
    }
    used
}

/// Every edge `(from, to)` that does not go down the table, and every module the table
/// does not place.
fn violations(rows: &BTreeMap<String, usize>, sources: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (module, source) in sources {
        if EXEMPT.contains(&module.as_str()) {
            continue;
        }
        let Some(&from) = rows.get(module) else {
            found.push(format!(
                "{module}.rs is not in the layer table of src/lib.rs"
            ));
            continue;
        };
        for used in used_modules(source) {
            if &used == module || !rows.contains_key(&used) && !is_module(sources, &used) {
                continue;
            }
            match rows.get(&used) {
                Some(&to) if to > from => {}
                Some(_) => found.push(format!("{module} -> {used} does not go down the table")),
                None => found.push(format!("{used}.rs is not in the layer table of src/lib.rs")),
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn is_module(sources: &[(String, String)], name: &str) -> bool {
    sources.iter().any(|(module, _)| module == name)
}

fn read_sources(dir: &Path) -> Vec<(String, String)> {
    let mut sources: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| {
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            (module, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    sources.sort();
    sources
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&src);
    let lib_rs = &sources
        .iter()
        .find(|(module, _)| module == "lib")
        .unwrap()
        .1;
    let rows = layer_rows(lib_rs);
    let found = violations(&rows, &sources);
    assert!(
        found.is_empty(),
        "the module graph does not match the layers of src/lib.rs:\n  {}",
        found.join("\n  ")
    );
    // The table names no file that is gone.
    for module in rows.keys() {
        assert!(
            is_module(&sources, module),
            "{module}.rs is in the table but not in src/"
        );
    }
}

/// The checker finds the edges the code had before the layers were made true (issue 12):
/// each of these sources, placed in today's table, must be reported.
#[test]
fn the_checker_reports_upward_and_sideways_edges() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rows = layer_rows(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let old_edges = [
        ("os", "use crate::config::Purge;", "os -> config"),
        (
            "config",
            "let mut out = crate::stats::StackWriter::new();",
            "config -> stats",
        ),
        ("pool", "use crate::arena::out_bitmap_of;", "pool -> arena"),
        (
            "hardened",
            "use crate::{arena, block::Block};",
            "hardened -> arena",
        ),
        (
            "hardened",
            "use crate::{arena, block::Block};",
            "hardened -> block",
        ),
        (
            "thread_cache",
            "crate::lifecycle::register_thread()",
            "thread_cache -> lifecycle",
        ),
        (
            "thread_cache",
            "use crate::{lifecycle, sanitizer, tls};",
            "thread_cache -> lifecycle",
        ),
        (
            "trim",
            "thread_cache::flush_this_thread();\nuse crate::thread_cache;",
            "trim -> thread_cache",
        ),
        (
            "arena",
            "let _central = crate::central::lock_class_for_test(class);",
            "arena -> central",
        ),
        (
            "block",
            "// crate::stats::print_line is only a comment\nuse crate::hardened;",
            "",
        ),
    ];
    for (module, source, expected) in old_edges {
        let mut sources = vec![(module.to_string(), source.to_string())];
        for name in rows.keys() {
            if name != module {
                sources.push((name.clone(), String::new()));
            }
        }
        let found = violations(&rows, &sources);
        if expected.is_empty() {
            assert!(found.is_empty(), "{module}: {source:?} reported {found:?}");
        } else {
            assert!(
                found.iter().any(|line| line.starts_with(expected)),
                "{module}: {source:?} should report {expected:?}, reported {found:?}"
            );
        }
    }
    // A module the table does not place is reported too.
    let sources = vec![("newcomer".to_string(), "use crate::os;".to_string())];
    assert_eq!(
        violations(&rows, &sources),
        ["newcomer.rs is not in the layer table of src/lib.rs"]
    );
    // A function of the crate root is not a module edge.
    assert_eq!(
        used_modules("crate::trim() + crate::HARDENED"),
        Vec::<String>::new()
    );
    assert_eq!(
        used_modules("use crate::{a, b::{c, d}, e as f};\nuse crate::g;\ncrate::h::i();"),
        ["a", "b", "e", "g", "h"]
    );
}
