//! Host tests of the typing rules: validation, pins, roots, entry updates.

use super::*;
use crate::mmu::Partial;

extern crate std;
use crate::mmu::FrameInfo;
use crate::testutil::{FakeMemory, leak};

const DOM: DomId = DomId(1);
const NR_FRAMES: usize = 64;
const TABLE: u64 = 0x67; // P RW U A D
const RW_PAGE: u64 = 0x7; // P RW U
const RO_PAGE: u64 = 0x5; // P U
const HV: [u64; 16] = [0x1234_5063; 16];
const EINVAL: Stop = Stop::Fail(Errno::EINVAL);
/// Xen's answer for an L1 entry whose frame cannot be referenced or typed writable.
const EBUSY: Stop = Stop::Fail(Errno::EBUSY);
/// Xen's answer for an L1 entry mapping a frame beyond RAM (I/O memory).
const EPERM: Stop = Stop::Fail(Errno::EPERM);

struct Fx {
    mem: FakeMemory,
    frames: Frames,
}

impl Fx {
    fn new() -> Fx {
        Fx::with_frames(NR_FRAMES)
    }
    fn with_frames(n: usize) -> Fx {
        let mem = FakeMemory::new(n * PAGE_SIZE);
        let frames = Frames::new(
            leak(FrameInfo::UNUSABLE, n),
            leak(0, n),
            core::slice::from_ref(&(0..(n * PAGE_SIZE) as u64)),
        );
        Fx { mem, frames }
    }
    fn alloc(&mut self, dom: DomId) -> Mfn {
        let m = self.frames.alloc(dom).unwrap();
        self.mem.fill(m.maddr(), 0, PAGE_SIZE).unwrap();
        m
    }
    fn ctx(&mut self) -> PtCtx<'_, FakeMemory> {
        PtCtx::new(&self.mem, &mut self.frames, DOM, &HV)
    }
    fn set(&self, table: Mfn, slot: u64, entry: u64) {
        self.mem.write_u64(table.maddr() + slot * 8, entry).unwrap();
    }
    fn get(&self, table: Mfn, slot: u64) -> u64 {
        self.mem.read_u64(table.maddr() + slot * 8).unwrap()
    }
    fn ty(&self, mfn: Mfn) -> (PageType, u32) {
        let st = self.frames.type_state(mfn).unwrap();
        if st.count == 0 {
            (PageType::None, 0)
        } else {
            (st.ty, st.count)
        }
    }
}

/// L4[0] → L3[0] → L2[0] → L1, which maps `data` RW at slot 0 and the L1 itself RO at
/// slot 1 (as guests map their own tables).
struct Tree {
    l4: Mfn,
    l3: Mfn,
    l2: Mfn,
    l1: Mfn,
    data: Mfn,
}

fn tree(fx: &mut Fx) -> Tree {
    let (l4, l3, l2, l1, data) = (
        fx.alloc(DOM),
        fx.alloc(DOM),
        fx.alloc(DOM),
        fx.alloc(DOM),
        fx.alloc(DOM),
    );
    fx.set(l4, 0, l3.maddr() | TABLE);
    fx.set(l3, 0, l2.maddr() | TABLE);
    fx.set(l2, 0, l1.maddr() | TABLE);
    fx.set(l1, 0, data.maddr() | RW_PAGE);
    fx.set(l1, 1, l1.maddr() | RO_PAGE);
    Tree {
        l4,
        l3,
        l2,
        l1,
        data,
    }
}

