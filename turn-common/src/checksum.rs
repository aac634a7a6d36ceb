//! Internet checksum (RFC 1071) arithmetic for the fast path's header rewrites, with
//! incremental updates per RFC 1624 (eqn. 3: `HC' = ~(~HC + ~m + m')`).
//!
//! The XDP program never sums a whole payload: it accumulates only the words that
//! change (addresses, ports, lengths) and the bytes it strips or prepends, then applies
//! that delta to the checksum the packet arrived with. Pure functions, no_std.

/// A running ones'-complement sum of 16-bit words, kept unfolded in a `u64` (no carry
/// is lost for any packet size) and folded only when applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    pub const fn new() -> Self {
        Delta(0)
    }

    /// Adds one 16-bit word (`m'` of RFC 1624).
    #[inline(always)]
    pub const fn add_word(self, word: u16) -> Self {
        Delta(self.0 + word as u64)
    }

    /// Removes one 16-bit word (adds `~m`, RFC 1624).
    #[inline(always)]
    pub const fn remove_word(self, word: u16) -> Self {
        Delta(self.0 + (!word) as u64)
    }

    /// Adds a 32-bit quantity (two words; IPv4 addresses, a pair of ports) in one step:
    /// `2^16 ≡ 1 (mod 2^16 - 1)`, so the unfolded sum stays congruent to the two words'.
    #[inline(always)]
    pub const fn add_u32(self, value: u32) -> Self {
        Delta(self.0 + value as u64)
    }

    /// Removes a 32-bit quantity (two words) in one step: its 32-bit complement is
    /// congruent to minus it modulo `2^16 - 1`, as `2^32 - 1` is a multiple of it.
    #[inline(always)]
    pub const fn remove_u32(self, value: u32) -> Self {
        Delta(self.0 + (!value) as u64)
    }

    /// Adds one byte at `offset` from the start of the checksummed region: the high
    /// half of a word at even offsets, the low half at odd ones.
    #[inline(always)]
    pub const fn add_byte(self, byte: u8, offset: usize) -> Self {
        self.add_word(byte_word(byte, offset))
    }

    /// Removes one byte at `offset` from the start of the checksummed region.
    #[inline(always)]
    pub const fn remove_byte(self, byte: u8, offset: usize) -> Self {
        self.remove_word(byte_word(byte, offset))
    }

    /// Adds big-endian words of `bytes` (word-aligned; an odd tail is zero-padded).
    #[inline(always)]
    pub fn add_bytes(self, bytes: &[u8]) -> Self {
        self.fold_words(bytes, Delta::add_word)
    }

    /// Removes big-endian words of `bytes` (word-aligned; an odd tail is zero-padded).
    #[inline(always)]
    pub fn remove_bytes(self, bytes: &[u8]) -> Self {
        self.fold_words(bytes, Delta::remove_word)
    }

    /// Applies `step` to every big-endian word of `bytes`, an odd tail zero-padded.
    #[inline(always)]
    fn fold_words(self, bytes: &[u8], step: impl Fn(Self, u16) -> Self) -> Self {
        let mut delta = self;
        let mut i = 0;
        while let Some(&high) = bytes.get(i) {
            let low = bytes.get(i + 1).copied().unwrap_or(0);
            delta = step(delta, u16::from_be_bytes([high, low]));
            i += 2;
        }
        delta
    }

    /// Replaces `old` by `new` (equal-length, word-aligned fields such as addresses).
    #[inline(always)]
    pub fn replace_bytes(self, old: &[u8], new: &[u8]) -> Self {
        self.remove_bytes(old).add_bytes(new)
    }

    /// Combines two deltas.
    #[inline(always)]
    pub const fn combine(self, other: Delta) -> Self {
        Delta(self.0 + other.0)
    }

    /// The checksum field after the change, given the field before it (RFC 1624 eqn. 3).
    /// A zero result is returned as-is: use [`Delta::apply_udp`] for UDP.
    #[inline(always)]
    pub const fn apply(self, checksum: u16) -> u16 {
        !fold(self.0 + (!checksum) as u64)
    }

    /// Like [`Delta::apply`] for a UDP checksum, where 0 means "none" (RFC 768), so a
    /// computed 0 is sent as 0xFFFF.
    #[inline(always)]
    pub const fn apply_udp(self, checksum: u16) -> u16 {
        match self.apply(checksum) {
            0 => 0xFFFF,
            other => other,
        }
    }

    /// The checksum of exactly the words added (a from-scratch computation).
    #[inline(always)]
    pub const fn checksum(self) -> u16 {
        !fold(self.0)
    }
}

