//! The node's configuration: a TOML file plus `CAIRN_*` environment overrides.
//!
//! `/etc/cairn/node.toml` for the service, `--config PATH` otherwise; with no
//! file, defaults for a node in `--data-dir`. An environment variable
//! `CAIRN_<SECTION>_<KEY>` (or `CAIRN_<KEY>` for top-level keys) overrides the
//! file, e.g. `CAIRN_NETWORK_LISTEN=0.0.0.0:7440`. Unknown keys and bad values
//! are errors that name the key, so a typo never silently falls back to a
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::size::{ByteSize, Quota};

pub use cairn_proto::Role;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where keys, metadata and shards live.
    pub data_dir: PathBuf,
    pub role: Role,
    /// Bytes this node may use for shards (data + outboards) in `data_dir`;
    /// `[[storage.volume]]` adds disks beside it (0 keeps shards off the
    /// data directory's disk).
    pub capacity: ByteSize,
    pub network: NetworkConfig,
    pub chain: ChainConfig,
    pub api: ApiConfig,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    /// The validator's own section, parsed (strictly) by cairn-validator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// UDP address of the QUIC endpoint. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// `off` (direct addresses only), `default` (iroh's public relays, for
    /// nodes behind NAT) or the URL of a relay of your own.
    pub relay: String,
    /// A PEM file of certificates to trust for the relay besides the usual
    /// web roots: a relay of your own with a certificate from your own CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_ca: Option<PathBuf>,
    /// Addresses to publish besides the bound ones (a port forward, say).
    pub external_addrs: Vec<SocketAddr>,
    /// How placement tells failure domains apart, the same on every node of
    /// a network: `network` (a public /24 or /48 of the committed addresses;
    /// loopback and private addresses share one domain) or `node` (every
    /// node its own domain: a devnet on one host).
    pub failure_domains: FailureDomains,
}

/// `[network] failure_domains`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureDomains {
    #[default]
    Network,
    Node,
}

