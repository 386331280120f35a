//! The README's configuration table must say what `ebbmalloc::SETTINGS` says: every
//! setting, its variable, its default and its meaning, in the same order. On a mismatch the
//! test prints the table to paste.

#[test]
fn readme_configuration_table_matches_the_settings_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let expected: Vec<String> = ebbmalloc::SETTINGS
        .iter()
        .map(|s| format!("| `{}` | `{}` | {} |", s.env, s.default, s.meaning))
        .collect();
    let found: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("| `EBBMALLOC_"))
        .collect();
    assert_eq!(
        found,
        expected,
        "README.md's configuration table is out of date; it should read:\n{}",
        expected.join("\n")
    );
}

#[test]
fn every_setting_is_named_consistently() {
    for setting in ebbmalloc::SETTINGS.iter() {
        assert!(setting.env.starts_with("EBBMALLOC_"), "{}", setting.env);
        assert!(!setting.meaning.is_empty() && !setting.default.is_empty());
    }
}