#[test]
fn pin_validates_recursively_and_unpin_releases_everything() {
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    fx.ctx().pin(t.l4, 4).unwrap();
    assert_eq!(fx.ty(t.l4), (PageType::L4, 1));
    assert!(fx.frames.type_state(t.l4).unwrap().pinned);
    assert_eq!(fx.ty(t.l3), (PageType::L3, 1));
    assert_eq!(fx.ty(t.l2), (PageType::L2, 1));
    assert_eq!(fx.ty(t.l1), (PageType::L1, 1));
    assert_eq!(fx.ty(t.data), (PageType::Writable, 1));
    // The RO self-mapping holds a general reference only.
    assert_eq!(fx.frames.ref_count(t.l1), Some(2));
    // Hypervisor slots were filled in.
    assert_eq!(fx.get(t.l4, 256), HV[0]);
    assert_eq!(fx.get(t.l4, 271), HV[15]);

    // Pinning twice is refused; a pinned L4 cannot be pinned as another level.
    assert_eq!(fx.ctx().pin(t.l4, 4), Err(EINVAL));
    assert_eq!(fx.ctx().pin(t.l3, 2), Err(EINVAL));

    fx.ctx().unpin(t.l4).unwrap();
    for m in [t.l4, t.l3, t.l2, t.l1, t.data] {
        assert_eq!(fx.ty(m), (PageType::None, 0));
        assert_eq!(fx.frames.ref_count(m), Some(0));
    }
    assert_eq!(fx.ctx().unpin(t.l4), Err(EINVAL), "not pinned any more");
    // The former table can now be used as ordinary writable memory.
    fx.ctx().get_type(t.l1, PageType::Writable).unwrap();
}

#[test]
fn present_entries_get_user_and_lose_global() {
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    fx.set(t.l1, 0, t.data.maddr() | 0x3 | Pte::GLOBAL.bits()); // P RW G, no U
    fx.set(t.l2, 0, t.l1.maddr() | 0x3);
    fx.ctx().pin(t.l4, 4).unwrap();
    assert_eq!(fx.get(t.l1, 0), t.data.maddr() | 0x7);
    assert_eq!(fx.get(t.l2, 0), t.l1.maddr() | 0x7);
}

#[test]
fn hostile_tables_are_refused_and_leave_nothing_behind() {
    type Breaker = fn(&Fx, &Tree, Mfn);
    let cases: [(&str, Breaker); 9] = [
        ("L1 maps itself writable", |fx, t, _| {
            fx.set(t.l1, 1, t.l1.maddr() | RW_PAGE)
        }),
        ("L1 maps the L4 writable", |fx, t, _| {
            fx.set(t.l1, 2, t.l4.maddr() | RW_PAGE)
        }),
        ("L1 maps another domain's frame", |fx, t, foreign| {
            fx.set(t.l1, 2, foreign.maddr() | RO_PAGE)
        }),
        ("L1 maps a frame that is not RAM", |fx, t, _| {
            fx.set(t.l1, 2, (1 << 40) | RO_PAGE)
        }),
        ("L1 entry with PCD", |fx, t, _| {
            fx.set(t.l1, 0, t.data.maddr() | RW_PAGE | Pte::PCD.bits())
        }),
        ("L1 entry with PAT", |fx, t, _| {
            fx.set(t.l1, 0, t.data.maddr() | RW_PAGE | Pte::PAT_PS.bits())
        }),
        ("superpage in L2", |fx, t, _| {
            fx.set(t.l2, 1, t.data.maddr() | TABLE | Pte::PAT_PS.bits())
        }),
        ("linear L4 (points at itself)", |fx, t, _| {
            fx.set(t.l4, 1, t.l4.maddr() | 0x5)
        }),
        ("L2 points at its L3", |fx, t, _| {
            fx.set(t.l2, 1, t.l3.maddr() | 0x5)
        }),
    ];
    for (what, breaker) in cases {
        let mut fx = Fx::new();
        let foreign = fx.alloc(DomId(2));
        let t = tree(&mut fx);
        breaker(&fx, &t, foreign);
        // Xen's get_page_from_l1e errnos for the L1 entries, -EINVAL for the rest.
        let want = if what.contains("not RAM") {
            EPERM
        } else if what.starts_with("L1 maps") {
            EBUSY
        } else {
            EINVAL
        };
        assert_eq!(fx.ctx().pin(t.l4, 4), Err(want), "{what}");
        for m in [t.l4, t.l3, t.l2, t.l1, t.data, foreign] {
            assert_eq!(fx.ty(m), (PageType::None, 0), "{what}: {m:?}");
            assert_eq!(fx.frames.ref_count(m), Some(0), "{what}: {m:?}");
        }
    }
}

