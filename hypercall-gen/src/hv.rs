//! hypervisor/src/hypercall/generated.rs: the `Hypercalls` trait and `dispatch`.

use crate::model::{ArgKind, Definition, Hypercall, Pointee, Scalar, Status};
use crate::{BANNER, ident};
use std::fmt::Write;

pub(crate) fn generate(def: &Definition) -> String {
    let implemented: Vec<&Hypercall> = def
        .hypercalls
        .iter()
        .filter(|h| h.status == Status::Implemented)
        .collect();
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "//! The [`Hypercalls`] trait (one method per implemented hypercall) and [`dispatch`],\n\
         //! which decodes the five register arguments into typed ones.\n//!\n//! {BANNER}\n\n\
         use super::handle::{{{}}};\n\
         use xen_pv_abi::{{Errno, nr}};\n",
        handle_imports(def, &implemented)
    );
    let _ = writeln!(
        w,
        "/// One method per implemented hypercall. `call` is the calling domain and its \
         registers;\n/// guest pointers arrive as [`GuestHandle`] / [`GuestArray`] (never raw \
         integers), an\n/// array's count argument folded into its [`GuestArray`].\n\
         pub(crate) trait Hypercalls {{"
    );
    for h in &implemented {
        let mut params = String::new();
        let mut docs = String::new();
        for (i, a) in h.args.iter().enumerate() {
            if h.is_count(i) {
                continue;
            }
            let _ = write!(params, ", {}: {}", ident(&a.name), param_type(def, &a.kind));
            let _ = write!(docs, "\n/// * `{}`: {}", a.name, describe(h, &a.kind));
        }
        let flags: Vec<&str> = h.flags.iter().map(|f| f.name()).collect();
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("\n///\n/// Flags: {}.", flags.join(", "))
        };
        let _ = writeln!(
            w,
            "/// `{}` ({}): {}\n///{docs}{flags}\nfn {}(&mut self, call: &mut Call<'_>{params}) -> Outcome;\n",
            h.name,
            h.nr,
            h.summary,
            ident(&h.name)
        );
    }
    let _ = writeln!(w, "}}\n");

    let _ = writeln!(
        w,
        "/// Calls the method of hypercall `number` with the register arguments `args` (rdi, rsi,\n\
         /// rdx, r10, r8). Unknown and unimplemented numbers answer `-ENOSYS`; scalar \
         arguments\n/// are truncated to their declared width, as Xen's C prototypes do. Inlined into \
         its\n/// callers: one call level less on every hypercall.\n\
         #[inline(always)]\npub(crate) fn dispatch<H: Hypercalls + ?Sized>(\n    h: &mut H,\n    \
         call: &mut Call<'_>,\n    number: u64,\n    args: [u64; 5],\n) -> Outcome {{\n\
         // A number beyond u32 is as unknown as 99.\n\
         let Ok(number) = u32::try_from(number) else {{\nreturn Outcome::Return(Err(Errno::ENOSYS));\n}};\n\
         match number {{"
    );
    for h in &implemented {
        let mut values = String::new();
        for (i, a) in h.args.iter().enumerate() {
            if h.is_count(i) {
                continue;
            }
            let _ = write!(values, ", {}", decode(h, i, &a.kind));
        }
        let _ = writeln!(
            w,
            "nr::{} => h.{}(call{values}),",
            h.name.to_uppercase(),
            ident(&h.name)
        );
    }
    let _ = writeln!(w, "_ => Outcome::Return(Err(Errno::ENOSYS)),\n}}\n}}");
    s
}

fn pointee(def: &Definition, to: &Pointee) -> String {
    match to {
        Pointee::Void => "Untyped".into(),
        Pointee::Scalar(s) => s.rust().into(),
        Pointee::Struct(name) => {
            let rust = def
                .abi_struct(name)
                .and_then(|s| s.rust.as_deref())
                .expect("checked: implemented hypercalls only use structs with a rust path");
            format!("xen_pv_abi::{rust}")
        }
    }
}

fn param_type(def: &Definition, kind: &ArgKind) -> String {
    match kind {
        ArgKind::Scalar(s) => s.rust().into(),
        ArgKind::Ptr { to, .. } => format!("GuestHandle<{}>", pointee(def, to)),
        ArgKind::Array { of, .. } => format!("GuestArray<{}>", pointee(def, of)),
    }
}

fn describe(h: &Hypercall, kind: &ArgKind) -> String {
    match kind {
        ArgKind::Scalar(s) => s.rust().into(),
        ArgKind::Ptr { dir, .. } => format!("guest pointer, {}", dir.name()),
        ArgKind::Array { dir, count, .. } => format!(
            "guest array of `{}` elements, {}",
            h.args[*count].name,
            dir.name()
        ),
    }
}

/// The expression that turns register `args[i]` into the typed argument.
fn decode(h: &Hypercall, i: usize, kind: &ArgKind) -> String {
    match kind {
        ArgKind::Scalar(Scalar::U64) => format!("args[{i}]"),
        ArgKind::Scalar(s) => format!("args[{i}] as {}", s.rust()),
        ArgKind::Ptr { .. } => format!("GuestHandle::new(args[{i}])"),
        ArgKind::Array { count, .. } => {
            let len = match &h.args[*count].kind {
                ArgKind::Scalar(Scalar::U64) => format!("args[{count}]"),
                ArgKind::Scalar(s) => format!("u64::from(args[{count}] as {})", s.rust()),
                _ => unreachable!("checked: a count is an unsigned scalar"),
            };
            format!("GuestArray::new(args[{i}], {len})")
        }
    }
}

/// The `super::handle` names the trait uses (an unused import would be a warning).
fn handle_imports(def: &Definition, implemented: &[&Hypercall]) -> String {
    let mut names = vec!["Call", "Outcome"];
    let types: Vec<String> = implemented
        .iter()
        .flat_map(|h| h.args.iter().map(|a| param_type(def, &a.kind)))
        .collect();
    for (name, needle) in [
        ("GuestArray", "GuestArray<"),
        ("GuestHandle", "GuestHandle<"),
        ("Untyped", "Untyped"),
    ] {
        if types.iter().any(|t| t.contains(needle)) {
            names.push(name);
        }
    }
    names.join(", ")
}
