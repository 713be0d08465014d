//! The node daemon (`cairn run`): wires store, endpoint, registry and
//! server together, tells systemd when it is ready, pings the watchdog, and
//! shuts down cleanly on SIGTERM (requests in flight finish, or leave no trace).
//!
//! Start-up does O(1) work before serving: open RocksDB, read the key, bind.
//! Reconcile and scrub start afterwards, in the background.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, RelayMode, SecretKey};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::client::Client;
use crate::config::{ChainKind, Config, NetworkConfig};
use crate::identity::{Hotkey, default_wallets_dir, load_node_key, wallet_hotkey_path};
use crate::registry::{AnyRegistry, LocalRegistry, Member, Registry};
use crate::sdnotify::{Notifier, watchdog_interval};
use crate::server::{self, NodeState};
use crate::store::Store;
use crate::{ALPN, Error, Result};

/// Binds the QUIC endpoint as the network config says.
pub async fn bind_endpoint(
    secret: SecretKey,
    net: &NetworkConfig,
    max_streams: u32,
) -> Result<Endpoint> {
    // Keep-alives every 2 s and a 10 s idle timeout: a dead peer is noticed in
    // seconds, not after the default half minute.
    let idle = iroh::endpoint::IdleTimeout::try_from(Duration::from_secs(10))
        .map_err(|e| Error::Other(format!("idle timeout: {e}")))?;
    let transport = QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        .keep_alive_interval(Duration::from_secs(2))
        .max_idle_timeout(Some(idle))
        .build();
    let builder = match net.relay.as_str() {
        "default" => Endpoint::builder(presets::N0),
        _ => Endpoint::builder(presets::Minimal),
    };
    let mut builder = builder
        .secret_key(secret)
        .alpns(vec![ALPN.to_vec()])
        .transport_config(transport)
        .clear_ip_transports()
        .bind_addr(net.listen)
        .map_err(|e| Error::Other(format!("network.listen {}: {e}", net.listen)))?;
    builder = match net.relay.as_str() {
        "off" => builder.relay_mode(RelayMode::Disabled),
        "default" => builder,
        url => {
            let url = url
                .parse()
                .map_err(|e| Error::Other(format!("network.relay {url:?}: {e}")))?;
            builder.relay_mode(RelayMode::custom([url]))
        }
    };
    for a in &net.external_addrs {
        builder = builder.external_addr(*a);
    }
    builder.bind().await.map_err(|e| {
        Error::Other(format!(
            "cannot bind the QUIC endpoint on UDP {}: {e}; is the port in use by another process?",
            net.listen
        ))
    })
}

/// The hotkey file this config points at.
pub fn hotkey_path(config: &Config) -> PathBuf {
    match (&config.chain.wallet_path, config.chain.kind) {
        (Some(w), _) => wallet_hotkey_path(w, &config.chain.wallet, &config.chain.hotkey),
        (None, ChainKind::Local) => config.data_dir.join("hotkey"),
        (None, ChainKind::Subtensor) => wallet_hotkey_path(
            &default_wallets_dir(),
            &config.chain.wallet,
            &config.chain.hotkey,
        ),
    }
}

/// Opens the registry the config names.
pub async fn open_registry(config: &Config) -> Result<AnyRegistry> {
    match config.chain.kind {
        ChainKind::Local => Ok(AnyRegistry::Local(LocalRegistry::open(
            &config.registry_dir(),
        )?)),
        ChainKind::Subtensor => Ok(AnyRegistry::Subtensor(
            crate::subtensor::Subtensor::connect(
                &config.chain.endpoint,
                &config.chain.backend,
                config.chain.netuid,
            )
            .await?,
        )),
    }
}

