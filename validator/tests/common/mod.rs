//! Shared by the validator's tests and benchmarks: the `cairn` binaries
//! beside `cairn-validator`, a devnet that goes down however the test ends,
//! and the validator's scoreboard read through its API.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cairn_node::api_client::ApiClient;
use cairn_node::devnet::Devnet;
use cairn_validator::service::ValidatorReport;

pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn-validator"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn cairn_bin() -> PathBuf {
    let p = bin_dir().join("cairn");
    assert!(
        p.exists(),
        "{} missing: build it (`cargo build --release -p cairn-node --bin cairn`; `cargo test --workspace` does)",
        p.display()
    );
    p
}

pub fn cheater_bin() -> PathBuf {
    let p = bin_dir().join("examples").join("cheater");
    assert!(
        p.exists(),
        "{} missing: cargo test builds examples",
        p.display()
    );
    p
}

pub fn cairn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(cairn_bin());
    c.args(args).env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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

pub struct Net {
    pub dir: tempfile::TempDir,
    pub devnet: Devnet,
}

impl Net {
    pub fn new() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let devnet = Devnet::new(dir.path().join("net"), cairn_bin());
        Net { dir, devnet }
    }
    /// The last lines of node `name`'s log that mention `needle`.
    pub fn log_lines(&self, name: &str, needle: &str) -> String {
        let log = std::fs::read_to_string(self.devnet.dir.join(name).join("daemon.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
    pub fn net(&self) -> String {
        self.devnet.dir.to_string_lossy().into_owned()
    }
    pub fn api(&self) -> String {
        self.devnet.api().unwrap().to_string()
    }
    /// The validator's scoreboard, through its API.
    pub fn report(&self) -> ValidatorReport {
        let dir = self.devnet.dir.join("validator-0");
        let key = cairn_node::identity::load_node_key(&dir).unwrap();
        let entry = std::fs::read_to_string(
            self.devnet
                .registry()
                .join(format!("{}.json", key.public())),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&entry).unwrap();
        let api: std::net::SocketAddr = v["member"]["api"].as_str().unwrap().parse().unwrap();
        let r = ApiClient::new(api).get_json("/api/scores").unwrap();
        serde_json::from_value(r).unwrap()
    }
    /// Polls the scoreboard until `done` holds (bounded; the validator's own
    /// progress is the event).
    pub fn wait_report(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&ValidatorReport) -> bool,
    ) -> ValidatorReport {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.report();
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {r:#?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.devnet.down();
    }
}

pub fn node_id_of(dir: &Path) -> String {
    cairn_node::identity::load_node_key(dir)
        .unwrap()
        .public()
        .to_string()
}
