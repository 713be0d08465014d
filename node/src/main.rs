//! `cairn`: the node daemon and its command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_node::config::{ChainKind, Config, Role, SYSTEM_CONFIG};
use cairn_node::daemon::{self, Node};
use cairn_node::identity::{self, Hotkey};
use cairn_node::registry::{Member, Registry};
use cairn_node::sdnotify::Notifier;
use cairn_node::size::ByteSize;
use cairn_node::{EndpointAddr, NodeId, client::Client, logging};
use clap::{Args, Parser, Subcommand};

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
}

#[derive(Subcommand)]
enum Command {
    /// Create the node's identity (node key, local-mode hotkey) and config.
    Init(InitArgs),
    /// Run the node until SIGTERM.
    Run,
    /// Print this node's id, hotkey and role.
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
    /// Bytes one peer may store here.
    #[arg(long)]
    quota: Option<ByteSize>,
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
    match s {
        "miner" => Ok(Role::Miner),
        "validator" => Ok(Role::Validator),
        "client" => Ok(Role::Client),
        _ => Err(format!(
            "unknown role {s:?}: use miner, validator or client"
        )),
    }
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
    if let Command::Config(ConfigCommand::Default) = cli.command {
        print!("{}", Config::commented_default());
        return Ok(());
    }
    let config = load_config(&cli.global)?;
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            println!(
                "config ok: data_dir {}, role {}",
                config.data_dir.display(),
                config.role
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Default) => unreachable!("handled above"),
        Command::Init(args) => init(&cli.global, config, args),
        Command::Id { json } => id(&config, json),
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
    let hk_path = daemon::hotkey_path(&config);
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
        let registry = daemon::open_registry(&config)?;
        let member = Member {
            node_id: key.public(),
            role: config.role,
            addrs: Vec::new(),
            relay: None,
            hotkey: hotkey.ss58(),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: config.capacity.0,
            free: config.capacity.0,
            api: Some(config.api.listen),
        };
        runtime()?.block_on(async {
            // Keep the addresses of an earlier run, if any.
            let mut m = member;
            if let Ok(Some(old)) = registry.member(&m.node_id).await {
                m.addrs = old.addrs;
            }
            registry.publish(&m, &hotkey).await
        })?;
    }
    println!("node id  {}", key.public());
    println!("hotkey   {}", hotkey.ss58());
    println!("role     {}", config.role);
    println!("data dir {}", dir.display());
    if writing_config {
        println!("config   {}", config_path.display());
    }
    Ok(())
}

fn id(config: &Config, json: bool) -> Result<()> {
    let key = identity::load_node_key(&config.data_dir)?;
    let hotkey = Hotkey::load(&daemon::hotkey_path(config))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "node_id": key.public().to_string(),
                "hotkey": hotkey.ss58(),
                "role": config.role.to_string(),
            })
        );
    } else {
        println!(
            "node id {}\nhotkey  {}\nrole    {}",
            key.public(),
            hotkey.ss58(),
            config.role
        );
    }
    Ok(())
}

async fn run_daemon(config: Config) -> Result<()> {
    let notifier = Arc::new(Notifier::from_env());
    let node = Node::start(config).await?;
    tracing::info!(
        node_id = %node.node_id(),
        hotkey = %node.hotkey.ss58(),
        role = %node.state.config.role,
        addrs = ?node.member().addrs,
        "serving"
    );
    node.start_background(Arc::clone(&notifier));
    notifier.ready("serving; reconcile running");
    daemon::wait_for_signal().await;
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
    let endpoint = daemon::bind_endpoint(key, &net, 16).await?;
    Ok(Client::new(endpoint))
}

async fn resolve(config: &Config, p: &PeerArg) -> Result<EndpointAddr> {
    if let Some(a) = p.addr {
        return Ok(EndpointAddr::new(p.peer).with_ip_addr(a));
    }
    let registry = daemon::open_registry(config)?;
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
                let state = ["present", "lost", "corrupt"]
                    .get(e.state as usize)
                    .unwrap_or(&"?");
                println!("{} {:>12} {state}", e.id, e.len);
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
