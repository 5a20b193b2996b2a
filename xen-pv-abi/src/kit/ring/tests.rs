//! Front and back rings over one host buffer, honest and hostile.

extern crate std;

use super::*;
use crate::blkif::{
    BLKIF_OP_DISCARD, BLKIF_OP_WRITE, BlkifProtocol, BlkifRequest, BlkifRequestDiscard,
    BlkifResponse,
};
use crate::netif::{
    NETTXF_EXTRA_INFO, NetifExtraGso, NetifExtraInfo, NetifRxProtocol, NetifTxProtocol,
    NetifTxRequest, NetifTxResponse, XEN_NETIF_EXTRA_FLAG_MORE,
};
use core::cell::Cell;
use std::boxed::Box;
use std::vec;

/// Deterministic xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn page() -> Box<PageBuffer> {
    Box::new(PageBuffer::new())
}

/// Puts both ends' indices at `start` (as if the rings had run that long).
fn rings_at(
    mem: &PageBuffer,
    start: u32,
) -> (
    FrontRing<BlkifProtocol, &PageBuffer>,
    BackRing<BlkifProtocol, &PageBuffer>,
) {
    init_shared_ring(mem);
    mem.store_u32(REQ_PROD_OFFSET, start);
    mem.store_u32(RSP_PROD_OFFSET, start);
    mem.store_u32(REQ_EVENT_OFFSET, start.wrapping_add(1));
    mem.store_u32(RSP_EVENT_OFFSET, start.wrapping_add(1));
    (
        FrontRing::attach(mem, start).unwrap(),
        BackRing::attach(mem, start).unwrap(),
    )
}

fn req(id: u64) -> BlkifRequest {
    BlkifRequest {
        operation: BLKIF_OP_WRITE,
        nr_segments: 1,
        id,
        sector_number: id * 8,
        ..Default::default()
    }
}

#[test]
fn geometry_matches_the_abi_reference() {
    // xen-pv-abi.md §10.3-10.5: 32 blkif entries, 256 tx and rx entries per page.
    assert_eq!(ring_size(4096, BlkifProtocol::SLOT_SIZE), 32);
    assert_eq!(ring_size(4096, NetifTxProtocol::SLOT_SIZE), 256);
    assert_eq!(ring_size(4096, NetifRxProtocol::SLOT_SIZE), 256);
    assert_eq!(ring_size(64, 8), 0);
    assert_eq!(ring_size(64 + 7, 8), 0);
    assert_eq!(ring_size(64 + 8, 8), 1);
    assert_eq!(ring_size(64 + 24, 8), 2);
    assert_eq!(ring_size(4096, 0), 0);
    assert_eq!(ring_size(usize::MAX, 1), MAX_RING_SIZE);

    let p = page();
    assert_eq!(FrontRing::<BlkifProtocol, _>::init(&*p).unwrap().size(), 32);
    let small = PageBuffer::<16>::new(); // 64 bytes: header only
    assert_eq!(
        FrontRing::<BlkifProtocol, _>::init(&small).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        BackRing::<NetifTxProtocol, _>::new(&small).err(),
        Some(Errno::EINVAL)
    );
    // A protocol whose slot cannot hold its request is refused.
    struct Bad;
    impl RingProtocol for Bad {
        type Request = BlkifRequest;
        type Response = BlkifResponse;
        const SLOT_SIZE: usize = 16;
    }
    assert_eq!(FrontRing::<Bad, _>::init(&*p).err(), Some(Errno::EINVAL));
}

#[test]
fn init_writes_the_shared_header() {
    let p = page();
    p.write(0, &[0xaa; 64]);
    let _f = FrontRing::<BlkifProtocol, _>::init(&*p).unwrap();
    assert_eq!(p.load_u32(REQ_PROD_OFFSET), 0);
    assert_eq!(p.load_u32(REQ_EVENT_OFFSET), 1);
    assert_eq!(p.load_u32(RSP_PROD_OFFSET), 0);
    assert_eq!(p.load_u32(RSP_EVENT_OFFSET), 1);
    let mut rest = [0xffu8; 48];
    p.read(16, &mut rest);
    assert_eq!(rest, [0; 48]);
}

