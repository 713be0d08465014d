//! `cairn doctor`: checks what breaks home nodes and says, for each finding,
//! what to do. Every check runs, whatever the others found (a broken config
//! stops only the checks that need it); the exit code is 0 when nothing
//! failed (warnings allowed) and 1 otherwise, so scripts can act on it.
//!
//! What it looks at: the config; the data directory (writable, its
//! filesystem, how long an fsync takes there, free space against
//! `capacity`); each extra volume (there, a mount point, its disk present,
//! its filesystem); the node key and the hotkey; the registry or chain
//! (reachable, hotkey registered, commitment published and naming this
//! node, clock against the chain's); the running daemon (and, through it, a
//! validator dialing the node back from outside); the unit's hardening and
//! memory limit (systemd's view, or its installed files and drop-ins where
//! systemd does not run).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_api::{ApiClient, NodeInfo};
use cairn_node::config::{ChainKind, Config};
use cairn_node::identity::{Hotkey, load_node_key};
use cairn_node::registry::{self, AnyRegistry, Registry};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One finding: which check, how bad, what was found, what to do.
#[derive(Debug, Clone)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub found: String,
    pub fix: String,
}

fn ok(check: &'static str, found: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Ok,
        found: found.into(),
        fix: String::new(),
    }
}

fn warn(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Warn,
        found: found.into(),
        fix: fix.into(),
    }
}

fn fail(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Fail,
        found: found.into(),
        fix: fix.into(),
    }
}

/// An fsync slower than this (median of a few) is worth a warning: shards
/// commit slowly and challenges under load may miss their deadline.
const SLOW_FSYNC: Duration = Duration::from_millis(100);
/// A clock further than this from the chain's is worth a warning (grants
/// and their expiries are compared across machines).
const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// How long the chain endpoint has to answer.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs every check; prints the findings (or JSON) and returns whether the
/// node is healthy (no failure).
pub fn run(loaded: anyhow::Result<Config>, api: impl Fn(&Config) -> ApiClient, json: bool) -> bool {
    let findings = check_all(loaded, api);
    if json {
        let list: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "check": f.check,
                    "level": f.level.as_str().to_lowercase(),
                    "found": f.found,
                    "fix": f.fix,
                })
            })
            .collect();
        let healthy = !findings.iter().any(|f| f.level == Level::Fail);
        println!(
            "{}",
            serde_json::json!({ "healthy": healthy, "findings": list })
        );
    } else {
        let mut out = std::io::stdout().lock();
        for f in &findings {
            let _ = writeln!(out, "{:<4}  {:<12} {}", f.level.as_str(), f.check, f.found);
            if !f.fix.is_empty() {
                let _ = writeln!(out, "{:<4}  {:<12} fix: {}", "", "", f.fix);
            }
        }
    }
    !findings.iter().any(|f| f.level == Level::Fail)
}

/// Every check, in the order an operator would fix things.
pub fn check_all(
    loaded: anyhow::Result<Config>,
    api: impl Fn(&Config) -> ApiClient,
) -> Vec<Finding> {
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            return vec![fail(
                "config",
                format!("{e:#}"),
                "fix the key it names (`cairn config default` prints every key with its default and meaning), then run `cairn doctor` again",
            )];
        }
    };
    let mut out = vec![ok(
        "config",
        format!(
            "valid: role {}, data_dir {}, capacity {}",
            config.role,
            config.data_dir.display(),
            config.capacity
        ),
    )];
    let writable = data_dir(&config, &mut out);
    filesystem(&config.data_dir, &mut out);
    if writable {
        fsync(&config.data_dir, &mut out);
    }
    let node_id = match load_node_key(&config.data_dir) {
        Ok(k) => {
            out.push(ok("node key", format!("node id {}", k.public())));
            Some(k.public())
        }
        Err(e) => {
            out.push(fail(
                "node key",
                e.to_string(),
                format!(
                    "create one with `cairn init --data-dir {}` (a new key is a new node)",
                    config.data_dir.display()
                ),
            ));
            None
        }
    };
    let hotkey = hotkey(&config, &mut out);
    let info = daemon(&config, &api(&config), node_id, &mut out);
    capacity(&config, info.as_ref(), &mut out);
    volumes(&config, info.as_ref(), &mut out);
    if let Some(i) = &info {
        reachability(i, &api(&config), &mut out);
    }
    chain(&config, node_id, hotkey.as_ref(), &mut out);
    systemd(&config, &mut out);
    out
}

