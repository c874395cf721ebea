//! The Dockerfile: the image ships what every subcommand needs and builds from every
//! file the sources include.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chat_analytics::config::Settings;

use crate::manifest::{assert_names_are_config_keys, default_settings, normalize, ENV_PREFIX};
use crate::support::{read_repo_file as read, repo_path};

#[test]
fn runtime_image_ships_config_and_sql_and_exposes_both_ports() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "expected a multi-stage build");
    let runtime = stages.last().expect("a runtime stage");
    let copied: Vec<String> = runtime
        .iter()
        .filter(|(op, args)| op == "COPY" && !args.contains("--from"))
        .map(|(_, args)| args.clone())
        .collect();
    for dir in ["config", "sql"] {
        assert!(
            copied.iter().any(|args| args
                .split_whitespace()
                .next()
                .is_some_and(|src| { src.trim_end_matches('/') == dir })),
            "the runtime stage does not COPY {dir}/: {copied:?}"
        );
    }
    assert!(
        runtime.iter().any(|(op, args)| op == "COPY"
            && args.contains("--from")
            && args.contains("chat-analytics")),
        "the runtime stage does not copy the binary from the builder"
    );

    let exposed: BTreeSet<u16> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, args)| args.split_whitespace().map(|p| p.trim_end_matches("/tcp")))
        .map(|p| p.parse().expect("EXPOSE takes port numbers"))
        .collect();
    let defaults = default_settings();
    for port in [defaults.api.listen.port(), defaults.admin.listen.port()] {
        assert!(
            exposed.contains(&port),
            "port {port} is not exposed: {exposed:?}"
        );
    }

    let entrypoint = instruction(runtime, "ENTRYPOINT").expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint).expect("exec-form ENTRYPOINT");
    assert_eq!(entrypoint, ["chat-analytics"]);
    let user = instruction(runtime, "USER").expect("the runtime stage sets a USER");
    assert!(
        !matches!(user.as_str(), "root" | "0" | "0:0"),
        "runs as root"
    );
}

#[test]
fn builder_stage_copies_every_file_the_sources_include() {
    // `include_str!` of a file outside the copied folders would build here and fail in
    // `docker build`. Test fixtures under tests/ never reach a release build.
    let stages = dockerfile_stages();
    let copied: BTreeSet<String> = stages[0]
        .iter()
        .filter(|(op, args)| op == "COPY" && !args.contains("--from"))
        .flat_map(|(_, args)| {
            let words: Vec<&str> = args.split_whitespace().collect();
            let sources = &words[..words.len().saturating_sub(1)];
            sources
                .iter()
                .map(|s| s.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for required in ["Cargo.toml", "Cargo.lock", "src", "crates"] {
        assert!(
            copied.contains(required),
            "the builder does not COPY {required}: {copied:?}"
        );
    }
    let root = repo_path("");
    let sources = [repo_path("src"), repo_path("crates")];
    for (file, included) in sources.iter().flat_map(|dir| included_files(dir)) {
        let relative = included.strip_prefix(&root).unwrap_or_else(|_| {
            panic!(
                "{} includes {} from outside the repository",
                file.display(),
                included.display()
            )
        });
        let top = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy();
        if top == "tests" {
            continue;
        }
        assert!(
            copied.contains(top.as_ref()),
            "{} includes {}, but the builder stage copies only {copied:?}",
            file.display(),
            relative.display()
        );
    }
}

#[test]
fn image_environment_alone_lets_every_subcommand_load_its_settings() {
    // The image also runs `migrate`, `nlp-sim` and `hash-key`: its own ENV must never make
    // the settings invalid (for example by binding the API publicly without keys).
    let stages = dockerfile_stages();
    let runtime = stages.last().expect("a runtime stage");
    let env: Vec<(String, String)> = runtime
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV in KEY=VALUE form");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    assert_names_are_config_keys(&env, "Dockerfile");
    if let Err(err) = Settings::load_from(None, env.clone()) {
        panic!("the image's ENV {env:?} is refused: {err}");
    }
}

/// The Dockerfile's instructions, one list per stage, as (INSTRUCTION, arguments) with
/// line continuations joined and comments dropped.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.trim().is_empty()) {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let op = op.to_uppercase();
        if op == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push((op, args.trim().to_owned()));
        }
    }
    stages
}

/// (source file, absolute path) of every `include_str!`/`include_bytes!` under `dir`.
fn included_files(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(included_files(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for macro_name in ["include_str!(", "include_bytes!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                let Some(literal) = rest.strip_prefix('"') else {
                    continue;
                };
                let Some(end) = literal.find('"') else {
                    continue;
                };
                let base = path.parent().expect("parent");
                let resolved = normalize(&base.join(&literal[..end]));
                found.push((path.clone(), resolved));
            }
        }
    }
    found
}

fn instruction(stage: &[(String, String)], op: &str) -> Option<String> {
    stage
        .iter()
        .rev()
        .find(|(o, _)| o == op)
        .map(|(_, args)| args.clone())
}
