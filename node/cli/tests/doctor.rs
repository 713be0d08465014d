//! `cairn doctor` finds what breaks home nodes, one test per finding, each
//! against the real condition: a data directory that cannot be written,
//! capacity above the disk's free space, a hotkey path that holds no key, a
//! chain endpoint nobody answers; and a healthy devnet miner, which a
//! validator dials back from a fresh socket.

use std::path::Path;
use std::process::Command;

use cairn_testkit::net::*;

/// `cairn --data-dir DIR [--api API] doctor --json` with `env`: its exit
/// code and report.
fn doctor(dir: &Path, api: Option<&str>, env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let mut args = vec!["--data-dir", dir.to_str().unwrap()];
    if let Some(a) = api {
        args.extend(["--api", a]);
    }
    args.extend(["doctor", "--json"]);
    let o = cairn_env(&args, env);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}): {}", text(&o)));
    (o.status.code().expect("exited"), v)
}

fn finding<'a>(report: &'a serde_json::Value, check: &str) -> &'a serde_json::Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {report:#}"))
}

fn assert_fails(report: &serde_json::Value, code: i32, check: &str, words: &[&str]) {
    assert_eq!(code, 1, "unhealthy is exit 1: {report:#}");
    assert_eq!(report["healthy"], false);
    let f = finding(report, check);
    assert_eq!(f["level"], "fail", "{f:#}");
    let text = format!("{} {}", f["found"], f["fix"]);
    for w in words {
        assert!(text.contains(w), "{check}: {w:?} not in {f:#}");
    }
    assert!(!f["fix"].as_str().unwrap().is_empty(), "no fix: {f:#}");
}

/// A read-only mount (as root, who can write anywhere else) or a directory
/// without write permission (as anyone else).
struct ReadOnly<'a>(&'a Path, bool);

impl<'a> ReadOnly<'a> {
    fn new(dir: &'a Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            let s = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                .arg(dir)
                .status()
                .unwrap();
            assert!(s.success(), "mount a read-only tmpfs on {}", dir.display());
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        ReadOnly(dir, root)
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
}

#[test]
fn doctor_finds_a_data_dir_it_cannot_write() {
    let net = TestNet::new();
    let node = net.init("m", "miner", &[]);
    let ro = net.dir.path().join("read-only");
    let _mount = ReadOnly::new(&ro);
    let (code, r) = doctor(
        &ro,
        None,
        &[("CAIRN_CHAIN_REGISTRY_DIR", node.registry.to_str().unwrap())],
    );
    assert_fails(&r, code, "data dir", &["not writable", "chown"]);
}

#[test]
fn doctor_finds_capacity_above_free_space() {
    let net = TestNet::new();
    let node = net.init("m", "miner", &[]);
    let (code, r) = doctor(&node.path, None, &[("CAIRN_CAPACITY", "1024TiB")]);
    assert_fails(
        &r,
        code,
        "capacity",
        &["1048576.0 GiB", "set capacity to at most"],
    );
    // the same node with a capacity the disk holds is fine on that count
    let (_, r) = doctor(&node.path, None, &[("CAIRN_CAPACITY", "1MiB")]);
    assert_eq!(finding(&r, "capacity")["level"], "ok", "{r:#}");
}

#[test]
fn doctor_finds_a_wrong_hotkey_path() {
    let net = TestNet::new();
    let node = net.init("m", "miner", &[]);
    let wallets = net.dir.path().join("no-wallets-here");
    let (code, r) = doctor(
        &node.path,
        None,
        &[("CAIRN_CHAIN_WALLET_PATH", wallets.to_str().unwrap())],
    );
    assert_fails(&r, code, "hotkey", &["no-wallets-here"]);
}

#[test]
fn doctor_finds_an_unreachable_chain_endpoint() {
    let net = TestNet::new();
    let node = net.init("m", "miner", &[]);
    // a port nobody listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, r) = doctor(
        &node.path,
        None,
        &[
            ("CAIRN_CHAIN_KIND", "subtensor"),
            ("CAIRN_CHAIN_ENDPOINT", &endpoint),
        ],
    );
    assert_fails(&r, code, "chain", &[&endpoint, "chain.endpoint"]);
}

#[test]
fn doctor_passes_a_healthy_miner_that_a_validator_dials_back() {
    let net = CliDevnet::with(2, 1, &[]);
    let dir = net.path().join("miner-0");
    let api = net.member("miner-0").api.unwrap().to_string();
    let (code, r) = doctor(&dir, Some(&api), &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["healthy"], true);
    for check in [
        "config",
        "data dir",
        "fsync",
        "node key",
        "hotkey",
        "daemon",
        "capacity",
        "chain",
        "commitment",
    ] {
        assert_eq!(finding(&r, check)["level"], "ok", "{check}: {r:#}");
    }
    let d = finding(&r, "dial-back");
    assert_eq!(d["level"], "ok", "{r:#}");
    assert!(
        d["found"]
            .as_str()
            .unwrap()
            .contains("dialed this node from outside"),
        "{d:#}"
    );
    // Asked again at once, the validator refuses: one dial-back a minute.
    let (_, r) = doctor(&dir, Some(&api), &[]);
    let d = finding(&r, "dial-back");
    assert_eq!(d["level"], "warn", "{r:#}");
    assert!(
        d["found"].as_str().unwrap().contains("one dial-back per"),
        "{d:#}"
    );
    // The human output names every check and the fix of a warning.
    let o = cairn(&["--data-dir", dir.to_str().unwrap(), "--api", &api, "doctor"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("dial-back") && stdout(&o).contains("fix:"),
        "{}",
        text(&o)
    );
}
