//! A small in-place heapsort for the few boot-time sorts (memory map, ELF segments).
//!
//! `core`'s `sort_unstable` (ipnsort: quicksort, heapsort fallback, sorting networks) is
//! about 5 KiB of `.text` per element type; this is a few hundred bytes, still
//! O(n log n) in the worst case and without allocation, which is all boot needs.

/// Sorts `v` by `key`, unstable, O(n log n) comparisons in the worst case.
pub fn sort_unstable_by_key<T, K: Ord>(v: &mut [T], key: impl Fn(&T) -> K) {
    let less = |a: &T, b: &T| key(a) < key(b);
    let n = v.len();
    // Build a max-heap, then move its top to the end one element at a time.
    for root in (0..n / 2).rev() {
        sift_down(v, root, &less);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        if let Some(heap) = v.get_mut(..end) {
            sift_down(heap, 0, &less);
        }
    }
}

/// Sorts `v` ascending, unstable, O(n log n) comparisons in the worst case.
pub fn sort_unstable<T: Ord + Copy>(v: &mut [T]) {
    sort_unstable_by_key(v, |x| *x);
}

/// Restores the max-heap property of `heap` below `root`.
fn sift_down<T>(heap: &mut [T], mut root: usize, less: &impl Fn(&T, &T) -> bool) {
    loop {
        let Some(mut child) = root.checked_mul(2).and_then(|c| c.checked_add(1)) else {
            return;
        };
        let Some(left) = heap.get(child) else {
            return;
        };
        if let Some(right) = heap.get(child + 1)
            && less(left, right)
        {
            child += 1;
        }
        match (heap.get(root), heap.get(child)) {
            (Some(r), Some(c)) if less(r, c) => heap.swap(root, child),
            _ => return,
        }
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn sorts_like_std_for_random_inputs() {
        let mut s = 0x9e37_79b9_7f4a_7c15;
        for len in 0..70 {
            for _ in 0..20 {
                // Small value ranges give many duplicates.
                let modulus = 1 + xorshift(&mut s) % 50;
                let mut v: Vec<(u64, u64)> = (0..len)
                    .map(|_| (xorshift(&mut s) % modulus, xorshift(&mut s) % 3))
                    .collect();
                let mut want = v.clone();
                want.sort();
                sort_unstable(&mut v);
                assert_eq!(v, want, "len {len}");
            }
        }
    }

    #[test]
    fn by_key_orders_by_the_key_only() {
        let mut v = [(5u64, 'a'), (1, 'b'), (3, 'c'), (1, 'd'), (0, 'e')];
        sort_unstable_by_key(&mut v, |x| x.0);
        let keys: Vec<u64> = v.iter().map(|x| x.0).collect();
        assert_eq!(keys, [0, 1, 1, 3, 5]);
        let mut chars: Vec<char> = v.iter().map(|x| x.1).collect();
        chars.sort();
        assert_eq!(chars, ['a', 'b', 'c', 'd', 'e'], "a permutation");
    }

    #[test]
    fn sorted_and_reversed_inputs() {
        let mut up: Vec<u32> = (0..1000).collect();
        let mut down: Vec<u32> = (0..1000).rev().collect();
        sort_unstable(&mut up);
        sort_unstable(&mut down);
        assert_eq!(up, down);
        assert!(up.windows(2).all(|w| w[0] <= w[1]));
    }
}
