//! The heap xenstored allocates from: a static area in `.bss` served by
//! `linked_list_allocator`. A full heap makes `try_reserve` fail (xenstored answers
//! ENOMEM to the guest that asked), it does not stop the control domain.

use linked_list_allocator::LockedHeap;

/// Heap size; in `.bss`, so it costs nothing in the image file (the control domain
/// has 48 MiB).
///
/// Budget: the vifs' netback buffers (about 80 KiB each, allocated at boot before any
/// guest runs, so a guest filling the heap later cannot take them) and the switch
/// (MAC table and ports, under 64 KiB); then, shared and allocated fallibly on guest
/// requests, the copy-on-write overlays of writable disks (up to 1 MiB each) and
/// xenstored's nodes, watches, transactions and queued replies: what domUs make it keep
/// is charged to them and bounded by twice [`STORE_DOMU_BUDGET`] in all.
pub const HEAP_SIZE: usize = 16 << 20;

/// What xenstored may keep for all domUs together (`Limits::memory_total`): its fairness
/// rule bounds their total by twice this, 8 MiB.
pub const STORE_DOMU_BUDGET: usize = HEAP_SIZE / 4;

/// Vifs whose buffers the budget above plans for, with room for two writable disks'
/// overlays and the domUs' xenstore data besides.
const PLANNED_VIFS: usize = 8;
/// Per vif: the buffers, two pages of alignment slack, and the bookkeeping.
const VIF_BYTES: usize = control_domain::netback::BUFFER_BYTES + 2 * 4096 + 4096;
const _: () =
    assert!(HEAP_SIZE >= PLANNED_VIFS * VIF_BYTES + 64 * 1024 + (2 << 20) + 2 * STORE_DOMU_BUDGET);

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