#[test]
fn writable_frames_cannot_become_tables() {
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    fx.ctx().pin(t.l4, 4).unwrap();
    // `data` is mapped writable: it cannot be pinned, nor become a root.
    assert_eq!(fx.ctx().pin(t.data, 1), Err(EINVAL));
    assert_eq!(fx.ctx().switch_root(t.data, None), Err(EINVAL));
    // Another domain's frame or a frame beyond RAM cannot be pinned either.
    let foreign = fx.alloc(DomId(2));
    assert_eq!(fx.ctx().pin(foreign, 1), Err(EINVAL));
    assert_eq!(fx.ctx().pin(Mfn(u64::MAX >> 12), 1), Err(EINVAL));
    assert_eq!(fx.ctx().pin(t.data, 5), Err(EINVAL));
    // A frame the hypervisor holds writable (shared_info) cannot become a table.
    let shared = fx.alloc(DOM);
    assert!(fx.frames.hold_writable(shared));
    assert_eq!(fx.ctx().pin(shared, 1), Err(EINVAL));
}

#[test]
fn roots_keep_tables_alive_after_unpin() {
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    fx.ctx().pin(t.l4, 4).unwrap();
    fx.ctx().switch_root(t.l4, None).unwrap();
    assert_eq!(fx.ty(t.l4), (PageType::L4, 2));
    // Unpinning the live root (allowed, as in Xen) keeps it validated: still no way to
    // map it writable.
    fx.ctx().unpin(t.l4).unwrap();
    assert_eq!(fx.ty(t.l4), (PageType::L4, 1));
    let slot = fx.ctx().l1_entry_maddr(t.l4, 2 << 12).unwrap();
    assert_eq!(
        fx.ctx().mod_entry(slot, t.l4.maddr() | RW_PAGE, false),
        Err(EBUSY)
    );
    // GRUB's switch: pin the new root, load it, unpin the old one.
    let t2 = tree(&mut fx);
    fx.ctx().pin(t2.l4, 4).unwrap();
    fx.ctx().switch_root(t2.l4, Some(t.l4)).unwrap();
    assert_eq!(fx.ty(t.l1), (PageType::None, 0));
    fx.ctx().get_type(t.l4, PageType::Writable).unwrap();
}

