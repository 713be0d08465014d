//! The process harness: real `cairn` processes on loopback sharing a local
//! registry, devnets driven through the CLI, a validator's scoreboard read
//! through its API.
//!
//! Daemons are started with `$NOTIFY_SOCKET` pointing at a datagram socket
//! owned by the test, so a test waits for the daemon's own `READY=1` (the
//! systemd protocol) instead of sleeping. The binaries are found beside the
//! test or bench executable (`target/<profile>/`), where `cargo test
//! --workspace` and `cargo bench` put them.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_api::{ApiClient, ValidatorReport};
use cairn_node::config::Role;
use cairn_node::identity::Hotkey;
use cairn_node::net::Client;
use cairn_node::registry::{LocalRegistry, Member, Registry};
use cairn_node::{EndpointAddr, NodeId};

/// Upper bound on waiting for an event from a daemon; a failure bound, never a pause.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory of the workspace's binaries: the test or bench executable
/// runs from `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("a directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("target/<profile>")
    } else {
        deps
    };
    dir.to_path_buf()
}

fn binary(rel: &str, how: &str) -> PathBuf {
    let p = bin_dir().join(rel);
    assert!(p.exists(), "{} missing: {how}", p.display());
    p
}

/// The `cairn` binary of this build.
pub fn cairn_bin() -> PathBuf {
    binary(
        "cairn",
        "build it (`cargo build --release -p cairn-cli`; `cargo test --workspace` does)",
    )
}

/// The `cheater` example of the validator (a miner whose proofs cheat).
pub fn cheater_bin() -> PathBuf {
    binary(
        "examples/cheater",
        "cargo test --workspace builds the examples",
    )
}

/// The `adversary` example of the validator (a hostile member).
pub fn adversary_bin() -> PathBuf {
    binary(
        "examples/adversary",
        "cargo test --workspace builds the examples",
    )
}

/// Runs the adversary from identity `data_dir` against `peer`: `args` name
/// the attack. Returns its JSON report (see validator/examples/adversary.rs),
/// or the error it printed.
pub fn adversary(
    data_dir: &Path,
    peer: &Member,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let addr = peer
        .addrs
        .first()
        .expect("the peer published an address")
        .to_string();
    let out = Command::new(adversary_bin())
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--peer", &peer.node_id.to_string(), "--addr", &addr])
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run the adversary");
    if !out.status.success() {
        return Err(text(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))
}

/// The value of a metric in a node's `/metrics` (read with a maintained
/// HTTP client; parsed as the text format's `name value` lines).
pub fn metric(api: &str, name: &str) -> Option<f64> {
    let text = ureq::get(format!("http://{api}/metrics"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A Python that can import `module` (`.ci/setup.sh` installs the test
/// packages in `~/.cache/cairn/venv`; `CAIRN_TEST_PYTHON` points elsewhere).
/// `None` when there is none, which is a failure under
/// `CAIRN_REQUIRE_EXTERNAL=1` (CI): the caller says it skipped otherwise.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CAIRN_TEST_PYTHON").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cairn/venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    let found = candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
            "no Python with {module}: run .ci/setup.sh or set CAIRN_TEST_PYTHON"
        );
        eprintln!("SKIPPED: no Python with {module} (.ci/setup.sh installs it)");
    }
    found
}

/// Zeroes the 16 KiB groups `groups` (indexes) of every shard file of at
/// least `min_len` bytes in the store under `data_dir`, as a failing disk
/// would; returns how many shard files were damaged.
pub fn zero_shard_groups(data_dir: &Path, min_len: usize, groups: &[usize]) -> usize {
    let mut damaged = 0;
    for l1 in std::fs::read_dir(data_dir.join("shards"))
        .unwrap()
        .flatten()
    {
        for l2 in std::fs::read_dir(l1.path()).unwrap().flatten() {
            for f in std::fs::read_dir(l2.path()).unwrap().flatten() {
                let mut b = std::fs::read(f.path()).unwrap();
                if b.len() < min_len {
                    continue;
                }
                for &g in groups {
                    if let Some(group) = b.get_mut(g * 16384..(g + 1) * 16384) {
                        group.fill(0);
                    }
                }
                std::fs::write(f.path(), b).unwrap();
                damaged += 1;
            }
        }
    }
    damaged
}

/// Debian's headless Chromium (`.ci/setup.sh` installs it). `None` when it
/// is missing, a failure under `CAIRN_REQUIRE_EXTERNAL=1` (CI).
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
            "chromium is not installed (.ci/setup.sh installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed");
    }
    found
}

