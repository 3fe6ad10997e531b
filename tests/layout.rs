//! The module graph follows the pipeline: each top-level module of the library uses
//! only modules listed before it in `src/lib.rs`'s layout (its doc comment's list,
//! which rustfmt leaves in reading order; the `pub mod` lines it sorts), so no two
//! import each other and the list is a reading order. Read from the source as a reviewer
//! would: every `crate::name` path and every `use crate::{..}` group outside tests
//! and comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layout's order: the names that open the doc comment's list items.
fn laid_out_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! * `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)]` module (tests may
/// reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| match l.find("// ") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named after `crate::` (directly, or at the top of a brace group).
fn used_modules(code: &str, known: &BTreeSet<&str>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && c == ',' {
                    used.insert(ident(item.trim()));
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            used.insert(ident(item.trim()));
        } else {
            used.insert(ident(rest));
        }
    }
    used.retain(|m| known.contains(m.as_str()));
    used
}

#[test]
fn each_module_uses_only_modules_listed_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = laid_out_modules(&lib);
    assert_eq!(
        order.iter().cloned().collect::<BTreeSet<_>>(),
        declared_modules(&lib),
        "lib.rs's layout lists every module it declares, once"
    );
    assert_eq!(order.len(), declared_modules(&lib).len(), "{order:?}");
    let known: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if !known.contains(top.as_str()) {
            continue; // lib.rs, main.rs
        }
        let text = std::fs::read_to_string(file).unwrap();
        let mut used = used_modules(&code(&text), &known);
        used.remove(&top);
        uses.entry(top).or_default().extend(used);
    }
    assert_eq!(
        uses.keys().collect::<BTreeSet<_>>(),
        order.iter().collect::<BTreeSet<_>>(),
        "every declared module has files"
    );
    let position = |m: &str| order.iter().position(|o| o == m).unwrap();
    let mut wrong = Vec::new();
    for (module, used) in &uses {
        for dep in used {
            if position(dep) > position(module) {
                wrong.push(format!("{module} uses {dep}, listed after it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_reader_of_the_graph_sees_groups_and_paths() {
    // The check above is only as good as its reading of the source.
    let known: BTreeSet<&str> = ["config", "store", "web", "events"].into_iter().collect();
    let code = code(
        "use crate::{config::Config, store::{A, B}};\n// crate::web in a comment\nfn f() { crate::events::x(); }\n",
    );
    let used = used_modules(&code, &known);
    assert_eq!(
        used,
        ["config", "events", "store"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
