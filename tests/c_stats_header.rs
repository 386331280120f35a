//! The statistics are declared twice, in two languages: `ebbmalloc::Stats` (`src/stats.rs`,
//! `#[repr(C)]`, which the C library hands out as it is: `c_abi::CStats` is an alias) and
//! `struct ebbmalloc_stats` for C programs (`capi/include/ebbmalloc.h`); likewise for the
//! per-class figures (`ClassStats`, `struct ebbmalloc_class_stats`). This test reads both
//! files, parses each struct's fields (name and type, Rust types mapped to their C spelling:
//! `usize` is `size_t`, `u64` is `uint64_t`, ...) and fails when they differ in names, order
//! or types, or when the Rust struct is not `#[repr(C)]`, so a field added to `Stats` cannot
//! be left out of the C ABI.

use std::path::Path;

/// One field as declared: its name and its type in C spelling.
#[derive(Debug, PartialEq)]
struct Field {
    name: String,
    c_type: String,
}

/// The structs declared twice: the `#[repr(C)]` Rust struct and the C struct in the header.
const PAIRS: [(&str, &str); 2] = [
    ("Stats", "ebbmalloc_stats"),
    ("ClassStats", "ebbmalloc_class_stats"),
];

/// Rust scalar types and the C types with the same size and meaning.
const SCALARS: [(&str, &str); 8] = [
    ("usize", "size_t"),
    ("isize", "ptrdiff_t"),
    ("u64", "uint64_t"),
    ("i64", "int64_t"),
    ("u32", "uint32_t"),
    ("i32", "int32_t"),
    ("u8", "uint8_t"),
    ("bool", "bool"),
];

/// Rust constants used as array lengths and their names in the header.
const LENGTHS: [(&str, &str); 1] = [("CLASS_COUNT", "EBBMALLOC_CLASS_COUNT")];

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The C spelling of a Rust type as written in a field: a scalar, one of the [`PAIRS`]'
/// Rust structs, or an array `[T; N]` of those with a length from [`LENGTHS`] (paths such as
/// `crate::CLASS_COUNT` are read by their last segment).
fn c_spelling(rust_type: &str) -> String {
    let rust_type = rust_type.trim();
    if let Some(inner) = rust_type
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        let (element, length) = inner
            .rsplit_once(';')
            .unwrap_or_else(|| panic!("array type without a length: {rust_type}"));
        let length = last_segment(length.trim());
        let c_length = LENGTHS
            .iter()
            .find(|(rust, _)| *rust == length)
            .map(|(_, c)| c.to_string())
            .unwrap_or_else(|| {
                panic!("array length {length} has no C name: add it to LENGTHS in this test")
            });
        return format!("{}[{c_length}]", c_spelling(element));
    }
    let name = last_segment(rust_type);
    if let Some((_, c)) = SCALARS.iter().find(|(rust, _)| *rust == name) {
        return c.to_string();
    }
    if let Some((_, c)) = PAIRS.iter().find(|(rust, _)| *rust == name) {
        return format!("struct {c}");
    }
    panic!("Rust type {rust_type} has no C spelling: add it to SCALARS or PAIRS in this test")
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

/// The fields of `pub struct NAME { pub field: Type, ... }` in Rust source, skipping doc
/// comments and attributes.
fn rust_fields(file: &str, name: &str) -> Vec<Field> {
    let source = read(file);
    let opening = format!("pub struct {name} {{");
    let mut lines = source.lines().map(str::trim);
    lines
        .by_ref()
        .find(|line| *line == opening)
        .unwrap_or_else(|| panic!("{file}: no `{opening}` line"));
    lines
        .take_while(|line| *line != "}")
        .filter(|line| !line.is_empty() && !line.starts_with("//") && !line.starts_with("#["))
        .map(|line| {
            let (field, rust_type) = line
                .strip_prefix("pub ")
                .and_then(|rest| rest.strip_suffix(','))
                .and_then(|rest| rest.split_once(':'))
                .unwrap_or_else(|| panic!("{file}: struct {name}: unexpected line `{line}`"));
            Field {
                name: field.trim().to_string(),
                c_type: c_spelling(rust_type),
            }
        })
        .collect()
}

/// `source` without its `/* ... */` comments.
fn without_c_comments(mut source: &str) -> String {
    let mut out = String::new();
    while let Some(start) = source.find("/*") {
        out.push_str(&source[..start]);
        let end = source[start..]
            .find("*/")
            .expect("every C comment is closed");
        source = &source[start + end + 2..];
    }
    out.push_str(source);
    out
}

