//! xen-pv-abi's public API as a sorted list of lines, made by parsing its source with
//! `syn`, and compared with the committed snapshot `xen-pv-abi/public-api.txt`.
//!
//! Why not `cargo semver-checks` or `cargo public-api`: there is no published version to
//! compare with yet, rustdoc JSON needs nightly, and building cargo-semver-checks in CI
//! takes minutes. This runs on stable in about a second. A change to the list is then a
//! reviewable diff of the snapshot (`cargo xtask public-api --write`), and a removal or
//! signature change shows up as a `-` line: the reviewer decides the semver bump.
//!
//! What it sees: `pub` items reachable through `pub mod` from `src/lib.rs` (files and
//! inline modules), with their `cfg` attributes; function signatures, struct fields,
//! enum variants, trait items, `pub` methods of inherent impls, trait impls, re-exports
//! and `#[macro_export]` macros. Items produced by `macro_rules!` inside the crate (e.g.
//! the `Errno` constants) are not expanded.

use crate::{Result, err, workspace_root};
use quote::ToTokens;
use std::path::{Path, PathBuf};
use syn::{Attribute, ImplItem, Item, TraitItem, Visibility};

/// The committed snapshot, relative to the workspace root.
pub const SNAPSHOT: &str = "xen-pv-abi/public-api.txt";

