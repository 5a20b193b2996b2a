//! QEMU integration tests live in tests/.