/// The data directory exists (or can be made) and takes a synced write.
fn data_dir(config: &Config, out: &mut Vec<Finding>) -> bool {
    let dir = &config.data_dir;
    let fix = format!(
        "make {} writable by the user the node runs as (the packages use `cairn`: `chown -R cairn:cairn {}`), or point data_dir at a disk that is",
        dir.display(),
        dir.display()
    );
    if let Err(e) = std::fs::create_dir_all(dir) {
        out.push(fail(
            "data dir",
            format!("{} cannot be created: {e}", dir.display()),
            fix,
        ));
        return false;
    }
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"cairn doctor")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => {
            out.push(ok("data dir", format!("{} is writable", dir.display())));
            true
        }
        Err(e) => {
            out.push(fail(
                "data dir",
                format!("{} is not writable: {e}", dir.display()),
                fix,
            ));
            false
        }
    }
}

/// The filesystem under the data directory, by its magic number.
fn filesystem(dir: &Path, out: &mut Vec<Finding>) {
    let Ok(st) = rustix::fs::statfs(dir) else {
        return;
    };
    // `f_type` is signed on some targets: compare its low 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as i64 as u64) & 0xffff_ffff;
    let (name, trouble): (&str, Option<&str>) = match magic {
        0xEF53 => ("ext4", None),
        0x5846_5342 => ("xfs", None),
        0x9123_683E => ("btrfs", None),
        0xF2F5_2010 => ("f2fs", None),
        0x2FC1_2FC1 => ("zfs", None),
        0x794C_7630 => ("overlayfs", None),
        0x0102_1994 => (
            "tmpfs",
            Some("memory-backed: every shard is lost at reboot, and it counts against RAM"),
        ),
        0x4D44 => (
            "FAT",
            Some("no permissions, no safe rename on power loss, 4 GiB file limit"),
        ),
        0x2011_BAB0 => (
            "exFAT",
            Some("no permissions and no journal: a power cut can lose committed shards"),
        ),
        0x6573_5546 => (
            "FUSE (ntfs-3g, exfat-fuse, sshfs, ...)",
            Some("slow and with weak fsync guarantees"),
        ),
        0x6969 => (
            "NFS",
            Some(
                "a network filesystem: fsync and file locks are not reliable, and the store's lock may not hold",
            ),
        ),
        0xFF53_4D42 | 0xFE53_4D42 => (
            "SMB/CIFS",
            Some("a network filesystem: fsync and file locks are not reliable"),
        ),
        _ => ("other", None),
    };
    match trouble {
        None => out.push(ok(
            "filesystem",
            format!("{name} (magic {magic:#x}) under {}", dir.display()),
        )),
        Some(why) => out.push(warn(
            "filesystem",
            format!("{} is on {name}: {why}", dir.display()),
            "put data_dir on a local ext4 (or xfs, btrfs) filesystem: `mkfs.ext4` the USB disk or SSD and mount it",
        )),
    }
}

