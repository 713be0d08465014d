//! Against the real subtensor runtime (`../shared/chain/start-localchain.sh`):
//! a subnet, a validator and four miners registered with burned
//! registration, addresses published as commitments, challenges over real
//! QUIC, weights set on chain, and after an epoch the chain's `Incentive`
//! ranks an honest miner above one that dropped its shards. The reference
//! Python client reads the same weights back.
//!
//! Skipped with a message when `../shared/chain` or node/npm are missing,
//! unless `CAIRN_REQUIRE_EXTERNAL=1` (CI), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_node::identity::{Hotkey, wallet_hotkey_path};
use cairn_node::registry::Subtensor;
use cairn_node::sdnotify::spawn_and_wait_ready;
use cairn_testkit::net::{adversary, count, metric, python_with};
use subxt::dynamic::Value;

fn shared_chain() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/chain/start-localchain.sh");
    let tools = ["node", "npm"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    (p.exists() && tools).then(|| p.canonicalize().unwrap())
}

struct Chain {
    pid: u32,
    url: String,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

fn start_chain(script: &Path) -> Chain {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("bash")
        .arg(script)
        .env("PORT", port.to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "chain did not start: {text}");
    // "chain up on ws://127.0.0.1:PORT (pid N)"
    let pid: u32 = text
        .rsplit("pid ")
        .next()
        .and_then(|s| s.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    Chain {
        pid,
        url: format!("ws://127.0.0.1:{port}"),
    }
}

fn bins() -> (PathBuf, PathBuf) {
    let v = PathBuf::from(env!("CARGO_BIN_EXE_cairn-validator"));
    let c = v.parent().unwrap().join("cairn");
    assert!(c.exists(), "build the workspace first");
    (c, v)
}

/// `cairn --data-dir DIR --api 127.0.0.1:API doctor --json`.
fn doctor(cairn: &Path, dir: &Path, api: u16) -> serde_json::Value {
    let o = Command::new(cairn)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--api",
            &format!("127.0.0.1:{api}"),
            "doctor",
            "--json",
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

async fn new_blocks(chain: &Subtensor, n: u32) {
    let _: serde_json::Value = chain
        .rpc()
        .request(
            "dev_newBlock",
            subxt::rpcs::rpc_params![serde_json::json!({ "count": n })],
        )
        .await
        .unwrap();
}

fn u(n: u64) -> Value {
    Value::u128(u128::from(n))
}

#[test]
fn subtensor_weights_rank_an_honest_miner_above_a_dropper() {
    let Some(script) = shared_chain() else {
        let msg = "../shared/chain or node/npm not available: the subtensor test cannot run here";
        if std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let chain_proc = start_chain(&script);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wallets = dir.path().join("wallets");
    let (cairn, cairn_validator) = bins();

    let t0 = Instant::now();
    rt.block_on(async {
        let chain = Subtensor::connect(&chain_proc.url, "legacy", 0).await.unwrap();
        let alice = Hotkey::from_uri("//Alice").unwrap();
        let bob = Hotkey::from_uri("//Bob").unwrap();
        let owner_hot = Hotkey::from_uri("//Alice//hot").unwrap();
        // The subnet, as the reference scenario builds it.
        chain.sudo("AdminUtils", "sudo_set_network_rate_limit", vec![("rate_limit", u(0))], alice.pair()).await.unwrap();
        chain
            .submit("SubtensorModule", "register_network", vec![Value::from_bytes(owner_hot.public())], alice.pair())
            .await
            .unwrap();
        let mut netuid = 0u16;
        for n in (1..64u16).rev() {
            let added = chain.storage_value("SubtensorModule", "NetworksAdded", vec![u(u64::from(n))]).await.unwrap();
            if added.is_some_and(|v| v.to_string().contains("true")) {
                netuid = n;
                break;
            }
        }
        assert!(netuid > 0, "new subnet not found");
        println!("subnet {netuid} ({:.0?})", t0.elapsed());
        let n = u(u64::from(netuid));
        chain.sudo("AdminUtils", "sudo_set_tempo", vec![("netuid", n.clone()), ("tempo", u(10))], alice.pair()).await.unwrap();
        chain
            .sudo("AdminUtils", "sudo_set_commit_reveal_weights_enabled", vec![("netuid", n.clone()), ("enabled", Value::bool(false))], alice.pair())
            .await
            .unwrap();
        chain
            .sudo("AdminUtils", "sudo_set_weights_set_rate_limit", vec![("netuid", n.clone()), ("weights_set_rate_limit", u(0))], alice.pair())
            .await
            .unwrap();
        let _ = chain.sudo("AdminUtils", "sudo_set_stake_threshold", vec![("min_stake", u(0))], alice.pair()).await;
        // Six registrations in a row: lift the per-interval and per-block limits.
        for (call, field) in [
            ("sudo_set_target_registrations_per_interval", "target_registrations_per_interval"),
            ("sudo_set_max_registrations_per_block", "max_registrations_per_block"),
        ] {
            if let Err(e) = chain.sudo("AdminUtils", call, vec![("netuid", n.clone()), (field, u(64))], alice.pair()).await {
                println!("{call}: {e}");
            }
        }
        let chain = Subtensor::connect(&chain_proc.url, "legacy", netuid).await.unwrap();

        // Hotkeys in bittensor-wallet files; registration paid by Bob's coldkey.
        // The impostor runs a node that commits the validator role without a
        // permit; the thief never runs a node, it only commits.
        let names = ["validator", "miner-0", "miner-1", "miner-2", "miner-3", "client", "impostor"];
        let mut hotkeys = Vec::new();
        for name in names.iter().chain(&["thief"]) {
            let hk = Hotkey::generate(&wallet_hotkey_path(&wallets, "cairn", name)).unwrap();
            chain.register(bob.pair(), &hk.public()).await.unwrap();
            hotkeys.push(hk);
        }
        new_blocks(&chain, 12).await;
        chain.submit("SubtensorModule", "start_call", vec![n.clone()], alice.pair()).await.unwrap();
        chain
            .submit(
                "SubtensorModule",
                "add_stake",
                vec![Value::from_bytes(hotkeys[0].public()), n.clone(), u(100_000_000_000)],
                bob.pair(),
            )
            .await
            .unwrap();
        new_blocks(&chain, 12).await;
        println!("registered and staked ({:.0?})", t0.elapsed());
        let neurons = chain.neurons().await.unwrap();
        let uid_of = |hk: &Hotkey| neurons.iter().find(|x| x.hotkey == hk.public()).unwrap().uid;
        assert!(neurons.iter().find(|x| x.hotkey == hotkeys[0].public()).unwrap().validator_permit, "validator has no permit after an epoch");

        // Nodes: configs pointing at the chain and the wallet.
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let role = match i {
                0 | 6 => "validator",
                5 => "client",
                _ => "miner",
            };
            let quic = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut cfg = format!(
                "data_dir = {d:?}\nrole = \"{role}\"\ncapacity = \"2GiB\"\n[network]\nlisten = \"127.0.0.1:{quic}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
                 [chain]\nkind = \"subtensor\"\nendpoint = \"{}\"\nnetuid = {netuid}\nbackend = \"legacy\"\nwallet_path = {wallets:?}\nwallet = \"cairn\"\nhotkey = \"{name}\"\n",
                chain_proc.url
            );
            if i == 0 {
                cfg.push_str("[validator]\nchallenges_per_sec = 20.0\nper_miner_per_sec = 4.0\ndeadline_secs = 3\nweights_interval_secs = 3\nrepair = false\n");
            }
            std::fs::write(d.join("node.toml"), cfg).unwrap();
            let o = Command::new(&cairn).args(["init", "--quiet", "--data-dir", d.to_str().unwrap()]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let program = if i == 0 { &cairn_validator } else { &cairn };
            let pid = spawn_and_wait_ready(
                program,
                &["run", "--data-dir", d.to_str().unwrap()],
                &[
                    ("CAIRN_STORAGE_SCRUB_RATE", "0"),
                    // seven nodes on one host, each its own failure domain
                    ("CAIRN_NETWORK_FAILURE_DOMAINS", "node"),
                ],
                &d.join("daemon.log"),
                dir.path(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            nodes.push((d, pid, api));
        }
        let _guard = Killer(nodes.iter().map(|n| n.1).collect());
        println!("seven nodes running ({:.0?})", t0.elapsed());
        chain.invalidate().await;
        let members = chain.members().await.unwrap();
        if members.len() != 7 {
            let c = chain
                .storage_value("Commitments", "CommitmentOf", vec![n.clone(), Value::from_bytes(hotkeys[1].public())])
                .await;
            println!("CommitmentOf miner-0: {c:?}");
            println!("miner-0 log: {}", std::fs::read_to_string(nodes[1].0.join("daemon.log")).unwrap_or_default());
        }
        assert_eq!(members.len(), 7, "every node published its address: {members:?}");
        let impostor = members.iter().find(|m| m.hotkey == hotkeys[6].ss58()).unwrap();
        assert!(!impostor.is_validator(), "a committed role is not a validator right: {impostor:?}");

        // What an operator sees of the chain: `cairn doctor` and the
        // dashboard's chain status of miner-0, read from this chain.
        let report = doctor(&cairn, &nodes[1].0, nodes[1].2);
        let finding = |r: &serde_json::Value, check: &str| -> serde_json::Value {
            r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["check"] == check)
                .cloned()
                .unwrap_or_else(|| panic!("no {check} finding: {r:#}"))
        };
        let miner0_uid = neurons.iter().find(|x| x.hotkey == hotkeys[1].public()).unwrap().uid;
        for (check, words) in [
            ("chain", vec![chain_proc.url.clone()]),
            ("registered", vec![hotkeys[1].ss58(), format!("uid {miner0_uid}")]),
            ("commitment", vec!["published for this node".to_string()]),
            ("clock", vec!["chain".to_string()]),
        ] {
            let f = finding(&report, check);
            assert!(f["level"] == "ok" || (check == "clock" && f["level"] == "warn"), "doctor {check}: {f:#}");
            for w in &words {
                assert!(f["found"].as_str().unwrap().contains(w.as_str()), "doctor {check}: {w:?} not in {f:#}");
            }
        }
        let info: cairn_api::NodeInfo =
            cairn_api::ApiClient::new(format!("127.0.0.1:{}", nodes[1].2).parse().unwrap()).info().unwrap();
        let status = info.chain.expect("chain status");
        assert_eq!(status.kind, "subtensor");
        assert!(status.registered && status.addresses_match, "{status:?}");
        assert!(status.last_block.is_some_and(|b| b > 0), "{status:?}");
        assert_eq!(status.chain_errors, 0, "{status:?}");
        // A hotkey in the wallet that was never registered: doctor fails it
        // and says how to register.
        let stranger = dir.path().join("stranger");
        std::fs::create_dir_all(&stranger).unwrap();
        Hotkey::generate(&wallet_hotkey_path(&wallets, "cairn", "stranger")).unwrap();
        let cfg = std::fs::read_to_string(nodes[1].0.join("node.toml"))
            .unwrap()
            .replace(&format!("data_dir = {:?}", nodes[1].0), &format!("data_dir = {stranger:?}"))
            .replace("hotkey = \"miner-0\"", "hotkey = \"stranger\"");
        std::fs::write(stranger.join("node.toml"), cfg).unwrap();
        let o = Command::new(&cairn).args(["init", "--quiet", "--data-dir", stranger.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report = doctor(&cairn, &stranger, nodes[1].2);
        let f = finding(&report, "registered");
        assert_eq!(f["level"], "fail", "{f:#}");
        assert!(f["found"].as_str().unwrap().contains("is not registered on subnet"), "{f:#}");
        assert!(f["fix"].as_str().unwrap().contains("cairn register"), "{f:#}");
        assert_eq!(report["healthy"], false);
        println!("doctor reads the chain ({:.0?})", t0.elapsed());

        // Pin through the client node: k = 2, m = 2 over the four miners.
        let data = dir.path().join("dataset");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("weights.bin"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(data.join("config.json"), b"{\"layers\": 12}").unwrap();
        let api = format!("127.0.0.1:{}", nodes[5].2);
        let client_dir = nodes[5].0.clone();
        let o = Command::new(&cairn)
            .args(["--api", &api, "--data-dir", client_dir.to_str().unwrap(), "pin", data.to_str().unwrap(), "--data-shards", "2", "--parity-shards", "2", "--segment-size", "1MiB"])
            .output()
            .unwrap();
        assert!(o.status.success(), "pin: {}", String::from_utf8_lossy(&o.stderr));
        let cid = String::from_utf8_lossy(&o.stdout).trim().to_string();

        println!("pinned ({:.0?})", t0.elapsed());
        // miner-3 drops every shard it holds.
        let dropper = &nodes[4].0;
        std::fs::remove_dir_all(dropper.join("shards")).unwrap();
        std::fs::create_dir_all(dropper.join("shards")).unwrap();

        // Wait for the validator to catch it and set weights that show it.
        let validator_uid = uid_of(&hotkeys[0]);
        let (honest_uid, dropper_uid) = (uid_of(&hotkeys[1]), uid_of(&hotkeys[4]));
        let deadline = Instant::now() + Duration::from_secs(240);
        let weights = loop {
            let w = chain.weights_of(validator_uid).await.unwrap();
            let get = |uid: u16| w.iter().find(|(d, _)| *d == uid).map(|(_, v)| *v).unwrap_or(0);
            if get(honest_uid) > 0 && get(dropper_uid) == 0 && !w.is_empty() {
                break w;
            }
            assert!(Instant::now() < deadline, "weights never separated the miners: {w:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        println!("weights set on chain by uid {validator_uid}: {weights:?} ({:.0?})", t0.elapsed());

        // An epoch later the chain's incentive follows.
        new_blocks(&chain, 12).await;
        let incentive = chain.incentive().await.unwrap();
        println!("Incentive by uid: {incentive:?}");
        let inc = |uid: u16| incentive.get(usize::from(uid)).copied().unwrap_or(0);
        assert!(inc(honest_uid) > inc(dropper_uid), "honest {} vs dropper {}", inc(honest_uid), inc(dropper_uid));

        // The reference client reads the same weights.
        if let Some(py) = python_with("substrateinterface") {
            let script = format!(
                "from substrateinterface import SubstrateInterface\n\
                 s = SubstrateInterface(url='{}')\n\
                 print(sorted([tuple(x) for x in s.query('SubtensorModule','Weights',[{netuid},{validator_uid}]).value]))\n",
                chain_proc.url
            );
            let o = Command::new(py).args(["-c", &script]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let theirs = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let mut ours: Vec<(u16, u16)> = chain.weights_of(validator_uid).await.unwrap();
            ours.sort();
            assert_eq!(theirs, format!("{ours:?}"), "the Python client reads other weights");
            println!("substrate-interface reads the same weights: {theirs}");
        }

        // A hotkey without a permit that commits the validator role gets no
        // validator right from any miner.
        let member_of = |hk: &Hotkey| members.iter().find(|m| m.hotkey == hk.ss58()).unwrap().clone();
        let impostor_dir = &nodes[6].0;
        let client_id = member_of(&hotkeys[5]).node_id.to_string();
        let mut holder = None;
        for hk in &hotkeys[1..5] {
            let m = member_of(hk);
            if let Ok(r) = adversary(impostor_dir, &m, &["placement", &cid])
                && count(&r, "ok") == 1
            {
                holder = Some(m);
                break;
            }
        }
        let holder = holder.expect("a miner holds the placement");
        let ls = Command::new(&cairn)
            .args(["shard", "ls", "--peer", &holder.node_id.to_string(), "--data-dir", impostor_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
        let first = String::from_utf8_lossy(&ls.stdout).lines().next().expect("the holder holds shards").to_string();
        let mut fields = first.split_whitespace();
        let (shard, len) = (fields.next().unwrap().to_string(), fields.next().unwrap().to_string());
        for (attack, code) in [
            (vec!["challenge", shard.as_str(), len.as_str()], "peer-is-not-a-validator"),
            (vec!["delete-shard", shard.as_str(), client_id.as_str()], "peer-is-not-a-validator"),
            (vec!["put-placement", cid.as_str(), "18446744073709551615", "self"], "forbidden"),
            (vec!["delete-manifest", cid.as_str()], "forbidden"),
        ] {
            let r = adversary(impostor_dir, &holder, &attack).unwrap();
            assert_eq!(count(&r, code), 1, "{attack:?}: {r}");
        }
        println!("an impostor validator is refused ({:.0?})", t0.elapsed());

        // A hotkey that commits another miner's node id (its commitment
        // copied byte for byte) is no member and earns nothing; the miner
        // keeps its weight.
        let thief = &hotkeys[7];
        let victim = member_of(&hotkeys[1]);
        let victim_key = cairn_node::identity::load_node_key(&nodes[1].0).unwrap();
        let copied = cairn_node::registry::subtensor::commitment_fields(
            &victim_key,
            &hotkeys[1].public(),
            netuid,
            cairn_node::Role::Miner,
            &victim.addrs,
            None,
        );
        let data: Vec<Value> = copied
            .into_iter()
            .map(|f| Value::unnamed_variant(format!("Raw{}", f.len()), [Value::from_bytes(f)]))
            .collect();
        let info = Value::named_composite([("fields", Value::unnamed_composite(data))]);
        chain.submit("Commitments", "set_commitment", vec![n.clone(), info], thief.pair()).await.unwrap();
        let committed_at = chain.block_number().await.unwrap();
        let stolen_at = Instant::now();
        chain.invalidate().await;
        let now_members = chain.members().await.unwrap();
        assert!(now_members.iter().all(|m| m.hotkey != thief.ss58()), "the thief became a member");
        assert!(now_members.iter().any(|m| m.node_id == victim.node_id && m.hotkey == hotkeys[1].ss58()));
        // The validator re-reads the metagraph (30 s) and sets weights after it.
        let neurons = chain.neurons().await.unwrap();
        let thief_uid = neurons.iter().find(|x| x.hotkey == thief.public()).unwrap().uid;
        let deadline = Instant::now() + Duration::from_secs(120);
        let w = loop {
            let last = chain.last_update().await.unwrap();
            let updated = last.get(usize::from(validator_uid)).copied().unwrap_or(0);
            if stolen_at.elapsed() > Duration::from_secs(35) && updated > committed_at + 1 {
                break chain.weights_of(validator_uid).await.unwrap();
            }
            assert!(Instant::now() < deadline, "no weights set after the theft");
            new_blocks(&chain, 1).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let get = |uid: u16| w.iter().find(|(d, _)| *d == uid).map(|(_, v)| *v).unwrap_or(0);
        assert_eq!(get(thief_uid), 0, "the thief earns weight: {w:?}");
        assert!(get(honest_uid) > 0, "the robbed miner lost its weight: {w:?}");
        println!("a copied commitment earns nothing ({:.0?})", t0.elapsed());

        // 200 connections from fresh keys make a miner read the metagraph
        // at most once per 5 s, and members are served meanwhile.
        let miner_api = format!("127.0.0.1:{}", nodes[1].2);
        let reads = || metric(&miner_api, "cairn_chain_metagraph_reads_total").unwrap_or(0.0);
        let before = reads();
        let flood_started = Instant::now();
        let flood = std::thread::spawn({
            let (dir, m) = (impostor_dir.clone(), victim.clone());
            move || adversary(&dir, &m, &["fresh-identities", "200"])
        });
        let o = Command::new(&cairn)
            .args(["--api", &api, "--data-dir", client_dir.to_str().unwrap(), "status", &cid])
            .output()
            .unwrap();
        assert!(o.status.success(), "a member's request failed during the flood: {}", String::from_utf8_lossy(&o.stderr));
        let r = flood.join().unwrap().unwrap();
        let spent = flood_started.elapsed().as_secs_f64();
        assert_eq!(count(&r, "peer-not-registered"), 200, "{r}");
        let extra = reads() - before;
        println!("200 unknown peers in {spent:.1} s caused {extra} metagraph reads");
        assert!(extra <= 2.0 + spent / 5.0, "{extra} metagraph reads in {spent:.1} s");

        // With the chain gone, members keep working on the last metagraph.
        let _ = Command::new("kill").arg(chain_proc.pid.to_string()).status();
        tokio::time::sleep(Duration::from_secs(32)).await; // past the metagraph's 30 s life: the outage is the point
        let out = dir.path().join("during-outage");
        let o = Command::new(&cairn)
            .args(["--api", &api, "--data-dir", client_dir.to_str().unwrap(), "get", &cid, "-o", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "get during a chain outage: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(out.join("weights.bin")).unwrap(), vec![7u8; 3 << 20]);
        println!("served through a chain outage ({:.0?})", t0.elapsed());
    });
}

struct Killer(Vec<u32>);
impl Drop for Killer {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("kill").arg(p.to_string()).status();
        }
    }
}