#[test]
fn requests_and_responses_cross_the_32_bit_wrap() {
    let p = page();
    let start = u32::MAX - 100;
    let (mut f, mut b) = rings_at(&p, start);
    let mut rng = Rng(0x1234_5678);
    let (mut sent, mut answered, mut received) = (0u64, 0u64, 0u64);
    while received < 2000 {
        // Front: queue a random batch that fits.
        let n = rng.below(u64::from(f.free_requests()) + 1);
        for _ in 0..n {
            f.push_request(&req(sent)).unwrap();
            sent += 1;
        }
        f.push_requests_and_check_notify();
        // Back: take some, answer them in order.
        let take = rng.below(40);
        for _ in 0..take {
            match b.next_request().unwrap() {
                Some(r) => {
                    assert_eq!(r, req(answered));
                    let rsp = BlkifResponse {
                        id: r.id,
                        operation: r.operation,
                        status: (r.id % 3) as i16 - 1,
                        ..Default::default()
                    };
                    b.push_response(&rsp).unwrap();
                    answered += 1;
                }
                None => break,
            }
        }
        b.push_responses_and_check_notify();
        while let Some(rsp) = f.next_response().unwrap() {
            assert_eq!(rsp.id, received);
            assert_eq!(rsp.status, (received % 3) as i16 - 1);
            received += 1;
        }
    }
    // The indices wrapped around 2^32.
    assert!(f.req_prod_pvt() < start && b.req_cons() < start);
    assert_eq!(f.rsp_cons(), start.wrapping_add(received as u32));
}

#[test]
fn full_ring_and_response_without_request_are_refused() {
    let p = page();
    let (mut f, mut b) = rings_at(&p, u32::MAX - 3);
    assert_eq!(
        b.push_response(&BlkifResponse::default()),
        Err(RingError::NoRequest)
    );
    for i in 0..32 {
        f.push_request(&req(i)).unwrap();
    }
    assert!(f.is_full());
    assert_eq!(f.push_request(&req(99)), Err(RingError::Full));
    f.push_requests();
    assert_eq!(b.unconsumed_requests(), Ok(32));
    for _ in 0..32 {
        b.next_request().unwrap().unwrap();
    }
    assert!(b.request_cons_overflow());
    // The frontend cannot have produced more; even if req_prod says so, nothing is
    // consumed beyond one ring of unanswered requests.
    assert_eq!(b.next_request(), Ok(None));
    b.push_response(&BlkifResponse::default()).unwrap();
    assert!(!b.request_cons_overflow());
    b.push_responses();
    assert_eq!(f.next_response().unwrap().map(|r| r.id), Some(0));
    assert_eq!(f.free_requests(), 1);
}

#[test]
fn notifications_follow_the_event_index_rules() {
    for start in [0, u32::MAX - 1, 0x8000_0000 - 2] {
        let p = page();
        let (mut f, mut b) = rings_at(&p, start);
        // req_event = start + 1: the first request published is notified...
        f.push_request(&req(0)).unwrap();
        assert!(f.push_requests_and_check_notify());
        // ...the backend did not go to sleep since, so the next ones are not.
        f.push_request(&req(1)).unwrap();
        f.push_request(&req(2)).unwrap();
        assert!(!f.push_requests_and_check_notify());
        // Pushing nothing never notifies.
        assert!(!f.push_requests_and_check_notify());
        // The backend drains and sleeps: req_event = req_cons + 1.
        assert!(b.final_check_for_requests().unwrap());
        while b.next_request().unwrap().is_some() {}
        assert!(!b.final_check_for_requests().unwrap());
        assert_eq!(
            p.load_u32(REQ_EVENT_OFFSET),
            start.wrapping_add(4),
            "event = cons + 1"
        );
        // A batch of 3 after that is one notification.
        for i in 3..6 {
            f.push_request(&req(i)).unwrap();
        }
        assert!(f.push_requests_and_check_notify());
        // Responses: the frontend's rsp_event is start + 1, the first response pushed
        // notifies, the rest of a batch does not.
        b.next_request().unwrap().unwrap();
        b.push_response(&BlkifResponse::default()).unwrap();
        assert!(b.push_responses_and_check_notify());
        b.next_request().unwrap().unwrap();
        b.push_response(&BlkifResponse::default()).unwrap();
        assert!(!b.push_responses_and_check_notify());
        // The final check finds the unconsumed responses without touching rsp_event.
        assert!(f.final_check_for_responses().unwrap());
        assert_eq!(p.load_u32(RSP_EVENT_OFFSET), start.wrapping_add(1));
    }
}

