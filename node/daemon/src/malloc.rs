//! glibc's malloc settings, shared by both binaries (`cairn`,
//! `cairn-validator`): the workspace's one `unsafe` block. Call [`tune`]
//! first thing in `main`, before any other thread exists.

/// glibc's malloc, told not to hoard. A node streaming segments allocates
/// and frees shard-sized buffers on several threads; by default glibc keeps
/// up to 8 arenas per core and raises its mmap threshold to the largest
/// buffer freed, so freed segments stayed resident (a gateway reading a
/// 1 GiB dataset grew to about twice its cache budget). One arena keeps
/// every freed buffer reusable by every thread; a fixed 4 MiB threshold
/// returns segment-sized buffers to the kernel on free while shard-sized
/// ones are reused without page faults (128 KiB cost pin and get 1.5-2x
/// the CPU in page faults: node bench, CPU s per GiB). Up to 16 MiB freed at
/// the top of the heap stays there instead of going back to the kernel
/// at once (the default trims past 128 KiB): a gateway serving its disk
/// tier freed a shard-sized buffer at the top, the heap shrank and the
/// next read's buffer was faulted in and zeroed again, 18,000 page faults
/// and a tenth of its CPU per 512 MiB read (`perf stat -e page-faults`;
/// none with it). A validator without the first two settings plateaued at
/// 162-176 MiB after its first repairs, with them at 105-118 MiB (the soak,
/// docs/ROBUSTNESS.md, before the trim threshold, which may keep up to 16
/// MiB more).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only sets allocator parameters; called first thing in
    // main, before any other thread exists, with valid options and values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
