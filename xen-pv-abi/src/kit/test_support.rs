//! Fixtures the frontends' host tests share: data pages in host memory, grant entries
//! that a fake backend can read, a flat xenstore with a scripted backend, and a
//! xorshift PRNG.

extern crate std;

use super::blkfront::{DataPages, PAGE_SIZE, Store};
use super::grants::GrantTable;
use crate::errno::Errno;
use crate::grant_table::{GTF_PERMIT_ACCESS, GTF_READONLY, GrantEntryV1};
use crate::ids::{DomId, Mfn};
use std::boxed::Box;
use std::cell::RefCell;
use std::collections::HashMap;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// The backend's domain in the tests.
pub(super) const BACKEND: DomId = DomId(0);
/// The frame of data page 0.
pub(super) const FRAME_BASE: u64 = 0x4_0000;

/// Data pages in host memory; page `i` is frame `FRAME_BASE + i`.
pub(super) struct Pages(pub(super) RefCell<Vec<[u8; PAGE_SIZE]>>);

impl Pages {
    pub(super) fn new(n: usize) -> Self {
        Pages(RefCell::new(vec![[0; PAGE_SIZE]; n]))
    }
}

impl DataPages for Pages {
    fn count(&self) -> usize {
        self.0.borrow().len()
    }
    fn frame(&self, page: usize) -> Mfn {
        Mfn(FRAME_BASE + page as u64)
    }
    fn read(&self, page: usize, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self.0.borrow()[page][offset..offset + dst.len()]);
    }
    fn write(&self, page: usize, offset: usize, src: &[u8]) {
        self.0.borrow_mut()[page][offset..offset + src.len()].copy_from_slice(src);
    }
}

/// The grant entries, owned outside the table so the fake backend can read them.
pub(super) struct Frames(pub(super) *mut GrantEntryV1, pub(super) usize);

impl Frames {
    pub(super) fn new(n: usize) -> Self {
        let b = vec![GrantEntryV1::default(); n].into_boxed_slice();
        Frames(Box::into_raw(b).cast(), n)
    }

    pub(super) fn entry(&self, gref: u32) -> Option<GrantEntryV1> {
        if gref as usize >= self.1 {
            return None;
        }
        // SAFETY: in bounds of the live allocation; a plain copy of plain data.
        Some(unsafe { self.0.add(gref as usize).read_volatile() })
    }

    /// The page of `pages` that `gref` grants to `BACKEND`, and whether read-only.
    pub(super) fn granted(&self, gref: u32, pages: &Pages) -> Option<(usize, bool)> {
        let e = self.entry(gref)?;
        if e.flags & GTF_PERMIT_ACCESS == 0 || e.domid != BACKEND {
            return None;
        }
        let p = u64::from(e.frame).checked_sub(FRAME_BASE)? as usize;
        (p < pages.count()).then_some((p, e.flags & GTF_READONLY != 0))
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` of a slice of this length in `new`, and the
        // tables using it are dropped before (declared after).
        drop(unsafe { Box::from_raw(core::ptr::slice_from_raw_parts_mut(self.0, self.1)) });
    }
}

/// A grant table of `N` entries over [`Frames`] it owns, so that the fake backend can
/// read the entries; the table is dropped before its entries (fields drop in order).
pub(super) struct Granted<const N: usize> {
    pub(super) table: GrantTable<N>,
    pub(super) frames: Frames,
}

impl<const N: usize> Granted<N> {
    pub(super) fn new() -> Self {
        let frames = Frames::new(N);
        // SAFETY: the entries live as long as `self` (moving `Frames` does not move
        // them), the table is dropped first, and only the fake backend reads them.
        let table = unsafe { GrantTable::new(frames.0, N) };
        Granted { table, frames }
    }
}

/// A flat xenstore whose backend (`step`, a test's script) reacts between the
/// frontend's polls, unless `frozen`.
pub(super) struct FakeStore {
    pub(super) nodes: HashMap<String, Vec<u8>>,
    /// Paths watched now.
    pub(super) watches: Vec<String>,
    pub(super) frozen: bool,
    step: fn(&mut FakeStore),
}

impl FakeStore {
    pub(super) fn new(step: fn(&mut FakeStore)) -> Self {
        FakeStore {
            nodes: HashMap::new(),
            watches: Vec::new(),
            frozen: false,
            step,
        }
    }

    /// The value of `p`, or empty.
    pub(super) fn get(&self, p: &str) -> &[u8] {
        self.nodes.get(p).map(|v| &v[..]).unwrap_or(b"")
    }

    pub(super) fn put(&mut self, p: &str, v: &str) {
        self.nodes.insert(p.into(), v.as_bytes().to_vec());
    }
}

impl Store for FakeStore {
    fn read_into(&mut self, path: &str, buf: &mut [u8]) -> Result<usize, Errno> {
        let v = self.nodes.get(path).ok_or(Errno::ENOENT)?;
        buf.get_mut(..v.len())
            .ok_or(Errno::E2BIG)?
            .copy_from_slice(v);
        Ok(v.len())
    }
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        self.nodes.insert(path.into(), value.to_vec());
        Ok(())
    }
    fn watch(&mut self, path: &str, _: &str) -> Result<(), Errno> {
        self.watches.push(path.into());
        Ok(())
    }
    fn unwatch(&mut self, path: &str, _: &str) -> Result<(), Errno> {
        let i = self
            .watches
            .iter()
            .position(|w| w == path)
            .ok_or(Errno::ENOENT)?;
        self.watches.remove(i);
        Ok(())
    }
    fn drain_events(&mut self) -> Result<(), Errno> {
        if !self.frozen {
            (self.step)(self);
        }
        Ok(())
    }
}

/// A xorshift64 PRNG: deterministic test input.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
