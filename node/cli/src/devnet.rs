//! A local network of real processes on loopback: `cairn devnet up`.
//!
//! Every node is a `cairn run` (or `cairn-validator run`) process with its
//! own data directory under the devnet directory, all sharing one local
//! registry; no chain, no internet. A client node ("gateway") serves the local
//! API that the CLI talks to, on 127.0.0.1:7441 when that port is free.
//! Processes are started detached (their own process group) and found again
//! through pid files, so `up`, `down`, `stop-miner` and `start-miner` can be
//! separate invocations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cairn_node::sdnotify::{alive, spawn_and_wait_ready, wait_gone};

/// The default devnet directory: `$XDG_DATA_HOME/cairn/devnet` or `~/.local/share/cairn/devnet`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("cairn")
        .join("devnet")
}

fn signal(pid: u32, sig: rustix::process::Signal) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::kill_process(p, sig).is_ok(),
        None => false,
    }
}

/// A devnet on disk.
pub struct Devnet {
    pub dir: PathBuf,
    pub cairn: PathBuf,
    pub validator: Option<PathBuf>,
    /// Where the gateway's API listens; `None`: 127.0.0.1:7441 when free,
    /// any free port otherwise.
    pub gateway_api: Option<String>,
}

/// One node of a devnet.
#[derive(Debug, Clone)]
pub struct DevnetNode {
    pub name: String,
    pub dir: PathBuf,
    pub pid: Option<u32>,
    pub running: bool,
}

impl Devnet {
    /// A devnet in `dir`, run with the `cairn` at `cairn` (and
    /// `cairn-validator` beside it, if present).
    pub fn new(dir: PathBuf, cairn: PathBuf) -> Self {
        let validator = cairn
            .parent()
            .map(|p| p.join("cairn-validator"))
            .filter(|p| p.exists());
        Devnet {
            dir,
            cairn,
            validator,
            gateway_api: None,
        }
    }

    pub fn registry(&self) -> PathBuf {
        self.dir.join("registry")
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// All nodes, in name order.
    pub fn nodes(&self) -> Vec<DevnetNode> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if !p.join("node.toml").exists() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = std::fs::read_to_string(p.join("pid"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                out.push(DevnetNode {
                    running: pid.is_some_and(alive),
                    name,
                    dir: p,
                    pid,
                });
            }
        }
        out.sort_by_key(|n| natural_key(&n.name));
        out
    }

    /// Miner directories, in index order.
    pub fn miners(&self) -> Vec<DevnetNode> {
        self.nodes()
            .into_iter()
            .filter(|n| n.name.starts_with("miner-"))
            .collect()
    }

    /// The gateway's API token file.
    pub fn gateway_token(&self) -> PathBuf {
        cairn_node::gateway::guard::token_path(&self.node_dir("gateway"))
    }

