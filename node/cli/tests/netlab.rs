//! Home networks in the network lab (`tests/netlab/lab.sh`): real processes
//! in network namespaces behind nftables NATs, iroh's own relay server run
//! locally, and home links shaped by a userspace chaos layer.
//!
//! One test, in phases, because the lab is one set of namespaces:
//! 1. clean links: the NATed miners publish the relay and the address the
//!    relay saw, receive shards of a pin from a gateway behind another NAT,
//!    answer the validator's challenges and serve `get`; the path each one
//!    takes is printed and asserted (the endpoint-independent NAT is hole
//!    punched, the symmetric one stays relayed);
//! 2. an idle connection outlives the routers' UDP conntrack timeout;
//! 3. bad links (5% loss, 100 +/- 30 ms, 2 Mbit/s up): a second dataset
//!    round-trips and honest home miners pass challenges at the default
//!    deadline;
//! 4. a home miner is killed and the validator repairs around it.
//!
//! Needs root (CI is), nftables, openssl and iroh's relay server
//! (`bash .ci/setup.sh` installs them). Without them the test fails when
//! `CAIRN_REQUIRE_EXTERNAL=1` (CI) and says what is missing otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cairn_testkit::bytes;
use cairn_testkit::net::{NodeDir, TestNet, cairn_bin, text};

const RELAY: &str = "http://203.0.113.3:3340";
/// The routers forget idle UDP flows after this many seconds.
const CONNTRACK_UDP_S: u64 = 8;
const LAB_STATE: &str = "/run/cairn-netlab";

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/netlab/lab.sh")
}

fn relay_bin() -> PathBuf {
    match std::env::var_os("IROH_RELAY") {
        Some(p) => p.into(),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/cairn/relay/bin/iroh-relay"),
    }
}

/// The lab, removed on drop whatever happened.
struct Lab;

impl Lab {
    fn up(public_miners: usize) -> Lab {
        let o = lab(&["up", &public_miners.to_string()]);
        assert!(o.status.success(), "lab.sh up: {}", text(&o));
        Lab
    }

    /// (Re)starts home `n`'s link program with these chaos settings.
    fn link(&self, n: u32, args: &[&str]) {
        let mut a = vec!["link".to_string(), n.to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = lab(&a);
        assert!(o.status.success(), "lab.sh link: {}", text(&o));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = lab(&["down"]);
        if !o.status.success() {
            eprintln!("lab.sh down: {}", text(&o));
        }
    }
}

fn lab(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(lab_script())
        .args(args)
        .env("IROH_RELAY", relay_bin())
        .env("CONNTRACK_UDP_S", CONNTRACK_UDP_S.to_string())
        .env("CAIRN_NETLAB_STATE", LAB_STATE)
        .output()
        .expect("run lab.sh")
}

/// What the lab needs that may be missing; empty when it can run.
fn missing() -> Vec<String> {
    let mut m = Vec::new();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if !root {
        m.push("root (network namespaces)".to_string());
    }
    for (tool, pkg) in [
        ("nft", "nftables"),
        ("ip", "iproute2"),
        ("openssl", "openssl"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            m.push(format!("{tool} (Debian package {pkg})"));
        }
    }
    if !relay_bin().exists() {
        m.push(format!(
            "iroh's relay server at {} (cargo install iroh-relay --version 1.4.1 --features server --locked --root ~/.cache/cairn/relay)",
            relay_bin().display()
        ));
    }
    m
}

/// A node of the lab: its namespace, data dir and how to run it.
struct LabNode {
    ns: &'static str,
    dir: NodeDir,
    program: PathBuf,
    child: Option<std::process::Child>,
    /// Settings of this node only, over [`node_env`].
    env: Vec<(String, String)>,
}

fn validator_bin() -> PathBuf {
    let p = cairn_bin().with_file_name("cairn-validator");
    assert!(
        p.exists(),
        "{} missing: cargo build --release --workspace",
        p.display()
    );
    p
}

/// Environment of every lab node: the lab's relay, trusted through the lab's CA.
fn node_env() -> Vec<(String, String)> {
    vec![
        ("CAIRN_NETWORK_RELAY".into(), RELAY.into()),
        (
            "CAIRN_NETWORK_RELAY_CA".into(),
            format!("{LAB_STATE}/ca.pem"),
        ),
        ("CAIRN_NETWORK_FAILURE_DOMAINS".into(), "node".into()),
        ("CAIRN_LOG_FORMAT".into(), "terminal".into()),
        ("CAIRN_LOG_LEVEL".into(), "info".into()),
        // The validator: challenge often so a short test sees many.
        ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC".into(), "20".into()),
        ("CAIRN_VALIDATOR_PER_MINER_PER_SEC".into(), "2".into()),
        ("CAIRN_VALIDATOR_GRACE_SECS".into(), "5".into()),
        // A challenge missed is asked again after 1 s, not a minute.
        ("CAIRN_VALIDATOR_REASK_SECS".into(), "1".into()),
        ("CAIRN_VALIDATOR_REFRESH_SECS".into(), "2".into()),
        ("CAIRN_VALIDATOR_WEIGHTS_INTERVAL_SECS".into(), "5".into()),
    ]
}

impl LabNode {
    fn init(net: &TestNet, ns: &'static str, name: &str, role: &str, listen: &str) -> LabNode {
        Self::init_with_api(net, ns, name, role, listen, "127.0.0.1:8080")
    }

