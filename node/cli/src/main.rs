//! `cairn`: the node daemon and its command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cairn_api::ApiClient;
use cairn_node::config::{ChainKind, Config, Role, SYSTEM_CONFIG};
use cairn_node::identity::{self, Hotkey};
use cairn_node::net::Client;
use cairn_node::registry::{Member, Registry};
use cairn_node::sdnotify::Notifier;
use cairn_node::size::ByteSize;
use cairn_node::{EndpointAddr, Node, NodeId, logging};
use cairn_proto::Cid;
use clap::{Args, Parser, Subcommand};

use crate::devnet::Devnet;

mod demo;
mod devnet;
mod doctor;
mod transfer;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "cairn storage node: pin datasets, store shards, answer challenges"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Global {
    /// Config file (default: <data-dir>/node.toml if present, else /etc/cairn/node.toml if present).
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` in the config).
    #[arg(long, global = true, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The daemon's API (default: a running devnet's gateway, else api.listen of the config).
    #[arg(long, global = true, env = "CAIRN_API")]
    api: Option<std::net::SocketAddr>,
    /// The daemon's API token (default: the devnet gateway's, else
    /// `api.token` in the data directory; read as the node's user).
    #[arg(long, global = true, env = "CAIRN_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Pin a file or a directory tree: prints its CID.
    Pin(PinArgs),
    /// Fetch a dataset (CID), one file of it (CID/path), or a byte range of a file.
    Get(GetArgs),
    /// List this node's pins.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Health of a dataset: shards alive per segment, per miner.
    Status {
        cid: String,
        #[arg(long)]
        json: bool,
    },
    /// Check what breaks home nodes (config, disk, keys, chain, reachability,
    /// systemd) and print each finding with its fix. Exits 1 when something
    /// failed (warnings alone exit 0).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// What the validators say about this node (a miner): score, weight and
    /// each recent challenge with its outcome, reason and what to do.
    Verdicts {
        #[arg(long)]
        json: bool,
        /// Show at most this many challenges per validator.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// Delete a dataset's shards and manifest copies (idempotent).
    Unpin { cid: String },
    /// Read grants: let another node read the shards this node placed.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// A local network of real processes on loopback.
    #[command(subcommand)]
    Devnet(DevnetCommand),
    /// Create the node's identity (node key, local-mode hotkey) and config.
    Init(InitArgs),
    /// Register this node's hotkey on the subnet (burned registration, paid by a coldkey).
    Register(RegisterArgs),
    /// Run the node until SIGTERM.
    Run,
    /// Print this node's id, hotkey and role, and (when it runs) how the
    /// network sees it: observed address, NAT, relay, what to forward.
    Id {
        #[arg(long)]
        json: bool,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Low-level shard operations against one peer (diagnostics and tests).
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Generate man pages or shell completions (used by the packages).
    #[command(hide = true, subcommand)]
    Generate(GenerateCommand),
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Sign a grant for READER (a node id, as `cairn id` prints it) to read
    /// the shards this node placed; prints a token to hand to that node.
    New {
        reader: String,
        /// How long it runs: seconds, or with s, m, h or d (at most 30d).
        #[arg(long, default_value = "1d")]
        ttl: String,
        /// Only this shard (hex id).
        #[arg(long)]
        shard: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Keep a grant another node gave this one: its datasets become readable here.
    Add { token: String },
}

/// Seconds in "90", "90s", "15m", "12h" or "7d".
fn parse_ttl(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--ttl {s:?}: a number with an optional s, m, h or d (e.g. 12h)"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl {s:?}: the unit is s, m, h or d (e.g. 12h)"),
    };
    n.checked_mul(mul)
        .ok_or_else(|| anyhow!("--ttl {s:?} is too long"))
}

#[derive(Args)]
struct RegisterArgs {
    /// The paying coldkey as an unencrypted key file (bittensor-wallet JSON).
    #[arg(long, conflicts_with = "coldkey_uri")]
    coldkey_file: Option<PathBuf>,
    /// The paying coldkey as a Substrate URI (development chains: //Alice).
    #[arg(long)]
    coldkey_uri: Option<String>,
}

#[derive(Args)]
struct PinArgs {
    /// A file or a directory.
    path: PathBuf,
    /// Name shown by `cairn ls` (default: the file or directory name).
    #[arg(long)]
    name: Option<String>,
    /// k: data shards per segment (default 4 below 12 miners, 10 from 12).
    #[arg(long)]
    data_shards: Option<u16>,
    /// m: parity shards per segment, i.e. miners that may be lost (default 2, or 4).
    #[arg(long)]
    parity_shards: Option<u16>,
    /// Segment size (default 8MiB).
    #[arg(long)]
    segment_size: Option<ByteSize>,
    /// Print the result as JSON, no progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GetArgs {
    /// CID, or CID/path/in/dataset for one file.
    target: String,
    /// Output file or directory (must not exist); `-` writes a file to stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Only bytes A-B (inclusive, as in HTTP) of a file: `--range 0-1023`.
    #[arg(long)]
    range: Option<String>,
}

#[derive(Subcommand)]
enum DevnetCommand {
    /// Start a devnet (creating it the first time).
    Up {
        #[arg(long, default_value_t = 6)]
        miners: usize,
        #[arg(long, default_value_t = 0)]
        validators: usize,
        /// Capacity of each miner.
        #[arg(long, default_value = "4GiB")]
        capacity: ByteSize,
        /// The gateway's API address (default 127.0.0.1:7441 when free;
        /// `127.0.0.1:0` picks any free port).
        #[arg(long)]
        gateway_api: Option<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop every node of the devnet.
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List the devnet's nodes.
    Status {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// kill -9 miner I (watch loss and recovery).
    StopMiner {
        index: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Add a new miner to the running devnet.
    AddMiner {
        #[arg(long, default_value = "4GiB")]
        capacity: ByteSize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Start miner I again.
    StartMiner {
        index: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Start a devnet, pin a generated dataset, lose two miners, get it back, verify, time it.
    Demo {
        /// Size of the generated dataset.
        #[arg(long, default_value = "256MiB")]
        size: ByteSize,
        #[arg(long, default_value_t = 6)]
        miners: usize,
        /// Leave the devnet running afterwards.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// Man pages into a directory.
    Man { dir: PathBuf },
    /// A completion script (bash, zsh, fish) on stdout.
    Completions { shell: String },
}

#[derive(Args)]
struct InitArgs {
    #[arg(long, value_parser = parse_role)]
    role: Option<Role>,
    #[arg(long)]
    capacity: Option<ByteSize>,
    /// UDP address for QUIC.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// TCP address for the local HTTP API.
    #[arg(long)]
    api: Option<std::net::SocketAddr>,
    /// Shared local registry directory.
    #[arg(long)]
    registry: Option<PathBuf>,
    /// What one peer may store here: a share of the capacity ("50%") or a size.
    #[arg(long)]
    quota: Option<cairn_node::size::Quota>,
    /// Print nothing on success (for service start-up).
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented config with every key at its default.
    Default,
    /// Load the config (file + environment) and report errors.
    Check,
}

#[derive(Args, Clone)]
struct PeerArg {
    /// The peer's node id (its address is looked up in the registry).
    #[arg(long)]
    peer: NodeId,
    /// Dial this address instead of the registered ones.
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Store a file as one shard on a peer; prints the shard id.
    Put {
        file: PathBuf,
        #[command(flatten)]
        peer: PeerArg,
    },
    /// Fetch a shard (or a byte range of it), verified against its id.
    Get {
        id: cairn_proof::ShardId,
        #[command(flatten)]
        peer: PeerArg,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        length: Option<u64>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Challenge a peer on a shard and verify the proof (validators only).
    Challenge {
        id: cairn_proof::ShardId,
        /// Shard length in bytes.
        #[arg(long)]
        len: u64,
        #[arg(long, default_value_t = 44)]
        samples: u16,
        #[command(flatten)]
        peer: PeerArg,
    },
    /// List a peer's shards.
    Ls {
        #[command(flatten)]
        peer: PeerArg,
    },
    /// Release this node's hold on a shard at a peer.
    Rm {
        id: cairn_proof::ShardId,
        #[command(flatten)]
        peer: PeerArg,
    },
    /// A peer's capacity and usage.
    Info {
        #[command(flatten)]
        peer: PeerArg,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: cairn_proto::Error| e.to_string())
}

/// Finds and loads the config: --config, else <data-dir>/node.toml, else /etc/cairn/node.toml.
fn load_config(g: &Global) -> Result<Config> {
    let path = match (&g.config, &g.data_dir) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(d)) if d.join("node.toml").exists() => Some(d.join("node.toml")),
        (None, None) if Path::new(SYSTEM_CONFIG).exists() => Some(PathBuf::from(SYSTEM_CONFIG)),
        _ => None,
    };
    let mut config = Config::load(path.as_deref(), std::env::vars())?;
    if let Some(d) = &g.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

fn main() {
    cairn_node::malloc::tune();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{}", Config::commented_default());
            return Ok(());
        }
        Command::Generate(GenerateCommand::Man { dir }) => {
            use clap::CommandFactory;
            cairn_node::cli_docs::write_man_pages(Cli::command(), dir)?;
            return Ok(());
        }
        Command::Generate(GenerateCommand::Completions { shell }) => {
            use clap::CommandFactory;
            cairn_node::cli_docs::write_completions(Cli::command(), shell)
                .map_err(anyhow::Error::msg)?;
            return Ok(());
        }
        _ => {}
    }
    if let Command::Devnet(cmd) = cli.command {
        return devnet(cmd);
    }
    if let Command::Doctor { json } = cli.command {
        let healthy = doctor::run(
            load_config(&cli.global),
            |c| api_client(&cli.global, c),
            json,
        );
        std::process::exit(if healthy { 0 } else { 1 });
    }
    let config = load_config(&cli.global)?;
    match cli.command {
        Command::Devnet(_) | Command::Doctor { .. } => unreachable!("handled above"),
        Command::Pin(a) => pin(&api_client(&cli.global, &config), a),
        Command::Get(a) => get(&api_client(&cli.global, &config), a),
        Command::Ls { json } => ls(&api_client(&cli.global, &config), json),
        Command::Status { cid, json } => status(&api_client(&cli.global, &config), &cid, json),
        Command::Unpin { cid } => unpin(&api_client(&cli.global, &config), &cid),
        Command::Verdicts { json, last } => verdicts(&api_client(&cli.global, &config), json, last),
        Command::Grant(GrantCommand::New {
            reader,
            ttl,
            shard,
            json,
        }) => {
            let api = api_client(&cli.global, &config);
            let g = api.grant_new(&cairn_api::GrantRequest {
                reader,
                ttl_secs: parse_ttl(&ttl)?,
                shard,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&g)?);
            } else {
                println!("{}", g.token);
            }
            Ok(())
        }
        Command::Grant(GrantCommand::Add { token }) => {
            let g = api_client(&cli.global, &config).grant_add(&token)?;
            println!(
                "kept a grant from node {} (expires at unix time {}): its datasets can be read here",
                g.owner, g.expires
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            println!(
                "config ok: data_dir {}, role {}",
                config.data_dir.display(),
                config.role
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Default) | Command::Generate(_) => {
            unreachable!("handled above")
        }
        Command::Init(args) => init(&cli.global, config, args),
        Command::Register(args) => runtime()?.block_on(register(&config, args)),
        Command::Id { json } => id(&config, &api_client(&cli.global, &config), json),
        Command::Run => {
            logging::init(&config.log.level, &config.log.format);
            runtime()?.block_on(run_daemon(config))
        }
        Command::Shard(cmd) => {
            logging::init("warn", "terminal");
            runtime()?.block_on(shard(config, cmd))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init(g: &Global, mut config: Config, a: InitArgs) -> Result<()> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let config_path = g.config.clone().unwrap_or_else(|| dir.join("node.toml"));
    let writing_config = !config_path.exists();
    if let Some(r) = a.role {
        config.role = r;
    }
    if let Some(c) = a.capacity {
        config.capacity = c;
    }
    if let Some(l) = a.listen {
        config.network.listen = l;
    }
    if let Some(l) = a.api {
        config.api.listen = l;
    }
    if let Some(r) = &a.registry {
        config.chain.registry_dir = Some(r.clone());
    }
    if let Some(q) = a.quota {
        config.limits.quota_per_peer = q;
    }
    if writing_config {
        let text = toml::to_string(&config).context("serializing config")?;
        std::fs::write(&config_path, text)
            .with_context(|| format!("write {}", config_path.display()))?;
    } else if a.role.is_some() || a.capacity.is_some() || a.listen.is_some() || a.api.is_some() {
        bail!(
            "{} exists; edit it instead of passing settings to `cairn init`",
            config_path.display()
        );
    }
    let key = match identity::load_node_key(&dir) {
        Ok(k) => k,
        Err(_) => identity::create_node_key(&dir)?,
    };
    let hk_path = config.hotkey_path();
    let hotkey = if hk_path.exists() {
        Hotkey::load(&hk_path)?
    } else if config.chain.kind == ChainKind::Local {
        Hotkey::generate(&hk_path)?
    } else {
        bail!(
            "no hotkey at {}; create it with `btcli wallet new_hotkey --wallet.name {} --wallet.hotkey {}`",
            hk_path.display(),
            config.chain.wallet,
            config.chain.hotkey
        );
    };
    if config.chain.kind == ChainKind::Local {
        // Register at once, so peers accept this node before it first runs.
        let registry = cairn_node::registry::LocalRegistry::open(&config.registry_dir())?;
        let member = Member {
            node_id: key.public(),
            role: config.role,
            addrs: Vec::new(),
            relay: None,
            hotkey: hotkey.ss58(),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: config.total_capacity(),
            free: config.total_capacity(),
            api: Some(config.api.listen),
        };
        runtime()?.block_on(async {
            // Keep the addresses of an earlier run, if any.
            let mut m = member;
            if let Ok(Some(old)) = registry.member(&m.node_id).await {
                m.addrs = old.addrs;
            }
            registry.publish(&m, &hotkey, &key).await
        })?;
    }
    if !a.quiet {
        println!("node id  {}", key.public());
        println!("hotkey   {}", hotkey.ss58());
        println!("role     {}", config.role);
        println!("data dir {}", dir.display());
        if writing_config {
            println!("config   {}", config_path.display());
        }
    }
    Ok(())
}

fn id(config: &Config, api: &ApiClient, json: bool) -> Result<()> {
    let key = identity::load_node_key(&config.data_dir)?;
    let hotkey = Hotkey::load(&config.hotkey_path())?;
    // The network facts come from the running node; its id is the same key.
    let running = api.info().map_err(|e| e.to_string()).and_then(|i| {
        match i.node_id == key.public().to_string() {
            true => Ok(i),
            false => Err(format!(
                "the API at {} is another node ({})",
                api.addr(),
                i.node_id
            )),
        }
    });
    if json {
        let (network, daemon) = match &running {
            Ok(i) => (serde_json::to_value(&i.network)?, "running".to_string()),
            Err(e) => (serde_json::Value::Null, format!("not running: {e}")),
        };
        println!(
            "{}",
            serde_json::json!({
                "node_id": key.public().to_string(),
                "hotkey": hotkey.ss58(),
                "role": config.role.to_string(),
                "daemon": daemon,
                "network": network,
            })
        );
        return Ok(());
    }
    println!(
        "node id {}\nhotkey  {}\nrole    {}",
        key.public(),
        hotkey.ss58(),
        config.role
    );
    match running.map(|i| i.network) {
        Ok(Some(n)) => {
            println!("bound   {}", n.bound.join(", "));
            println!("seen as {}", n.observed.as_deref().unwrap_or("(unknown)"));
            println!(
                "relay   {}",
                match (&n.relay, n.relay_connected) {
                    (Some(r), true) => format!("{r} (connected)"),
                    (Some(r), false) => format!("{r} (not connected)"),
                    (None, _) => "none".into(),
                }
            );
            println!("reach   {}: {}", n.reachability, n.advice);
        }
        Ok(None) => println!("network (the running node is too old to say)"),
        Err(e) => println!("network (node not running: {e})"),
    }
    Ok(())
}

async fn run_daemon(config: Config) -> Result<()> {
    let notifier = Arc::new(Notifier::from_env());
    let node = Node::start(config).await?;
    tracing::info!(
        node_id = %node.node_id(),
        hotkey = %node.hotkey().ss58(),
        role = %node.config().role,
        addrs = ?node.member().addrs,
        "serving"
    );
    node.start_background(Arc::clone(&notifier));
    notifier.ready("serving; reconcile running");
    cairn_node::node::wait_for_signal().await;
    notifier.stopping();
    node.shutdown(Duration::from_secs(30)).await;
    tracing::info!("stopped");
    Ok(())
}

/// An endpoint for one-off commands, with this data dir's identity.
async fn client_for(config: &Config) -> Result<Client> {
    let key = identity::load_node_key(&config.data_dir)?;
    let mut net = config.network.clone();
    net.listen.set_port(0);
    let endpoint = cairn_node::net::endpoint::bind_endpoint(key, &net, 16).await?;
    Ok(Client::new(endpoint))
}

async fn resolve(config: &Config, p: &PeerArg) -> Result<EndpointAddr> {
    if let Some(a) = p.addr {
        return Ok(EndpointAddr::new(p.peer).with_ip_addr(a));
    }
    let registry = cairn_node::registry::open(config).await?;
    match registry.member(&p.peer).await? {
        Some(m) if !m.addrs.is_empty() || m.relay.is_some() => Ok(m.endpoint_addr()),
        Some(_) => bail!(
            "peer {} is registered but has published no address; is it running?",
            p.peer
        ),
        None => bail!(
            "peer {} is not in the registry; pass --addr to dial it directly",
            p.peer
        ),
    }
}

async fn shard(config: Config, cmd: ShardCommand) -> Result<()> {
    let client = client_for(&config).await?;
    match cmd {
        ShardCommand::Put { file, peer } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let (id, _) = cairn_proof::shard_id_and_outboard(&bytes);
            let addr = resolve(&config, &peer).await?;
            client.put_shard(&addr, id, &bytes, None).await?;
            println!("{id}");
        }
        ShardCommand::Get {
            id,
            peer,
            offset,
            length,
            output,
        } => {
            let addr = resolve(&config, &peer).await?;
            let r = client
                .get_shard(&addr, id, offset, length.unwrap_or(u64::MAX), None)
                .await?;
            match output {
                Some(p) => std::fs::write(&p, &r.bytes)
                    .with_context(|| format!("write {}", p.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&r.bytes)?;
                }
            }
        }
        ShardCommand::Challenge {
            id,
            len,
            samples,
            peer,
        } => {
            let addr = resolve(&config, &peer).await?;
            let nonce: [u8; 32] = rand::random();
            let ch = cairn_proof::Challenge::new(id, len, nonce, samples)?;
            let start = std::time::Instant::now();
            let proof = client.challenge(&addr, &ch).await?;
            let elapsed = start.elapsed();
            match cairn_proof::verify(&ch, &proof) {
                Ok(()) => println!("proof verified: {} bytes in {elapsed:?}", proof.len()),
                Err(e) => bail!("proof rejected: {e}"),
            }
        }
        ShardCommand::Ls { peer } => {
            let addr = resolve(&config, &peer).await?;
            for e in client.inventory_all(&addr).await? {
                println!("{} {:>12} {}", e.id, e.len, e.state.as_str());
            }
        }
        ShardCommand::Rm { id, peer } => {
            let addr = resolve(&config, &peer).await?;
            client.delete_shard(&addr, id, None).await?;
        }
        ShardCommand::Info { peer } => {
            let addr = resolve(&config, &peer).await?;
            let i = client.info(&addr).await?;
            println!("{}", serde_json::to_string_pretty(&i)?);
        }
    }
    client.endpoint().close().await;
    Ok(())
}

/// The daemon the CLI talks to: --api / CAIRN_API, else a running devnet's
/// gateway, else the config's api.listen.
fn api_client(g: &Global, config: &Config) -> ApiClient {
    let explicit_config = g.config.is_some() || g.data_dir.is_some();
    let devnet = Devnet::new(devnet::default_dir(), PathBuf::new());
    let own_token = || Some(cairn_node::gateway::guard::token_path(&config.data_dir));
    let (addr, token_file) = match (g.api, devnet.api()) {
        (Some(a), Some(d)) if a == d && !explicit_config => (a, Some(devnet.gateway_token())),
        // This node's token goes to this node's API only: another address
        // (someone else's gateway, a typo) gets none unless one is named.
        (Some(a), _) => (a, same_api(a, config.api.listen).then(own_token).flatten()),
        (None, Some(a)) if !explicit_config => (a, Some(devnet.gateway_token())),
        _ => (config.api.listen, own_token()),
    };
    let token_file = g.api_token_file.clone().or(token_file);
    // Reads need no token on loopback: a missing or unreadable file is fine
    // until a call needs it, and the daemon then says so.
    ApiClient::new(addr).with_token(token_file.and_then(|f| std::fs::read_to_string(f).ok()))
}

/// Whether `addr` reaches the API that listens on `listen` (an unspecified
/// listen address answers on loopback too).
fn same_api(addr: std::net::SocketAddr, listen: std::net::SocketAddr) -> bool {
    addr == listen
        || (listen.ip().is_unspecified()
            && addr.port() == listen.port()
            && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
}

fn check_cid(s: &str) -> Result<Cid> {
    let cid_part = s.split_once('/').map(|(c, _)| c).unwrap_or(s);
    Ok(cid_part.parse::<Cid>()?)
}

fn pin(api: &ApiClient, a: PinArgs) -> Result<()> {
    let opts = transfer::PinOptions {
        name: a.name,
        data_shards: a.data_shards,
        parity_shards: a.parity_shards,
        segment_size: a.segment_size.map(|s| s.0),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bar = transfer::Progress::new("pinning", tty && !a.json);
    let result = transfer::pin(api, &a.path, &opts, |done, total| bar.update(done, total));
    bar.finish();
    let v = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mib = v.bytes as f64 / 1048576.0;
        eprintln!(
            "pinned {:.1} MiB in {} files: {} segments x {}+{} shards, {} manifest copies, {:.1} s ({:.1} MiB/s)",
            mib,
            v.files,
            v.segments,
            v.data_shards,
            v.parity_shards,
            v.manifest_copies,
            v.seconds,
            mib / v.seconds.max(1e-3)
        );
        println!("{}", v.cid);
    }
    Ok(())
}

/// Opens `-o PATH` for a single stream (`-` or none: stdout); never overwrites.
fn output(path: Option<&Path>) -> Result<Box<dyn std::io::Write>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        anyhow::anyhow!(
                            "{} already exists; cairn get never overwrites",
                            p.display()
                        )
                    } else {
                        anyhow::anyhow!("create {}: {e}", p.display())
                    }
                })?;
            Box::new(f)
        }
        _ => Box::new(std::io::stdout()),
    })
}

fn get(api: &ApiClient, a: GetArgs) -> Result<()> {
    check_cid(&a.target)?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if let Some(range) = &a.range {
        let (cid, path) = a
            .target
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("--range needs CID/path/of/file"))?;
        let mut resp = api.file(cid, path, Some(range))?;
        let mut out = output(a.output.as_deref())?;
        std::io::copy(&mut resp, &mut out)?;
        return Ok(());
    }
    if a.output.as_deref() == Some(Path::new("-")) {
        return transfer::get_to_writer(api, &a.target, &mut std::io::stdout().lock());
    }
    let mut bar = transfer::Progress::new("getting", tty);
    let r = transfer::get(api, &a.target, a.output.as_deref(), |d, t| bar.update(d, t));
    bar.finish();
    let r = r?;
    eprintln!(
        "got {:.1} MiB in {} files into {} ({:.1} s, {:.1} MiB/s), every file checked against its BLAKE3{}",
        r.bytes as f64 / 1048576.0,
        r.files,
        r.path.display(),
        r.seconds,
        r.bytes as f64 / 1048576.0 / r.seconds.max(1e-3),
        if r.manifest_checked {
            " and the manifest against the CID"
        } else {
            "; the manifest was NOT checked against the CID (the daemon, an earlier release, gives none)"
        }
    );
    Ok(())
}

fn ls(api: &ApiClient, json: bool) -> Result<()> {
    let pins = api.pins()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pins)?);
        return Ok(());
    }
    if pins.is_empty() {
        eprintln!("no pins yet: `cairn pin PATH` adds one");
    }
    for p in pins {
        println!(
            "{}  {:>10.1} MiB  {:>6} files  {}+{}  {}",
            p.cid,
            p.bytes as f64 / 1048576.0,
            p.files,
            p.data_shards,
            p.parity_shards,
            p.name
        );
    }
    Ok(())
}

fn verdicts(api: &ApiClient, json: bool, last: usize) -> Result<()> {
    let v = api.verdicts()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if v.validators.is_empty() {
        eprintln!(
            "no validator has answered yet: none is registered, or none reachable (`cairn id` shows this node's paths)"
        );
    }
    let now_ms = cairn_node::unix_millis();
    for x in &v.validators {
        println!(
            "validator {} ({}): score {:.3}, weight {}, {} audits ({} passed, {} failed, {} silent), {} shards, {:.1} MiB verified{}{}{}",
            x.validator,
            x.hotkey,
            x.score,
            x.weight,
            x.audits,
            x.passes,
            x.failures,
            x.timeouts,
            x.shards_assigned,
            x.verified_bytes as f64 / 1048576.0,
            if x.vetted { ", vetted" } else { "" },
            if x.contained {
                ", re-asking an unanswered challenge"
            } else {
                ""
            },
            if x.disqualified { ", DISQUALIFIED" } else { "" },
        );
        if let Some(e) = &x.error {
            println!("  last ask failed: {e}");
        }
        for d in x.verdicts.iter().take(last) {
            let ago = now_ms.saturating_sub(d.at_ms) / 1000;
            let latency = d
                .latency_ms
                .map_or("-".to_string(), |ms| format!("{ms} ms"));
            println!(
                "  {:>6}s ago  {:<11}  {:>9} of {:>6} ms  shard {}{}",
                ago,
                d.outcome,
                latency,
                d.deadline_ms,
                &d.shard[..d.shard.len().min(16)],
                if d.attempt > 1 {
                    format!(" (re-ask {})", d.attempt - 1)
                } else {
                    String::new()
                }
            );
            if !d.reason.is_empty() {
                println!("      why: {}", d.reason);
                println!("      what to do: {}", d.advice);
            }
        }
    }
    Ok(())
}

fn status(api: &ApiClient, cid: &str, json: bool) -> Result<()> {
    let cid = check_cid(cid)?;
    let v = api.status(&cid.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{cid}");
    println!(
        "  {:.1} MiB, {}+{} shards per segment; segments: {} healthy, {} degraded (readable), {} lost",
        v.bytes as f64 / 1048576.0,
        v.data_shards,
        v.parity_shards,
        v.healthy,
        v.degraded,
        v.lost
    );
    for s in &v.segments {
        let shards: Vec<String> = s
            .shards
            .iter()
            .map(|(node, held)| {
                let mark = if *held { "+" } else { "MISSING " };
                format!("{mark}{node}")
            })
            .collect();
        println!(
            "  segment {:>4}: {}/{}  {}",
            s.index,
            s.alive,
            s.total,
            shards.join(" ")
        );
    }
    println!("  miners:");
    for mi in &v.miners {
        println!(
            "    {}  {}  holds {}/{}",
            mi.node_id.get(..10).unwrap_or(&mi.node_id),
            if mi.reachable {
                "reachable  "
            } else {
                "UNREACHABLE"
            },
            mi.shards_held,
            mi.shards_expected
        );
    }
    Ok(())
}

fn unpin(api: &ApiClient, cid: &str) -> Result<()> {
    let cid = check_cid(cid)?;
    let v = api.unpin(&cid.to_string())?;
    eprintln!(
        "unpinned {cid}: {} shards deleted, {} manifest copies removed, {} validators stopped auditing",
        v.shards_deleted, v.manifest_copies_deleted, v.validators_released
    );
    if v.shards_pending > 0 {
        eprintln!(
            "{} shards sit on miners that did not answer; run `cairn unpin {cid}` again when they are back",
            v.shards_pending
        );
        std::process::exit(2);
    }
    Ok(())
}

fn devnet(cmd: DevnetCommand) -> Result<()> {
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let make =
        |dir: Option<PathBuf>| Devnet::new(dir.unwrap_or_else(devnet::default_dir), exe.clone());
    match cmd {
        DevnetCommand::Up {
            miners,
            validators,
            capacity,
            gateway_api,
            dir,
        } => {
            let mut d = make(dir);
            d.gateway_api = gateway_api;
            let t = std::time::Instant::now();
            let api = d.up(miners, validators, &capacity.0.to_string())?;
            println!(
                "devnet up in {:.1} s: {miners} miners, {validators} validators, gateway API http://{api} (dashboard there)",
                t.elapsed().as_secs_f64()
            );
            println!("  directory {}; logs in <node>/daemon.log", d.dir.display());
            if api.port() != 7441 {
                println!("  port 7441 was taken: export CAIRN_API={api}");
            }
            Ok(())
        }
        DevnetCommand::Down { dir } => {
            let n = make(dir).down()?;
            println!("devnet down: {n} processes stopped");
            Ok(())
        }
        DevnetCommand::Status { dir } => {
            let d = make(dir);
            for n in d.nodes() {
                println!(
                    "{:<12} {:<8} pid {:<8} {}",
                    n.name,
                    if n.running { "running" } else { "stopped" },
                    n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    n.dir.display()
                );
            }
            if let Some(api) = d.api() {
                println!("gateway API http://{api}");
            }
            Ok(())
        }
        DevnetCommand::StopMiner { index, dir } => {
            let pid = make(dir).stop_miner(index)?;
            println!("miner-{index} (pid {pid}) killed with SIGKILL");
            Ok(())
        }
        DevnetCommand::AddMiner { capacity, dir } => {
            let i = make(dir).add_miner(&capacity.0.to_string())?;
            println!("miner-{i} added and running");
            Ok(())
        }
        DevnetCommand::StartMiner { index, dir } => {
            let pid = make(dir).start_miner(index)?;
            println!("miner-{index} running again (pid {pid})");
            Ok(())
        }
        DevnetCommand::Demo {
            size,
            miners,
            keep,
            dir,
        } => demo::run(make(dir), size.0, miners, keep),
    }
}

/// `cairn register`: burned registration of this node's hotkey, then its address.
async fn register(config: &Config, a: RegisterArgs) -> Result<()> {
    if config.chain.kind != ChainKind::Subtensor {
        bail!(
            "`cairn register` is for chain.kind = \"subtensor\"; in local mode `cairn init` registers the node"
        );
    }
    let coldkey = match (&a.coldkey_file, &a.coldkey_uri) {
        (Some(f), _) => Hotkey::load(f)?,
        (None, Some(u)) => Hotkey::from_uri(u)?,
        (None, None) => bail!(
            "name the paying coldkey: --coldkey-file (unencrypted) or --coldkey-uri; \
             with an encrypted coldkey, register with `btcli subnets register` instead"
        ),
    };
    let hotkey = Hotkey::load(&config.hotkey_path())?;
    let chain = cairn_node::registry::Subtensor::connect(
        &config.chain.endpoint,
        &config.chain.backend,
        config.chain.netuid,
    )
    .await?;
    let already = chain
        .neurons()
        .await?
        .into_iter()
        .any(|n| n.hotkey == hotkey.public());
    if already {
        println!(
            "hotkey {} is already registered on subnet {}",
            hotkey.ss58(),
            config.chain.netuid
        );
    } else {
        chain.register(coldkey.pair(), &hotkey.public()).await?;
        println!(
            "registered hotkey {} on subnet {}",
            hotkey.ss58(),
            config.chain.netuid
        );
    }
    println!("start the node (`cairn run`) to publish its address");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Catches clashing flags and bad defaults, which clap otherwise only
    /// reports when the offending subcommand runs.
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