#[test]
fn mod_entry_keeps_references_right() {
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    let other = fx.alloc(DOM);
    fx.ctx().pin(t.l4, 4).unwrap();
    let pte = |slot: u64| t.l1.maddr() + slot * 8;

    // Map `other` RW at slot 3, then downgrade it to RO, then unmap it.
    fx.ctx()
        .mod_entry(pte(3), other.maddr() | RW_PAGE, false)
        .unwrap();
    assert_eq!(fx.ty(other), (PageType::Writable, 1));
    assert_eq!(fx.get(t.l1, 3), other.maddr() | RW_PAGE);
    fx.ctx()
        .mod_entry(pte(3), other.maddr() | RO_PAGE, false)
        .unwrap();
    assert_eq!(fx.ty(other), (PageType::None, 0));
    assert_eq!(fx.frames.ref_count(other), Some(1));
    fx.ctx().mod_entry(pte(3), 0, false).unwrap();
    assert_eq!(fx.frames.ref_count(other), Some(0));

    // A/D preserved on request.
    fx.set(t.l1, 0, t.data.maddr() | RW_PAGE | 0x60);
    fx.ctx()
        .mod_entry(pte(0), t.data.maddr() | RW_PAGE, true)
        .unwrap();
    assert_eq!(fx.get(t.l1, 0), t.data.maddr() | RW_PAGE | 0x60);
    assert_eq!(fx.ty(t.data), (PageType::Writable, 1));

    // Refused: writable map of a table, foreign frame, bad flags, hypervisor L4 slot.
    let foreign = fx.alloc(DomId(2));
    for (ptr, val, want) in [
        (pte(4), t.l2.maddr() | RW_PAGE, EBUSY),
        (pte(4), foreign.maddr() | RO_PAGE, EBUSY),
        (pte(4), other.maddr() | RW_PAGE | Pte::PWT.bits(), EINVAL),
        (pte(4), other.maddr() | RW_PAGE | Pte::GNTTAB.bits(), EINVAL),
        (t.l4.maddr() + 256 * 8, 0, EINVAL),
        (t.l4.maddr() + 300 * 8, t.l4.maddr() | 0x5, EINVAL),
        (
            t.l2.maddr() + 8,
            other.maddr() | TABLE | Pte::PAT_PS.bits(),
            EINVAL,
        ),
        (foreign.maddr(), 0, EINVAL),
    ] {
        assert_eq!(
            fx.ctx().mod_entry(ptr, val, false),
            Err(want),
            "{ptr:#x} <- {val:#x}"
        );
    }
    assert_eq!(fx.get(t.l4, 256), HV[0]);
    assert_eq!(fx.ty(t.l2), (PageType::L2, 1));

    // Hooking a new L1 under the live L2 validates it on the spot; unhooking releases it.
    let l1b = fx.alloc(DOM);
    fx.set(l1b, 0, other.maddr() | RW_PAGE);
    fx.ctx()
        .mod_entry(t.l2.maddr() + 8, l1b.maddr() | TABLE, false)
        .unwrap();
    assert_eq!(fx.ty(l1b), (PageType::L1, 1));
    assert_eq!(fx.ty(other), (PageType::Writable, 1));
    fx.ctx().mod_entry(t.l2.maddr() + 8, 0, false).unwrap();
    assert_eq!(fx.ty(l1b), (PageType::None, 0));
    assert_eq!(fx.ty(other), (PageType::None, 0));

    // A frame that is no table is written as plain memory.
    fx.ctx()
        .mod_entry(other.maddr() + 16, 0xabcd, false)
        .unwrap();
    assert_eq!(fx.get(other, 2), 0xabcd);
    assert_eq!(fx.ty(other), (PageType::None, 0));
}

#[test]
fn l1_entry_lookup() {
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    assert_eq!(
        fx.ctx().l1_entry_maddr(t.l4, 0x1000),
        Err(Errno::EINVAL),
        "tables not validated yet"
    );
    fx.ctx().pin(t.l4, 4).unwrap();
    assert_eq!(fx.ctx().l1_entry_maddr(t.l4, 0x5000), Ok(t.l1.maddr() + 40));
    assert_eq!(
        fx.ctx().l1_entry_maddr(t.l4, 1 << 21),
        Err(Errno::EINVAL),
        "no L1 there"
    );
}

// ---- preemption: partial tables ---------------------------------------------------------

/// Work budget of the preemptible calls below.
const LIMIT: u64 = 3000;
/// L1 tables of [`wide_tree`].
const WIDE_L1: usize = 24;

/// L4[0] -> L3[0] -> L2, whose entries 0..WIDE_L1 point at L1s each mapping `data`
/// read-only 512 times and its own slot 0 writable to a page of its own: 27 tables, far
/// more work than `LIMIT`. Returns the frames (L4, L3, L2, L1s..., data pages...).
fn wide_tree(fx: &mut Fx) -> Vec<Mfn> {
    let l4 = fx.alloc(DOM);
    let l3 = fx.alloc(DOM);
    let l2 = fx.alloc(DOM);
    let data = fx.alloc(DOM);
    fx.set(l4, 0, l3.maddr() | TABLE);
    fx.set(l3, 0, l2.maddr() | TABLE);
    let mut all = std::vec![l4, l3, l2];
    let mut pages = std::vec![data];
    for i in 0..WIDE_L1 {
        let l1 = fx.alloc(DOM);
        let page = fx.alloc(DOM);
        fx.set(l2, i as u64, l1.maddr() | TABLE);
        for e in 1..512 {
            fx.set(l1, e, data.maddr() | RO_PAGE);
        }
        fx.set(l1, 0, page.maddr() | RW_PAGE);
        all.push(l1);
        pages.push(page);
    }
    all.extend(pages);
    all
}

