//! The systemd notification protocol: readiness, status and watchdog pings.
//!
//! A datagram of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name starting with `@`). Without the variable
//! (not under systemd) every call is a no-op.
//!
//! Both ends live here: [`Notifier`] is the daemon's; [`spawn_and_wait_ready`]
//! is the supervisor's, for `cairn devnet` and the tests, which wait for a
//! daemon's own `READY=1` instead of sleeping.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a daemon may take to report READY=1.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle on `$NOTIFY_SOCKET`, if set.
#[derive(Debug)]
pub struct Notifier {
    target: Option<String>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        Notifier {
            target: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// True when a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `READY=1\nSTATUS=serving`). Errors are logged, not
    /// returned: a daemon must not fail because its supervisor went away.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        if let Err(e) = send(target, state) {
            // The listener may be gone (a tool that only waited for READY=1).
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping");
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), target)?;
    }
    Ok(())
}

/// Half the watchdog interval systemd asked for (`$WATCHDOG_USEC`), if the
/// watchdog applies to this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Starts `program args...` detached, with `$NOTIFY_SOCKET` pointing at a
/// socket of ours, and waits for READY=1 (or the process's exit). Output goes
/// to `log`. Returns the pid.
pub fn spawn_and_wait_ready(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    socket_dir: &Path,
) -> Result<u32> {
    let sock_path = socket_dir.join(format!(".notify-{}.sock", rand::random::<u32>()));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path)
        .map_err(|e| Error::io(format!("bind {}", sock_path.display()), e))?;
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(format!("open {}", log.display()), e))?;
    let logf2 = logf.try_clone().map_err(|e| Error::io("log", e))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("CAIRN_LOG_FORMAT", "terminal")
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("start {}", program.display()), e))?;
    let pid = child.id();
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut buf = [0u8; 1024];
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            break Err(Error::Internal(format!(
                "{} exited with {status} before it was ready:\n{tail}",
                program.display()
            )));
        }
        sock.set_read_timeout(Some(Duration::from_millis(250))).ok();
        match sock.recv(&mut buf) {
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("READY=1") => break Ok(pid),
            _ => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break Err(Error::Internal(format!(
                "{} did not become ready within {READY_TIMEOUT:?}; see {}",
                program.display(),
                log.display()
            )));
        }
    };
    let _ = std::fs::remove_file(&sock_path);
    result
}

/// Waits (until `deadline`) for process `pid` to be gone and to have let go
/// of its data directory `dir`: a killed process shows as a zombie while its
/// other threads still exit, and its store lock is released with the last
/// of them, so a node started at once in the same directory could find it
/// "in use". Whether it was let go before the deadline.
pub fn wait_gone(pid: u32, dir: &Path, deadline: Instant) -> bool {
    let lock = std::fs::File::open(dir.join("store.lock")).ok();
    loop {
        let held = lock.as_ref().is_some_and(|l| l.try_lock().is_err());
        if !alive(pid) && !held {
            if let Some(l) = lock {
                let _ = l.unlock();
            }
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let listener = UnixDatagram::bind(&p).unwrap();
        let n = Notifier {
            target: Some(p.to_str().unwrap().to_string()),
        };
        n.ready("serving");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(msg.starts_with("READY=1\nSTATUS=serving"), "{msg}");
    }

    #[test]
    fn inactive_without_the_variable() {
        let n = Notifier { target: None };
        assert!(!n.is_active());
        n.ready("x");
    }
}
