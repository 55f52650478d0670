//! The folder layering of `src/`: a top-level module (a folder, or a file such as `bridge.rs`)
//! imports only from the layers below its own, as the `# Layers` list in `src/lib.rs` declares
//! them; modules of one layer do not import each other. Every `crate::` path (in `use` lines,
//! in code, in macros, `$crate::` included) and every `super::` chain that climbs to the crate
//! root is checked, in tests inside `src/` too; comments and strings are not. A module of
//! `src/` missing from the list fails, so a new folder has to take a place in it.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

/// The source tree and the file that declares the layers.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `# Layers` list of `src/lib.rs`, top first: one line per layer, `//! - ` then the
/// layer's modules, comma-separated, each possibly written as an intra-doc link.
fn declared_layers(lib_rs: &str) -> Vec<Vec<String>> {
    let mut lines = lib_rs
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "//! # Layers");
    assert!(
        lines.next().is_some(),
        "src/lib.rs has no `//! # Layers` list"
    );
    let layers: Vec<Vec<String>> = lines
        .skip_while(|l| !l.starts_with("//! - "))
        .take_while(|l| l.starts_with("//! - "))
        .map(|l| {
            l["//! - ".len()..]
                .split(',')
                .map(|name| name.trim().trim_matches(['[', ']', '`']).to_string())
                .collect()
        })
        .collect();
    assert!(
        !layers.is_empty(),
        "the `# Layers` list of src/lib.rs is empty"
    );
    layers
}

/// The top-level modules of `src/`: its folders and its `.rs` files other than the crate roots.
fn top_modules(src: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(src)
        .expect("read src/")
        .map(|e| e.expect("read src/").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_string())
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a folder of src/") {
        let path = entry.expect("read a folder of src/").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// The tokens of a Rust file that matter to paths, each with its line; comments, strings,
/// character literals, lifetimes and numbers are dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let ident_char = |ch: char| ch == '_' || ch.is_alphanumeric();
    // Skips from `i` (an opening quote) past the closing `"`, honouring escapes.
    let skip_string = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips a raw string whose `r` is at `i`: `r"…"`, `r#"…"#`, ….
    let skip_raw = |i: usize, line: &mut usize| {
        let mut j = i + 1;
        let mut hashes = 0;
        while at(j) == '#' {
            hashes += 1;
            j += 1;
        }
        j += 1; // the opening quote
        loop {
            if j >= c.len() {
                return j;
            }
            if c[j] == '\n' {
                *line += 1;
            }
            if c[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                return j + 1 + hashes;
            }
            j += 1;
        }
    };
    let is_raw_start = |i: usize| {
        let mut j = i + 1;
        while at(j) == '#' {
            j += 1;
        }
        at(j) == '"'
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if at(i + 1) == '/' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(i, &mut line),
            '\'' => {
                if at(i + 1) == '\\' {
                    // An escaped character literal.
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    // A lifetime or a label: its name is lexed as an identifier and ignored.
                    i += 1;
                    while ident_char(at(i)) {
                        i += 1;
                    }
                }
            }
            ':' if at(i + 1) == ':' => {
                out.push((Tok::Path, line));
                i += 2;
            }
            _ if ch.is_ascii_digit() => {
                while ident_char(at(i)) {
                    i += 1;
                }
            }
            _ if ident_char(ch) => {
                let start = i;
                if (ch == 'r' || (ch == 'b' && at(i + 1) == 'r')) && {
                    let r = if ch == 'r' { i } else { i + 1 };
                    is_raw_start(r)
                } {
                    let r = if ch == 'r' { i } else { i + 1 };
                    i = skip_raw(r, &mut line);
                    continue;
                }
                if (ch == 'b' || ch == 'c') && at(i + 1) == '"' {
                    i = skip_string(i + 1, &mut line);
                    continue;
                }
                if ch == 'b' && at(i + 1) == '\'' {
                    i += 1; // lexed as a character literal next
                    continue;
                }
                if ch == 'r' && at(i + 1) == '#' {
                    i += 2; // a raw identifier
                }
                let from = if c[start] == 'r' && at(start + 1) == '#' {
                    start + 2
                } else {
                    start
                };
                while ident_char(at(i)) {
                    i += 1;
                }
                out.push((Tok::Ident(c[from..i].iter().collect()), line));
            }
            _ if ch.is_whitespace() => i += 1,
            _ => {
                out.push((Tok::Punct(ch), line));
                i += 1;
            }
        }
    }
    out
}

/// The first segment of each path that starts at `toks[i]`: the identifier there, or, for a
/// `{ … }` group, the first identifier of each of its items.
fn heads(toks: &[(Tok, usize)], i: usize) -> Vec<(String, usize)> {
    match toks.get(i) {
        Some((Tok::Ident(name), line)) => vec![(name.clone(), *line)],
        Some((Tok::Punct('{'), _)) => {
            let mut found = Vec::new();
            let (mut depth, mut expect_head) = (0, true);
            for (tok, line) in &toks[i..] {
                match tok {
                    Tok::Punct('{') => {
                        depth += 1;
                        expect_head = depth == 1;
                    }
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect_head = true,
                    Tok::Ident(name) if depth == 1 && expect_head => {
                        found.push((name.clone(), *line));
                        expect_head = false;
                    }
                    _ => expect_head = false,
                }
            }
            found
        }
        _ => Vec::new(),
    }
}

