//! docs/hypercalls.md: the reference table.

use crate::BANNER;
use crate::const_name;
use crate::model::{ArgKind, Definition, Hypercall, Pointee, Status};
use std::fmt::Write;

fn pointee(to: &Pointee) -> String {
    match to {
        Pointee::Void => "void".into(),
        Pointee::Scalar(s) => s.rust().into(),
        Pointee::Struct(name) => name.clone(),
    }
}

fn args(h: &Hypercall) -> String {
    if h.args.is_empty() {
        return "—".into();
    }
    h.args
        .iter()
        .map(|a| match &a.kind {
            ArgKind::Scalar(s) => format!("`{}: {}`", a.name, s.rust()),
            ArgKind::Ptr { to, dir } => {
                format!("`{}: {} *{}`", a.name, dir.name(), pointee(to))
            }
            ArgKind::Array { of, dir, count } => format!(
                "`{}: {} *[{}; {}]`",
                a.name,
                dir.name(),
                pointee(of),
                h.args[*count].name
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn subops(h: &Hypercall) -> String {
    if h.subops.is_empty() {
        return "—".into();
    }
    h.subops
        .iter()
        .map(|g| {
            let ops: Vec<String> = g
                .ops
                .iter()
                .map(|o| {
                    let done = if o.status == Some(Status::Implemented) {
                        " ✓"
                    } else {
                        ""
                    };
                    let arg = o.arg.as_ref().map_or(String::new(), |a| format!(" ({a})"));
                    format!("{} {}{arg}{done}", o.nr, o.name)
                })
                .collect();
            format!("`{}*` (on `{}`): {}", g.prefix, g.on, ops.join(", "))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

pub(crate) fn generate(def: &Definition) -> String {
    let mut s = String::new();
    let w = &mut s;
    let implemented = def
        .hypercalls
        .iter()
        .filter(|h| h.status == Status::Implemented)
        .count();
    let _ = writeln!(
        w,
        "# Hypercalls\n\n<!-- {BANNER} -->\n\n\
         Every Xen x86_64 PV hypercall, from the one definition `hypercall-gen/hypercalls.toml`\n\
         ({implemented} of {} implemented here; any other number answers `-ENOSYS`).\n\
         Arguments are in register order `rdi, rsi, rdx, r10, r8`; `in *T` is a guest pointer the\n\
         hypervisor reads, `out` one it writes, `*[T; n]` an array of `n` elements. A ✓ marks an\n\
         implemented sub-operation.\n",
        def.hypercalls.len()
    );
    let _ = writeln!(
        w,
        "| # | name | arguments | sub-operations | flags | status |\n|---|---|---|---|---|---|"
    );
    for h in &def.hypercalls {
        let flags: Vec<&str> = h.flags.iter().map(|f| f.name()).collect();
        let status = match h.status {
            Status::Implemented => "**implemented**",
            Status::Unimplemented => "unimplemented",
        };
        let _ = writeln!(
            w,
            "| {} | `{}` | {} | {} | {} | {status} |",
            h.nr,
            h.name,
            args(h),
            subops(h),
            flags.join(", ")
        );
    }
    let _ = writeln!(w, "\n## Summaries\n");
    for h in &def.hypercalls {
        let _ = writeln!(w, "* **{} `{}`**: {}", h.nr, h.name, h.summary);
    }
    let noted: Vec<_> = def
        .hypercalls
        .iter()
        .flat_map(|h| h.subops.iter().map(move |g| (h, g)))
        .flat_map(|(h, g)| g.ops.iter().map(move |o| (h, g, o)))
        .filter_map(|(h, g, o)| o.note.as_ref().map(|n| (h, g, o, n)))
        .collect();
    if !noted.is_empty() {
        let _ = writeln!(w, "\n## Sub-operation notes\n");
        for (h, g, o, note) in noted {
            let _ = writeln!(
                w,
                "* **{} `{}` / {} `{}{}`**: {note}",
                h.nr,
                h.name,
                o.nr,
                g.prefix,
                o.name.to_uppercase()
            );
        }
    }
    let _ = writeln!(
        w,
        "\n## ABI structures\n\nSizes and offsets from the Xen public headers (x86_64). Those with a\n\
         Rust type are checked at compile time in `xen-pv-abi/src/generated.rs`.\n\n\
         | struct | C name | size | fields (offset) | Rust type |\n|---|---|---|---|---|"
    );
    for st in &def.structs {
        let fields: Vec<String> = st
            .fields
            .iter()
            .map(|(f, off)| format!("{f} @{off}"))
            .collect();
        let rust = st
            .rust
            .as_ref()
            .map_or("— (not yet in xen-pv-abi)".to_owned(), |r| {
                format!("`xen_pv_abi::{r}`")
            });
        let _ = writeln!(
            w,
            "| `{}` | `{}` | {} | {} | {rust} |",
            st.name,
            st.c,
            st.size,
            fields.join(", ")
        );
    }
    let _ = writeln!(
        w,
        "\n## Constants\n\nSub-operation constants live in `xen_pv_abi::generated::<hypercall>`, e.g."
    );
    let example = def.hypercalls.iter().find_map(|h| {
        h.subops
            .first()
            .and_then(|g| g.ops.first().map(|op| (h, g, op)))
    });
    if let Some((h, g, op)) = example {
        let _ = writeln!(
            w,
            "`xen_pv_abi::generated::{}::{}` = {}.",
            h.name,
            const_name(&g.prefix, &op.name),
            op.nr
        );
    }
    s
}