/// How long a 64 KiB write plus fsync takes in the data directory (median
/// of five).
fn fsync(dir: &Path, out: &mut Vec<Finding>) {
    let probe = dir.join(format!(".doctor-fsync-{}", std::process::id()));
    let block = vec![0x5au8; 64 << 10];
    let mut took = Vec::new();
    let result = std::fs::File::create(&probe).and_then(|mut f| {
        for _ in 0..5 {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            took.push(t.elapsed());
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = result {
        out.push(fail(
            "fsync",
            format!("a synced write in {} failed: {e}", dir.display()),
            "check the disk (`dmesg` for I/O errors) and its free space",
        ));
        return;
    }
    took.sort();
    let median = took[took.len() / 2];
    let found = format!(
        "64 KiB + fsync takes {:.1} ms (median of 5)",
        median.as_secs_f64() * 1e3
    );
    if median > SLOW_FSYNC {
        out.push(warn(
            "fsync",
            format!("{found}: slow storage (an SD card?)"),
            "shards commit slowly and challenges under load may miss their deadline: move data_dir to a USB SSD or a hard disk",
        ));
    } else {
        out.push(ok("fsync", found));
    }
}

/// `capacity` against what the filesystem can still hold (plus what the
/// store already uses, when the daemon says).
fn capacity(config: &Config, info: Option<&NodeInfo>, out: &mut Vec<Finding>) {
    let Ok(st) = rustix::fs::statvfs(&config.data_dir) else {
        return;
    };
    let available = st.f_bavail.saturating_mul(st.f_frsize);
    let used = info.map_or(0, |i| i.store.used_bytes);
    let room = available.saturating_add(used);
    let capacity = config.capacity.0;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    if capacity > room {
        out.push(fail(
            "capacity",
            format!(
                "capacity is {:.1} GiB but the disk has {:.1} GiB free{}: the node would take shards it cannot store",
                gib(capacity),
                gib(available),
                if used > 0 {
                    format!(" (plus {:.1} GiB the store uses)", gib(used))
                } else {
                    String::new()
                }
            ),
            format!(
                "set capacity to at most {:.0} GiB in the config (keep some room for the system), or free space on the disk",
                (gib(room) * 0.9).floor()
            ),
        ));
    } else {
        out.push(ok(
            "capacity",
            format!(
                "capacity {:.1} GiB; the disk has {:.1} GiB free{}",
                gib(capacity),
                gib(available),
                if used > 0 {
                    format!(", the store uses {:.1} GiB", gib(used))
                } else {
                    String::new()
                }
            ),
        ));
    }
}

/// Each `[[storage.volume]]`: there, a mount point of its own (so that an
/// unmounted disk is an empty directory on the system disk, which the node
/// recognises by the missing marker), its disk present as the daemon sees
/// it, its filesystem, and its capacity against its free space.
fn volumes(config: &Config, info: Option<&NodeInfo>, out: &mut Vec<Finding>) {
    use std::os::unix::fs::MetadataExt;
    for v in &config.storage.volume {
        let path = &v.path;
        let shown = path.display();
        let Ok(meta) = std::fs::metadata(path) else {
            out.push(fail(
                "volume",
                format!("{shown} does not exist"),
                format!("mount its disk at {shown} (or remove the [[storage.volume]] entry), then restart the node"),
            ));
            continue;
        };
        let parent_dev = path
            .parent()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.dev());
        let mount_point = parent_dev.is_none_or(|d| d != meta.dev());
        let marker = path.join(cairn_node::VOLUME_MARKER).is_file();
        let seen = info.and_then(|i| i.volumes.iter().find(|x| Path::new(&x.path) == path));
        // The running node's view decides (it reads the marker as its own
        // user, and knows which disks it set up).
        if seen.is_some_and(|x| !x.present) {
            out.push(fail(
                "volume",
                format!("{shown} is missing (its {} is not there): its shards are reported lost and nothing is written to it", cairn_node::VOLUME_MARKER),
                format!("mount its disk at {shown} again (`mount {shown}`; an /etc/fstab line with `nofail` mounts it at boot); its shards come back as they were"),
            ));
            continue;
        }
        if !mount_point {
            out.push(warn(
                "volume",
                format!("{shown} is not a mount point: it is on the same filesystem as its parent"),
                format!("mount the disk at {shown} before the node starts (an /etc/fstab line with `nofail`); a volume set up while its disk is not mounted lives on the system disk"),
            ));
        }
        filesystem(path, out);
        let available = rustix::fs::statvfs(path)
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
            .unwrap_or(0);
        let used = seen.map_or(0, |x| x.used_bytes);
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        if v.capacity.0 > available.saturating_add(used) {
            out.push(fail(
                "volume",
                format!(
                    "{shown}: capacity is {:.1} GiB but its disk has {:.1} GiB free",
                    gib(v.capacity.0),
                    gib(available)
                ),
                format!(
                    "set its capacity to at most {:.0} GiB, or free space on the disk",
                    (gib(available.saturating_add(used)) * 0.9).floor()
                ),
            ));
        } else if mount_point {
            out.push(ok(
                "volume",
                format!(
                    "{shown}: a mount point, {}, capacity {:.1} GiB, {:.1} GiB free",
                    if marker {
                        "set up"
                    } else {
                        "no marker yet: set up at the next start (if its disk is mounted)"
                    },
                    gib(v.capacity.0),
                    gib(available)
                ),
            ));
        }
    }
}

/// The hotkey file loads.
fn hotkey(config: &Config, out: &mut Vec<Finding>) -> Option<Hotkey> {
    let path = config.hotkey_path();
    match Hotkey::load(&path) {
        Ok(h) => {
            out.push(ok(
                "hotkey",
                format!("{} from {}", h.ss58(), path.display()),
            ));
            Some(h)
        }
        Err(e) => {
            let fix = match config.chain.kind {
                ChainKind::Local => format!(
                    "`cairn init --data-dir {}` writes a local hotkey",
                    config.data_dir.display()
                ),
                ChainKind::Subtensor => format!(
                    "create it with `btcli wallet new_hotkey --wallet.name {} --wallet.hotkey {}`, or set chain.wallet_path, chain.wallet and chain.hotkey to the key btcli wrote",
                    config.chain.wallet, config.chain.hotkey
                ),
            };
            out.push(fail("hotkey", e.to_string(), fix));
            None
        }
    }
}

/// The daemon answers on its API, as this node.
fn daemon(
    config: &Config,
    api: &ApiClient,
    node_id: Option<cairn_node::NodeId>,
    out: &mut Vec<Finding>,
) -> Option<NodeInfo> {
    let unit = unit_name(config);
    match api.info() {
        Ok(i) if node_id.is_some_and(|n| n.to_string() == i.node_id) || node_id.is_none() => {
            out.push(ok(
                "daemon",
                format!(
                    "running at {} for {} s, {:.0} MiB resident",
                    api.addr(),
                    i.uptime_secs,
                    i.rss_bytes as f64 / 1048576.0
                ),
            ));
            Some(i)
        }
        Ok(i) => {
            out.push(fail(
                "daemon",
                format!("the API at {} is another node ({})", api.addr(), i.node_id),
                "two nodes share an API address: give each its own api.listen",
            ));
            None
        }
        Err(e) => {
            out.push(warn(
                "daemon",
                format!("not answering at {}: {e}", api.addr()),
                format!("start it (`systemctl start {unit}`, or `cairn run`); the reachability checks need it"),
            ));
            None
        }
    }
}

/// How the network sees the node: its own assessment, then a validator
/// dialing it back from outside.
fn reachability(info: &NodeInfo, api: &ApiClient, out: &mut Vec<Finding>) {
    if let Some(n) = &info.network {
        let found = format!("{} ({})", n.reachability, n.advice);
        match n.reachability.as_str() {
            "public" | "relayed" => out.push(ok("reach", found)),
            "unreachable" => out.push(fail("reach", found, n.advice.clone())),
            _ => out.push(warn("reach", found, n.advice.clone())),
        }
    }
    match api.dial_back() {
        Ok(d) if d.reached => out.push(ok(
            "dial-back",
            format!(
                "validator {} dialed this node from outside in {} ms: {}",
                short(&d.validator),
                d.rtt_ms.unwrap_or(0),
                d.detail
            ),
        )),
        Ok(d) if d.error.is_none() => {
            let relayed = info.network.as_ref().is_some_and(|n| n.relay_connected);
            let found = format!(
                "validator {} could not dial this node directly: {}",
                short(&d.validator),
                d.detail
            );
            let fix = "forward the node's UDP port on the router to this host and set network.external_addrs to the router's public address and that port";
            if relayed {
                out.push(warn(
                    "dial-back",
                    format!("{found}; peers reach it through the relay"),
                    fix,
                ));
            } else {
                out.push(fail(
                    "dial-back",
                    format!("{found}; no relay either: peers cannot reach it"),
                    format!("{fix}; or set network.relay"),
                ));
            }
        }
        Ok(d) => out.push(warn(
            "dial-back",
            d.error.unwrap_or_default(),
            "a validator must be registered and reachable to check this node from outside",
        )),
        Err(e) => out.push(warn(
            "dial-back",
            format!("the daemon could not ask: {e}"),
            "retry in a minute (a validator dials each node back at most once a minute)",
        )),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

/// The registry or chain: reachable, this hotkey registered, this node's
/// address published and naming this node, the clock.
fn chain(
    config: &Config,
    node_id: Option<cairn_node::NodeId>,
    hotkey: Option<&Hotkey>,
    out: &mut Vec<Finding>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.push(fail("chain", format!("cannot start a runtime: {e}"), ""));
            return;
        }
    };
    rt.block_on(async {
        let opened = tokio::time::timeout(CHAIN_TIMEOUT, registry::open(config)).await;
        let reg = match opened {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                out.push(fail(
                    "chain",
                    format!("cannot reach the registry: {e}"),
                    registry_fix(config),
                ));
                return;
            }
            Err(_) => {
                out.push(fail(
                    "chain",
                    format!(
                        "{} did not answer within {CHAIN_TIMEOUT:?}",
                        config.chain.endpoint
                    ),
                    registry_fix(config),
                ));
                return;
            }
        };
        match &reg {
            AnyRegistry::Local(_) => out.push(ok(
                "chain",
                format!(
                    "local registry {} (no chain)",
                    config.registry_dir().display()
                ),
            )),
            AnyRegistry::Subtensor(s) => {
                out.push(ok(
                    "chain",
                    format!(
                        "{} answers (subnet {})",
                        config.chain.endpoint, config.chain.netuid
                    ),
                ));
                if let Ok(Some(ms)) = s.chain_time_ms().await {
                    let now = cairn_node::unix_millis();
                    let skew = Duration::from_millis(now.abs_diff(ms));
                    let found = format!(
                        "this clock is {:.1} s {} the chain's last block",
                        skew.as_secs_f64(),
                        if now >= ms { "ahead of" } else { "behind" }
                    );
                    if skew > CLOCK_SKEW {
                        out.push(warn(
                            "clock",
                            found,
                            "enable time sync (`timedatectl set-ntp true`); a chain that makes blocks only on demand (a test chain) also lags",
                        ));
                    } else {
                        out.push(ok("clock", found));
                    }
                }
            }
        }
        let (Some(node_id), Some(hotkey)) = (node_id, hotkey) else {
            return;
        };
        registration(config, &reg, node_id, hotkey, out).await;
    });
}

fn registry_fix(config: &Config) -> String {
    match config.chain.kind {
        ChainKind::Local => format!(
            "check chain.registry_dir ({}): it must be a directory this node can read and write",
            config.registry_dir().display()
        ),
        ChainKind::Subtensor => format!(
            "check chain.endpoint ({}): the subtensor node must be running and its websocket port reachable from here",
            config.chain.endpoint
        ),
    }
}

/// The hotkey is registered and the published address names this node.
async fn registration(
    config: &Config,
    reg: &AnyRegistry,
    node_id: cairn_node::NodeId,
    hotkey: &Hotkey,
    out: &mut Vec<Finding>,
) {
    let mine = match reg.member(&node_id).await {
        Ok(m) => m,
        Err(e) => {
            out.push(warn(
                "registered",
                format!("cannot read the registry: {e}"),
                "retry",
            ));
            return;
        }
    };
    if let AnyRegistry::Subtensor(s) = reg {
        let neurons = match s.neurons().await {
            Ok(n) => n,
            Err(e) => {
                out.push(warn(
                    "registered",
                    format!("cannot read the metagraph: {e}"),
                    "retry",
                ));
                return;
            }
        };
        let Some(n) = neurons.iter().find(|n| n.hotkey == hotkey.public()) else {
            out.push(fail(
                "registered",
                format!(
                    "hotkey {} is not registered on subnet {}",
                    hotkey.ss58(),
                    config.chain.netuid
                ),
                "register it: `cairn register` (burns TAO from the coldkey; see `cairn register --help`)",
            ));
            return;
        };
        out.push(ok(
            "registered",
            format!("hotkey {} is uid {}", hotkey.ss58(), n.uid),
        ));
        match &n.address {
            Some(c) if c.node == node_id => {}
            Some(c) => {
                out.push(fail(
                    "commitment",
                    format!(
                        "the hotkey's commitment names node {}, this node is {node_id}",
                        c.node
                    ),
                    "start this node (it publishes its commitment at start), or use the data directory of the node that committed",
                ));
                return;
            }
            None => {
                out.push(fail(
                    "commitment",
                    "the hotkey has no cairn commitment: peers cannot find this node",
                    "start the node: it publishes its address at start (the commitment is a chain call the hotkey pays a small fee for)",
                ));
                return;
            }
        }
    }
    match mine {
        Some(m) if m.hotkey == hotkey.ss58() => out.push(ok(
            "commitment",
            format!(
                "published for this node: {}{}",
                m.addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                m.relay.map(|r| format!(" (relay {r})")).unwrap_or_default()
            ),
        )),
        Some(m) => out.push(fail(
            "commitment",
            format!(
                "this node is published under hotkey {}, the config's is {}",
                m.hotkey,
                hotkey.ss58()
            ),
            "point chain.wallet/chain.hotkey at the hotkey this node registered with",
        )),
        None => out.push(fail(
            "commitment",
            "this node is not in the registry: peers cannot find it",
            "start the node (it publishes itself at start); with a local registry, `cairn init --registry DIR`",
        )),
    }
}

fn unit_name(config: &Config) -> &'static str {
    match config.role {
        cairn_node::Role::Validator => "cairn-validator",
        _ => "cairn-node",
    }
}