/// Loads `url` in headless Chromium with a fresh profile under `dir`, lets
/// its scripts run (virtual time: the page's fetches complete, its timers
/// fire without waiting), and returns the DOM; with `screenshot`, also
/// saves the page as a PNG there.
pub fn chromium_page(chromium: &str, url: &str, dir: &Path, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--hide-scrollbars".into(),
        "--virtual-time-budget=10000".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    match screenshot {
        Some(png) => {
            args.push("--window-size=1400,1000".into());
            args.push(format!("--screenshot={}", png.display()));
        }
        None => args.push("--dump-dom".into()),
    }
    args.push(url.to_string());
    let o = Command::new(chromium).args(&args).output().unwrap();
    assert!(o.status.success(), "chromium {url}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An HTTP request to a node's API with the given headers (a maintained
/// client, no token unless given): the status and the body.
pub fn http(api: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let uri = format!("http://{api}{path}");
    let mut req = ureq::http::Request::builder().method(method).uri(&uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).expect("a request");
    let resp = agent.run(req).expect("the API answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().read_to_string().unwrap_or_default();
    (status, body)
}

/// A GET of `path` from a node's API with an optional `Range` header: the
/// status and the body's bytes.
pub fn http_bytes(api: &str, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    HttpReader::new().get(api, path, range)
}

/// An HTTP client that keeps its connections, as a data loader does.
pub struct HttpReader {
    agent: ureq::Agent,
}

impl Default for HttpReader {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpReader {
    pub fn new() -> Self {
        HttpReader {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// GET `path` with an optional `Range` header: the status and the body.
    pub fn get(&self, api: &str, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
        let agent = &self.agent;
        let mut req = agent.get(format!("http://{api}{path}"));
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        let resp = req.call().expect("the API answers");
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap_or_default();
        (status, body)
    }

    /// HEAD `path`: the status and the `Content-Length` announced.
    pub fn head(&self, api: &str, path: &str) -> (u16, Option<u64>) {
        let resp = self
            .agent
            .head(format!("http://{api}{path}"))
            .call()
            .expect("the API answers");
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (resp.status().as_u16(), len)
    }
}

impl HttpReader {
    /// GET `path` and hand its body to `sink` as it arrives, in reads of
    /// up to `buf` bytes (what a loader streaming a file does); returns the
    /// status and the body's length.
    pub fn stream(
        &self,
        api: &str,
        path: &str,
        buf: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> (u16, u64) {
        use std::io::Read;
        let resp = self
            .agent
            .get(format!("http://{api}{path}"))
            .call()
            .expect("the API answers");
        let status = resp.status().as_u16();
        let mut body = resp.into_body().into_reader();
        let mut b = vec![0u8; buf];
        let mut total = 0u64;
        loop {
            let n = body.read(&mut b).expect("the body reads");
            if n == 0 {
                break;
            }
            sink(&b[..n]);
            total += n as u64;
        }
        (status, total)
    }
}

/// How many times the adversary's report saw `code`.
pub fn count(report: &serde_json::Value, code: &str) -> u64 {
    report["codes"][code].as_u64().unwrap_or(0)
}

/// The `cairn` program as a command line (overridable: a cross build under qemu).
pub fn cairn_program() -> Vec<String> {
    vec![cairn_bin().to_string_lossy().into_owned()]
}

pub struct TestNet {
    pub dir: tempfile::TempDir,
    pub registry: PathBuf,
}

pub struct NodeDir {
    pub path: PathBuf,
    pub node_id: NodeId,
    pub registry: PathBuf,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNet {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = dir.path().join("registry");
        TestNet { dir, registry }
    }

    /// `cairn init` a node directory.
    pub fn init(&self, name: &str, role: &str, extra: &[&str]) -> NodeDir {
        self.init_with(&cairn_program(), name, role, extra)
    }

    /// `cairn init` with another `cairn` program (e.g. a cross build under qemu).
    pub fn init_with(&self, program: &[String], name: &str, role: &str, extra: &[&str]) -> NodeDir {
        let path = self.dir.path().join(name);
        let mut args = vec![
            "init",
            "--data-dir",
            path.to_str().unwrap(),
            "--role",
            role,
            "--registry",
            self.registry.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let out = run_program(program, &args);
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        let id = run_program(
            program,
            &["id", "--json", "--data-dir", path.to_str().unwrap()],
        );
        assert!(id.status.success(), "{}", stderr(&id));
        let v: serde_json::Value = serde_json::from_slice(&id.stdout).unwrap();
        NodeDir {
            node_id: v["node_id"].as_str().unwrap().parse().unwrap(),
            path,
            registry: self.registry.clone(),
        }
    }

    /// An in-process client whose identity is registered with `role`.
    pub async fn client(&self, role: Role) -> (Client, NodeId) {
        let (c, id, _) = self.client_with_key(role).await;
        (c, id)
    }

    /// [`TestNet::client`], with the identity's key (to sign grants).
    pub async fn client_with_key(&self, role: Role) -> (Client, NodeId, iroh::SecretKey) {
        let secret = iroh::SecretKey::generate();
        let hotkey =
            Hotkey::generate(&self.dir.path().join(format!("hk-{}", secret.public()))).unwrap();
        let reg = LocalRegistry::open(&self.registry).unwrap();
        let m = Member {
            node_id: secret.public(),
            role,
            addrs: vec![],
            relay: None,
            hotkey: hotkey.ss58(),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: 0,
            free: 0,
            api: None,
        };
        reg.publish(&m, &hotkey, &secret).await.unwrap();
        (
            unregistered_client_with(secret.clone()).await,
            m.node_id,
            secret,
        )
    }
}

/// An in-process client with a fresh identity that is in no registry.
pub async fn unregistered_client() -> Client {
    unregistered_client_with(iroh::SecretKey::generate()).await
}

async fn unregistered_client_with(secret: iroh::SecretKey) -> Client {
    Client::new(loopback_endpoint(secret).await).with_connect_timeout(Duration::from_secs(5))
}

/// Where `ep` (a [`loopback_endpoint`]) is reached: its id and bound sockets.
pub fn loopback_addr(ep: &iroh::Endpoint) -> cairn_node::EndpointAddr {
    ep.bound_sockets()
        .into_iter()
        .fold(cairn_node::EndpointAddr::new(ep.id()), |addr, a| {
            addr.with_ip_addr(a)
        })
}

/// A QUIC endpoint of identity `secret` on a free loopback port, no relay,
/// configured as a node's (a hostile peer's in tests).
pub async fn loopback_endpoint(secret: iroh::SecretKey) -> iroh::Endpoint {
    let net = cairn_node::config::NetworkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay: "off".into(),
        relay_ca: None,
        external_addrs: vec![],
        failure_domains: cairn_node::config::FailureDomains::Node,
    };
    cairn_node::net::endpoint::bind_endpoint(secret, &net, 64)
        .await
        .unwrap()
}

/// Runs `cairn args...`.
pub fn cairn(args: &[&str]) -> Output {
    cairn_env(args, &[])
}

/// Runs `cairn args...` with extra environment variables (inherited by the
/// daemons it starts).
pub fn cairn_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(cairn_bin());
    c.args(args).env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run cairn")
}

/// Runs `program` (a command and its leading arguments) with `args`.
pub fn run_program(program: &[String], args: &[&str]) -> Output {
    Command::new(&program[0])
        .args(&program[1..])
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run cairn")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Both outputs, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A running `cairn run`.
pub struct Daemon {
    pub child: Child,
    notify: UnixDatagram,
    notify_path: PathBuf,
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    registry: PathBuf,
    pub statuses: Vec<String>,
}

impl Daemon {
    /// Starts `cairn run` and waits for READY=1.
    pub fn start(node: &NodeDir, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(&cairn_program(), node, env)
    }

    /// Starts `<program> run` (another build, another runner) and waits for READY=1.
    pub fn start_with(program: &[String], node: &NodeDir, env: &[(&str, &str)]) -> Daemon {
        let notify_path = node
            .path
            .join(format!("notify-{}.sock", rand::random::<u32>()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.path.join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(&program[0]);
        cmd.args(&program[1..])
            .args(["run", "--data-dir", node.path.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("CAIRN_LOG_FORMAT", "terminal")
            .env("CAIRN_LOG_LEVEL", "debug")
            // Every node runs on this host on purpose: each its own failure domain.
            .env("CAIRN_NETWORK_FAILURE_DOMAINS", "node")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn cairn run");
        let mut d = Daemon {
            child,
            notify,
            notify_path,
            data_dir: node.path.clone(),
            node_id: node.node_id,
            registry: node.registry.clone(),
            statuses: Vec::new(),
        };
        d.wait_message("READY=1");
        d
    }

    /// Waits for a notification containing `needle`; panics with the log on timeout or exit.
    pub fn wait_message(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited with {status} before {needle:?}; log:\n{}",
                    self.log()
                );
            }
            // Short reads so that an exit is noticed; the deadline bounds the wait.
            self.notify
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.statuses.push(msg.clone());
                    if msg.contains(needle) {
                        return msg;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// Waits until the background reconcile has reported.
    pub fn wait_reconciled(&mut self) -> String {
        if let Some(s) = self.statuses.iter().find(|s| s.contains("reconciled")) {
            return s.clone();
        }
        self.wait_message("reconciled")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("daemon.log")).unwrap_or_default()
    }

    /// The address the daemon published in the registry.
    pub async fn addr(&self) -> EndpointAddr {
        let reg = LocalRegistry::open(&self.registry).unwrap();
        let m = reg
            .member(&self.node_id)
            .await
            .unwrap()
            .expect("registered");
        assert!(!m.addrs.is_empty(), "daemon published no address");
        m.endpoint_addr()
    }

    /// The member record the daemon published.
    pub async fn member(&self) -> Member {
        let reg = LocalRegistry::open(&self.registry).unwrap();
        reg.member(&self.node_id)
            .await
            .unwrap()
            .expect("registered")
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // kill(1) rather than libc: the tests stay free of unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.notify_path);
    }
}

/// Sum of the sizes of the shard files under a data dir, and their names.
pub fn shard_files(data_dir: &Path) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut names = Vec::new();
    let root = data_dir.join("shards");
    for l1 in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for l2 in std::fs::read_dir(l1.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(l2.path()).into_iter().flatten().flatten() {
                total += f.metadata().unwrap().len();
                names.push(f.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    (total, names)
}

/// Files left in the temporary directories of a data dir.
pub fn temp_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(data_dir.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            out.push(f.path());
        }
    }
    out
}

/// A devnet (`cairn devnet up`) in a temporary directory, driven through
/// the CLI, taken down however the test ends.
pub struct CliDevnet {
    pub dir: tempfile::TempDir,
    pub api: String,
}

impl CliDevnet {
    /// `miners` miners and a gateway.
    pub fn up(miners: usize) -> CliDevnet {
        Self::with(miners, 0, &[])
    }

    /// `miners` miners, `validators` validators and a gateway; `env` goes to
    /// every daemon (`CAIRN_VALIDATOR_*` settings, say).
    pub fn with(miners: usize, validators: usize, env: &[(&str, &str)]) -> CliDevnet {
        Self::with_gateway_api(miners, validators, env, "127.0.0.1:0")
    }

    /// As [`CliDevnet::with`], the gateway's API bound to `gateway_api`.
    pub fn with_gateway_api(
        miners: usize,
        validators: usize,
        env: &[(&str, &str)],
        gateway_api: &str,
    ) -> CliDevnet {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net");
        let out = cairn_env(
            &[
                "devnet",
                "up",
                "--miners",
                &miners.to_string(),
                "--validators",
                &validators.to_string(),
                "--capacity",
                "2GiB",
                "--gateway-api",
                gateway_api,
                "--dir",
                net.to_str().unwrap(),
            ],
            env,
        );
        assert!(out.status.success(), "devnet up: {}", text(&out));
        let api = std::fs::read_to_string(net.join("api"))
            .unwrap()
            .trim()
            .to_string();
        CliDevnet { dir, api }
    }

    /// The devnet's directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    /// The devnet's directory, as an argument.
    pub fn net(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// The devnet's shared registry.
    pub fn registry(&self) -> PathBuf {
        self.path().join("registry")
    }

    /// `cairn --api <gateway> --api-token-file <its token> args...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let token = self.path().join("gateway").join("api.token");
        let token = token.to_string_lossy();
        let mut a = vec!["--api", &self.api, "--api-token-file", &token];
        a.extend_from_slice(args);
        cairn(&a)
    }

    /// `cairn --api <gateway> args...` without the token (what a caller
    /// without the node's rights gets).
    pub fn cli_without_token(&self, args: &[&str]) -> Output {
        let mut a = vec!["--api", &self.api, "--api-token-file", "/nonexistent"];
        a.extend_from_slice(args);
        cairn(&a)
    }

    /// `cairn devnet <args...> --dir <this devnet>`, which must succeed.
    pub fn devnet(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let net = self.net();
        let mut a = vec!["devnet"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--dir", &net]);
        let o = cairn_env(&a, env);
        assert!(o.status.success(), "cairn {}: {}", a.join(" "), text(&o));
        o
    }

    /// Bytes of shard files on each miner.
    pub fn miner_usage(&self, miners: usize) -> Vec<u64> {
        (0..miners)
            .map(|i| shard_files(&self.path().join(format!("miner-{i}"))).0)
            .collect()
    }

    /// The registry's record of node `name` (`miner-0`, `validator-0`, ...).
    pub fn member(&self, name: &str) -> Member {
        LocalRegistry::open(&self.registry())
            .unwrap()
            .read(&self.node_id(name))
            .unwrap()
            .unwrap_or_else(|| panic!("{name} is not registered"))
    }

    /// A registered identity that runs no daemon (an attacker's, say):
    /// `cairn init` of node `name` in this devnet's registry.
    pub fn identity(&self, name: &str, role: &str) -> PathBuf {
        let dir = self.path().join(name);
        let o = cairn(&[
            "init",
            "--quiet",
            "--data-dir",
            dir.to_str().unwrap(),
            "--role",
            role,
            "--registry",
            self.registry().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        dir
    }

    /// The node id of node `name` (`miner-0`, `validator-0`, ...).
    pub fn node_id(&self, name: &str) -> NodeId {
        cairn_node::identity::load_node_key(&self.path().join(name))
            .unwrap()
            .public()
    }

    /// The pid file of node `name`.
    pub fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.path().join(name).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The last lines of node `name`'s log that mention `needle`.
    pub fn log_lines(&self, name: &str, needle: &str) -> String {
        let log =
            std::fs::read_to_string(self.path().join(name).join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Validator 0's scoreboard, through its API.
    pub fn report(&self) -> ValidatorReport {
        let registry = LocalRegistry::open(&self.registry()).unwrap();
        let m = registry
            .read(&self.node_id("validator-0"))
            .unwrap()
            .expect("the validator is registered");
        let api = m.api.expect("the validator published its API");
        ApiClient::new(api).scores().unwrap()
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

impl Drop for CliDevnet {
    fn drop(&mut self) {
        let _ = cairn(&["devnet", "down", "--dir", &self.net()]);
    }
}
