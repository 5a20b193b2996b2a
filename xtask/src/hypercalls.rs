//! `cargo xtask gen`: regenerates the outputs of `hypercall-gen/hypercalls.toml`
//! (xen-pv-abi numbers and wrappers, the hypervisor's dispatch, `docs/hypercalls.md`).

use crate::{Result, err, workspace_root};

/// Regenerates every output; prints the files that changed (none on a clean tree).
pub fn gen_hypercalls() -> Result<()> {
    let root = workspace_root();
    let changed = hypercall_gen::write_all(&root).map_err(|e| err!("hypercall-gen: {e}"))?;
    if changed.is_empty() {
        println!("hypercall-gen: every generated file is up to date");
    }
    for path in changed {
        let shown = path.strip_prefix(&root).unwrap_or(&path);
        println!("hypercall-gen: wrote {}", shown.display());
    }
    Ok(())
}
