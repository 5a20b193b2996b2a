//! The committed generated files must equal a fresh generation from the definition:
//! a hand edit, or a definition change without `cargo xtask gen`, fails here.

use std::path::Path;

#[test]
fn generated_files_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let stale = hypercall_gen::stale(&root).expect("the definition is valid");
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run `cargo xtask gen` (never edit them by hand)"
    );
}