/// Randomized against a model: the producer notifies exactly when the consumer went to
/// sleep (its final check found nothing) and has not been woken since, across the wrap.
#[test]
fn a_sleeping_consumer_is_always_woken_and_only_then() {
    let mut rng = Rng(0xdead_beef_cafe);
    for round in 0..20 {
        let p = page();
        let start = u32::MAX - (rng.below(200) as u32) - round;
        let (mut f, mut b) = rings_at(&p, start);
        // Initial event indices of start + 1: both consumers start out waiting.
        let (mut back_asleep, mut front_asleep) = (true, true);
        for _ in 0..3000 {
            match rng.below(6) {
                0 => {
                    let n = rng.below(u64::from(f.free_requests()) + 1);
                    for i in 0..n {
                        f.push_request(&req(i)).unwrap();
                    }
                    let notify = f.push_requests_and_check_notify();
                    assert_eq!(notify, back_asleep && n > 0);
                    if notify {
                        back_asleep = false;
                    }
                }
                1 if !back_asleep => {
                    for _ in 0..rng.below(8) {
                        if b.next_request().unwrap().is_none() {
                            break;
                        }
                    }
                }
                2 if !back_asleep => back_asleep = !b.final_check_for_requests().unwrap(),
                3 => {
                    let mut n = 0;
                    while b.req_cons() != b.rsp_prod_pvt() && n < rng.below(8) {
                        b.push_response(&BlkifResponse::default()).unwrap();
                        n += 1;
                    }
                    let notify = b.push_responses_and_check_notify();
                    assert_eq!(notify, front_asleep && n > 0);
                    if notify {
                        front_asleep = false;
                    }
                }
                4 if !front_asleep => while f.next_response().unwrap().is_some() {},
                5 if !front_asleep => {
                    front_asleep = !f.final_check_for_responses().unwrap();
                }
                _ => {}
            }
        }
    }
}

/// Memory that checks every access the rings make: header words only at the four
/// index offsets, slot copies only whole slots.
struct Checked<'a> {
    mem: &'a PageBuffer,
    slot: usize,
    size: usize,
    accesses: Cell<u64>,
}

impl RingMemory for Checked<'_> {
    fn byte_len(&self) -> usize {
        self.mem.byte_len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        assert!(
            off <= RSP_EVENT_OFFSET && off.is_multiple_of(4),
            "load at {off}"
        );
        self.accesses.set(self.accesses.get() + 1);
        self.mem.load_u32(off)
    }
    fn store_u32(&self, off: usize, v: u32) {
        assert!(
            off <= RSP_EVENT_OFFSET && off.is_multiple_of(4),
            "store at {off}"
        );
        self.accesses.set(self.accesses.get() + 1);
        self.mem.store_u32(off, v)
    }
    fn read(&self, off: usize, dst: &mut [u8]) {
        let rel = off - RING_HEADER_SIZE;
        assert!(
            rel.is_multiple_of(self.slot) && rel / self.slot < self.size,
            "read at {off}"
        );
        assert!(dst.len() <= self.slot);
        self.accesses.set(self.accesses.get() + 1);
        self.mem.read(off, dst)
    }
    fn write(&self, off: usize, src: &[u8]) {
        if off == RING_PVT_OFFSET && src.len() == RING_HEADER_SIZE - RING_PVT_OFFSET {
            // init_shared_ring clears the private bytes and padding.
            return self.mem.write(off, src);
        }
        assert!(off >= RING_HEADER_SIZE, "write at {off}");
        let rel = off - RING_HEADER_SIZE;
        assert!(
            rel.is_multiple_of(self.slot) && rel / self.slot < self.size,
            "write at {off}"
        );
        assert!(src.len() <= self.slot);
        self.accesses.set(self.accesses.get() + 1);
        self.mem.write(off, src)
    }
}

/// A random index near `base` (often within a few ring sizes, sometimes anywhere).
fn hostile_index(rng: &mut Rng, base: u32, size: u32) -> u32 {
    match rng.below(4) {
        0 => rng.next() as u32,
        1 => base.wrapping_add(size).wrapping_add(rng.below(4) as u32),
        2 => base.wrapping_sub(rng.below(4) as u32 + 1),
        _ => base.wrapping_add(rng.below(u64::from(size) + 1) as u32),
    }
}

