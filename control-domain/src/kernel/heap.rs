//! The heap xenstored allocates from: a static area in `.bss` served by
//! `linked_list_allocator`. A full heap makes `try_reserve` fail (xenstored answers
//! ENOMEM to the guest that asked), it does not stop the control domain.

use linked_list_allocator::LockedHeap;

/// Heap size; in `.bss`, so it costs nothing in the image file.
pub const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Area([u8; HEAP_SIZE]);

/// Handed to the allocator once, then only reached through it.
static mut AREA: Area = Area([0; HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the static area to the allocator. Called once, before any allocation.
pub fn init() {
    let start = (&raw mut AREA).cast::<u8>();
    // SAFETY: called once at boot; AREA is a static of HEAP_SIZE bytes that nothing else
    // references, so the allocator owns it from now on.
    unsafe { HEAP.lock().init(start, HEAP_SIZE) };
}
