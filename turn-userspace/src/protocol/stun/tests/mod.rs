//! Tests of the STUN codec: published test vectors, malformed input, round trips and a
//! seeded no-panic fuzz loop.

mod malformed;
mod roundtrip;
mod vectors;

/// Decodes a hex test vector written with arbitrary whitespace.
fn hex_bytes(text: &str) -> Vec<u8> {
    let compact: String = text.split_whitespace().collect();
    hex::decode(compact).expect("test vector is valid hex")
}