#[test]
fn a_hostile_frontend_cannot_push_the_backend_out_of_bounds_or_into_long_loops() {
    let mut rng = Rng(0x0bad_f00d);
    let p = page();
    init_shared_ring(&*p);
    let mem = Checked {
        mem: &p,
        slot: BlkifProtocol::SLOT_SIZE,
        size: 32,
        accesses: Cell::new(0),
    };
    let mut b = BackRing::<BlkifProtocol, _>::attach(&mem, rng.next() as u32).unwrap();
    let mut disconnects = 0;
    let mut served = 0u64;
    for _ in 0..20_000 {
        // The frontend scribbles: random bytes anywhere, or a crafted req_prod.
        match rng.below(3) {
            0 => {
                let off = rng.below(4096) as usize;
                let len = (rng.below(64) as usize).min(4096 - off);
                let bytes: std::vec::Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                p.write(off, &bytes);
            }
            1 => p.store_u32(
                REQ_PROD_OFFSET,
                hostile_index(&mut rng, b.rsp_prod_pvt(), 32),
            ),
            _ => {}
        }
        // The backend serves as a real one would: drain, answer, final check.
        let before = mem.accesses.get();
        let mut consumed = 0u32;
        loop {
            match b.next_request() {
                Ok(Some(_)) => consumed += 1,
                Ok(None) => break,
                Err(RingError::ProducerOverflow { prod }) => {
                    let ahead = prod.wrapping_sub(b.rsp_prod_pvt());
                    let done = b.req_cons().wrapping_sub(b.rsp_prod_pvt());
                    assert!(ahead > 32 || ahead < done, "false alarm at {prod}");
                    disconnects += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(consumed <= 32, "consumed {consumed} in one pass");
        assert!(b.req_cons().wrapping_sub(b.rsp_prod_pvt()) <= 32);
        let answer = rng.below(u64::from(b.req_cons().wrapping_sub(b.rsp_prod_pvt())) + 1);
        for _ in 0..answer {
            b.push_response(&BlkifResponse::default()).unwrap();
            served += 1;
        }
        b.push_responses_and_check_notify();
        let _ = b.final_check_for_requests();
        // Work per pass is bounded by the ring size, whatever the frontend wrote.
        assert!(mem.accesses.get() - before <= 4 * 32 + 16);
    }
    assert!(disconnects > 1000, "{disconnects}");
    assert!(served > 1000, "{served}");
}

#[test]
fn a_hostile_backend_cannot_feed_the_frontend_more_responses_than_it_asked_for() {
    let mut rng = Rng(0x5eed);
    let p = page();
    let mem = Checked {
        mem: &p,
        slot: NetifTxProtocol::SLOT_SIZE,
        size: 256,
        accesses: Cell::new(0),
    };
    let mut f = FrontRing::<NetifTxProtocol, _>::init(&mem).unwrap();
    let mut bad = 0;
    for _ in 0..20_000 {
        let n = rng.below(u64::from(f.free_requests()) + 1).min(20);
        for i in 0..n {
            f.push_request(&NetifTxRequest {
                id: i as u16,
                ..Default::default()
            })
            .unwrap();
        }
        f.push_requests_and_check_notify();
        match rng.below(3) {
            0 => {
                let off = rng.below(4096) as usize;
                let v = rng.next() as u32;
                p.write(off, &v.to_le_bytes()[..(4096 - off).min(4)]);
            }
            1 => p.store_u32(
                RSP_PROD_OFFSET,
                hostile_index(&mut rng, f.rsp_cons(), f.size() - f.free_requests()),
            ),
            _ => {}
        }
        let outstanding = f.size() - f.free_requests();
        let mut got = 0;
        loop {
            match f.next_response() {
                Ok(Some(_)) => got += 1,
                Ok(None) => break,
                Err(RingError::ProducerOverflow { .. }) => {
                    bad += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(got <= outstanding);
        let _ = f.final_check_for_responses();
    }
    assert!(bad > 1000, "{bad}");
    let _ = NetifTxResponse::default();
}

#[test]
fn raw_ring_page_over_heap_memory() {
    let mut backing = vec![0u64; 512];
    // SAFETY: 4096 bytes, 8-aligned, alive and only used through `raw` below.
    let raw = unsafe { RawRingPage::new(backing.as_mut_ptr().cast(), 4096) };
    let mut f = FrontRing::<NetifRxProtocol, _>::init(raw).unwrap();
    let mut b = BackRing::<NetifRxProtocol, _>::new(raw).unwrap();
    assert_eq!(f.size(), 256);
    for id in 0..300u16 {
        f.push_request(&crate::netif::NetifRxRequest {
            id,
            gref: u32::from(id) + 8,
            ..Default::default()
        })
        .unwrap();
        f.push_requests();
        let r = b.next_request().unwrap().unwrap();
        assert_eq!((r.id, r.gref), (id, u32::from(id) + 8));
        b.push_response(&crate::netif::NetifRxResponse {
            id,
            status: 60,
            ..Default::default()
        })
        .unwrap();
        b.push_responses();
        assert_eq!(f.next_response().unwrap().map(|r| r.id), Some(id));
    }
    assert_eq!(backing[0] as u32, 300); // req_prod, little-endian
}

#[test]
#[should_panic(expected = "out of range")]
fn raw_ring_page_refuses_offsets_outside_the_ring() {
    let mut backing = [0u32; 32];
    // SAFETY: 128 bytes, 4-aligned, alive for the test.
    let raw = unsafe { RawRingPage::new(backing.as_mut_ptr().cast(), 128) };
    raw.write(120, &[0; 16]);
}

#[test]
fn blkif_variants_and_netif_extras_share_the_slot() {
    let d = BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        flag: crate::blkif::BLKIF_DISCARD_SECURE,
        handle: 0x51,
        id: 9,
        sector_number: 2048,
        nr_sectors: 4096,
        ..Default::default()
    };
    let r = BlkifRequest::from_discard(&d);
    assert_eq!(r.operation, BLKIF_OP_DISCARD);
    assert_eq!(r.id, 9);
    assert_eq!(r.as_bytes()[24..32], 4096u64.to_le_bytes());
    assert_eq!(r.discard(), d);
    let mut ind = crate::blkif::BlkifRequestIndirect {
        operation: crate::blkif::BLKIF_OP_INDIRECT,
        nr_segments: 600,
        handle: 3,
        ..Default::default()
    };
    ind.indirect_grefs[7] = 0x1234;
    let r = BlkifRequest::from_indirect(&ind);
    assert_eq!(r.as_bytes()[2..4], 600u16.to_le_bytes());
    assert_eq!(r.as_bytes()[24..26], 3u16.to_le_bytes());
    assert_eq!(r.as_bytes()[56..60], 0x1234u32.to_le_bytes());
    assert_eq!(r.indirect(), ind);
    let mut r = req(1);
    r.nr_segments = 12;
    assert_eq!(r.segments(), None);
    r.nr_segments = 2;
    r.seg[1].first_sect = 3;
    r.seg[1].last_sect = 7;
    assert_eq!(r.segments().map(|s| s[1].sectors()), Some(Some(5)));
    r.seg[1].last_sect = 8;
    assert_eq!(r.segments().map(|s| s[1].sectors()), Some(None));

    let gso = NetifExtraGso {
        size: 1448,
        type_: crate::netif::XEN_NETIF_GSO_TYPE_TCPV4,
        features: 0,
    };
    let e = NetifExtraInfo::from_gso(gso, XEN_NETIF_EXTRA_FLAG_MORE);
    let slot = NetifTxRequest::from_extra(&e);
    assert_eq!(slot.as_bytes()[0], crate::netif::XEN_NETIF_EXTRA_TYPE_GSO);
    assert_eq!(slot.as_bytes()[2..4], 1448u16.to_le_bytes());
    assert_eq!(slot.extra().gso(), gso);
    assert_eq!(NETTXF_EXTRA_INFO, 8);
}

/// Both ends on their own threads, sharing one buffer: every request is answered once,
/// in order, with the fences doing their job across the wrap.
#[test]
fn front_and_back_on_two_threads() {
    const N: u64 = 20_000;
    const SPIN_LIMIT: u64 = 50_000_000;
    let p = page();
    let (mut f, mut b) = rings_at(&p, u32::MAX - 7);
    std::thread::scope(|s| {
        s.spawn(move || {
            let (mut answered, mut spins) = (0u64, 0u64);
            while answered < N {
                match b.next_request().unwrap() {
                    Some(r) => {
                        assert_eq!(r, req(answered));
                        let rsp = BlkifResponse {
                            id: r.id,
                            ..Default::default()
                        };
                        b.push_response(&rsp).unwrap();
                        b.push_responses_and_check_notify();
                        answered += 1;
                    }
                    None => {
                        spins += 1;
                        assert!(spins < SPIN_LIMIT, "backend starved");
                        std::thread::yield_now();
                    }
                }
            }
        });
        let (mut sent, mut received, mut spins) = (0u64, 0u64, 0u64);
        while received < N {
            while sent < N && !f.is_full() {
                f.push_request(&req(sent)).unwrap();
                sent += 1;
            }
            f.push_requests_and_check_notify();
            match f.next_response().unwrap() {
                Some(rsp) => {
                    assert_eq!(rsp.id, received);
                    received += 1;
                }
                None => {
                    spins += 1;
                    assert!(spins < SPIN_LIMIT, "frontend starved");
                    std::thread::yield_now();
                }
            }
        }
    });
}
