//! `console_io` (18): guests writing straight to the hypervisor console, and the
//! control domain reading serial input.
//!
//! Writing is allowed for every domain (as a debug build of Xen allows domUs). A domU's
//! bytes are filtered, prefixed and rate-limited by a token bucket; the control domain's
//! are printed verbatim (it prints the domUs' console rings with their prefixes
//! itself). Reading is the control domain's only (`-EPERM` otherwise), from the serial
//! input ring (console/input.rs). As in Xen 4.17, a write reads every byte of its
//! buffer (a domU's bytes past the rate limit are read and dropped) and fails with
//! -EFAULT at the first one it cannot read, after printing those before it; the work of
//! one entry into the hypervisor is bounded: after [`CONSOLE_IO_MAX_PER_CALL`] bytes the
//! call is continued with the rest (Xen's continuation: the count left and the buffer
//! advanced).

use crate::console::{Prefix, Serial};
use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::{GuestArray, Outcome};
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::{Errno, nr};

/// Bytes copied from the guest at a time.
pub const CONSOLE_IO_CHUNK: usize = 128;
/// Most bytes one entry into the hypervisor reads of a write; the rest is continued.
pub const CONSOLE_IO_MAX_PER_CALL: u32 = 16 * 1024;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(crate) fn do_console_io(&mut self, idx: usize, cmd: u32, buf: GuestArray<u8>) -> Outcome {
        match cmd {
            nr::CONSOLEIO_WRITE => self.console_io_write(idx, buf),
            nr::CONSOLEIO_READ => Outcome::Return(self.console_io_read(idx, buf)),
            // What Xen answers for an unknown console_io command.
            _ => Outcome::Return(Err(Errno::ENOSYS)),
        }
    }

    /// `CONSOLEIO_write`: up to [`CONSOLE_IO_MAX_PER_CALL`] bytes now, then a
    /// continuation for the rest (if any).
    fn console_io_write(&mut self, idx: usize, buf: GuestArray<u8>) -> Outcome {
        let wanted = buf.len().min(u64::from(CONSOLE_IO_MAX_PER_CALL));
        if let Err(e) = self.console_io_write_some(idx, buf.addr(), wanted) {
            return Outcome::Return(Err(e));
        }
        let left = buf.len() - wanted;
        if left == 0 {
            return Outcome::Return(Ok(0));
        }
        // `wanted` bytes from the buffer were read: its address plus them did not wrap.
        let next = buf.addr().wrapping_add(wanted);
        Outcome::Continue {
            args: [u64::from(nr::CONSOLEIO_WRITE), left, next, 0, 0],
            then: None,
        }
    }

    /// Reads `wanted` bytes at `addr` and prints those the rate limit allows (all for
    /// the control domain); -EFAULT at the first unreadable chunk, the bytes before it
    /// printed. A domU is charged for the bytes read only: a write that faults does not
    /// drain its budget (found by the hypercall fuzzer: failed writes of large counts
    /// used to take 16 KiB of tokens each and silence the domain's later lines).
    fn console_io_write_some(&mut self, idx: usize, addr: u64, wanted: u64) -> HcResult {
        let space = self.current_space(idx);
        let mut chunk = [0u8; CONSOLE_IO_CHUNK];
        let mut done = 0u64;
        while done < wanted {
            let n = (wanted - done).min(CONSOLE_IO_CHUNK as u64) as usize;
            let va = addr.checked_add(done).ok_or(Errno::EFAULT)?;
            copy_from_guest(&self.mem, &self.frames, space, va, &mut chunk[..n])?;
            done += n as u64;
            // Past the rate limit: read (for -EFAULT, as Xen) but not printed.
            let printed = if self.domains[idx].dom0 {
                n
            } else {
                let now = self.now_ns();
                let granted = self.domains[idx].console_io_bucket.take(now, n as u64);
                if granted < n as u64 && !self.domains[idx].console_io_dropping_reported {
                    self.domains[idx].console_io_dropping_reported = true;
                    let d = &self.domains[idx];
                    Self::log_domain_to(
                        &mut self.platform,
                        &mut self.cursor,
                        d,
                        format_args!("console_io rate limit, dropping output"),
                    );
                }
                usize::try_from(granted).unwrap_or(n).min(n)
            };
            if printed == 0 {
                continue;
            }
            let n = printed;
            let d = &mut self.domains[idx];
            let (platform, cursor) = (&mut Serial(&mut self.platform), &mut self.cursor);
            if d.dom0 {
                cursor.write_verbatim(platform, d.id, &chunk[..n]);
            } else {
                let prefix = Prefix {
                    id: d.id,
                    name: &d.name,
                };
                d.console.feed(platform, cursor, prefix, &chunk[..n]);
            }
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