impl Fx {
    /// A preemptible context with a fresh budget and the deferred drop `deferred`.
    fn budget_ctx(&mut self, deferred: Option<Mfn>) -> PtCtx<'_, FakeMemory> {
        let start = self.frames.work();
        let mut pt = self.ctx();
        pt.budget = Some(Budget {
            start,
            limit: LIMIT,
        });
        pt.deferred = deferred;
        pt
    }
    /// Runs `op` in preemptible contexts (carrying the deferred drop, finishing it)
    /// until it is done; returns its result, the calls it took and the most work of one.
    fn until_done(
        &mut self,
        op: impl Fn(&mut PtCtx<'_, FakeMemory>) -> Result<(), Stop>,
    ) -> (Result<(), Stop>, usize, u64) {
        let (mut deferred, mut most, mut result) = (None, 0, None);
        for calls in 1..1000 {
            let before = self.frames.work();
            let mut pt = self.budget_ctx(deferred);
            let r = match result {
                None => op(&mut pt),
                Some(_) => pt.finish_deferred(),
            };
            deferred = pt.deferred;
            most = most.max(self.frames.work() - before);
            match (r, result) {
                (Err(Stop::Preempted), _) => {}
                (r, None) => result = Some(r),
                (_, Some(_)) => {}
            }
            if let Some(r) = result
                && deferred.is_none()
            {
                return (r, calls, most);
            }
        }
        panic!("no end");
    }
    /// (type, count, pinned, partial, general count) of each frame.
    fn states(&self, frames: &[Mfn]) -> std::vec::Vec<(PageType, u32, bool, Option<Partial>, u32)> {
        frames
            .iter()
            .map(|&m| {
                let (ty, count) = self.ty(m);
                let pinned = self.frames.type_state(m).unwrap().pinned;
                let rc = self.frames.ref_count(m).unwrap();
                (ty, count, pinned, self.frames.partial(m), rc)
            })
            .collect()
    }
}

#[test]
fn preempted_pin_and_unpin_end_as_whole_ones() {
    let mut whole = Fx::with_frames(128);
    let w = wide_tree(&mut whole);
    let mut fx = Fx::with_frames(128);
    let t = wide_tree(&mut fx);
    assert_eq!(t, w);
    let l4 = t[0];

    whole.ctx().pin(l4, 4).unwrap();
    let (r, calls, most) = fx.until_done(|pt| pt.pin(l4, 4));
    assert_eq!(r, Ok(()));
    assert!(calls > 3, "{calls}");
    assert!(most <= LIMIT + 2 * 512 + 8, "{most}");
    assert_eq!(fx.states(&t), whole.states(&w));
    assert_eq!(fx.ty(t[5]), (PageType::L1, 1));
    assert_eq!(
        fx.frames.ref_count(t[3 + WIDE_L1]),
        Some(511 * WIDE_L1 as u32)
    );

    whole.ctx().unpin(l4).unwrap();
    let (r, calls, most) = fx.until_done(|pt| pt.unpin(l4));
    assert_eq!(r, Ok(()));
    assert!(calls > 3, "{calls}");
    assert!(most <= LIMIT + 2 * 512 + 8, "{most}");
    assert_eq!(fx.states(&t), whole.states(&w));
    assert!(
        t.iter()
            .all(|&m| fx.states(&[m])[0] == (PageType::None, 0, false, None, 0))
    );
}

#[test]
fn a_failure_after_preemption_is_undone_with_the_same_errno() {
    let mut fx = Fx::with_frames(128);
    let t = wide_tree(&mut fx);
    // The last L1 maps the L2 writable: refused after most of the tree was validated.
    let last_l1 = t[2 + WIDE_L1];
    fx.set(last_l1, 300, t[2].maddr() | RW_PAGE);
    let before = fx.states(&t);
    let (r, calls, _) = fx.until_done(|pt| pt.pin(t[0], 4));
    assert_eq!(r, Err(EBUSY));
    assert!(
        calls > 4,
        "preempted before the failure, undone across calls: {calls}"
    );
    assert_eq!(
        fx.states(&t),
        before,
        "nothing left typed, partial or referenced"
    );
    // The same through a root switch, and without preemption.
    let (r, _, _) = fx.until_done(|pt| pt.switch_root(t[0], None));
    assert_eq!(r, Err(EBUSY));
    assert_eq!(fx.ctx().pin(t[0], 4), Err(EBUSY));
    assert_eq!(fx.states(&t), before);
}

