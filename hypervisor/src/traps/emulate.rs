//! Decoding the few instructions a PV guest still executes and the hypervisor emulates,
//! and Xen's CPUID leaves. Pure functions: the caller fetched the bytes at the guest's
//! RIP with `copy_from_guest` and applies the result to the saved registers.

use xen_pv_abi::traps::{XEN_CPUID_FIRST_LEAF, XEN_EMULATE_PREFIX};

/// An instruction the hypervisor knows how to handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `wrmsr` (0F 30).
    Wrmsr,
    /// `rdmsr` (0F 32).
    Rdmsr,
    /// `mov r64, crN` (0F 20 /r): control register `cr`, general register `gpr` (0–15).
    MovFromCr { cr: u8, gpr: u8 },
    /// `clts` (0F 06).
    Clts,
    /// `int imm8` (CD ib).
    Int { vector: u8 },
    /// `int3` (CC).
    Int3,
    /// `ud2; .ascii "xen"; cpuid`: Xen's forced-emulation prefix.
    ForcedCpuid,
}

/// A decoded instruction and its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub insn: Insn,
    pub len: u8,
}

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Decodes the instruction at the start of `bytes` (which may be shorter than 15 bytes
/// when the page after it is not mapped). Anything not in [`Insn`] is `None`.
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    let mut forced = [0u8; 7];
    forced[..5].copy_from_slice(&XEN_EMULATE_PREFIX);
    forced[5..].copy_from_slice(&[0x0f, 0xa2]);
    if bytes.starts_with(&forced) {
        return Some(Decoded {
            insn: Insn::ForcedCpuid,
            len: 7,
        });
    }
    // At most one REX prefix (40–4F); REX.R extends ModRM.reg, REX.B ModRM.rm.
    let (rex, rest) = match bytes.first() {
        Some(&b @ 0x40..=0x4f) => (b, &bytes[1..]),
        _ => (0, bytes),
    };
    let prefix_len = u8::from(rex != 0);
    let (insn, len) = match *rest {
        [0xcd, vector, ..] => (Insn::Int { vector }, 2),
        [0xcc, ..] => (Insn::Int3, 1),
        [0x0f, 0x30, ..] => (Insn::Wrmsr, 2),
        [0x0f, 0x32, ..] => (Insn::Rdmsr, 2),
        [0x0f, 0x06, ..] => (Insn::Clts, 2),
        [0x0f, 0x20, modrm, ..] => {
            // The mod field is ignored: the operand is always a register.
            let cr = ((modrm >> 3) & 7) | ((rex & 4) << 1);
            let gpr = (modrm & 7) | ((rex & 1) << 3);
            (Insn::MovFromCr { cr, gpr }, 3)
        }
        _ => return None,
    };
    Some(Decoded {
        insn,
        len: len + prefix_len,
    })
}

/// `"XenVMMXenVMM"` as ebx, ecx, edx.
const XEN_SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"XenV"),
    u32::from_le_bytes(*b"MMXe"),
    u32::from_le_bytes(*b"nVMM"),
];
/// MSR through which a guest asks for the hypercall page (leaf +2's ebx).
pub const XEN_HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;
/// CPUID leaf 1, ECX bit 31: running under a hypervisor.
const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;

