//! Writes the runtime's linker script `xen-pv-rt.ld` into OUT_DIR and puts OUT_DIR on the
//! link search path. A search path set by a dependency's build script reaches the final
//! link of every binary that depends on it, so a kernel only adds `-Txen-pv-rt.ld`.

use std::env;
use std::path::PathBuf;

include!("src/virt_base.rs");
include!("src/script_symbol.rs");
const SCRIPT_SYMBOL: &str = script_symbol!();

fn main() {
    println!("cargo:rerun-if-changed=xen-pv-rt.ld.in");
    println!("cargo:rerun-if-changed=src/virt_base.rs");
    println!("cargo:rerun-if-changed=src/script_symbol.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let template = include_str!("xen-pv-rt.ld.in");
    let script = template
        .replace("@VIRT_BASE@", &format!("{VIRT_BASE:#x}"))
        .replace("@SCRIPT_SYMBOL@", SCRIPT_SYMBOL);
    std::fs::write(out.join("xen-pv-rt.ld"), script).expect("write xen-pv-rt.ld");
    println!("cargo:rustc-link-search=native={}", out.display());
}