#[test]
fn partial_tables_refuse_other_types_and_are_taken_over_by_their_own() {
    let mut fx = Fx::with_frames(128);
    let t = wide_tree(&mut fx);
    let (l4, l3, l2) = (t[0], t[1], t[2]);
    assert_eq!(fx.budget_ctx(None).pin(l4, 4), Err(Stop::Preempted));
    // Xen's PGT_partial: L4 and L3 stopped inside their first entry, L2 between two.
    let p4 = fx.frames.partial(l4).unwrap();
    assert_eq!((p4.next, p4.set), (0, true));
    assert_eq!(
        fx.frames.partial(l3).unwrap(),
        Partial { next: 0, set: true }
    );
    let p2 = fx.frames.partial(l2).unwrap();
    assert!(p2.next > 0 && !p2.set, "{p2:?}");
    for m in [l4, l3, l2] {
        let st = fx.frames.type_state(m).unwrap();
        assert_eq!((st.count, st.pinned), (1, false));
    }
    // Another type is refused (Xen: the type count is 1 with another type): no
    // writable mapping, no write through mmu_update; L1s not reached yet are untyped.
    assert_eq!(
        fx.ctx().get_type(l2, PageType::Writable),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.ctx().get_type(l3, PageType::L2), Err(Errno::EINVAL));
    assert_eq!(
        fx.ctx().mod_entry(l2.maddr() + 8 * 500, 0, false),
        Err(EINVAL)
    );
    let last = (WIDE_L1 as u64 - 1) << 21;
    assert_eq!(fx.ctx().l1_entry_maddr(l4, last), Err(Errno::EINVAL));
    assert_eq!(fx.frames.partial(l2), Some(p2), "untouched");

    // Its own type takes the partial state over (Xen: the next get_page_type of that
    // type continues the validation): here a pin of the L2 alone, run to the end.
    fx.ctx().pin(l2, 2).unwrap();
    assert_eq!(fx.frames.partial(l2), None);
    assert_eq!(fx.ty(l2), (PageType::L2, 1));
    // The interrupted pin continues and finds the L2 validated: one more reference.
    let (r, _, _) = fx.until_done(|pt| pt.pin(l4, 4));
    assert_eq!(r, Ok(()));
    assert_eq!(fx.ty(l2), (PageType::L2, 2));
    assert_eq!(
        (fx.ty(l4), fx.ty(l3)),
        ((PageType::L4, 1), (PageType::L3, 1))
    );
    fx.ctx().unpin(l4).unwrap();
    assert_eq!(fx.ty(l2), (PageType::L2, 1));
    fx.ctx().unpin(l2).unwrap();
    assert!(
        t.iter()
            .all(|&m| fx.states(&[m])[0] == (PageType::None, 0, false, None, 0))
    );

    // Two pins of one table: the second (another vCPU, an upcall) completes it, the
    // continued first finds it pinned (Xen: "already pinned", EINVAL).
    assert_eq!(fx.budget_ctx(None).pin(l4, 4), Err(Stop::Preempted));
    fx.ctx().pin(l4, 4).unwrap();
    assert_eq!(fx.until_done(|pt| pt.pin(l4, 4)).0, Err(EINVAL));
    assert_eq!(fx.ty(l4), (PageType::L4, 1));

    // A devalidation interrupted by the budget is taken over by a new pin: the table is
    // validated again from where the devalidation stood; the deferred drop then only
    // drops its general reference.
    let mut pt = fx.budget_ctx(None);
    assert_eq!(pt.unpin(l4), Ok(()));
    let deferred = pt.deferred;
    assert_eq!(deferred, Some(l4));
    assert!(fx.frames.partial(l4).is_some());
    assert_eq!(
        fx.ctx().get_type(l4, PageType::Writable),
        Err(Errno::EINVAL)
    );
    fx.ctx().pin(l4, 4).unwrap();
    let mut pt = fx.budget_ctx(deferred);
    assert_eq!(pt.finish_deferred(), Ok(()));
    assert_eq!(pt.deferred, None);
    let mut whole = Fx::with_frames(128);
    let w = wide_tree(&mut whole);
    whole.ctx().pin(w[0], 4).unwrap();
    assert_eq!(fx.states(&t), whole.states(&w));
}