/// The fields of `struct NAME { type field; type field[N]; ... };` in the C header, their
/// types with single spaces and the array length appended (`struct x[N]`).
fn c_fields(file: &str, name: &str) -> Vec<Field> {
    let source = without_c_comments(&read(file));
    let opening = format!("struct {name} {{");
    let start = source
        .find(&opening)
        .unwrap_or_else(|| panic!("{file}: no `{opening}`"))
        + opening.len();
    let body = &source[start..];
    let body = &body[..body
        .find("};")
        .unwrap_or_else(|| panic!("{file}: struct {name} is not closed"))];
    body.split(';')
        .map(str::trim)
        .filter(|declaration| !declaration.is_empty())
        .map(|declaration| {
            let words: Vec<&str> = declaration.split_whitespace().collect();
            let (declarator, type_words) = words
                .split_last()
                .filter(|(_, type_words)| !type_words.is_empty())
                .unwrap_or_else(|| panic!("{file}: struct {name}: bad field `{declaration}`"));
            let (field, length) = match declarator.split_once('[') {
                Some((field, length)) => (field, format!("[{length}")),
                None => (*declarator, String::new()),
            };
            Field {
                name: field.to_string(),
                c_type: format!("{}{length}", type_words.join(" ")),
            }
        })
        .collect()
}

fn table(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| format!("    {} {}\n", f.c_type, f.name))
        .collect()
}

#[test]
fn the_header_declares_every_field_of_stats() {
    let stats_rs = read("src/stats.rs");
    for (rust, c) in PAIRS {
        let declared_at = stats_rs
            .find(&format!("pub struct {rust} {{"))
            .unwrap_or_else(|| panic!("src/stats.rs declares {rust}"));
        let attributes = stats_rs[..declared_at].lines().rev().take(3);
        assert!(
            attributes
                .into_iter()
                .any(|line| line.trim() == "#[repr(C)]"),
            "{rust} in src/stats.rs must be #[repr(C)]: C reads it as struct {c}"
        );
        let in_rust = rust_fields("src/stats.rs", rust);
        let in_header = c_fields("capi/include/ebbmalloc.h", c);
        assert!(!in_rust.is_empty(), "no fields parsed from {rust}");
        if in_rust == in_header {
            continue;
        }
        let at = (0..)
            .find(|&i| in_rust.get(i) != in_header.get(i))
            .expect("the lists differ somewhere");
        let shown = |fields: &[Field]| match fields.get(at) {
            Some(f) => format!("`{} {}`", f.c_type, f.name),
            None => "nothing".to_string(),
        };
        panic!(
            "the fields (names, order, types) differ at field {at}: {rust} has {}, struct {c} \
             has {}\n\
             {rust} in src/stats.rs:\n{}\
             struct {c} in capi/include/ebbmalloc.h:\n{}",
            shown(&in_rust),
            shown(&in_header),
            table(&in_rust),
            table(&in_header),
        );
    }
    // The C ABI's type is the Rust struct itself.
    let c_abi = read("src/c_abi.rs");
    assert!(c_abi.contains("pub type CStats = crate::Stats;"));
    assert!(c_abi.contains("pub type CClassStats = crate::ClassStats;"));
}

#[test]
fn the_header_class_count_is_the_library_s() {
    let header = read("capi/include/ebbmalloc.h");
    let count: usize = header
        .lines()
        .find_map(|line| line.trim().strip_prefix("#define EBBMALLOC_CLASS_COUNT "))
        .expect("the header defines EBBMALLOC_CLASS_COUNT")
        .trim()
        .parse()
        .expect("EBBMALLOC_CLASS_COUNT is a number");
    assert_eq!(count, ebbmalloc::CLASS_COUNT);
}

#[test]
fn c_abi_stats_fills_the_per_class_figures() {
    let mut filled = ebbmalloc::c_abi::CStats::default();
    // SAFETY: `filled` is valid for the write of a `CStats`.
    unsafe { ebbmalloc::c_abi::stats(&mut filled) };
    let stats = ebbmalloc::stats();
    assert!(filled.mapped_bytes >= filled.allocated_bytes);
    assert!(filled.mapped_bytes >= filled.large_cached_bytes);
    for (index, (c, rust)) in filled.classes.iter().zip(&stats.classes).enumerate() {
        assert!(c.block_size > 0, "class {index} has no block size");
        assert_eq!(c.block_size, rust.block_size, "class {index}");
    }
}
