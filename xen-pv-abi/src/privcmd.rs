//! The Linux user-space transport: hypercalls from a process through `/dev/xen/privcmd`.
//!
//! Linux's privcmd driver (`include/uapi/xen/privcmd.h`) issues the hypercall described
//! by `struct privcmd_hypercall { __u64 op; __u64 arg[5]; }` on behalf of the process
//! (`ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &h)`) and returns its result. The process needs
//! the device (normally root in a dom0 or a driver domain).
//!
//! # Buffers must be resident
//!
//! Pointer arguments stay user addresses: the kernel lets the hypervisor use the process's
//! page tables during the call, but the hypervisor cannot take a page fault on the
//! process's behalf. A buffer in a page that is not present (never touched, swapped out,
//! copy-on-write not yet broken for a write) makes the hypercall fail with `EFAULT`
//! (never a corruption). This is why Xen's own libraries make hypercall buffers from
//! `mlock`ed memory or from `/dev/xen/hypercall` mappings.
//!
//! What this crate does: the safe wrappers place their argument structures on the
//! calling thread's stack and write them just before the call, so those pages are
//! present; caller-provided slices (e.g. `console_io_write`'s bytes, `poll`'s ports) are
//! passed as they are. The crate does **not** lock memory. A program that must not see
//! a spurious `EFAULT` under memory pressure calls `mlockall(MCL_CURRENT | MCL_FUTURE)`
//! at start (or keeps its buffers in locked memory) and retries on `EFAULT`.

use crate::transport::Transport;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The device node of the privcmd driver.
pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";

/// `struct privcmd_hypercall` of Linux's `include/uapi/xen/privcmd.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivcmdHypercall {
    /// The hypercall number.
    pub op: u64,
    /// The five arguments.
    pub arg: [u64; 5],
}

static_assertions::const_assert_eq!(core::mem::size_of::<PrivcmdHypercall>(), 48);

/// `IOCTL_PRIVCMD_HYPERCALL` = `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))`:
/// no direction bits, size 48 in bits 16..30, type `'P'` in bits 8..16, number 0.
pub const IOCTL_PRIVCMD_HYPERCALL: u64 =
    ((core::mem::size_of::<PrivcmdHypercall>() as u64) << 16) | ((b'P' as u64) << 8);

/// Hypercalls through an open `/dev/xen/privcmd`.
///
/// Results: the hypervisor's return value as the kernel hands it back (the full 64 bits;
/// the ioctl is issued with `syscall(SYS_ioctl, ...)`, whose return is a `long`, not
/// `ioctl`'s `int`). A failure of the ioctl itself (`errno`) comes back as `-errno`:
/// Xen's errno numbers are Linux's x86 ones, so a hypervisor error (`-EINVAL` from Xen,
/// turned into `errno = EINVAL` by the kernel) reads the same as on bare metal, and so do
/// the driver's own refusals (`EPERM` on a restricted descriptor, `ENOTTY` for a file
/// that is not privcmd). A successful result in `-4095..=-1` would be indistinguishable
/// from an error; no Xen hypercall returns one.
///
/// See the [module documentation](self) for why buffers must be resident.
#[derive(Debug)]
pub struct Privcmd {
    file: File,
}

impl Privcmd {
    /// Opens [`PRIVCMD_PATH`] for reading and writing.
    pub fn open() -> io::Result<Self> {
        Self::open_path(Path::new(PRIVCMD_PATH))
    }

    /// Opens another privcmd node (e.g. in a container with a different `/dev`).
    pub fn open_path(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Privcmd { file })
    }

    /// Uses an already open privcmd descriptor.
    pub fn from_file(file: File) -> Self {
        Privcmd { file }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Transport for Privcmd {
    unsafe fn hypercall5(&self, op: u32, args: [u64; 5]) -> i64 {
        let mut h = PrivcmdHypercall {
            op: u64::from(op),
            arg: args,
        };
        // SAFETY: `h` is a live `struct privcmd_hypercall` for the duration of the ioctl,
        // which only reads it; the memory the hypercall's arguments designate is the
        // caller's responsibility (this function's contract).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                self.file.as_raw_fd(),
                IOCTL_PRIVCMD_HYPERCALL as libc::c_ulong,
                core::ptr::from_mut(&mut h),
            )
        };
        if ret == -1 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            -i64::from(errno)
        } else {
            ret
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_linux() {
        // _IOC(_IOC_NONE, 'P', 0, 48) on x86: 0x00305000.
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
    }

    #[test]
    fn a_file_that_is_not_privcmd_gives_an_errno() {
        // /dev/null accepts no ioctl: ENOTTY (25), reported as -25.
        let t = Privcmd::from_file(File::open("/dev/null").unwrap());
        // SAFETY: the "hypercall" never reaches a hypervisor; no pointer is passed.
        let r = unsafe { t.hypercall2(crate::nr::XEN_VERSION, 0, 0) };
        assert_eq!(r, -i64::from(libc::ENOTTY));
        assert_eq!(
            crate::hypercall::xen_version_on(&t),
            Err(crate::Errno(libc::ENOTTY))
        );
    }

    #[test]
    fn opening_a_missing_node_fails() {
        assert!(Privcmd::open_path(Path::new("/nonexistent/privcmd")).is_err());
    }
}