#[test]
fn remembered_translations_follow_entry_updates() {
    use crate::mmu::guest::{GuestSpace, translate};
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    let other = fx.alloc(DOM);
    fx.ctx().pin(t.l4, 4).unwrap();
    let space = GuestSpace {
        dom: DOM,
        cr3: t.l4.maddr(),
    };
    let tr = |fx: &Fx, write| translate(&fx.mem, &fx.frames, space, 0x10, write);
    assert_eq!(tr(&fx, true), Ok(t.data.maddr() + 0x10));
    assert_eq!(tr(&fx, true), Ok(t.data.maddr() + 0x10), "remembered");
    // Read-only now: stores are refused at once, loads still reach the page.
    fx.ctx()
        .mod_entry(t.l1.maddr(), t.data.maddr() | RO_PAGE, false)
        .unwrap();
    assert_eq!(tr(&fx, true), Err(Errno::EFAULT));
    assert_eq!(tr(&fx, false), Ok(t.data.maddr() + 0x10));
    // Another page, then nothing.
    fx.ctx()
        .mod_entry(t.l1.maddr(), other.maddr() | RW_PAGE, false)
        .unwrap();
    assert_eq!(tr(&fx, true), Ok(other.maddr() + 0x10));
    fx.ctx().mod_entry(t.l1.maddr(), 0, false).unwrap();
    assert_eq!(tr(&fx, false), Err(Errno::EFAULT));
    // A remembered page that changes hands is refused.
    fx.ctx()
        .mod_entry(t.l1.maddr(), other.maddr() | RW_PAGE, false)
        .unwrap();
    assert!(tr(&fx, false).is_ok());
    fx.ctx().mod_entry(t.l1.maddr(), 0, false).unwrap();
    fx.frames.free(other);
    assert_eq!(fx.frames.alloc(DomId(2)), Some(other));
    fx.set(t.l1, 0, other.maddr() | RW_PAGE);
    assert_eq!(tr(&fx, false), Err(Errno::EFAULT), "foreign frame");
}

#[test]
fn remembered_translations_agree_with_fresh_walks() {
    use crate::mmu::guest::{GuestSpace, translate, walk};
    let mut fx = Fx::new();
    let t = tree(&mut fx);
    let pages = [fx.alloc(DOM), fx.alloc(DOM), fx.alloc(DOM)];
    fx.ctx().pin(t.l4, 4).unwrap();
    let space = GuestSpace {
        dom: DOM,
        cr3: t.l4.maddr(),
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for step in 0..2000 {
        let r = next();
        if r % 3 == 0 {
            // Rewrite one of L1 slots 2..6 (slots 0 and 1 hold the tree's own pages).
            let slot = 2 + (r >> 8) % 4;
            let new = match (r >> 16) % 4 {
                0 => 0,
                1 => pages[((r >> 20) % 3) as usize].maddr() | RW_PAGE,
                2 => pages[((r >> 20) % 3) as usize].maddr() | RO_PAGE,
                _ => t.data.maddr() | RO_PAGE,
            };
            fx.ctx()
                .mod_entry(t.l1.maddr() + slot * 8, new, false)
                .unwrap();
        } else {
            let va = ((r >> 8) % 8) * 0x1000 + (r >> 32) % 0x1000;
            let write = (r >> 4) & 1 == 1;
            let got = translate(&fx.mem, &fx.frames, space, va, write);
            let fresh = walk(&fx.mem, &fx.frames, space, va, write);
            assert_eq!(got, fresh, "step {step}: va {va:#x} write {write}");
        }
    }
}
