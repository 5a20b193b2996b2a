//! Disks a block backend serves: the [`Disk`] trait and two implementations, a RAM disk
//! and a disk over a borrowed image (read-only or copy-on-write).

use alloc::vec::Vec;

/// Bytes per sector of every [`Disk`]: the blkif unit.
pub const SECTOR_SIZE: usize = 512;
/// Sectors per 4 KiB page (and per copy-on-write chunk of [`SliceDisk`]).
const SECTORS_PER_CHUNK: u64 = 8;
const CHUNK_BYTES: usize = SECTOR_SIZE * SECTORS_PER_CHUNK as usize;

/// What a disk supports beyond reads and writes (advertised as `feature-*` keys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskFeatures {
    /// [`Disk::flush`] means something (or is a harmless no-op): `feature-flush-cache`
    /// and `feature-barrier`.
    pub flush: bool,
    /// [`Disk::discard`] works: `feature-discard`.
    pub discard: bool,
    /// Discard with the secure flag (the data is unrecoverable afterwards):
    /// `discard-secure`.
    pub secure_discard: bool,
}

/// Why a disk operation failed. The backend answers every one of them with
/// `BLKIF_RSP_ERROR` (or `BLKIF_RSP_EOPNOTSUPP` for [`Unsupported`](Self::Unsupported)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The range leaves the disk.
    OutOfRange,
    /// A buffer that is not a whole number of sectors.
    BadLength,
    /// A write or discard on a read-only disk.
    ReadOnly,
    /// The disk does not implement the operation.
    Unsupported,
    /// No memory (or quota) left for the data.
    NoSpace,
    /// The medium failed.
    Io,
}

/// A virtual disk of 512-byte sectors.
///
/// Buffers are whole sectors; implementations check every range against
/// [`sectors`](Self::sectors) themselves (the backend checks too, before calling).
pub trait Disk {
    /// Size in 512-byte sectors.
    fn sectors(&self) -> u64;
    /// Whether writes and discards are refused.
    fn read_only(&self) -> bool;
    /// Optional operations supported.
    fn features(&self) -> DiskFeatures;
    /// Reads `buf.len() / 512` sectors starting at `sector`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// Writes `buf.len() / 512` sectors starting at `sector`.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), DiskError>;
    /// Forgets `count` sectors from `sector` (they read back as zeros on the disks here);
    /// `secure` asks for the data to be destroyed.
    fn discard(&mut self, sector: u64, count: u64, secure: bool) -> Result<(), DiskError>;
}

/// The byte range of `len` bytes at `sector` on a disk of `sectors` sectors.
fn byte_range(sector: u64, len: usize, sectors: u64) -> Result<(usize, usize), DiskError> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(DiskError::BadLength);
    }
    let count = (len / SECTOR_SIZE) as u64;
    let end = sector.checked_add(count).ok_or(DiskError::OutOfRange)?;
    if end > sectors {
        return Err(DiskError::OutOfRange);
    }
    let start = usize::try_from(sector)
        .ok()
        .and_then(|s| s.checked_mul(SECTOR_SIZE))
        .ok_or(DiskError::OutOfRange)?;
    let stop = start.checked_add(len).ok_or(DiskError::OutOfRange)?;
    Ok((start, stop))
}

/// A disk held in memory, zero-filled at creation. Supports flush (a no-op) and
/// discard, secure included (discarded sectors are zeroed).
#[derive(Clone, Debug)]
pub struct RamDisk {
    data: Vec<u8>,
    read_only: bool,
}

