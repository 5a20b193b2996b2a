/// Where the runtime's linker script links the kernel and where Xen maps pseudo-physical
/// page 0 (the `VIRT_BASE` note): the top 2 GiB, so the target's default kernel code model
/// reaches every symbol.
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
