//! xen-pv-abi/src/generated.rs: numbers, sub-op constants, typed raw wrappers, layouts.

use crate::model::{ArgKind, Definition, Dir, Flag, Hypercall, Pointee, Scalar};
use crate::{BANNER, const_name, ident};
use std::fmt::Write;

pub(crate) fn generate(def: &Definition) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "//! Hypercall numbers, sub-operation numbers, typed raw hypercall wrappers and ABI\n\
         //! layout checks.\n//!\n//! {BANNER}\n"
    );

    // Numbers.
    let _ = writeln!(
        w,
        "/// Hypercall numbers (`__HYPERVISOR_*` in Xen's `public/xen.h`).\npub mod nr {{"
    );
    for h in &def.hypercalls {
        let _ = writeln!(
            w,
            "/// `{}`: {}\npub const {}: u32 = {};",
            h.name,
            h.summary,
            h.name.to_uppercase(),
            h.nr
        );
    }
    let _ = writeln!(w, "}}\n");

    // Sub-operations, one module per hypercall that has any.
    for h in def.hypercalls.iter().filter(|h| !h.subops.is_empty()) {
        let _ = writeln!(
            w,
            "/// Sub-operation numbers of `{}` ({}).\npub mod {} {{",
            h.name,
            h.nr,
            ident(&h.name)
        );
        for g in &h.subops {
            for op in &g.ops {
                let _ = writeln!(
                    w,
                    "/// `{}{}` (selected by `{}`).\npub const {}: {} = {};",
                    g.prefix,
                    op.name,
                    g.on,
                    const_name(&g.prefix, &op.name),
                    g.ty.rust(),
                    op.nr
                );
            }
        }
        let _ = writeln!(w, "}}\n");
    }

    // Typed raw wrappers: generic over the transport (`call_on`), and the bare-metal
    // `call` that a PV kernel uses, which goes through `Native` (the same instructions as
    // calling `crate::raw` directly once inlined).
    let _ = writeln!(
        w,
        "/// One typed `unsafe fn` per hypercall over any [`crate::transport::Transport`]: \
         argument\n/// types and pointer directions come from the definition; the result is \
         the raw return\n/// value (negative Xen errno on failure, see \
         [`crate::Errno::check`]).\npub mod call_on {{\nuse super::nr;\n\
         use crate::transport::Transport;\n"
    );
    for h in &def.hypercalls {
        if h.flags.contains(&Flag::Noreturn) {
            // iret: jumped to with a frame on the stack, never called.
            continue;
        }
        wrapper_on(w, def, h);
    }
    let _ = writeln!(w, "}}\n");
    let _ = writeln!(
        w,
        "/// The [`call_on`] wrappers with the bare-metal transport \
         ([`crate::transport::Native`]):\n/// what a PV guest kernel calls.\n\
         #[cfg(target_arch = \"x86_64\")]\npub mod call {{"
    );
    for h in &def.hypercalls {
        if h.flags.contains(&Flag::Noreturn) {
            continue;
        }
        wrapper_native(w, def, h);
    }
    let _ = writeln!(w, "}}\n");

    // Layouts.
    let _ = writeln!(
        w,
        "// Layouts from the definition: a mismatch with the Rust type fails the build."
    );
    for st in def.structs.iter() {
        let Some(rust) = &st.rust else { continue };
        let _ = writeln!(
            w,
            "const _: () = assert!(core::mem::size_of::<crate::{rust}>() == {}, \"size of {}\");",
            st.size, st.c
        );
        for (field, off) in &st.fields {
            let _ = writeln!(
                w,
                "const _: () = assert!(core::mem::offset_of!(crate::{rust}, {}) == {off}, \"{}.{field}\");",
                ident(field),
                st.c
            );
        }
    }
    s
}

/// The guest-side pointer type for `to`.
fn pointer(def: &Definition, to: &Pointee, dir: Dir) -> String {
    let target = match to {
        Pointee::Void => "core::ffi::c_void".to_owned(),
        Pointee::Scalar(s) => s.rust().to_owned(),
        Pointee::Struct(name) => match def.abi_struct(name).and_then(|s| s.rust.as_ref()) {
            Some(rust) => format!("crate::{rust}"),
            // Not (yet) a Rust type in xen-pv-abi: an untyped pointer.
            None => "core::ffi::c_void".to_owned(),
        },
    };
    match dir {
        Dir::In => format!("*const {target}"),
        Dir::Out | Dir::InOut => format!("*mut {target}"),
    }
}

/// The parameters (`name: Type`) and register values (`u64` expressions) of `h`.
fn params_and_regs(def: &Definition, h: &Hypercall) -> (Vec<String>, Vec<String>) {
    let mut params = Vec::new();
    let mut regs = Vec::new();
    for a in &h.args {
        let name = ident(&a.name);
        match &a.kind {
            ArgKind::Scalar(s) => {
                params.push(format!("{name}: {}", s.rust()));
                regs.push(match s {
                    Scalar::U64 => name,
                    Scalar::U8 | Scalar::U16 | Scalar::U32 => format!("u64::from({name})"),
                    // Sign-extended, as a C caller would pass an int.
                    Scalar::I32 | Scalar::I64 => format!("{name} as u64"),
                });
            }
            ArgKind::Ptr { to, dir } | ArgKind::Array { of: to, dir, .. } => {
                params.push(format!("{name}: {}", pointer(def, to, *dir)));
                regs.push(format!("{name} as u64"));
            }
        }
    }
    (params, regs)
}

/// The doc lines shared by both wrappers of `h`. The hypervisor's implementation status
/// stays out: it belongs to `docs/hypercalls.md`, not to the published crate.
fn wrapper_doc(h: &Hypercall) -> String {
    format!(
        "/// `{}` ({}): {}\n///\n/// # Safety\n///\n\
         /// The hypervisor reads and writes the memory the pointer arguments designate and \
         may\n/// change the state of the domain: the caller upholds the hypercall's contract.\n",
        h.name, h.nr, h.summary,
    )
}

fn wrapper_on(w: &mut String, def: &Definition, h: &Hypercall) {
    let (params, regs) = params_and_regs(def, h);
    let _ = writeln!(
        w,
        "{}#[inline]\npub unsafe fn {}<T: Transport + ?Sized>(t: &T{}) -> i64 {{\n\
         // SAFETY: forwarded to the caller.\n\
         unsafe {{ t.hypercall{}(nr::{}{}) }}\n}}\n",
        wrapper_doc(h),
        ident(&h.name),
        params.iter().map(|p| format!(", {p}")).collect::<String>(),
        regs.len(),
        h.name.to_uppercase(),
        if regs.len() == 5 {
            // The five-argument form takes them as one array.
            format!(", [{}]", regs.join(", "))
        } else {
            regs.iter().map(|r| format!(", {r}")).collect::<String>()
        },
    );
}

fn wrapper_native(w: &mut String, def: &Definition, h: &Hypercall) {
    let (params, _) = params_and_regs(def, h);
    let names: Vec<String> = h.args.iter().map(|a| ident(&a.name)).collect();
    let _ = writeln!(
        w,
        "{}#[inline]\npub unsafe fn {}({}) -> i64 {{\n\
         // SAFETY: forwarded to the caller.\n\
         unsafe {{ super::call_on::{}(&crate::transport::Native{}) }}\n}}\n",
        wrapper_doc(h),
        ident(&h.name),
        params.join(", "),
        ident(&h.name),
        names.iter().map(|n| format!(", {n}")).collect::<String>(),
    );
}
