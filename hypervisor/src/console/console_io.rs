//! `console_io` (18): guests writing straight to the hypervisor console, and the
//! control domain reading serial input.
//!
//! Writing is allowed for every domain (as a debug build of Xen allows domUs). A domU's
//! bytes are filtered, prefixed and rate-limited by a token bucket; the control domain's
//! are printed verbatim (it prints the domUs' console rings with their prefixes
//! itself). Reading is the control domain's only (`-EPERM` otherwise), from the serial
//! input ring (console/input.rs). Work per call is bounded: at most
//! [`CONSOLE_IO_MAX_PER_CALL`] bytes of one call are printed, the rest is dropped and the
//! call still returns 0 (Xen would continue the call instead; a guest printing more than
//! 16 KiB in one hypercall is not worth a continuation mechanism yet).

use crate::console::Prefix;
use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::GuestArray;
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::{Errno, nr};

/// Bytes copied from the guest at a time.
pub const CONSOLE_IO_CHUNK: usize = 128;
/// Most bytes of one call that are printed.
pub const CONSOLE_IO_MAX_PER_CALL: u32 = 16 * 1024;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(crate) fn do_console_io(&mut self, idx: usize, cmd: u32, buf: GuestArray<u8>) -> HcResult {
        match cmd {
            nr::CONSOLEIO_WRITE => self.console_io_write(idx, buf),
            nr::CONSOLEIO_READ => self.console_io_read(idx, buf),
            // What Xen answers for an unknown console_io command.
            _ => Err(Errno::ENOSYS),
        }
    }

    fn console_io_write(&mut self, idx: usize, buf: GuestArray<u8>) -> HcResult {
        let wanted = buf.len().min(u64::from(CONSOLE_IO_MAX_PER_CALL));
        let allowed = if self.domains[idx].dom0 {
            wanted
        } else {
            let now = self.now_ns();
            let granted = self.domains[idx].console_io_bucket.take(now, wanted);
            if granted < wanted && !self.domains[idx].console_io_dropping_reported {
                self.domains[idx].console_io_dropping_reported = true;
                let d = &self.domains[idx];
                Self::log_domain_to(
                    &mut self.platform,
                    &mut self.cursor,
                    d,
                    format_args!("console_io rate limit, dropping output"),
                );
            }
            granted
        };
        let space = self.current_space(idx);
        let mut chunk = [0u8; CONSOLE_IO_CHUNK];
        let mut done = 0u64;
        while done < allowed {
            let n = (allowed - done).min(CONSOLE_IO_CHUNK as u64) as usize;
            let va = buf.addr().checked_add(done).ok_or(Errno::EFAULT)?;
            copy_from_guest(&self.mem, &self.frames, space, va, &mut chunk[..n])?;
            let d = &mut self.domains[idx];
            let (platform, cursor) = (&mut self.platform, &mut self.cursor);
            if d.dom0 {
                cursor.write_verbatim(platform, d.id, &chunk[..n]);
            } else {
                let prefix = Prefix {
                    id: d.id,
                    name: &d.name,
                };
                d.console.feed(platform, cursor, prefix, &chunk[..n]);
            }
            done += n as u64;
        }
        Ok(0)
    }

    /// `CONSOLEIO_read`: copies up to `buf.len()` typed bytes to the control domain and
    /// returns how many (0 when none wait). As Xen 4.17: the privilege check comes
    /// first (-EPERM), a count that is negative as a C int is -E2BIG (the result could
    /// not be told from an error), and a fault returns -EFAULT with the bytes copied
    /// before it consumed.
    fn console_io_read(&mut self, idx: usize, buf: GuestArray<u8>) -> HcResult {
        if !self.domains[idx].dom0 {
            return Err(Errno::EPERM);
        }
        let count = buf.len();
        if count > i32::MAX as u64 {
            return Err(Errno::E2BIG);
        }
        let space = self.current_space(idx);
        let mut done = 0u64;
        // At most two runs: the ring holds 128 bytes.
        while done < count && !self.console_input.is_empty() {
            let want = usize::try_from(count - done).unwrap_or(usize::MAX);
            let run = self.console_input.peek(want);
            let va = buf.addr().checked_add(done).ok_or(Errno::EFAULT)?;
            copy_to_guest(&self.mem, &self.frames, space, va, run)?;
            let n = run.len();
            self.console_input.consume(n);
            done += n as u64;
        }
        Ok(done)
    }
}