/// The public API of the crate whose `src/lib.rs` is under `crate_dir`, one item per line,
/// sorted.
pub fn public_api(crate_dir: &Path, crate_name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let lib = crate_dir.join("src").join("lib.rs");
    walk_file(&lib, crate_name, "", &mut out)?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// xen-pv-abi's public API, as the snapshot holds it (one line each, newline-terminated).
pub fn xen_pv_abi_api_text() -> Result<String> {
    let lines = public_api(&workspace_root().join("xen-pv-abi"), "xen_pv_abi")?;
    let mut s = lines.join("\n");
    s.push('\n');
    Ok(s)
}

/// The lines that differ between the snapshot and the source: (`-` removed, `+` added).
pub fn diff_against_snapshot() -> Result<Vec<String>> {
    let path = workspace_root().join(SNAPSHOT);
    let committed =
        std::fs::read_to_string(&path).map_err(|e| err!("cannot read {}: {e}", path.display()))?;
    let now = xen_pv_abi_api_text()?;
    let old: std::collections::BTreeSet<&str> = committed.lines().collect();
    let new: std::collections::BTreeSet<&str> = now.lines().collect();
    let mut diff: Vec<String> = old.difference(&new).map(|l| format!("- {l}")).collect();
    diff.extend(new.difference(&old).map(|l| format!("+ {l}")));
    Ok(diff)
}

/// Rewrites the snapshot.
pub fn write_snapshot() -> Result<PathBuf> {
    let path = workspace_root().join(SNAPSHOT);
    std::fs::write(&path, xen_pv_abi_api_text()?)
        .map_err(|e| err!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn walk_file(file: &Path, path: &str, cfg: &str, out: &mut Vec<String>) -> Result<()> {
    let text =
        std::fs::read_to_string(file).map_err(|e| err!("cannot read {}: {e}", file.display()))?;
    let ast = syn::parse_file(&text).map_err(|e| err!("cannot parse {}: {e}", file.display()))?;
    // `foo.rs` and `foo/mod.rs` keep their children in `foo/`; `lib.rs` in its own folder.
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs") | Some("mod.rs") => file.parent().map(Path::to_path_buf),
        _ => Some(file.with_extension("")),
    }
    .ok_or_else(|| err!("{} has no folder", file.display()))?;
    walk_items(&ast.items, &dir, path, cfg, out)
}

fn walk_items(
    items: &[Item],
    dir: &Path,
    path: &str,
    cfg: &str,
    out: &mut Vec<String>,
) -> Result<()> {
    for item in items {
        let attrs = item_attrs(item);
        let cfg = format!("{cfg}{}", cfgs(attrs));
        let line = |kind: &str, rest: String| format!("{cfg}{kind} {path}::{rest}");
        match item {
            Item::Mod(m) if is_pub(&m.vis) => {
                let child = format!("{path}::{}", m.ident);
                out.push(format!("{cfg}mod {child}"));
                match &m.content {
                    Some((_, inner)) => {
                        walk_items(inner, &dir.join(m.ident.to_string()), &child, &cfg, out)?
                    }
                    None => {
                        let flat = dir.join(format!("{}.rs", m.ident));
                        let file = if flat.is_file() {
                            flat
                        } else {
                            dir.join(m.ident.to_string()).join("mod.rs")
                        };
                        walk_file(&file, &child, &cfg, out)?;
                    }
                }
            }
            // A private module's items are public when re-exported with `pub use self::m::*`.
            Item::Mod(m) if glob_reexported(items, &m.ident.to_string()) => match &m.content {
                Some((_, inner)) => {
                    walk_items(inner, &dir.join(m.ident.to_string()), path, &cfg, out)?
                }
                None => walk_file(&dir.join(format!("{}.rs", m.ident)), path, &cfg, out)?,
            },
            Item::Fn(f) if is_pub(&f.vis) => out.push(format!("{cfg}{}", sig(path, &f.sig))),
            Item::Const(c) if is_pub(&c.vis) => {
                out.push(line("const", format!("{}: {}", c.ident, tokens(&c.ty))))
            }
            Item::Static(s) if is_pub(&s.vis) => {
                out.push(line("static", format!("{}: {}", s.ident, tokens(&s.ty))))
            }
            Item::Type(t) if is_pub(&t.vis) => out.push(line(
                "type",
                format!("{}{} = {}", t.ident, tokens(&t.generics), tokens(&t.ty)),
            )),
            Item::Struct(s) if is_pub(&s.vis) => {
                let name = format!("{}{}", s.ident, tokens(&s.generics));
                out.push(line("struct", format!("{name}{}", repr(&s.attrs))));
                for (i, f) in s.fields.iter().enumerate() {
                    if is_pub(&f.vis) {
                        let field = f.ident.as_ref().map_or(i.to_string(), |id| id.to_string());
                        out.push(line("field", format!("{name}.{field}: {}", tokens(&f.ty))));
                    }
                }
            }
            Item::Enum(e) if is_pub(&e.vis) => {
                let name = format!("{}{}", e.ident, tokens(&e.generics));
                out.push(line("enum", format!("{name}{}", repr(&e.attrs))));
                for v in &e.variants {
                    let disc = v
                        .discriminant
                        .as_ref()
                        .map_or(String::new(), |(_, d)| format!(" = {}", tokens(d)));
                    out.push(line(
                        "variant",
                        format!("{name}::{}{}{disc}", v.ident, tokens(&v.fields)),
                    ));
                }
            }
            Item::Trait(t) if is_pub(&t.vis) => {
                let name = format!("{}{}", t.ident, tokens(&t.generics));
                out.push(line("trait", name.clone()));
                for ti in &t.items {
                    match ti {
                        TraitItem::Fn(f) => {
                            let default = if f.default.is_some() {
                                " (provided)"
                            } else {
                                ""
                            };
                            out.push(format!(
                                "{cfg}{}{default}",
                                sig(&format!("{path}::{name}"), &f.sig)
                            ));
                        }
                        TraitItem::Const(c) => out.push(line(
                            "trait-const",
                            format!("{name}::{}: {}", c.ident, tokens(&c.ty)),
                        )),
                        TraitItem::Type(ty) => {
                            out.push(line("trait-type", format!("{name}::{}", ty.ident)))
                        }
                        _ => {}
                    }
                }
            }
            Item::Impl(i) => {
                let self_ty = tokens(&i.self_ty);
                match &i.trait_ {
                    Some((neg, tr, _)) => {
                        let neg = if neg.is_some() { "!" } else { "" };
                        out.push(format!(
                            "{cfg}impl{} {neg}{} for {self_ty} (in {path})",
                            tokens(&i.generics),
                            tokens(tr)
                        ));
                    }
                    None => {
                        for ii in &i.items {
                            match ii {
                                ImplItem::Fn(f) if is_pub(&f.vis) => out.push(format!(
                                    "{cfg}{}",
                                    sig(&format!("{path}::{self_ty}"), &f.sig)
                                )),
                                ImplItem::Const(c) if is_pub(&c.vis) => out.push(line(
                                    "assoc-const",
                                    format!("{self_ty}::{}: {}", c.ident, tokens(&c.ty)),
                                )),
                                _ => {}
                            }
                        }
                    }
                }
            }
            Item::Use(u) if is_pub(&u.vis) => {
                out.push(format!("{cfg}use {} (in {path})", tokens(&u.tree)))
            }
            Item::Macro(m) if m.attrs.iter().any(|a| a.path().is_ident("macro_export")) => {
                if let Some(id) = &m.ident {
                    // Exported macros live at the crate root whatever module defines them.
                    out.push(format!(
                        "{cfg}macro {}::{id}!",
                        path.split("::").next().unwrap_or(path)
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `fn path::name<..>(..) -> ..` (with `unsafe`, `const` in front as written).
fn sig(path: &str, sig: &syn::Signature) -> String {
    let text = tokens(sig);
    let plain = format!("fn {}", sig.ident);
    text.replacen(&plain, &format!("fn {path}::{}", sig.ident), 1)
}

/// Whether `items` hold `pub use self::name::*` (or `pub use name::*`).
fn glob_reexported(items: &[Item], name: &str) -> bool {
    items.iter().any(|i| match i {
        Item::Use(u) if is_pub(&u.vis) => {
            let t = tokens(&u.tree);
            t == format!("self::{name}::*") || t == format!("{name}::*")
        }
        _ => false,
    })
}

fn is_pub(vis: &Visibility) -> bool {
    matches!(vis, Visibility::Public(_))
}

/// Tokens as text, with the spaces `to_string` puts everywhere squeezed where Rust
/// does not write them.
fn tokens(t: &impl ToTokens) -> String {
    let s = t.to_token_stream().to_string();
    let mut out = s
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" ,", ",")
        .replace(" : ", ": ")
        .replace("& ", "&")
        .replace(" (", "(")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(" < ", "<")
        .replace("< ", "<")
        .replace(" <", "<")
        .replace(" >", ">")
        .replace(" ;", ";")
        .replace("[ ", "[")
        .replace(" ]", "]")
        .replace(" !", "!");
    // `-> T` keeps its spaces (the `>` rule above ate the one before `>`).
    out = out.replace("->", " -> ").replace("  ", " ");
    out.trim().to_string()
}

/// ` #[cfg(...)]`-style prefix for every `cfg` attribute.
fn cfgs(attrs: &[Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .map(|a| format!("#[{}] ", tokens(&a.meta)))
        .collect()
}

/// ` #[repr(C)]` and ` #[derive(..)]` when present: a layout and derived traits (`Copy`,
/// `zerocopy`'s) are part of this crate's contract.
fn repr(attrs: &[Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("repr") || a.path().is_ident("derive"))
        .map(|a| format!(" #[{}]", tokens(&a.meta)))
        .collect()
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_crate_lists_its_public_items_only() {
        let dir = std::env::temp_dir().join(format!("public-api-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(
            src.join("lib.rs"),
            "pub mod a;\nmod hidden { pub fn no() {} }\nmod shown { pub fn yes() {} }\npub use self::shown::*;\n#[cfg(feature = \"x\")]\npub mod sub;\n\
             pub use a::f as g;\n#[macro_export]\nmacro_rules! m { () => {} }\n",
        )
        .unwrap();
        std::fs::write(
            src.join("a.rs"),
            "pub fn f<T: Copy>(t: &T) -> Option<u8> { None }\nfn private() {}\n\
             #[repr(C)] pub struct S { pub x: u32, y: u8 }\nimpl S { pub fn new() -> S { todo!() } fn p(&self) {} }\n\
             pub trait Tr { fn a(&self); fn b(&self) {} }\npub const C: u32 = 1;\n",
        )
        .unwrap();
        std::fs::write(src.join("sub").join("mod.rs"), "pub enum E { A = 1, B }\n").unwrap();
        let api = public_api(&dir, "k").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut expected = vec![
            "#[cfg(feature = \"x\")] enum k::sub::E",
            "#[cfg(feature = \"x\")] mod k::sub",
            "#[cfg(feature = \"x\")] variant k::sub::E::A = 1",
            "#[cfg(feature = \"x\")] variant k::sub::E::B",
            "const k::a::C: u32",
            "field k::a::S.x: u32",
            "fn k::a::f<T: Copy>(t: &T) -> Option<u8>",
            "fn k::yes()",
            "macro k::m!",
            "fn k::a::S::new() -> S",
            "mod k::a",
            "struct k::a::S #[repr(C)]",
            "trait k::a::Tr",
            "fn k::a::Tr::a(&self)",
            "fn k::a::Tr::b(&self) (provided)",
            "use a::f as g (in k)",
            "use self::shown::* (in k)",
        ];
        expected.sort();
        assert_eq!(api, expected);
    }

    #[test]
    fn xen_pv_abi_matches_its_committed_public_api() {
        let diff = diff_against_snapshot().unwrap();
        assert!(
            diff.is_empty(),
            "xen-pv-abi's public API changed; review, then `cargo xtask public-api --write`:\n{}",
            diff.join("\n")
        );
    }
}
