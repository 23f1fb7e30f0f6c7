//! Deploy defaults that a typo must not break: `wrangler.toml`'s top level (the local
//! environment, with dev secrets and anonymous access) never shares the production Worker's
//! name, and only the top level says `ENVIRONMENT = "local"` or carries dev credentials.
//!
//! A small reader of the file's sections is enough: it is TOML, but only `[section]` headers
//! and `key = "value"` lines are consulted here.

use std::collections::BTreeMap;

/// `key = value` pairs by section (`""` is the top level); array-of-table sections are
/// skipped.
fn sections(toml: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = Some(String::new());
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with("[[") {
            current = None;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            if !line.starts_with('#') {
                let v = v.split(" #").next().unwrap_or("").trim().trim_matches('"');
                out.entry(section.clone())
                    .or_default()
                    .insert(k.trim().to_string(), v.to_string());
            }
        }
    }
    out
}

fn config() -> BTreeMap<String, BTreeMap<String, String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/wrangler.toml");
    sections(&std::fs::read_to_string(path).expect("wrangler.toml"))
}

fn get<'a>(c: &'a BTreeMap<String, BTreeMap<String, String>>, s: &str, k: &str) -> Option<&'a str> {
    c.get(s).and_then(|m| m.get(k)).map(String::as_str)
}

#[test]
fn a_plain_deploy_cannot_overwrite_production() {
    let c = config();
    let local = get(&c, "", "name").expect("top-level name");
    let production = get(&c, "env.production", "name").expect("[env.production] name");
    let staging = get(&c, "env.staging", "name").expect("[env.staging] name");
    assert_ne!(
        local, production,
        "the local top level must not deploy as production"
    );
    assert_ne!(
        local, staging,
        "the local top level must not deploy as staging"
    );
    assert_ne!(staging, production);
}

#[test]
fn only_the_local_top_level_is_local() {
    let c = config();
    assert_eq!(get(&c, "vars", "ENVIRONMENT"), Some("local"));
    for env in ["staging", "production"] {
        let vars = format!("env.{env}.vars");
        assert_eq!(get(&c, &vars, "ENVIRONMENT"), Some(env), "{vars}");
        assert_eq!(get(&c, &vars, "ALLOW_ANONYMOUS"), Some("false"), "{vars}");
        for secret in ["AUTH_SECRET", "API_KEYS", "WEBHOOK_SECRETS", "BENCH_ROUTES"] {
            assert!(
                get(&c, &vars, secret).is_none(),
                "{vars} must not set {secret}"
            );
        }
    }
}

#[test]
fn the_reader_sees_sections_and_skips_arrays_of_tables() {
    let c = sections(
        "name = \"a\" # c\n[vars]\nX = \"1\"\n[[d]]\nname = \"no\"\n[env.p]\nname = \"b\"\n",
    );
    assert_eq!(get(&c, "", "name"), Some("a"));
    assert_eq!(get(&c, "vars", "X"), Some("1"));
    assert_eq!(get(&c, "env.p", "name"), Some("b"));
    assert_eq!(c.len(), 3);
}