    fn init_with_api(
        net: &TestNet,
        ns: &'static str,
        name: &str,
        role: &str,
        listen: &str,
        api: &str,
    ) -> LabNode {
        let path = net.dir.path().join(name);
        let o = Command::new(cairn_bin())
            .args(["init", "--data-dir", path.to_str().unwrap(), "--role", role])
            .args(["--registry", net.registry.to_str().unwrap()])
            .args(["--listen", listen, "--api", api, "--capacity", "1GiB"])
            .output()
            .unwrap();
        assert!(o.status.success(), "init {name}: {}", text(&o));
        let id = Command::new(cairn_bin())
            .args(["id", "--json", "--data-dir", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(id.status.success(), "{}", text(&id));
        let v: serde_json::Value = serde_json::from_slice(&id.stdout).unwrap();
        let dir = NodeDir {
            node_id: v["node_id"].as_str().unwrap().parse().unwrap(),
            path,
            registry: net.registry.clone(),
        };
        let program = if role == "validator" {
            validator_bin()
        } else {
            cairn_bin()
        };
        LabNode {
            ns,
            dir,
            program,
            child: None,
            env: Vec::new(),
        }
    }

    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns]).arg(program);
        for (k, v) in node_env().into_iter().chain(self.env.iter().cloned()) {
            c.env(k, v);
        }
        c
    }

