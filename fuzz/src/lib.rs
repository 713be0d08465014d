//! The fuzz targets' checks: one function per decoder that takes bytes from
//! a peer or a user. Each asserts invariants, not just "no panic":
//! canonical round trips (`decode(bytes).encode() == bytes` where the bytes
//! are hashed or signed), bounded allocation (the heap may grow by at most a
//! stated bound while a decoder runs, whatever a length field says), and for
//! signed records and proofs that no byte of an honest encoding can change
//! without the check failing.
//!
//! The libFuzzer binaries (`fuzz_targets/`, built with the `libfuzzer`
//! feature on nightly by `run.sh`) call these functions, and so does the
//! corpus replay (`tests/replay.rs`) on stable: CI runs every checked-in
//! input through the same assertions.

use std::alloc::System;

use arbitrary::{Arbitrary, Unstructured};
use cap::Cap;

mod checks;
pub use checks::*;

/// The heap, counted: [`bounded`] sets a ceiling on it around a decoder.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Runs `f` with the heap allowed to grow by at most `bound` bytes. An
/// allocation past it fails, which aborts the process ("memory allocation of
/// N bytes failed"): libFuzzer reports it as a crash with the input, and the
/// replay test fails. Single-threaded callers only (fuzzers and the replay).
pub fn bounded<T>(bound: usize, f: impl FnOnce() -> T) -> T {
    struct Unbound;
    impl Drop for Unbound {
        fn drop(&mut self) {
            let _ = HEAP.set_limit(usize::MAX);
        }
    }
    let _reset = Unbound;
    HEAP.set_limit(HEAP.allocated().saturating_add(bound))
        .expect("a limit above what is allocated");
    f()
}

/// A target's check: panics (or aborts, past its heap bound) on a violation.
pub type Check = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("request", request),
    ("response", response),
    ("manifest", manifest),
    ("placement", placement),
    ("grant", grant),
    ("challenge", challenge),
    ("proof", proof),
    ("shard_reply", shard_reply),
    ("commitment", commitment),
    ("local_registry_entry", local_registry_entry),
    ("range_header", range_header),
    ("config", config),
    ("key_file", key_file),
    ("pin_header", pin_header),
];

/// A structured value from the input, or `None` when the input ran out.
fn take<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> Option<T> {
    T::arbitrary(u).ok()
}
