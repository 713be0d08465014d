//! Hotkeys written by the real `bittensor-wallet` Python package load in
//! cairn and give the same SS58 address that package prints.
//!
//! Needs a Python with `bittensor_wallet` (`.ci/setup.sh` installs one in
//! `~/.cache/cairn/venv`; `CAIRN_TEST_PYTHON` points elsewhere). Without it the
//! test says so and passes, unless `CAIRN_REQUIRE_EXTERNAL=1` (set by CI),
//! where a missing package is a failure.

use std::process::Command;

use cairn_node::identity::{Hotkey, wallet_hotkey_path};
use cairn_testkit::net::*;

#[test]
fn bittensor_wallet_hotkeys_load_with_the_same_ss58() {
    let Some(py) = python_with("bittensor_wallet") else {
        return;
    };
    let net = TestNet::new();
    let wallets = net.dir.path().join("wallets");
    let script = r#"
import sys
from bittensor_wallet import Wallet
for i in range(3):
    w = Wallet(name="cairn-test", hotkey=f"hk{i}", path=sys.argv[1])
    w.create_new_hotkey(overwrite=True, use_password=False, suppress=True)
    print(f"hk{i}", w.hotkey.ss58_address)
"#;
    let out = Command::new(&py)
        .args(["-c", script, wallets.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut checked = 0;
    for line in printed.lines() {
        let (name, ss58) = line.split_once(' ').unwrap();
        // through the library
        let path = wallet_hotkey_path(&wallets, "cairn-test", name);
        let hk = Hotkey::load(&path).unwrap();
        assert_eq!(hk.ss58(), ss58, "{name}");
        // and through the CLI, the way an operator configures it
        let node = net.dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&node).unwrap();
        let cfg = node.join("node.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = {:?}\n[chain]\nwallet_path = {:?}\nwallet = \"cairn-test\"\nhotkey = {:?}\n",
                node, wallets, name
            ),
        )
        .unwrap();
        let init = cairn(&["init", "--config", cfg.to_str().unwrap()]);
        assert!(init.status.success(), "{}", stderr(&init));
        let id = cairn(&["id", "--json", "--config", cfg.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&id.stdout).unwrap();
        assert_eq!(v["hotkey"], ss58);
        checked += 1;
    }
    assert_eq!(checked, 3);
}
