//! FINGERPRINT verification (RFC 8489 §14.7): CRC-32 (ISO/IEC 13239, the one of
//! Ethernet and zlib) of the message up to the attribute, XORed with 0x5354554E.
//!
//! Slicing-by-16 over the frame with direct packet access: sixteen 256-entry tables (16
//! KiB, computed at compile time into `.rodata`), one loop iteration per 16 bytes, bounded
//! by [`MAX_LEN`] so the verifier can walk it. The bytes are read as words (little-endian,
//! as the CRC's bit order wants; see [`crate::packet::load`] on alignment), not one by
//! one. The table loads of an iteration do not depend on each other; only the CRC carried
//! into the next iteration is a chain, so one 16-byte iteration costs less than two
//! 8-byte ones.

use aya_ebpf::programs::XdpContext;

use crate::packet::{bounds, read, MAX_OFFSET};

/// The longest message prefix checked (a full 1500-byte MTU's UDP payload fits); longer
/// Send indications go to userspace.
pub const MAX_LEN: usize = 1472;
/// RFC 8489 §14.7.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// The reflected CRC-32 polynomial.
const POLYNOMIAL: u32 = 0xEDB8_8320;

/// Bytes per iteration of the main loop, and tables.
const SLICES: usize = 16;

/// `TABLES[0]` is the classic byte-at-a-time table; `TABLES[k][b]` is the CRC of byte `b`
/// followed by `k` zero bytes.
static TABLES: [[u32; 256]; SLICES] = tables();

const fn tables() -> [[u32; 256]; SLICES] {
    let mut tables = [[0u32; 256]; SLICES];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < SLICES {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

#[inline(always)]
fn entry(table: usize, index: u32) -> u32 {
    // `index & 0xFF` < 256: no bounds check is emitted, and the verifier sees the range.
    TABLES[table][(index & 0xFF) as usize]
}

/// The CRC contribution of the little-endian `word` followed by `zeros` zero bytes:
/// one table per byte, `TABLES[zeros + 3]` for its first.
#[inline(always)]
fn word_crc(zeros: usize, word: u32) -> u32 {
    entry(zeros + 3, word)
        ^ entry(zeros + 2, word >> 8)
        ^ entry(zeros + 1, word >> 16)
        ^ entry(zeros, word >> 24)
}

/// Whether the `len` frame bytes at `offset` (a multiple of 4, as every STUN message
/// prefix ending at an attribute is) have the FINGERPRINT `expected`. False when they
/// cannot be checked (longer than [`MAX_LEN`], not in the linear part of the frame).
// A separate BPF function: verified once, its loop does not multiply the callers' states.
#[inline(never)]
pub fn matches(ctx: &XdpContext, offset: usize, len: usize, expected: u32) -> bool {
    if offset > MAX_OFFSET || len > MAX_LEN || len & 3 != 0 {
        return false;
    }
    let (data, data_end) = bounds(ctx);
    let mut at = data + (offset & MAX_OFFSET);
    let mut crc = !0u32;
    let mut remaining = len;
    for _ in 0..MAX_LEN / SLICES {
        if remaining < SLICES {
            break;
        }
        if at + SLICES > data_end {
            return false;
        }
        // SAFETY: 16 bytes at `at` lie within the frame (checked just above).
        let (low, high) = unsafe { (read::<u64>(at, 0), read::<u64>(at, 8)) };
        let (first, second) = (crc ^ low as u32, (low >> 32) as u32);
        let (third, fourth) = (high as u32, (high >> 32) as u32);
        crc = word_crc(12, first) ^ word_crc(8, second) ^ word_crc(4, third) ^ word_crc(0, fourth);
        at += SLICES;
        remaining -= SLICES;
    }
    // What is left, a multiple of 4 under 16: 8 bytes, then 4.
    if remaining >= 8 {
        if at + 8 > data_end {
            return false;
        }
        // SAFETY: 8 bytes at `at` lie within the frame (checked just above).
        let word = unsafe { read::<u64>(at, 0) };
        let (low, high) = (crc ^ word as u32, (word >> 32) as u32);
        crc = word_crc(4, low) ^ word_crc(0, high);
        at += 8;
        remaining -= 8;
    }
    if remaining == 4 {
        if at + 4 > data_end {
            return false;
        }
        // SAFETY: 4 bytes at `at` lie within the frame (checked just above).
        let low = crc ^ unsafe { read::<u32>(at, 0) };
        crc = word_crc(0, low);
    } else if remaining != 0 {
        return false;
    }
    !crc ^ FINGERPRINT_XOR == expected
}
