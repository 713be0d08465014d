//! cairn-testkit: what cairn's tests and benchmarks share, in one place.
//!
//! Always: [`bytes`] (deterministic test data), [`ratio`] (throughput beside
//! a memcpy measured in the same run) and [`bench`] (small helpers of the
//! process benchmarks). With the `net` feature, [`net`]: the harness that
//! runs real `cairn` processes on loopback, waits for their own `READY=1`,
//! drives devnets through the CLI, and reads a validator's scoreboard.

pub mod bench;
#[cfg(feature = "net")]
pub mod net;
pub mod ratio;

/// Deterministic pseudo-random bytes (xorshift): the same `seed` gives the
/// same bytes in every test and on every machine.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
