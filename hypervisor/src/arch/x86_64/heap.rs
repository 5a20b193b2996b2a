//! The hypervisor heap: a fixed static region served by `linked_list_allocator`.
//!
//! The core allocates what scales with use (per-domain state, event-channel buckets,
//! timers) through `alloc`; each subsystem charges a per-domain quota before it asks, and
//! uses the fallible `try_reserve` forms for anything a guest can make it allocate, so
//! an exhausted heap is an error for that guest (-ENOMEM), never a hypervisor panic.

use linked_list_allocator::LockedHeap;

/// Heap size. Lives in `.bss`, so it costs nothing in the image file.
pub const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static AREA: super::Racy<HeapArea> = super::Racy::new(HeapArea([0; HEAP_SIZE]));

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands the static area to the allocator. Call once at boot, before any allocation.
pub fn init() {
    let start = AREA.get().cast::<u8>();
    // SAFETY: called once at boot; AREA is a static of HEAP_SIZE bytes that nothing
    // else references, so the allocator owns it exclusively from now on.
    unsafe { HEAP.lock().init(start, HEAP_SIZE) };
}
