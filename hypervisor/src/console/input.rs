//! Serial input for the control domain: bytes typed on COM1 wait in a small ring until
//! the control domain reads them with `console_io(CONSOLEIO_read)` (as in Xen, whose
//! `serial_rx_ring` is 128 bytes and drops input when full). The hypervisor raises
//! VIRQ_CONSOLE to the control domain when bytes arrive (tick.rs); which domain gets
//! them is the control domain's business (console focus).

/// Bytes the ring holds (Xen's `SERIAL_RX_SIZE`).
pub const INPUT_RING_SIZE: usize = 128;

/// Typed bytes not yet read by the control domain.
#[derive(Clone, Debug)]
pub struct InputRing {
    buf: [u8; INPUT_RING_SIZE],
    /// Free-running indices: `prod - cons` bytes are held (never more than the size).
    prod: u32,
    cons: u32,
}

impl Default for InputRing {
    fn default() -> Self {
        Self::new()
    }
}

impl InputRing {
    /// An empty ring.
    pub const fn new() -> Self {
        InputRing {
            buf: [0; INPUT_RING_SIZE],
            prod: 0,
            cons: 0,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.prod.wrapping_sub(self.cons) as usize
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends what fits of `bytes`; the rest is dropped. Returns how many were kept.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(INPUT_RING_SIZE - self.len());
        for &b in &bytes[..take] {
            self.buf[self.prod as usize % INPUT_RING_SIZE] = b;
            self.prod = self.prod.wrapping_add(1);
        }
        take
    }

    /// The oldest contiguous run of held bytes, at most `max` long (empty when the ring
    /// is empty); [`Self::consume`] removes it once it was delivered.
    pub fn peek(&self, max: usize) -> &[u8] {
        let at = self.cons as usize % INPUT_RING_SIZE;
        let n = self.len().min(INPUT_RING_SIZE - at).min(max);
        &self.buf[at..at + n]
    }

    /// Drops the `n` oldest bytes (at most what is held).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        self.cons = self.cons.wrapping_add(n as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_and_overflow_is_dropped() {
        let mut r = InputRing::new();
        assert!(r.is_empty());
        assert_eq!(r.peek(10), b"");
        assert_eq!(r.push(b"abc"), 3);
        assert_eq!(r.peek(2), b"ab");
        r.consume(2);
        assert_eq!(r.peek(10), b"c");
        r.consume(1);
        // Indices now at 3: filling wraps across the end of the buffer.
        let big: std::vec::Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        assert_eq!(r.push(&big), INPUT_RING_SIZE);
        assert_eq!(r.push(b"x"), 0);
        assert_eq!(r.len(), INPUT_RING_SIZE);
        // Read back in two contiguous pieces.
        let mut out = std::vec::Vec::new();
        while !r.is_empty() {
            let piece = r.peek(usize::MAX).to_vec();
            assert!(!piece.is_empty());
            out.extend_from_slice(&piece);
            r.consume(piece.len());
        }
        assert_eq!(out, big[..INPUT_RING_SIZE]);
        // Consuming more than is held is harmless.
        r.consume(5);
        assert!(r.is_empty());
    }

    #[test]
    fn random_pushes_and_reads_match_a_queue() {
        let mut r = InputRing::new();
        let mut model = std::collections::VecDeque::new();
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for step in 0..5000u32 {
            if next() % 2 == 0 {
                let n = (next() % 40) as usize;
                let bytes: std::vec::Vec<u8> = (0..n).map(|i| (step as usize + i) as u8).collect();
                let kept = r.push(&bytes);
                let room = INPUT_RING_SIZE - model.len();
                assert_eq!(kept, n.min(room));
                model.extend(&bytes[..kept]);
            } else {
                let max = (next() % 50) as usize;
                let got = r.peek(max).to_vec();
                assert!(got.len() <= max);
                let want: std::vec::Vec<u8> = model.iter().take(got.len()).copied().collect();
                assert_eq!(got, want);
                r.consume(got.len());
                model.drain(..got.len());
            }
            assert_eq!(r.len(), model.len());
        }
    }
}
