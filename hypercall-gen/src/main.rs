//! Placeholder until the hypercall-gen issue: one definition will generate the hypercall
//! table, the guest stubs, the hypervisor dispatch and `docs/hypercalls.md`.
fn main() {
    eprintln!("hypercall-gen: not implemented yet");
}
