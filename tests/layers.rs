//! The module tree is layered (ARCHITECTURE.md): a module uses only
//! modules in layers below its own. This reads every source file's
//! `crate::` paths (test modules aside) and fails on a use that points
//! sideways or up, or on a module the table does not place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom up, as ARCHITECTURE.md lists them.
const LAYERS: &[&[&str]] = &[
    &["sync", "error", "scope"],
    &["wait", "stats", "contain", "trace", "durable"],
    &["config", "completion", "batch", "metrics"],
    &["ring", "handler", "shape", "metrics_facade"],
    &["failure"],
    &["engine"],
    &["producer"],
    &["batcher"],
    &["sinks", "settings", "collector"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comment lines and without its test module.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(")
            && trimmed.contains("test")
            && lines
                .peek()
                .is_some_and(|next| next.starts_with("mod tests"))
        {
            break;
        }
        if !trimmed.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// The names `lib.rs` re-exports at the crate root, with their modules.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    let code = code_of(lib);
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = path.split("::").next().unwrap_or("").trim().to_owned();
        let names = match (path.find('{'), path.rfind('}')) {
            (Some(open), Some(close)) => path[open + 1..close].to_owned(),
            _ => path.rsplit("::").next().unwrap_or("").to_owned(),
        };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            exports.insert(name.to_owned(), module.clone());
        }
    }
    exports
}

/// The modules `code` names after `crate::` (through the root's
/// re-exports for public names).
fn used_modules(code: &str, exports: &BTreeMap<String, String>) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            let module = exports.get(name).map_or(name, String::as_str);
            used.push(module.to_owned());
        }
    }
    used
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let exports = root_exports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let Some(first) = relative.iter().next().and_then(|c| c.to_str()) else {
            continue;
        };
        if first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs");
        let Some(own) = layer_of(module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for used in used_modules(&code_of(&text), &exports) {
            if used == module || used == "self" {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                Some(layer) => problems.push(format!(
                    "{}: `{module}` (layer {own}) uses `{used}` (layer {layer})",
                    relative.display()
                )),
                None => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "expected every module to use only lower layers (ARCHITECTURE.md), found:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reader_sees_uses_through_root_exports() {
    let exports = root_exports("pub use engine::runtime::{AsyncBatch, AsyncHandler};\n");
    let used = used_modules(
        "use crate::{AsyncBatch, ring::Ring};\nlet x = crate::wait::X;",
        &exports,
    );
    assert_eq!(used, ["engine", "ring", "wait"]);
}
