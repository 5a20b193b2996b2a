//! The conformance framework: small kernels check one behaviour per case against the
//! answer of Xen 4.17 and print one line per case, which `tests/tests/conformance.rs`
//! compares between a run on real Xen and a run on our hypervisor.
//!
//! Line formats (the runner's parser, `xtask::conformance`, reads exactly these):
//!
//! * `case <area>.<name>: pass`
//! * `case <area>.<name>: fail got <g> want <w>`
//! * `case <area>.<name>: skip <reason>`
//! * `conformance <kernel>: <n> cases, <p> pass, <f> fail, <s> skip` (last line)

use pv_guest::println;
use xen_pv_abi::hypercall::hypercall_raw;

/// A running suite: the current area and the tallies.
pub struct Suite {
    kernel: &'static str,
    area: &'static str,
    pass: u32,
    fail: u32,
    skip: u32,
}

impl Suite {
    /// A suite of kernel `kernel`, starting in area `area`.
    pub const fn new(kernel: &'static str, area: &'static str) -> Self {
        Suite {
            kernel,
            area,
            pass: 0,
            fail: 0,
            skip: 0,
        }
    }

    /// Cases from now on are named `<area>.<name>`.
    pub fn area(&mut self, area: &'static str) {
        self.area = area;
    }

    /// One case: `got` is what the hypervisor answered, `want` Xen 4.17's answer.
    /// Returns whether they agree.
    pub fn check(&mut self, name: &str, got: i64, want: i64) -> bool {
        if got == want {
            self.pass += 1;
            println!("case {}.{name}: pass", self.area);
        } else {
            self.fail += 1;
            println!("case {}.{name}: fail got {got} want {want}", self.area);
        }
        got == want
    }

    /// [`Suite::check`] of a boolean fact (1 = true).
    pub fn check_bool(&mut self, name: &str, got: bool, want: bool) -> bool {
        self.check(name, i64::from(got), i64::from(want))
    }

    /// A case not run here, with why.
    pub fn skip(&mut self, name: &str, reason: &str) {
        self.skip += 1;
        println!("case {}.{name}: skip {reason}", self.area);
    }

    /// Prints the tally line and powers off.
    pub fn finish(&self) -> ! {
        println!(
            "conformance {}: {} cases, {} pass, {} fail, {} skip",
            self.kernel,
            self.pass + self.fail + self.skip,
            self.pass,
            self.fail,
            self.skip
        );
        pv_guest::poweroff()
    }
}

/// A raw hypercall, its return value as is (0 or a negated errno, or a count).
pub fn hc(nr: u32, args: [u64; 5]) -> i64 {
    // SAFETY: every conformance case passes either valid pointers to its own live
    // buffers or values the hypervisor must refuse; the callers document which.
    unsafe { hypercall_raw(nr, args) }
}