impl RamDisk {
    /// A writable zeroed disk of `sectors` sectors; `NoSpace` if the memory cannot be
    /// allocated (the allocation is fallible, never an abort).
    pub fn new(sectors: u64) -> Result<Self, DiskError> {
        let bytes = sectors
            .checked_mul(SECTOR_SIZE as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(DiskError::NoSpace)?;
        let mut data = Vec::new();
        data.try_reserve_exact(bytes)
            .map_err(|_| DiskError::NoSpace)?;
        data.resize(bytes, 0);
        Ok(RamDisk {
            data,
            read_only: false,
        })
    }

    /// A writable disk holding a copy of `image`; a trailing partial sector is
    /// dropped.
    pub fn from_image(image: &[u8]) -> Result<Self, DiskError> {
        let sectors = (image.len() / SECTOR_SIZE) as u64;
        let mut d = Self::new(sectors)?;
        let n = d.data.len();
        d.data.copy_from_slice(&image[..n]);
        Ok(d)
    }

    /// Makes the disk refuse (or accept again) writes and discards.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// The disk's contents.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

impl Disk for RamDisk {
    fn sectors(&self) -> u64 {
        (self.data.len() / SECTOR_SIZE) as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn features(&self) -> DiskFeatures {
        DiskFeatures {
            flush: true,
            discard: true,
            secure_discard: true,
        }
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let (s, e) = byte_range(sector, buf.len(), self.sectors())?;
        buf.copy_from_slice(&self.data[s..e]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let (s, e) = byte_range(sector, buf.len(), self.sectors())?;
        self.data[s..e].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard(&mut self, sector: u64, count: u64, _secure: bool) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let len = count
            .checked_mul(SECTOR_SIZE as u64)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(DiskError::OutOfRange)?;
        let (s, e) = byte_range(sector, len, self.sectors())?;
        self.data[s..e].fill(0);
        Ok(())
    }
}

/// A disk over a borrowed image (e.g. a boot module the kernel maps), read-only or
/// copy-on-write.
///
/// Copy-on-write keeps modified 4 KiB chunks in a private overlay, allocated fallibly
/// and capped at a chunk quota; a write that would exceed it fails with
/// [`DiskError::NoSpace`] (the frontend sees `BLKIF_RSP_ERROR`), and the image itself
/// is never modified. A trailing partial sector of the image is not part of the disk.
/// Flush is a no-op; discard is not supported.
#[derive(Debug)]
pub struct SliceDisk<'a> {
    base: &'a [u8],
    sectors: u64,
    /// `None`: read-only. Otherwise the overlay, sorted by chunk index.
    overlay: Option<Vec<(u64, Vec<u8>)>>,
    max_chunks: usize,
}

impl<'a> SliceDisk<'a> {
    /// A read-only disk over `image`.
    pub fn read_only(image: &'a [u8]) -> Self {
        SliceDisk {
            base: image,
            sectors: (image.len() / SECTOR_SIZE) as u64,
            overlay: None,
            max_chunks: 0,
        }
    }

    /// A writable disk over `image` whose writes go to an overlay of at most
    /// `max_overlay_chunks` 4 KiB chunks.
    pub fn copy_on_write(image: &'a [u8], max_overlay_chunks: usize) -> Self {
        SliceDisk {
            overlay: Some(Vec::new()),
            max_chunks: max_overlay_chunks,
            ..Self::read_only(image)
        }
    }

    /// Chunks copied into the overlay so far.
    pub fn overlay_chunks(&self) -> usize {
        self.overlay.as_ref().map_or(0, Vec::len)
    }

    /// The image bytes of `sector` (a full sector: `sector < self.sectors`).
    fn base_sector(&self, sector: u64) -> &[u8] {
        let s = sector as usize * SECTOR_SIZE;
        &self.base[s..s + SECTOR_SIZE]
    }

    /// Index of the overlay chunk of `sector`, creating it from the image.
    fn chunk_for_write(&mut self, chunk: u64) -> Result<usize, DiskError> {
        let max = self.max_chunks;
        let base = self.base;
        let overlay = self.overlay.as_mut().ok_or(DiskError::ReadOnly)?;
        match overlay.binary_search_by_key(&chunk, |(c, _)| *c) {
            Ok(i) => Ok(i),
            Err(i) => {
                if overlay.len() >= max {
                    return Err(DiskError::NoSpace);
                }
                let mut data = Vec::new();
                data.try_reserve_exact(CHUNK_BYTES)
                    .map_err(|_| DiskError::NoSpace)?;
                // Bytes of the image in this chunk (the last chunk may be short; its
                // tail beyond the disk is never read).
                let start = (chunk as usize).saturating_mul(CHUNK_BYTES);
                let end = start.saturating_add(CHUNK_BYTES).min(base.len());
                data.extend_from_slice(base.get(start..end).unwrap_or(&[]));
                data.resize(CHUNK_BYTES, 0);
                overlay.try_reserve(1).map_err(|_| DiskError::NoSpace)?;
                overlay.insert(i, (chunk, data));
                Ok(i)
            }
        }
    }
}

impl Disk for SliceDisk<'_> {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.overlay.is_none()
    }
    fn features(&self) -> DiskFeatures {
        DiskFeatures {
            flush: true,
            discard: false,
            secure_discard: false,
        }
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        byte_range(sector, buf.len(), self.sectors)?;
        for (i, dst) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            let s = sector + i as u64;
            let chunk = s / SECTORS_PER_CHUNK;
            let within = (s % SECTORS_PER_CHUNK) as usize * SECTOR_SIZE;
            let from_overlay = self.overlay.as_ref().and_then(|o| {
                o.binary_search_by_key(&chunk, |(c, _)| *c)
                    .ok()
                    .map(|i| &o[i].1[within..within + SECTOR_SIZE])
            });
            dst.copy_from_slice(from_overlay.unwrap_or_else(|| self.base_sector(s)));
        }
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        if self.overlay.is_none() {
            return Err(DiskError::ReadOnly);
        }
        byte_range(sector, buf.len(), self.sectors)?;
        for (i, src) in buf.chunks_exact(SECTOR_SIZE).enumerate() {
            let s = sector + i as u64;
            let idx = self.chunk_for_write(s / SECTORS_PER_CHUNK)?;
            let within = (s % SECTORS_PER_CHUNK) as usize * SECTOR_SIZE;
            if let Some(o) = self.overlay.as_mut() {
                o[idx].1[within..within + SECTOR_SIZE].copy_from_slice(src);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard(&mut self, _sector: u64, _count: u64, _secure: bool) -> Result<(), DiskError> {
        Err(DiskError::Unsupported)
    }
}