    /// Starts the node and waits for READY=1 (the systemd protocol).
    fn start(&mut self) {
        let sock_path = self.dir.path.join("notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path.join("daemon.log"))
            .unwrap();
        let mut child = self
            .cmd(&self.program.clone())
            .args(["run", "--data-dir", self.dir.path.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a lab node");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("{} exited with {s}; log:\n{}", self.ns, self.log());
            }
            if let Ok(n) = sock.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready; log:\n{}",
                self.ns,
                self.log()
            );
        }
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("daemon.log")).unwrap_or_default()
    }

    /// `cairn <args> --data-dir <this node>` inside its namespace.
    fn cli(&self, args: &[&str]) -> Output {
        self.cmd(&cairn_bin())
            .args(args)
            .args(["--data-dir", self.dir.path.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// `cairn id --json`: the network facts of the running node.
    fn id(&self) -> serde_json::Value {
        let o = self.cli(&["id", "--json"]);
        assert!(o.status.success(), "cairn id: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn node_id(&self) -> String {
        self.dir.node_id.to_string()
    }

    /// The path this node's open connection to `peer` takes now.
    fn path_to(&self, peer: &str) -> Option<(String, String, f64)> {
        self.peer(peer).map(|p| {
            (
                p["path"].as_str().unwrap_or("").to_string(),
                p["addr"].as_str().unwrap_or("").to_string(),
                p["rtt_ms"].as_f64().unwrap_or(0.0),
            )
        })
    }

    /// This node's open connection to `peer`, as `cairn id --json` shows it.
    fn peer(&self, peer: &str) -> Option<serde_json::Value> {
        let id = self.id();
        id["network"]["peers"]
            .as_array()?
            .iter()
            .find(|p| p["node_id"] == peer)
            .cloned()
    }

    /// Connections this node dialed to `peer` since it started.
    fn dials_to(&self, peer: &str) -> u64 {
        self.peer(peer)
            .and_then(|p| p["dials"].as_u64())
            .unwrap_or(0)
    }

    fn scores(&self) -> cairn_api::ValidatorReport {
        let o = self
            .cmd(&validator_bin())
            .args([
                "status",
                "--json",
                "--data-dir",
                self.dir.path.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "cairn-validator status: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns Some (the nodes' own progress is the event),
/// failing with `what` after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One miner's line of the validator's scoreboard.
fn miner_report<'a>(r: &'a cairn_api::ValidatorReport, id: &str) -> &'a cairn_api::MinerReport {
    r.miners
        .iter()
        .find(|m| m.node_id == id)
        .expect("the validator scores this miner")
}

/// Pins `dir` through the gateway and returns the dataset id.
fn pin(gw: &LabNode, dir: &Path, segment: &str) -> String {
    let o = gw.cli(&["pin", dir.to_str().unwrap(), "--segment-size", segment]);
    assert!(
        o.status.success(),
        "pin: {}\ngateway log:\n{}",
        text(&o),
        gw.log()
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Gets `cid` through the gateway into `out` and checks it against `dir`.
fn get_and_check(gw: &LabNode, cid: &str, out: &Path, files: &[(&str, &[u8])]) {
    let _ = std::fs::remove_dir_all(out);
    let o = gw.cli(&["get", cid, "-o", out.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "get: {}\ngateway log:\n{}",
        text(&o),
        gw.log()
    );
    for (name, want) in files {
        let got = std::fs::read(out.join(name)).unwrap();
        assert!(got == *want, "{name}: the bytes that came back differ");
    }
}

#[test]
fn home_miners_behind_nats_and_bad_links_store_serve_prove_and_are_repaired() {
    let missing = missing();
    if !missing.is_empty() {
        let why = format!("the network lab needs: {}", missing.join("; "));
        assert!(
            std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let started = Instant::now();
    let lab = Lab::up(5);
    let net = TestNet::new();
    let mut miners: Vec<LabNode> = (1..=4)
        .map(|i| {
            let ns: &'static str = ["cl-m1", "cl-m2", "cl-m3", "cl-m4"][i - 1];
            LabNode::init(
                &net,
                ns,
                &format!("m{i}"),
                "miner",
                &format!("203.0.113.{}:7440", 10 + i),
            )
        })
        .collect();
    let mut h1 = LabNode::init(&net, "cl-h1", "h1", "miner", "192.168.1.2:7440");
    let mut h2 = LabNode::init(&net, "cl-h2", "h2", "miner", "192.168.2.2:7440");
    let mut spare = LabNode::init(&net, "cl-m5", "m5", "miner", "203.0.113.15:7440");
    let mut val = LabNode::init(&net, "cl-val", "val", "validator", "203.0.113.10:7440");
    let mut gw = LabNode::init(&net, "cl-gw", "gw", "client", "10.0.0.2:7440");
    // Every challenge in the validator's log, for the failures below.
    val.env.push((
        "CAIRN_LOG_LEVEL".into(),
        "info,cairn_validator=debug".into(),
    ));
    for m in miners.iter_mut() {
        m.start();
    }
    h1.start();
    h2.start();
    val.start();
    gw.start();
    println!(
        "lab up, 9 nodes ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What each node knows about itself (`cairn id --json`).
    let facts = |n: &LabNode| {
        let v = n.id();
        let net = &v["network"];
        println!(
            "  {:<6} seen as {:<22} behind NAT {:<5} relay {} ({}) -> {}",
            n.ns,
            net["observed"].as_str().unwrap_or("?"),
            net["behind_nat"],
            net["relay"].as_str().unwrap_or("none"),
            if net["relay_connected"] == true {
                "connected"
            } else {
                "not connected"
            },
            net["reachability"].as_str().unwrap_or("?"),
        );
        v
    };
    println!("network facts:");
    let f1 = facts(&h1);
    let f2 = facts(&h2);
    let fm = facts(&miners[0]);
    let fg = facts(&gw);
    assert_eq!(f1["network"]["reachability"], "relayed", "{f1}");
    assert_eq!(f1["network"]["behind_nat"], true, "{f1}");
    // Masquerade keeps the port when it can: the EIM home is seen on 7440.
    assert_eq!(f1["network"]["observed"], "203.0.113.21:7440", "{f1}");
    assert!(
        f1["network"]["advice"]
            .as_str()
            .unwrap()
            .contains("forward UDP 7440"),
        "{f1}"
    );
    assert_eq!(f2["network"]["reachability"], "relayed", "{f2}");
    assert!(
        f2["network"]["observed"]
            .as_str()
            .unwrap_or("")
            .starts_with("203.0.113.22:"),
        "{f2}"
    );
    assert_eq!(fm["network"]["reachability"], "public", "{fm}");
    assert_eq!(fm["network"]["observed"], "203.0.113.11:7440", "{fm}");
    assert_eq!(fg["network"]["behind_nat"], true, "{fg}");
    // The validator dials each node back from a fresh socket, without the
    // relay (`cairn doctor`): the public miner answers; the homes do not,
    // since their routers drop packets nobody inside asked for, and their
    // doctor says so, with the fix, while they stay reachable by relay.
    let dial_back = |n: &LabNode| {
        let o = n.cli(&["doctor", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("doctor on {}: {e}: {}", n.ns, text(&o)));
        let f = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "dial-back")
            .unwrap_or_else(|| panic!("no dial-back finding on {}: {v:#}", n.ns))
            .clone();
        println!("  {:<6} dial-back {}: {}", n.ns, f["level"], f["found"]);
        f
    };
    let public = dial_back(&miners[0]);
    assert_eq!(public["level"], "ok", "{public:#}");
    for h in [&h1, &h2] {
        let f = dial_back(h);
        assert_eq!(f["level"], "warn", "{f:#}");
        let found = f["found"].as_str().unwrap();
        assert!(
            found.contains("could not dial this node directly")
                && found.contains("through the relay"),
            "{f:#}"
        );
        assert!(f["fix"].as_str().unwrap().contains("forward"), "{f:#}");
    }
    // The home miners published the relay and the address it saw.
    for (h, seen) in [(&h1, &f1), (&h2, &f2)] {
        let published = seen["network"]["published"].as_array().unwrap();
        assert!(
            published.contains(&seen["network"]["observed"]),
            "{}: {seen}",
            h.ns
        );
    }

    // A member that names a relay of its own choosing is dialed without it:
    // here a home node whose relay is a listener in the lab that notes who
    // connects. Behind its NAT it is reachable only through that relay, so
    // a dialer that took the relay would connect to the listener.
    let mut watch = Command::new("ip")
        .args(["netns", "exec", "cl-relay", "python3", "-c"])
        .arg(TCP_WATCH)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch_out = std::io::BufReader::new(watch.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut watch_out, &mut line).unwrap();
    assert_eq!(line.trim(), "listening", "the relay watch did not start");
    let hostile_relay = "http://203.0.113.3:9999/";
    let mut evil = LabNode::init_with_api(
        &net,
        "cl-h1",
        "evil",
        "client",
        "192.168.1.2:7441",
        "127.0.0.1:8081",
    );
    evil.env
        .push(("CAIRN_NETWORK_RELAY".into(), hostile_relay.into()));
    evil.start();
    let entry = cairn_node::registry::LocalRegistry::open(&net.registry)
        .unwrap()
        .accepting_relay(Some(hostile_relay.into()))
        .read(&evil.dir.node_id)
        .unwrap()
        .expect("the hostile member is registered");
    assert_eq!(entry.relay.as_deref(), Some(hostile_relay), "{entry:?}");
    // Dialed from a node of the office that is not running: the gateway's
    // own key would bind a second endpoint with its id at the relay and
    // displace the running gateway there.
    let dialer = LabNode::init(&net, "cl-gw", "dialer", "client", "10.0.0.2:7442");
    let o = dialer.cli(&["shard", "info", "--peer", &evil.node_id()]);
    println!(
        "dialing a member whose entry names a relay of its own: {}",
        if o.status.success() {
            "reached".to_string()
        } else {
            format!("not reached ({})", text(&o).trim())
        }
    );
    evil.kill9();
    for gone in [&evil.dir.node_id, &dialer.dir.node_id] {
        cairn_node::registry::LocalRegistry::open(&net.registry)
            .unwrap()
            .remove(gone)
            .unwrap();
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let mut seen = String::new();
    std::io::Read::read_to_string(&mut watch_out, &mut seen).unwrap();
    let from: Vec<&str> = seen.lines().collect();
    println!(
        "  connections to the hostile relay came from {from:?} (the member itself is 203.0.113.21)"
    );
    assert!(
        from.iter().all(|a| *a == "203.0.113.21"),
        "a dialer connected to the relay a member named: {from:?}"
    );

    // Phase 1: a pin from the office reaches the homes.
    let data = net.dir.path().join("data1");
    std::fs::create_dir_all(&data).unwrap();
    let a = bytes(3 << 20, 1);
    let b = bytes(777_777, 2);
    std::fs::write(data.join("a.bin"), &a).unwrap();
    std::fs::write(data.join("b.bin"), &b).unwrap();
    let t = Instant::now();
    let cid1 = pin(&gw, &data, "1MiB");
    println!(
        "pinned 3.7 MB (k=4, m=2: every miner holds a shard of every segment) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The gateway's paths: public miners direct; the EIM home hole punched;
    // the symmetric home relayed (its router gives every destination a new
    // port, and the office's NAT only lets in whom it sent to).
    let (p1, a1, r1) = wait_for(
        "the gateway's path to the EIM home to go direct",
        Duration::from_secs(30),
        || gw.path_to(&h1.node_id()).filter(|p| p.0 == "direct"),
    );
    let (pm, _, _) = gw
        .path_to(&miners[0].node_id())
        .expect("a connection to m1");
    get_and_check(
        &gw,
        &cid1,
        &net.dir.path().join("out1"),
        &[("a.bin", &a), ("b.bin", &b)],
    );
    // With two public miners down, only four holders are left of each
    // segment's six: both homes must serve.
    miners[0].kill9();
    miners[1].kill9();
    get_and_check(
        &gw,
        &cid1,
        &net.dir.path().join("out1k"),
        &[("a.bin", &a), ("b.bin", &b)],
    );
    println!("got it back with m1 and m2 stopped: both homes served their shards");
    miners[0].start();
    miners[1].start();
    let (p2, a2, r2) = gw
        .path_to(&h2.node_id())
        .expect("a connection to the symmetric home");
    println!("paths from the gateway (office behind an endpoint-independent NAT):");
    println!("  public miner m1:              {pm}");
    println!("  home 1 (endpoint-independent): {p1} via {a1}, rtt {r1:.1} ms");
    println!("  home 2 (symmetric):            {p2} via {a2}, rtt {r2:.1} ms");
    assert_eq!(pm, "direct");
    assert_eq!(p1, "direct", "hole punching through two EIM NATs");
    assert!(a1.starts_with("203.0.113.21:"), "{a1}");
    assert_eq!(
        p2, "relay",
        "a symmetric NAT cannot be hole punched from behind another NAT"
    );

    // The validator (public) challenges both homes; they pass.
    let home_ids = [h1.node_id(), h2.node_id()];
    let report = wait_for(
        "challenges of both home miners to pass",
        Duration::from_secs(90),
        || {
            let r = val.scores();
            home_ids
                .iter()
                .all(|id| r.miners.iter().any(|m| &m.node_id == id && m.passes >= 2))
                .then_some(r)
        },
    );
    println!("paths from the validator (public):");
    for h in [&h1, &h2] {
        let (p, a, rtt) = val
            .path_to(&h.node_id())
            .expect("the validator is connected");
        let m = miner_report(&report, &h.node_id());
        println!(
            "  {}: {p} via {a}, rtt {rtt:.1} ms; {} passes, {} failures, last answer {:.0} ms (deadline {} ms)",
            h.ns,
            m.passes,
            m.failures,
            m.last_latency_ms.unwrap_or(0.0),
            m.deadline_ms
        );
        assert_eq!(m.failures + m.timeouts, 0, "{m:?}");
    }

    // Phase 2: idle for three conntrack timeouts; the direct path stays.
    // Beside it, a plain UDP flow from the symmetric home, idle as long,
    // shows the routers really forget: its second datagram arrives from a
    // new port.
    let dialed = gw.dials_to(&h1.node_id());
    let idle = Duration::from_secs(3 * CONNTRACK_UDP_S);
    let probe_server = Command::new("ip")
        .args(["netns", "exec", "cl-val", "python3", "-c"])
        .arg(UDP_ECHO)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let probe_client = Command::new("ip")
        .args(["netns", "exec", "cl-h2", "python3", "-c"])
        .arg(UDP_IDLE_SENDER)
        .arg(idle.as_secs().to_string())
        .spawn()
        .unwrap();
    println!("idle for {idle:?} (the routers forget UDP flows after {CONNTRACK_UDP_S} s)...");
    std::thread::sleep(idle);
    get_and_check(&gw, &cid1, &net.dir.path().join("out1b"), &[("a.bin", &a)]);
    let (p1b, a1b, _) = gw.path_to(&h1.node_id()).expect("still connected");
    let dialed_after = gw.dials_to(&h1.node_id());
    println!(
        "  after: home 1 {p1b} via {a1b}; connections dialed to it {dialed} -> {dialed_after}"
    );
    assert_eq!(
        dialed_after, dialed,
        "the gateway had to dial home 1 again after the idle time"
    );
    assert_eq!(
        (p1b.as_str(), a1b.as_str()),
        ("direct", a1.as_str()),
        "the NAT mapping moved"
    );
    let out = probe_server.wait_with_output().unwrap();
    let _ = { probe_client }.wait();
    let sources: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    println!("  a plain UDP flow idle as long came from {sources:?}");
    assert_eq!(sources.len(), 2, "the UDP probe: {sources:?}");
    assert_ne!(
        sources[0], sources[1],
        "the router kept an idle UDP mapping: the lab's conntrack timeout does not bite"
    );

    // Phase 3: bad home links.
    let log_mark = val.log().len();
    for n in [1, 2] {
        lab.link(
            n,
            &[
                "--loss",
                "0.05",
                "--delay-ms",
                "100",
                "--jitter-ms",
                "30",
                "--rate-a-to-b",
                "2000000",
                "--seed",
                &n.to_string(),
            ],
        );
    }
    let passes_before: Vec<u64> = home_ids
        .iter()
        .map(|id| {
            val.scores()
                .miners
                .iter()
                .find(|m| &m.node_id == id)
                .map(|m| m.passes)
                .unwrap_or(0)
        })
        .collect();
    let data2 = net.dir.path().join("data2");
    std::fs::create_dir_all(&data2).unwrap();
    let c = bytes(1 << 20, 3);
    std::fs::write(data2.join("c.bin"), &c).unwrap();
    let t = Instant::now();
    let cid2 = pin(&gw, &data2, "256KiB");
    let pin_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    get_and_check(&gw, &cid2, &net.dir.path().join("out2"), &[("c.bin", &c)]);
    let get_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    get_and_check(
        &gw,
        &cid1,
        &net.dir.path().join("out1c"),
        &[("a.bin", &a), ("b.bin", &b)],
    );
    println!(
        "bad links (5% loss, 100 +/- 30 ms, 2 Mbit/s up): pinned 1 MiB in {pin_s:.1} s, got it back in {get_s:.1} s; the first dataset read back in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let r = val.scores();
        let done = home_ids.iter().zip(&passes_before).all(|(id, before)| {
            r.miners
                .iter()
                .any(|m| &m.node_id == id && m.passes >= before + 3)
        });
        if done {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "challenges over the bad links did not pass: {:#?}\nvalidator log:\n{}",
            r.miners
                .iter()
                .filter(|m| home_ids.contains(&m.node_id))
                .collect::<Vec<_>>(),
            val.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for h in [&h1, &h2] {
        let m = miner_report(&report, &h.node_id());
        println!(
            "  {} over the bad link: {} passes, {} failures, {} timeouts; last answer {:.0} ms, deadline {} ms",
            h.ns,
            m.passes,
            m.failures,
            m.timeouts,
            m.last_latency_ms.unwrap_or(0.0),
            m.deadline_ms
        );
        let short = &m.node_id[..10];
        let log = val.log();
        let attempts: Vec<&str> = log[log_mark.min(log.len())..]
            .lines()
            .filter(|l| l.contains(" challenge ") && l.contains(short))
            .collect();
        // "... answer=Pass { .. } ms=1234.5 deadline_ms=2000.0"
        let field = |l: &str, key: &str| -> f64 {
            l.split(key)
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let passed: Vec<f64> = attempts
            .iter()
            .filter(|l| l.contains("answer=Pass"))
            .map(|l| field(l, " ms=") / field(l, " deadline_ms="))
            .collect();
        let missed = attempts.iter().filter(|l| l.contains("answer=NoAnswer"));
        println!(
            "    {} attempts since the links went bad: {} missed (asked again: {}), the slowest pass took {:.0}% of its deadline",
            attempts.len(),
            missed.clone().count(),
            missed
                .map(|l| format!(
                    "attempt {} {:.0}/{:.0} ms",
                    field(l, " attempt="),
                    field(l, " ms="),
                    field(l, " deadline_ms=")
                ))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * passed.iter().cloned().fold(0.0, f64::max)
        );
        assert_eq!(
            m.failures + m.timeouts,
            0,
            "an honest miner failed on a bad link: {m:?}\nits last attempts:\n{}",
            attempts[attempts.len().saturating_sub(30)..].join("\n")
        );
    }
    for n in [1, 2] {
        lab.link(n, &[]);
        // The shaped run's counters, printed as it stopped.
        let log =
            std::fs::read_to_string(format!("{LAB_STATE}/link{n}.log.prev")).unwrap_or_default();
        println!("  link {n}: {}", log.lines().last().unwrap_or(""));
    }

    // Phase 4: the symmetric home goes away; a spare public miner joins;
    // the validator rebuilds its shards there.
    h2.kill9();
    spare.start();
    let t = Instant::now();
    wait_for(
        "the validator to repair around the lost home miner",
        // About 35 s alone; beside the rest of the suite and a build on two
        // cores it once took over 120 s (the bound, not the speed, is what
        // is tested here).
        Duration::from_secs(300),
        || {
            let o = gw.cli(&["status", &cid1, "--json"]);
            let s: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            (s["healthy"] == s["segments"].as_array()?.len()).then_some(())
        },
    );
    println!(
        "repaired around the stopped home miner in {:.1} s ({} shards rebuilt)",
        t.elapsed().as_secs_f64(),
        val.scores().repairs_done
    );
    get_and_check(
        &gw,
        &cid1,
        &net.dir.path().join("out3"),
        &[("a.bin", &a), ("b.bin", &b)],
    );
    println!("lab test done in {:.1} s", started.elapsed().as_secs_f64());
    drop(gw);
    drop(val);
    drop(miners);
    drop(lab);
}

/// Accepts TCP connections on 203.0.113.3:9999 and prints each peer's
/// address; prints `listening` first.
const TCP_WATCH: &str = "
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('203.0.113.3', 9999))
s.listen(64)
print('listening', flush=True)
conns = []
while True:
    c, a = s.accept()
    conns.append(c)
    print(a[0], flush=True)
";

/// Acknowledges datagrams on 203.0.113.10:9000 and prints where the first
/// `1` and the first `2` came from.
const UDP_ECHO: &str = "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('203.0.113.10', 9000))
s.settimeout(120)
seen = set()
while len(seen) < 2:
    d, a = s.recvfrom(100)
    s.sendto(d, a)
    if d not in seen:
        seen.add(d)
        print('%s:%d' % a, flush=True)
";

/// Sends `1` until acknowledged, stays idle argv[1] seconds, then sends
/// `2` (same socket) until acknowledged.
const UDP_IDLE_SENDER: &str = "
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 5555))
s.settimeout(0.2)
def send(m):
    for _ in range(300):
        s.sendto(m, ('203.0.113.10', 9000))
        try:
            if s.recvfrom(100)[0] == m:
                return
        except socket.timeout:
            pass
    sys.exit('no answer to ' + m.decode())
send(b'1')
time.sleep(float(sys.argv[1]))
send(b'2')
";
