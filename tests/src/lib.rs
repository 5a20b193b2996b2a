//! QEMU integration tests: they live in `tests/qemu.rs` and use the `xtask` library to
//! build the images, pack bundles and run QEMU (our hypervisor and real Xen 4.17).
