//! The heap xenstored allocates from: a static area in `.bss` served by
//! `linked_list_allocator`. A full heap makes `try_reserve` fail (xenstored answers
//! ENOMEM to the guest that asked), it does not stop the control domain.

use linked_list_allocator::LockedHeap;

/// Heap size; in `.bss`, so it costs nothing in the image file.
pub const HEAP_SIZE: usize = 16 << 20;

/// What xenstored may keep for all domUs together (`Limits::memory_total`): its fairness
/// rule bounds their total by twice this, 8 MiB, which leaves the other half of the heap
/// to dom0's own nodes, the backends' buffers and the rest of the kernel.
pub const STORE_DOMU_BUDGET: usize = HEAP_SIZE / 4;

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