/// Every reference of `file` to a top-level module: the module named and the line.
/// `module` is the file's own module path (`["store", "engine", "open"]`), which a chain of
/// `super::` climbs.
fn references(text: &str, module: &[String]) -> Vec<(String, usize)> {
    let toks = tokens(text);
    let mut found = Vec::new();
    // Inline `mod name { … }` blocks, with the brace depth each opened at.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0;
    for i in 0..toks.len() {
        let prev_is_path = i > 0 && toks[i - 1].0 == Tok::Path;
        match &toks[i].0 {
            Tok::Punct('{') => {
                let opens_mod = i >= 2
                    && toks[i - 2].0 == Tok::Ident("mod".into())
                    && matches!(toks[i - 1].0, Tok::Ident(_));
                if opens_mod {
                    inline.push(depth);
                }
                depth += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            Tok::Ident(word)
                if word == "crate"
                    && !prev_is_path
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Path) =>
            {
                found.extend(heads(&toks, i + 2));
            }
            Tok::Ident(word) if word == "super" && !prev_is_path => {
                // `super::super::…`: how far it climbs, and where the path goes on.
                let mut j = i;
                let mut climbs = 0;
                while toks.get(j).map(|t| &t.0) == Some(&Tok::Ident("super".into()))
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::Path)
                {
                    climbs += 1;
                    j += 2;
                }
                if climbs >= module.len() + inline.len() {
                    found.extend(heads(&toks, j));
                }
            }
            _ => {}
        }
    }
    found
}

/// The module path of a file under `src/`: `store/engine/mod.rs` is `["store", "engine"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Every import in `src/` that does not point to a lower layer, one message each.
fn violations(src: &Path, layers: &[Vec<String>]) -> Vec<String> {
    // Layer 1 is the bottom.
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .rev()
        .enumerate()
        .flat_map(|(n, layer)| layer.iter().map(move |m| (m.as_str(), n + 1)))
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src/");
        let module = module_path(rel);
        let Some(own) = module.first().filter(|m| rank.contains_key(m.as_str())) else {
            continue; // lib.rs, main.rs; a module missing from the list is reported apart
        };
        let text = fs::read_to_string(&file).expect("read a source file");
        for (target, line) in references(&text, &module) {
            let Some(&to) = rank.get(target.as_str()) else {
                continue; // an item of the crate root (`crate::VERSION`)
            };
            let from = rank[own.as_str()];
            if target != *own && to >= from {
                let how = if to == from {
                    "a module of its own layer"
                } else {
                    "a higher layer"
                };
                bad.push(format!(
                    "src/{}:{line}: `{own}` (layer {from}) imports `{target}` (layer {to}), \
                     {how}: folders import only from the layers below theirs \
                     (src/lib.rs, `# Layers`)",
                    rel.display(),
                ));
            }
        }
    }
    bad
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let src = src();
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let layers = declared_layers(&lib);
    let bad = violations(&src, &layers);
    assert!(bad.is_empty(), "\n{}\n", bad.join("\n"));
}

#[test]
fn every_module_of_src_has_a_layer() {
    let src = src();
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let declared: Vec<String> = declared_layers(&lib).into_iter().flatten().collect();
    let present = top_modules(&src);
    let missing: Vec<&String> = present.iter().filter(|m| !declared.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "src/ has modules that the `# Layers` list of src/lib.rs does not place: {missing:?}; \
         add each to the layer whose modules it may import from the layers below"
    );
    let stale: Vec<&String> = declared.iter().filter(|m| !present.contains(m)).collect();
    assert!(
        stale.is_empty(),
        "the `# Layers` list of src/lib.rs names modules src/ does not have: {stale:?}"
    );
    let mut seen = declared.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        declared.len(),
        "a module is listed twice: {declared:?}"
    );
}

/// The checker itself: what it reads as a reference and what it leaves.
#[test]
fn references_are_read_from_code_only() {
    let module = vec![
        "store".to_string(),
        "engine".to_string(),
        "open".to_string(),
    ];
    let text = r##"
//! Docs name [`crate::app`] freely.
use crate::{
    bridge::Delivery,
    job::{target::Target, Job},
};
use super::super::super::units::parse;
use super::Engine;
/* crate::api in a block comment */
const S: &str = "crate::config in a string";
const R: &str = r#"crate::config in a raw "string""#;
fn f<'a>(x: &'a str) -> char {
    let _ = crate::dispatch::config::default_timeout();
    macro_rules! m { () => { $crate::stats::Stats::new() }; }
    'x'
}
#[cfg(test)]
mod tests {
    use super::super::super::super::lifecycle::Shutdown;
    use super::super::super::metrics; // climbs to `store` only
}
"##;
    let names: Vec<(String, usize)> = references(text, &module);
    assert_eq!(
        names,
        [
            ("bridge".to_string(), 4),
            ("job".to_string(), 5),
            ("units".to_string(), 7),
            ("dispatch".to_string(), 13),
            ("stats".to_string(), 14),
            ("lifecycle".to_string(), 19),
        ]
    );
}
