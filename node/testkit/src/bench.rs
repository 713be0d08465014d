//! Small helpers of the benchmarks that run real processes.

/// A number from the environment, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Current and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS the kernel keeps for `pid` (`clear_refs` 5) and
/// returns its RSS now, in KiB: the peak read after is the peak since.
pub fn reset_peak_rss_kib(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    rss_kib(pid).0
}

/// Clock ticks of fields `a` and `b` of `/proc/<pid>/stat`, in seconds.
fn stat_secs(pid: &str, a: usize, b: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields are counted from the state (field 3).
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(a) + ticks(b)) / 100.0
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_secs(pid: u32) -> f64 {
    stat_secs(&pid.to_string(), 14, 15)
}

/// CPU seconds (user + system) of this process.
pub fn own_cpu_secs() -> f64 {
    stat_secs("self", 14, 15)
}

/// CPU seconds (user + system) of this process's children that ended and
/// were waited for (a CLI run with `Command::output`, say).
pub fn children_cpu_secs() -> f64 {
    stat_secs("self", 16, 17)
}
