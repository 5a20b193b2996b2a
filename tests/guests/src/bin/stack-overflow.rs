//! `stack-overflow`: recurses until its 64 KiB boot stack is used up. The runtime's
//! guard page below the stack turns the overflow into a page fault, which crashes this
//! domain (no trap table) instead of letting the stack overwrite the runtime's `.bss`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, println};

    test_guests::standard_notes!("stack-overflow");
    pv_guest::entry!(main);

    /// Uses 1–3 KiB of stack per level (the array and its copies); `black_box` keeps the frames and the recursion.
    #[inline(never)]
    fn deep(n: u64) -> u64 {
        let frame = core::hint::black_box([n as u8; 1024]);
        if n == 0 {
            return u64::from(frame[0]);
        }
        deep(n - 1).wrapping_add(u64::from(core::hint::black_box(frame)[1]))
    }

    fn main(_: &'static StartInfo) -> ! {
        println!("stack-overflow: 8 levels deep");
        println!("stack-overflow: survived {}", deep(8));
        println!("stack-overflow: 1 MiB deep");
        println!("stack-overflow: survived {}", deep(1024));
        pv_guest::poweroff()
    }
}