    /// The gateway's API address, if the devnet is up.
    pub fn api(&self) -> Option<SocketAddr> {
        std::fs::read_to_string(self.dir.join("api"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Creates node `name` unless it exists; true when it was created.
    fn init(&self, name: &str, role: &str, api: &str, capacity: &str) -> Result<bool> {
        let dir = self.node_dir(name);
        if dir.join("node.toml").exists() {
            return Ok(false);
        }
        let registry = self.registry();
        // Fixed ports, chosen once: a restarted miner is found where it was.
        let quic = free_udp_port()?;
        // An API on port 0 is bound by the daemon itself (no port chosen
        // here and left open to a race); the registry shows where.
        let api = api.to_string();
        let listen = format!("127.0.0.1:{quic}");
        let out = Command::new(&self.cairn)
            .args([
                "init",
                "--quiet",
                "--data-dir",
                &dir.to_string_lossy(),
                "--role",
                role,
                "--registry",
                &registry.to_string_lossy(),
                "--listen",
                &listen,
                "--api",
                &api,
                "--capacity",
                capacity,
            ])
            .output()
            .context("run cairn init")?;
        if !out.status.success() {
            bail!(
                "cairn init {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(true)
    }

    /// Starts a node `init` just created. Its QUIC port was free when
    /// chosen, but any process may bind it before the node does: then the
    /// node gets another free port and is started again (it has never run,
    /// so nothing knows the old one).
    fn start_created(&self, name: &str) -> Result<u32> {
        let mut tries = 1;
        loop {
            match self.start(name) {
                Ok(pid) => return Ok(pid),
                Err(e) if tries < 3 => {
                    tries += 1;
                    let config = self.node_dir(name).join("node.toml");
                    let text = std::fs::read_to_string(&config)
                        .with_context(|| format!("read {}", config.display()))?;
                    let taken = text
                        .lines()
                        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
                        .and_then(|rest| rest.strip_suffix('"'))
                        .ok_or_else(|| anyhow!("no QUIC listen address in {}", config.display()))?
                        .to_string();
                    let port = free_udp_port()?;
                    eprintln!(
                        "{name} did not start ({e:#}); trying UDP port {port} instead of {taken}"
                    );
                    let text = text.replacen(
                        &format!("listen = \"127.0.0.1:{taken}\""),
                        &format!("listen = \"127.0.0.1:{port}\""),
                        1,
                    );
                    std::fs::write(&config, text)
                        .with_context(|| format!("write {}", config.display()))?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts node `name` (if not running) and waits until it is ready.
    pub fn start(&self, name: &str) -> Result<u32> {
        let dir = self.node_dir(name);
        if let Some(n) = self.nodes().into_iter().find(|n| n.name == name)
            && n.running
        {
            return Ok(n.pid.expect("running has a pid"));
        }
        let program = if name.starts_with("validator-") {
            self.validator.clone().ok_or_else(|| {
                anyhow!("cairn-validator is not installed beside cairn; build it (cargo build --release) to run validators")
            })?
        } else {
            self.cairn.clone()
        };
        let args = ["run", "--data-dir", &dir.to_string_lossy()];
        let args: Vec<&str> = args.to_vec();
        let pid = spawn_and_wait_ready(
            &program,
            &args,
            &[
                ("CAIRN_STORAGE_SCRUB_RATE", "16MiB"),
                // A devnet runs every node on this host on purpose: each
                // node is its own failure domain.
                ("CAIRN_NETWORK_FAILURE_DOMAINS", "node"),
            ],
            &dir.join("daemon.log"),
            &self.dir,
        )?;
        std::fs::write(dir.join("pid"), pid.to_string()).context("write pid")?;
        Ok(pid)
    }

    /// Creates (first time) and starts a devnet of `miners` miners and
    /// `validators` validators plus the gateway.
    pub fn up(&self, miners: usize, validators: usize, capacity: &str) -> Result<SocketAddr> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        if self.nodes().iter().any(|n| n.running) {
            bail!(
                "a devnet is already running in {}; stop it with `cairn devnet down`",
                self.dir.display()
            );
        }
        let gateway_api = match &self.gateway_api {
            Some(a) => a.as_str(),
            None if std::net::TcpListener::bind("127.0.0.1:7441").is_ok() => "127.0.0.1:7441",
            None => "127.0.0.1:0",
        };
        let mut created = std::collections::HashSet::new();
        for i in 0..miners {
            let name = format!("miner-{i}");
            if self.init(&name, "miner", "127.0.0.1:0", capacity)? {
                created.insert(name);
            }
        }
        for i in 0..validators {
            let name = format!("validator-{i}");
            if self.init(&name, "validator", "127.0.0.1:0", "0")? {
                created.insert(name);
            }
        }
        if self.init("gateway", "client", gateway_api, "64MiB")? {
            created.insert("gateway".to_string());
        }
        let start = |n: &String| {
            if created.contains(n) {
                self.start_created(n)
            } else {
                self.start(n)
            }
        };
        let names: Vec<String> = self
            .nodes()
            .into_iter()
            .map(|n| n.name)
            .filter(|n| {
                n == "gateway"
                    || n.strip_prefix("miner-")
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| i < miners)
                    || n.strip_prefix("validator-")
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| i < validators)
            })
            .collect();
        // Miners first, so the gateway and validators find them.
        for n in names.iter().filter(|n| n.starts_with("miner-")) {
            start(n)?;
        }
        for n in names.iter().filter(|n| !n.starts_with("miner-")) {
            start(n)?;
        }
        let api = self.gateway_api()?;
        std::fs::write(self.dir.join("api"), api.to_string()).context("write api")?;
        Ok(api)
    }

    /// The gateway's API address, from its registry entry.
    fn gateway_api(&self) -> Result<SocketAddr> {
        let dir = self.node_dir("gateway");
        let key = cairn_node::identity::load_node_key(&dir)?;
        let registry = cairn_node::registry::LocalRegistry::open(&self.registry())?;
        let member = registry
            .read(&key.public())?
            .ok_or_else(|| anyhow!("the gateway is not in the devnet's registry"))?;
        member
            .api
            .ok_or_else(|| anyhow!("the gateway published no API address"))
    }

    /// SIGTERM to every node, then wait for them to exit.
    pub fn down(&self) -> Result<usize> {
        let nodes: Vec<DevnetNode> = self.nodes().into_iter().filter(|n| n.running).collect();
        for n in &nodes {
            signal(n.pid.expect("running"), rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in &nodes {
            wait_gone(n.pid.expect("running"), &n.dir, deadline);
            let _ = std::fs::remove_file(n.dir.join("pid"));
        }
        let _ = std::fs::remove_file(self.dir.join("api"));
        Ok(nodes.len())
    }

    /// kill -9 of miner `i` (to watch loss and recovery).
    pub fn stop_miner(&self, i: usize) -> Result<u32> {
        let name = format!("miner-{i}");
        let n = self
            .nodes()
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no {name} in this devnet"))?;
        let pid = n
            .pid
            .filter(|p| alive(*p))
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        signal(pid, rustix::process::Signal::KILL);
        wait_gone(pid, &n.dir, Instant::now() + Duration::from_secs(60));
        let _ = std::fs::remove_file(n.dir.join("pid"));
        Ok(pid)
    }

    /// Adds a new miner to a running devnet; returns its index.
    pub fn add_miner(&self, capacity: &str) -> Result<usize> {
        let i = self
            .miners()
            .iter()
            .filter_map(|n| {
                n.name
                    .strip_prefix("miner-")
                    .and_then(|i| i.parse::<usize>().ok())
            })
            .max()
            .map(|m| m + 1)
            .unwrap_or(0);
        let name = format!("miner-{i}");
        if self.init(&name, "miner", "127.0.0.1:0", capacity)? {
            self.start_created(&name)?;
        } else {
            self.start(&name)?;
        }
        Ok(i)
    }

    /// Starts miner `i` again.
    pub fn start_miner(&self, i: usize) -> Result<u32> {
        let name = format!("miner-{i}");
        if !self.node_dir(&name).join("node.toml").exists() {
            bail!("no {name} in this devnet");
        }
        self.start(&name)
    }
}

/// A UDP port that is free now on 127.0.0.1 (for QUIC).
fn free_udp_port() -> Result<u16> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .context("finding a free port")
}

fn natural_key(name: &str) -> (String, usize) {
    match name.rsplit_once('-') {
        Some((p, n)) if n.parse::<usize>().is_ok() => (p.to_string(), n.parse().unwrap_or(0)),
        _ => (name.to_string(), 0),
    }
}