/// The word a lone byte contributes at `offset`.
#[inline(always)]
const fn byte_word(byte: u8, offset: usize) -> u16 {
    if offset & 1 == 0 {
        (byte as u16) << 8
    } else {
        byte as u16
    }
}

/// Folds carries back into 16 bits (end-around carry).
#[inline(always)]
pub const fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 from scratch, independent of [`Delta`].
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in bytes.chunks(2) {
            let word = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from_be_bytes([chunk[0], 0])
            };
            sum += u32::from(word);
            while sum > 0xFFFF {
                sum = (sum & 0xFFFF) + (sum >> 16);
            }
        }
        !(sum as u16)
    }

    /// A deterministic byte pattern (no RNG in tests).
    fn pattern(len: usize, seed: u8) -> [u8; 64] {
        let mut out = [0u8; 64];
        let mut x = seed as u32 | 1;
        for byte in out.iter_mut().take(len) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *byte = (x >> 16) as u8;
        }
        out
    }

    #[test]
    fn rfc1071_example_words() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Delta::new().add_bytes(&data).checksum(), !0xddf2);
        assert_eq!(reference(&data), !0xddf2);
    }

    #[test]
    fn replacing_words_matches_recomputation() {
        for seed in 0..50u8 {
            let mut data = pattern(40, seed);
            let before = reference(&data[..40]);
            let new_field = pattern(6, seed.wrapping_add(100));
            let delta = Delta::new().replace_bytes(&data[10..16], &new_field[..6]);
            data[10..16].copy_from_slice(&new_field[..6]);
            assert_eq!(delta.apply(before), reference(&data[..40]), "seed {seed}");
        }
    }

    #[test]
    fn stripping_a_prefix_and_odd_tail_matches_recomputation() {
        // Region = 8-byte header + 4-byte prefix + body (odd length) + 3 tail bytes;
        // after: header + body. The body keeps its word alignment (prefix is 4 bytes).
        for seed in 0..50u8 {
            let all = pattern(8 + 4 + 21 + 3, seed);
            let region = &all[..36];
            let mut stripped = [0u8; 29];
            stripped[..8].copy_from_slice(&region[..8]);
            stripped[8..].copy_from_slice(&region[12..33]);
            let mut delta = Delta::new().remove_bytes(&region[8..12]);
            for (i, byte) in region[33..36].iter().enumerate() {
                delta = delta.remove_byte(*byte, 33 + i);
            }
            assert_eq!(
                delta.apply(reference(region)),
                reference(&stripped),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn prepending_matches_recomputation() {
        for seed in 0..50u8 {
            let all = pattern(8 + 12 + 17, seed);
            let original = [&all[..8], &all[20..37]].concat();
            let delta = Delta::new().add_bytes(&all[8..20]);
            assert_eq!(
                delta.apply(reference(&original)),
                reference(&all[..37]),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn u32_helpers_are_two_words() {
        let delta = Delta::new().add_u32(0xC612_0001).remove_u32(0xC612_0002);
        let expected =
            Delta::new().replace_bytes(&[0xC6, 0x12, 0x00, 0x02], &[0xC6, 0x12, 0x00, 0x01]);
        assert_eq!(delta.apply(0x1234), expected.apply(0x1234));
    }

    #[test]
    fn u32_steps_match_word_steps_on_patterns() {
        for seed in 0..50u8 {
            let bytes = pattern(16, seed);
            let word = |at: usize| {
                u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            };
            let by_u32 = Delta::new()
                .add_u32(word(0))
                .add_u32(word(4))
                .remove_u32(word(8))
                .remove_u32(word(12));
            let by_words = Delta::new()
                .add_bytes(&bytes[..8])
                .remove_bytes(&bytes[8..16]);
            for checksum in [0, 1, 0x1234, 0xFFFE, 0xFFFF] {
                assert_eq!(
                    by_u32.apply(checksum),
                    by_words.apply(checksum),
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn udp_zero_becomes_all_ones() {
        // A change that makes the sum all ones yields checksum 0, sent as 0xFFFF.
        let data = [0xFF, 0xFE];
        let checksum = reference(&data); // 0x0001
        let delta = Delta::new().replace_bytes(&[0xFF, 0xFE], &[0xFF, 0xFF]);
        assert_eq!(delta.apply(checksum), 0);
        assert_eq!(delta.apply_udp(checksum), 0xFFFF);
    }

    #[test]
    fn fold_handles_large_sums() {
        assert_eq!(fold(0xFFFF_FFFF_FFFF), 0xFFFF);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0), 0);
    }
}