impl FailureDomains {
    pub fn rule(self) -> cairn_proto::placement::DomainRule {
        match self {
            FailureDomains::Network => cairn_proto::placement::DomainRule::Network,
            FailureDomains::Node => cairn_proto::placement::DomainRule::PerNode,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// A registry in a directory shared by the nodes of one machine or LAN.
    Local,
    /// The subtensor chain.
    Subtensor,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    pub kind: ChainKind,
    /// Local registry directory (kind = "local"). Default: `<data_dir>/registry`.
    pub registry_dir: Option<PathBuf>,
    /// Subtensor WebSocket endpoint (kind = "subtensor").
    pub endpoint: String,
    /// Subnet id.
    pub netuid: u16,
    /// `legacy` (needed by chopsticks-based test chains) or `default`.
    pub backend: String,
    /// Bittensor wallet directory, as btcli uses it.
    pub wallet_path: Option<PathBuf>,
    pub wallet: String,
    pub hotkey: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// TCP address of the local HTTP API, dashboard, metrics and read gateway.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest shard accepted.
    pub max_shard_size: ByteSize,
    /// What one peer (one dataset owner) may store here: a share of the
    /// capacity ("50%") or a size.
    pub quota_per_peer: Quota,
    pub max_concurrent_puts: usize,
    pub max_concurrent_gets: usize,
    pub max_concurrent_challenges: usize,
    /// Streams one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Bytes per second this node sends, over all transfers (0: no cap).
    /// Challenge answers are never held back.
    pub upload_rate: ByteSize,
    /// Bytes per second this node receives, over all transfers (0: no cap).
    pub download_rate: ByteSize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Bytes per second the background scrub re-hashes (0 turns it off).
    pub scrub_rate: ByteSize,
    /// Seconds between two scrubs of the same shard.
    pub scrub_interval_secs: u64,
    /// More disks for shards (`[[storage.volume]]`), each a mount point.
    pub volume: Vec<VolumeConfig>,
}

/// `[[storage.volume]]`: a disk for shards besides the data directory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Where the disk is mounted (an absolute path).
    pub path: PathBuf,
    /// Bytes of shards it may take.
    pub capacity: ByteSize,
}

/// `[cache]`: verified shard groups a reading node keeps, so a dataset read
/// again (a training job's next epoch) does not go back to the miners.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes of verified groups kept in memory (0 turns the cache off).
    pub memory: ByteSize,
    /// Bytes of verified data shards kept on disk under the data directory
    /// (0, the default, turns the disk tier off).
    pub disk: ByteSize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace` (for cairn's own crates) or
    /// `target=level` directives (`warn,cairn_node=debug,iroh=info`).
    pub level: String,
    /// `auto` (journald under systemd, terminal otherwise), `journald` or `terminal`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/cairn"),
            role: Role::Miner,
            capacity: ByteSize(10 << 30),
            network: NetworkConfig::default(),
            chain: ChainConfig::default(),
            api: ApiConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            cache: CacheConfig::default(),
            log: LogConfig::default(),
            validator: None,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: "0.0.0.0:7440".parse().expect("valid"),
            relay: "off".into(),
            relay_ca: None,
            external_addrs: Vec::new(),
            failure_domains: FailureDomains::default(),
        }
    }
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            kind: ChainKind::Local,
            registry_dir: None,
            endpoint: "ws://127.0.0.1:9944".into(),
            netuid: 0,
            backend: "default".into(),
            wallet_path: None,
            wallet: "default".into(),
            hotkey: "default".into(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:7441".parse().expect("valid"),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_shard_size: ByteSize(64 << 20),
            quota_per_peer: Quota::Share(0.5),
            max_concurrent_puts: 8,
            max_concurrent_gets: 32,
            max_concurrent_challenges: 16,
            max_streams_per_connection: 64,
            upload_rate: ByteSize(0),
            download_rate: ByteSize(0),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            scrub_rate: ByteSize(4 << 20),
            scrub_interval_secs: 7 * 24 * 3600,
            volume: Vec::new(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: ByteSize(64 << 20),
            disk: ByteSize(0),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

/// The config file a service uses.
pub const SYSTEM_CONFIG: &str = "/etc/cairn/node.toml";

impl Config {
    /// Loads `path` (or only defaults when `None`), applies `CAIRN_*`
    /// variables from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let shown = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(defaults)".into());
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| Error::Config {
                path: shown.clone(),
                message: format!(
                    "cannot read: {e}; write one with `cairn config default > FILE` or pass --config"
                ),
            })?,
            None => String::new(),
        };
        Self::parse(&text, &shown, env)
    }

    /// Parses a config file's text (`shown` names it in errors), applies
    /// `CAIRN_*` variables from `env`, and validates. What [`Config::load`]
    /// does after reading the file; the fuzz target `config` drives it.
    pub fn parse(
        text: &str,
        shown: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let err = |message: String| Error::Config {
            path: shown.to_string(),
            message,
        };
        let mut table: toml::Table = text
            .parse::<toml::Table>()
            .map_err(|e| err(e.to_string()))?;
        let mut overridden = Vec::new();
        for (key, value) in env {
            if let Some(name) = key.strip_prefix("CAIRN_")
                && apply_env(&mut table, name, &value).map_err(|m| err(format!("{key}: {m}")))?
            {
                overridden.push(key);
            }
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let mut m = e.message().trim().to_string();
                    if !overridden.is_empty() {
                        m.push_str(&format!(
                            " (environment overrides: {})",
                            overridden.join(", ")
                        ));
                    }
                    err(m)
                })?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        crate::logging::parse_filter(&self.log.level).map_err(|e| format!("log.level: {e}"))?;
        if self.limits.max_shard_size.0 == 0
            || self.limits.max_shard_size.0 > cairn_proof::MAX_SHARD_LEN
        {
            return Err(format!(
                "limits.max_shard_size must be between 1 byte and {}",
                cairn_proof::MAX_SHARD_LEN
            ));
        }
        for (name, v) in [
            (
                "limits.max_concurrent_puts",
                self.limits.max_concurrent_puts,
            ),
            (
                "limits.max_concurrent_gets",
                self.limits.max_concurrent_gets,
            ),
            (
                "limits.max_concurrent_challenges",
                self.limits.max_concurrent_challenges,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, rate) in [
            ("limits.upload_rate", self.limits.upload_rate.0),
            ("limits.download_rate", self.limits.download_rate.0),
        ] {
            if rate != 0 && rate < MIN_RATE {
                return Err(format!(
                    "{name} is {rate} bytes/s; a cap must be 0 (none) or at least 256KiB (2 Mbit/s): below that, peers give up on transfers that slow"
                ));
            }
        }
        for v in &self.storage.volume {
            if !v.path.is_absolute() {
                return Err(format!(
                    "storage.volume path {:?} must be absolute (the disk's mount point)",
                    v.path
                ));
            }
        }
        match self.network.relay.as_str() {
            "off" | "default" => {}
            url if url.starts_with("https://") || url.starts_with("http://") => {}
            other => {
                return Err(format!(
                    "network.relay = {other:?}: use \"off\", \"default\" or a relay URL (https://...)"
                ));
            }
        }
        match self.log.format.as_str() {
            "auto" | "journald" | "terminal" => {}
            other => {
                return Err(format!(
                    "log.format = {other:?}: use \"auto\", \"journald\" or \"terminal\""
                ));
            }
        }
        match self.chain.backend.as_str() {
            "legacy" | "default" => {}
            other => {
                return Err(format!(
                    "chain.backend = {other:?}: use \"default\" or \"legacy\""
                ));
            }
        }
        Ok(())
    }

    /// Bytes of shards the node may hold: the data directory's `capacity`
    /// and every volume's.
    pub fn total_capacity(&self) -> u64 {
        self.storage
            .volume
            .iter()
            .fold(self.capacity.0, |sum, v| sum.saturating_add(v.capacity.0))
    }

    /// The local registry directory.
    pub fn registry_dir(&self) -> PathBuf {
        self.chain
            .registry_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("registry"))
    }

    /// The hotkey file this config points at: the btcli wallet layout, or
    /// `<data_dir>/hotkey` in local mode.
    pub fn hotkey_path(&self) -> PathBuf {
        use crate::identity::{default_wallets_dir, wallet_hotkey_path};
        match (&self.chain.wallet_path, self.chain.kind) {
            (Some(w), _) => wallet_hotkey_path(w, &self.chain.wallet, &self.chain.hotkey),
            (None, ChainKind::Local) => self.data_dir.join("hotkey"),
            (None, ChainKind::Subtensor) => wallet_hotkey_path(
                &default_wallets_dir(),
                &self.chain.wallet,
                &self.chain.hotkey,
            ),
        }
    }

    /// A commented config file with every key at its default.
    pub fn commented_default() -> &'static str {
        include_str!("../../node.toml")
    }
}

/// The lowest bandwidth cap accepted (bytes/s): peers refuse bodies that
/// average under 64 KiB/s, and several transfers share a cap.
const MIN_RATE: u64 = 256 << 10;

const SECTIONS: [&str; 8] = [
    "network",
    "chain",
    "api",
    "limits",
    "storage",
    "cache",
    "log",
    "validator",
];

/// Top-level keys settable from the environment (`CAIRN_CAPACITY`).
const TOP_LEVEL: [&str; 3] = ["data_dir", "role", "capacity"];

/// The `cairn` command's own variables (its `--api-token-file` and
/// `--config` flags), not config keys, although `API_TOKEN_FILE` starts like
/// the `[api]` section.
const CLI_VARIABLES: [&str; 2] = ["api_token_file", "config"];

/// `NETWORK_LISTEN` -> `network.listen`; the value is read as TOML when it
/// parses as such (numbers, booleans, arrays), else as a string. Variables
/// that name no section or top-level key belong to other tools (the CLI's
/// `CAIRN_API`, test settings) and are left alone: returns false for them.
/// An unknown key inside a known section stays an error (deny_unknown_fields).
fn apply_env(
    table: &mut toml::Table,
    name: &str,
    value: &str,
) -> std::result::Result<bool, String> {
    let lower = name.to_ascii_lowercase();
    if CLI_VARIABLES.contains(&lower.as_str()) {
        return Ok(false);
    }
    for section in SECTIONS {
        if let Some(key) = lower
            .strip_prefix(section)
            .and_then(|k| k.strip_prefix('_'))
        {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                return Err(format!("[{section}] in the file is not a table"));
            };
            t.insert(key.to_string(), parse_env_value(value));
            return Ok(true);
        }
    }
    if TOP_LEVEL.contains(&lower.as_str()) {
        table.insert(lower, parse_env_value(value));
        return Ok(true);
    }
    Ok(false)
}

fn parse_env_value(v: &str) -> toml::Value {
    let doc = format!("v = {v}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.into())),
        Err(_) => toml::Value::String(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// The error text of a config that must not load.
    fn load_err(text: &str, env: &[(&str, &str)]) -> String {
        load_str(text, env).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_commented_config_loads() {
        let c = load_str(Config::commented_default(), &[]).unwrap();
        assert_eq!(c.role, Role::Miner);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cairn"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load_err("capacty = \"1GiB\"\n", &[]);
        assert!(e.contains("capacty"), "{e}");
        let e = load_err("[network]\nlisten_addr = \"1.2.3.4:5\"\n", &[]);
        assert!(e.contains("listen_addr"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = load_err("capacity = \"12XB\"\n", &[]);
        assert!(e.contains("12XB") && e.contains("unit"), "{e}");
        let e = load_err("role = \"farmer\"\n", &[]);
        assert!(e.contains("farmer"), "{e}");
        let e = load_err("[network]\nrelay = \"maybe\"\n", &[]);
        assert!(e.contains("network.relay"), "{e}");
        let e = load_err("[network]\nlisten = \"nowhere\"\n", &[]);
        assert!(e.contains("nowhere") || e.contains("address"), "{e}");
    }

    #[test]
    fn volumes_are_tables_of_absolute_paths_and_capacities() {
        let c = load_str(
            "capacity = \"0\"\n[[storage.volume]]\npath = \"/mnt/a\"\ncapacity = \"1GiB\"\n\
             [[storage.volume]]\npath = \"/mnt/b\"\ncapacity = \"2GiB\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.storage.volume.len(), 2);
        assert_eq!(c.total_capacity(), 3 << 30);
        // The environment takes them as an inline array (the tests do).
        let c = load_str(
            "",
            &[(
                "CAIRN_STORAGE_VOLUME",
                "[{ path = \"/mnt/c\", capacity = \"1MiB\" }]",
            )],
        )
        .unwrap();
        assert_eq!(c.storage.volume[0].path, PathBuf::from("/mnt/c"));
        let e = load_err(
            "[[storage.volume]]\npath = \"mnt/a\"\ncapacity = \"1GiB\"\n",
            &[],
        );
        assert!(e.contains("must be absolute"), "{e}");
        let e = load_err("[[storage.volume]]\npath = \"/mnt/a\"\n", &[]);
        assert!(e.contains("capacity"), "{e}");
    }

    #[test]
    fn a_bad_log_filter_is_a_config_error() {
        let e = load_err("[log]\nlevel = \"loud\"\n", &[]);
        assert!(e.contains("log.level") && e.contains("target=level"), "{e}");
        assert!(load_str("[log]\nlevel = \"warn,iroh=debug\"\n", &[]).is_ok());
    }

    #[test]
    fn env_overrides_the_file() {
        let c = load_str(
            "capacity = \"1GiB\"\n",
            &[
                ("CAIRN_CAPACITY", "2GiB"),
                ("CAIRN_NETWORK_LISTEN", "127.0.0.1:9000"),
                ("CAIRN_LIMITS_MAX_CONCURRENT_PUTS", "3"),
                ("HOME", "/root"),
                ("CAIRN_REQUIRE_EXTERNAL", "1"),
                ("CAIRN_API", "127.0.0.1:1"),
                ("CAIRN_API_TOKEN_FILE", "/run/cairn/api.token"),
                ("CAIRN_CONFIG", "/etc/cairn/node.toml"),
            ],
        )
        .unwrap();
        assert_eq!(c.capacity.0, 2 << 30);
        assert_eq!(c.network.listen.port(), 9000);
        assert_eq!(c.limits.max_concurrent_puts, 3);
        let e = load_err("", &[("CAIRN_LIMITS_MAX_CONCURRENT_PUTS", "lots")]);
        assert!(e.contains("CAIRN_LIMITS_MAX_CONCURRENT_PUTS"), "{e}");
        let e = load_err("", &[("CAIRN_NETWORK_LISTN", "1.2.3.4:5")]);
        assert!(e.contains("listn"), "a typo inside a section is named: {e}");
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let e = Config::load(Some(Path::new("/nonexistent/node.toml")), [])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--config"), "{e}");
    }
}