/// The answer of an emulated `cpuid`: Xen's leaves at 0x40000000 (signature, version
/// `version`, one hypercall page through MSR 0x40000000; the rest of the Xen range
/// zero), every other leaf as `native` says with the hypervisor bit set in leaf 1.
pub fn cpuid(
    leaf: u32,
    subleaf: u32,
    version: u32,
    native: impl Fn(u32, u32) -> [u32; 4],
) -> [u32; 4] {
    const LAST_XEN_LEAF: u32 = XEN_CPUID_FIRST_LEAF + 2;
    match leaf {
        XEN_CPUID_FIRST_LEAF => [
            LAST_XEN_LEAF,
            XEN_SIGNATURE[0],
            XEN_SIGNATURE[1],
            XEN_SIGNATURE[2],
        ],
        0x4000_0001 => [version, 0, 0, 0],
        LAST_XEN_LEAF => [1, XEN_HYPERCALL_PAGE_MSR, 0, 0],
        0x4000_0003..=0x4000_ffff => [0; 4],
        _ => {
            let mut r = native(leaf, subleaf);
            if leaf == 1 {
                r[2] |= CPUID1_ECX_HYPERVISOR;
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(bytes: &[u8]) -> Option<(Insn, u8)> {
        decode(bytes).map(|d| (d.insn, d.len))
    }

    #[test]
    fn decodes_the_emulated_instructions() {
        assert_eq!(d(&[0x0f, 0x30]), Some((Insn::Wrmsr, 2)));
        assert_eq!(d(&[0x0f, 0x32, 0x90]), Some((Insn::Rdmsr, 2)));
        assert_eq!(d(&[0x0f, 0x06]), Some((Insn::Clts, 2)));
        assert_eq!(d(&[0xcd, 0x80]), Some((Insn::Int { vector: 0x80 }, 2)));
        assert_eq!(d(&[0xcc]), Some((Insn::Int3, 1)));
        assert_eq!(
            d(&[0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2]),
            Some((Insn::ForcedCpuid, 7))
        );
    }

    #[test]
    fn decodes_mov_from_cr_with_rex() {
        // mov rax, cr2 = 0F 20 D0
        assert_eq!(
            d(&[0x0f, 0x20, 0xd0]),
            Some((Insn::MovFromCr { cr: 2, gpr: 0 }, 3))
        );
        // mov r9, cr3 = 41 0F 20 D9
        assert_eq!(
            d(&[0x41, 0x0f, 0x20, 0xd9]),
            Some((Insn::MovFromCr { cr: 3, gpr: 9 }, 4))
        );
        // mov rbx, cr8 = 44 0F 20 C3
        assert_eq!(
            d(&[0x44, 0x0f, 0x20, 0xc3]),
            Some((Insn::MovFromCr { cr: 8, gpr: 3 }, 4))
        );
    }

    #[test]
    fn refuses_the_rest_and_truncated_bytes() {
        assert_eq!(d(&[]), None);
        assert_eq!(d(&[0x0f]), None);
        assert_eq!(d(&[0xcd]), None);
        assert_eq!(d(&[0x0f, 0x20]), None);
        assert_eq!(d(&[0x0f, 0x0b]), None, "a plain ud2 is not emulated");
        assert_eq!(d(&[0x0f, 0x0b, b'x', b'e', b'n', 0x0f]), None);
        assert_eq!(d(&[0xf4]), None, "hlt");
        assert_eq!(d(&[0x48, 0x48, 0x0f, 0x30]), None, "two REX prefixes");
        assert_eq!(d(&[0x66, 0x0f, 0x30]), None);
    }

    #[test]
    fn xen_cpuid_leaves() {
        let native = |l: u32, s: u32| [l, s, 7, 9];
        let v = (4 << 16) | 17;
        let sig = cpuid(0x4000_0000, 0, v, native);
        assert_eq!(sig[0], 0x4000_0002);
        let mut text = [0u8; 12];
        for (i, w) in sig[1..].iter().enumerate() {
            text[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&text, b"XenVMMXenVMM");
        assert_eq!(cpuid(0x4000_0001, 0, v, native), [0x0004_0011, 0, 0, 0]);
        assert_eq!(cpuid(0x4000_0002, 0, v, native), [1, 0x4000_0000, 0, 0]);
        assert_eq!(cpuid(0x4000_0003, 0, v, native), [0; 4]);
        assert_eq!(cpuid(0, 0, v, native), [0, 0, 7, 9]);
        assert_eq!(cpuid(1, 0, v, native), [1, 0, 7 | 1 << 31, 9]);
        assert_eq!(cpuid(7, 1, v, native), [7, 1, 7, 9]);
    }
}