/// Addresses to publish: bound sockets (interfaces when bound to 0.0.0.0)
/// plus configured external addresses.
pub fn published_addrs(endpoint: &Endpoint, net: &NetworkConfig) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in endpoint.bound_sockets() {
        if !a.ip().is_unspecified() {
            out.push(a);
        }
    }
    for a in endpoint.addr().ip_addrs() {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    for a in &net.external_addrs {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

/// A running node.
pub struct Node {
    pub state: Arc<NodeState>,
    pub endpoint: Endpoint,
    pub client: Arc<Client>,
    pub hotkey: Hotkey,
    /// Where the local HTTP API listens.
    pub api_addr: SocketAddr,
    tracker: TaskTracker,
    shutdown: watch::Sender<bool>,
}

/// Extension points a validator (or a test) installs into a node.
#[derive(Default)]
pub struct Hooks {
    pub audit: Option<crate::server::AuditHook>,
    pub scores: Option<crate::server::ScoresHook>,
    pub prover: Option<crate::server::ProverHook>,
}

impl Node {
    /// Opens the store, binds, starts serving and publishes this node.
    pub async fn start(config: Config) -> Result<Node> {
        Self::start_with_hooks(config, Hooks::default()).await
    }

    /// [`Node::start`] with hooks installed in the server.
    pub async fn start_with_hooks(config: Config, hooks: Hooks) -> Result<Node> {
        let secret = load_node_key(&config.data_dir)?;
        let hotkey = Hotkey::load(&hotkey_path(&config))?;
        let store = Arc::new(Store::open(&config.data_dir, config.capacity.0)?);
        let registry = open_registry(&config).await?;
        let endpoint = bind_endpoint(
            secret,
            &config.network,
            config.limits.max_streams_per_connection,
        )
        .await?;
        let node_id = endpoint.id();
        let mut state = NodeState::new(node_id, config, store, registry);
        state.audit_hook = hooks.audit;
        state.scores_hook = hooks.scores;
        state.prover_hook = hooks.prover;
        let state = Arc::new(state);
        Self::start_with_state(state, endpoint, hotkey).await
    }

    /// Starts serving with a prepared state (the validator adds its hooks first).
    pub async fn start_with_state(
        state: Arc<NodeState>,
        endpoint: Endpoint,
        hotkey: Hotkey,
    ) -> Result<Node> {
        let tracker = TaskTracker::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        {
            let endpoint = endpoint.clone();
            let state = Arc::clone(&state);
            let t = tracker.clone();
            tokio::spawn(server::serve(endpoint, state, t, shutdown_rx));
        }
        let client = Arc::new(Client::new(endpoint.clone()));
        let listener = crate::http::bind(state.config.api.listen).await?;
        let api_addr = listener
            .local_addr()
            .map_err(|e| Error::io("api listener address", e))?;
        let node = Node {
            state,
            endpoint,
            client,
            hotkey,
            api_addr,
            tracker,
            shutdown,
        };
        let api = Arc::new(crate::http::ApiState {
            node: Arc::clone(&node.state),
            ctx: node.dataset_context(),
            hotkey: node.hotkey.ss58(),
            started: std::time::Instant::now(),
        });
        tokio::spawn(crate::http::serve(listener, api, node.shutdown.subscribe()));
        node.publish().await?;
        Ok(node)
    }

    pub fn node_id(&self) -> crate::NodeId {
        self.state.node_id
    }

    /// What the dataset pipelines need from this node.
    pub fn dataset_context(&self) -> crate::datasets::DatasetContext {
        crate::datasets::DatasetContext {
            node_id: self.state.node_id,
            key: self.endpoint.secret_key().clone(),
            client: Arc::clone(&self.client),
            registry: self.state.registry.clone(),
            store: Arc::clone(&self.state.store),
            cache: Default::default(),
        }
    }

    /// This node as the registry should show it.
    pub fn member(&self) -> Member {
        let c = &self.state.config;
        let free = self.state.store.free_bytes().unwrap_or(0);
        Member {
            node_id: self.state.node_id,
            role: c.role,
            addrs: published_addrs(&self.endpoint, &c.network),
            relay: self
                .endpoint
                .addr()
                .relay_urls()
                .next()
                .map(|u| u.to_string()),
            hotkey: self.hotkey.ss58(),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: c.capacity.0,
            free,
            api: Some(self.api_addr),
        }
    }

    /// Announces (or refreshes) this node in the registry.
    pub async fn publish(&self) -> Result<()> {
        self.state
            .registry
            .publish(&self.member(), &self.hotkey)
            .await
    }

    /// Starts reconcile and scrub in the background; reports through `notifier`.
    pub fn start_background(&self, notifier: Arc<Notifier>) {
        let store = Arc::clone(&self.state.store);
        let n = Arc::clone(&notifier);
        tokio::spawn(async move {
            let s = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || s.reconcile()).await {
                Ok(Ok(r)) => {
                    tracing::info!(
                        temporaries = r.temporaries_removed,
                        orphans = r.orphans_removed,
                        lost = r.lost_found,
                        "reconcile done"
                    );
                    n.status(&format!(
                        "serving; reconciled: {} orphans, {} temporaries removed, {} lost",
                        r.orphans_removed, r.temporaries_removed, r.lost_found
                    ));
                }
                Ok(Err(e)) => tracing::error!(error = %e, "reconcile failed"),
                Err(e) => tracing::error!(error = %e, "reconcile panicked"),
            }
        });
        let rate = self.state.config.storage.scrub_rate.0;
        let interval = self.state.config.storage.scrub_interval_secs;
        if rate > 0 {
            let store = Arc::clone(&self.state.store);
            tokio::spawn(scrub_loop(store, rate, interval));
        }
        if let Some(every) = watchdog_interval() {
            let store = Arc::clone(&self.state.store);
            tokio::spawn(async move {
                loop {
                    // Ping only while the metadata store answers.
                    if store.stats().is_ok() {
                        notifier.watchdog();
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        // Refresh the registry entry (free space changes).
        let registry = self.state.registry.clone();
        let hotkey = self.hotkey.clone();
        let member = self.member();
        let store = Arc::clone(&self.state.store);
        tokio::spawn(async move {
            let mut member = member;
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                member.free = store.free_bytes().unwrap_or(0);
                if let Err(e) = registry.publish(&member, &hotkey).await {
                    tracing::warn!(error = %e, "registry refresh failed");
                }
            }
        });
    }

    /// Stops accepting, lets requests in flight finish (up to `grace`), closes.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {grace:?}; closing anyway");
        }
        self.endpoint.close().await;
    }
}

async fn scrub_loop(store: Arc<Store>, rate: u64, interval: u64) {
    let mut cursor = None;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let older_than = now.saturating_sub(interval);
        let s = Arc::clone(&store);
        let c = cursor;
        let r = tokio::task::spawn_blocking(move || s.scrub_one(c.as_ref(), older_than)).await;
        match r {
            Ok(Ok(Some((id, _, bytes)))) => {
                cursor = Some(id);
                let pause = Duration::from_secs_f64(bytes as f64 / rate as f64);
                tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
            }
            Ok(Ok(None)) => {
                cursor = None;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "scrub step failed");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Err(_) => return,
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
