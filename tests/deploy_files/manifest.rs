//! Reading the deployment files and the settings they imply.

use std::path::{Path, PathBuf};

use chat_analytics::config::Settings;
use serde::Deserialize;
use serde_yaml::Value;

use crate::support::{read_repo_file as read, repo_path};

pub(crate) const ENV_PREFIX: &str = "CHAT_ANALYTICS__";

pub(crate) fn yaml(relative: &str) -> Value {
    let mut value: Value = serde_yaml::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    value.apply_merge().expect("YAML merge keys");
    value
}

pub(crate) fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub(crate) fn default_settings() -> Settings {
    Settings::load_from(None, Vec::new()).expect("the defaults load")
}

pub(crate) fn our_overrides(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .cloned()
        .collect()
}

pub(crate) fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// `command` (or k8s `args`) as a list of arguments.
pub(crate) fn command_args(service: &Value) -> Vec<String> {
    let command = if service["command"].is_null() {
        &service["args"]
    } else {
        &service["command"]
    };
    match command {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub(crate) fn host_and_port(authority: &str) -> (String, u16) {
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{authority} has no port"));
    (
        host.to_owned(),
        port.parse()
            .unwrap_or_else(|_| panic!("bad port in {authority}")),
    )
}

pub(crate) fn postgres_config(url: &str) -> tokio_postgres::Config {
    url.parse()
        .unwrap_or_else(|e| panic!("not a postgres URL: {e}"))
}

pub(crate) fn single_host(config: &tokio_postgres::Config) -> String {
    match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
        other => panic!("expected one TCP host, got {other:?}"),
    }
}

/// "30s", "1m30s", "500ms" → milliseconds.
pub(crate) fn duration_ms(text: &str) -> u64 {
    let mut total = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let value: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text}"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            unit => panic!("unknown unit {unit:?} in {text}"),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    total
}

/// `CHAT_ANALYTICS__SECTION__KEY` must name a key present in config/default.toml.
pub(crate) fn assert_names_are_config_keys(env: &[(String, String)], origin: &str) {
    let defaults: toml::Table = toml::from_str(&read("config/default.toml")).expect("default.toml");
    for (name, _) in env {
        let path = name.strip_prefix(ENV_PREFIX).expect("prefixed");
        let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let found = match parts.as_slice() {
            [section, key] => defaults
                .get(section)
                .and_then(toml::Value::as_table)
                .is_some_and(|t| t.contains_key(key)),
            _ => false,
        };
        assert!(
            found,
            "{origin}: {name} is not SECTION__KEY of a key in config/default.toml"
        );
    }
}

pub(crate) fn relative_to_repo(path: &Path) -> String {
    path.strip_prefix(repo_path(""))
        .expect("inside the repository")
        .to_string_lossy()
        .into_owned()
}

/// Resolves `..` and `.` without touching the file system.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