/// Where unit files and their drop-ins are, highest precedence first.
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// The unit's settings as systemd would show them (`systemctl show`), or,
/// where systemd does not run (a container, a chroot, an image being
/// built), as its installed files say: the unit file, then its drop-ins in
/// name order, the last assignment of a key winning and an empty one
/// resetting it. `None` when the unit is not installed.
fn unit_settings(unit: &str) -> Option<String> {
    const KEYS: &str = "LoadState,NoNewPrivileges,ProtectSystem,PrivateTmp,MemoryMax,User";
    if Path::new("/run/systemd/system").exists() {
        let o = std::process::Command::new("systemctl")
            .args(["show", unit, "-p", KEYS])
            .output()
            .ok()?;
        return Some(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    let file = format!("{unit}.service");
    let main = UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(&file))
        .find(|p| p.is_file())?;
    let mut files = vec![main];
    let mut drop_ins: Vec<std::path::PathBuf> = UNIT_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(Path::new(d).join(format!("{file}.d"))).ok())
        .flat_map(|r| r.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    // Drop-ins apply in file-name order whatever their directory; a name
    // in a higher directory hides the same name in a lower one (the sort
    // is stable, so the higher comes first and the lower is dropped).
    drop_ins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    drop_ins.dedup_by(|later, earlier| later.file_name() == earlier.file_name());
    files.extend(drop_ins);
    let mut settings: Vec<(String, String)> = vec![("LoadState".into(), "loaded".into())];
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
            } else if let Some((k, v)) = line.split_once('=').filter(|_| in_service) {
                let (k, v) = (k.trim(), v.trim());
                if KEYS.split(',').any(|key| key == k) {
                    settings.retain(|(key, _)| key != k);
                    if !v.is_empty() {
                        settings.push((k.to_string(), v.to_string()));
                    }
                }
            }
        }
    }
    // systemctl's spellings of the defaults the checks look at.
    Some(
        settings
            .into_iter()
            .map(|(k, v)| match (k.as_str(), v.as_str()) {
                ("NoNewPrivileges", "true" | "1" | "on") => format!("{k}=yes"),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The unit's hardening and memory limit: what systemd shows where it
/// runs, else what the installed unit files say.
fn systemd(config: &Config, out: &mut Vec<Finding>) {
    let unit = unit_name(config);
    let Some(shown) = unit_settings(unit) else {
        out.push(ok(
            "systemd",
            format!("{unit}.service is not installed here: unit checks skipped"),
        ));
        return;
    };
    let prop = |k: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    if prop("LoadState") != "loaded" {
        out.push(ok(
            "systemd",
            format!("{unit}.service is not installed: unit checks skipped"),
        ));
        return;
    }
    let mut weak = Vec::new();
    if prop("NoNewPrivileges") != "yes" {
        weak.push("NoNewPrivileges is off");
    }
    if !matches!(prop("ProtectSystem").as_str(), "strict" | "full") {
        weak.push("ProtectSystem is not strict");
    }
    if matches!(prop("MemoryMax").as_str(), "" | "infinity") {
        weak.push("no MemoryMax");
    }
    if prop("User").is_empty() || prop("User") == "root" {
        weak.push("runs as root");
    }
    if weak.is_empty() {
        out.push(ok(
            "systemd",
            format!("{unit}.service: hardened, MemoryMax={}", prop("MemoryMax")),
        ));
    } else {
        out.push(warn(
            "systemd",
            format!("{unit}.service: {}", weak.join(", ")),
            format!("restore the packaged unit (`systemctl revert {unit}`) or remove the override that weakens it"),
        ));
    }
}
