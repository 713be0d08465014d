//! [`Node`]: the facade of a running node, and the only door other crates
//! (the `cairn` binary, the validator, tests) use.
//!
//! Start-up does O(1) work before serving: open RocksDB, read the keys,
//! bind. Reconcile and scrub start afterwards, in the background. The node
//! tells systemd when it is ready, pings the watchdog, and shuts down cleanly
//! on SIGTERM (requests in flight finish, or leave no trace).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::{Kv, Store, VolumeSpec};
use iroh::{Endpoint, Watcher};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::datasets::Datasets;
use crate::datasets::cache::disk::DiskTier;
use crate::error::{Error, Result};
use crate::gateway::{self, ApiState};
use crate::identity::{Hotkey, load_node_key};
use crate::net::Client;
use crate::net::bandwidth::Bandwidth;
use crate::net::endpoint::{bind_endpoint, published_addrs};
use crate::registry::{self, AnyRegistry, Member, Registry};
use crate::sdnotify::{Notifier, watchdog_interval};
use crate::server::{self, Server};
use crate::verdicts::VerdictBook;
use cairn_proto::{NodeId, Role};

pub use crate::server::{AuditRefusal, HeldShards, Prover, ProverAction, ValidatorService};

/// How a node is started: its config and what a validator or a test adds.
pub struct NodeBuilder {
    config: Config,
    validator: Option<Arc<dyn ValidatorService>>,
    prover: Option<Arc<dyn Prover>>,
}

impl NodeBuilder {
    /// Serve audit requests and the scoreboard for this validator.
    pub fn validator(mut self, v: Arc<dyn ValidatorService>) -> Self {
        self.validator = Some(v);
        self
    }

    /// Answer challenges with this prover instead of the honest one (tests
    /// and research only).
    pub fn prover(mut self, p: Arc<dyn Prover>) -> Self {
        self.prover = Some(p);
        self
    }

    /// Opens the store, binds, starts serving and publishes this node.
    pub async fn start(self) -> Result<Node> {
        let config = Arc::new(self.config);
        let secret = load_node_key(&config.data_dir)?;
        let hotkey = Hotkey::load(&config.hotkey_path())?;
        let volumes: Vec<VolumeSpec> = config
            .storage
            .volume
            .iter()
            .map(|v| VolumeSpec {
                path: v.path.clone(),
                capacity: v.capacity.0,
            })
            .collect();
        let store = Arc::new(Store::open_with_volumes(
            &config.data_dir,
            config.capacity.0,
            &volumes,
        )?);
        let registry = registry::open(&config).await?;
        let endpoint = bind_endpoint(
            secret.clone(),
            &config.network,
            config.limits.max_streams_per_connection,
        )
        .await?;
        let node_id = endpoint.id();
        let bandwidth = Arc::new(Bandwidth::new(
            config.limits.upload_rate.0,
            config.limits.download_rate.0,
        ));
        let server = Arc::new(Server::new(
            node_id,
            Arc::clone(&config),
            Arc::clone(&store),
            registry.clone(),
            self.validator,
            self.prover,
            Arc::clone(&bandwidth),
        ));
        let tracker = TaskTracker::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(server::serve(
            endpoint.clone(),
            Arc::clone(&server),
            tracker.clone(),
            shutdown_rx,
        ));
        let client = Arc::new(Client::new(endpoint.clone()).with_bandwidth(bandwidth));
        let datasets = Arc::new(Datasets::new(
            secret,
            Arc::clone(&client),
            registry.clone(),
            Arc::clone(&store),
            config.network.failure_domains.rule(),
            config.cache.memory.0,
            match config.cache.disk.0 {
                0 => None,
                budget => Some(DiskTier::open(&config.data_dir, budget)?),
            },
        ));
        let verdicts = Arc::new(VerdictBook::new(
            node_id,
            registry.clone(),
            Arc::clone(&client),
        ));
        let listener = gateway::bind(config.api.listen).await?;
        let api_addr = listener
            .local_addr()
            .map_err(|e| Error::io("api listener address", e))?;
        let api = Arc::new(ApiState {
            guard: gateway::guard::Guard::load_or_create(&config.data_dir, api_addr)?,
            server: Arc::clone(&server),
            datasets: Arc::clone(&datasets),
            hotkey: hotkey.ss58(),
            started: std::time::Instant::now(),
            endpoint: endpoint.clone(),
            client: Arc::clone(&client),
            verdicts: Arc::clone(&verdicts),
            transfers: Arc::default(),
        });
        tokio::spawn(gateway::serve(listener, api, shutdown.subscribe()));
        let node = Node {
            config,
            server,
            store,
            registry,
            endpoint,
            client,
            datasets,
            verdicts,
            hotkey,
            api_addr,
            tracker,
            shutdown,
        };
        if node.config.network.relay != "off" {
            // Publish the relay and the address the relay saw, not just the
            // bound one: behind a NAT the bound one is useless to peers.
            // Whatever is late is published when it arrives (below).
            let wait = Duration::from_secs(5);
            if tokio::time::timeout(wait, node.endpoint.online())
                .await
                .is_err()
            {
                tracing::warn!(
                    relay = %node.config.network.relay,
                    "the relay did not answer within {wait:?}; publishing the direct addresses now and the relay once it answers"
                );
            }
        }
        node.publish().await?;
        Ok(node)
    }
}

/// A node as the registry should show it: its addresses and relay as the
/// endpoint knows them now.
fn member_of(
    endpoint: &Endpoint,
    config: &Config,
    hotkey: &Hotkey,
    store: &Store,
    api_addr: std::net::SocketAddr,
) -> Member {
    Member {
        node_id: endpoint.id(),
        role: config.role,
        addrs: published_addrs(endpoint, &config.network),
        relay: endpoint.addr().relay_urls().next().map(|u| u.to_string()),
        hotkey: hotkey.ss58(),
        uid: None,
        stake: 0,
        validator_permit: false,
        capacity: config.total_capacity(),
        free: store.free_bytes().unwrap_or(0),
        api: Some(api_addr),
    }
}

/// A running node.
pub struct Node {
    config: Arc<Config>,
    server: Arc<Server>,
    store: Arc<Store>,
    registry: AnyRegistry,
    endpoint: Endpoint,
    client: Arc<Client>,
    datasets: Arc<Datasets>,
    verdicts: Arc<VerdictBook>,
    hotkey: Hotkey,
    api_addr: SocketAddr,
    tracker: TaskTracker,
    shutdown: watch::Sender<bool>,
}

impl Node {
    /// A node of this config, to be started.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder {
            config,
            validator: None,
            prover: None,
        }
    }

    /// Starts a plain node (miner, gateway or client).
    pub async fn start(config: Config) -> Result<Node> {
        Self::builder(config).start().await
    }

    pub fn node_id(&self) -> NodeId {
        self.server.node_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn hotkey(&self) -> &Hotkey {
        &self.hotkey
    }

    /// Where the local HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The protocol client bound to this node's endpoint and identity.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The node's dataset service (one cache, shared with the gateway).
    pub fn datasets(&self) -> &Arc<Datasets> {
        &self.datasets
    }

    /// Membership, as this node's registry sees it.
    pub fn registry(&self) -> &AnyRegistry {
        &self.registry
    }

    /// A namespace of the node's key-value space, for a component's state.
    pub fn kv(&self, namespace: &str) -> Result<Kv<'_>> {
        Ok(self.store.kv(namespace)?)
    }

    /// This node as the registry should show it.
    pub fn member(&self) -> Member {
        member_of(
            &self.endpoint,
            &self.config,
            &self.hotkey,
            &self.store,
            self.api_addr,
        )
    }

    /// Announces (or refreshes) this node in the registry.
    pub async fn publish(&self) -> Result<()> {
        self.registry
            .publish(&self.member(), &self.hotkey, self.endpoint.secret_key())
            .await
    }

    /// Starts reconcile and scrub in the background, the watchdog pings and
    /// the registry refresh; reports through `notifier`.
    pub fn start_background(&self, notifier: Arc<Notifier>) {
        let store = Arc::clone(&self.store);
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
        // A miner learns why validators fail it, and says so in its log.
        if self.config.role == Role::Miner {
            tokio::spawn(Arc::clone(&self.verdicts).poll());
        }
        // A disk unplugged (or mounted again) is noticed within seconds,
        // not only when a read or a write touches it.
        if !self.config.storage.volume.is_empty() {
            let store = Arc::clone(&self.store);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(VOLUME_CHECK_EVERY).await;
                    let s = Arc::clone(&store);
                    // A disk back: the copies replaced while it was away
                    // are orphans on it now; reconcile removes them.
                    let step = tokio::task::spawn_blocking(move || {
                        s.check_volumes();
                        // Whoever noticed the disk back (this look, a read,
                        // a write), it is reconciled once.
                        if s.take_reconcile_wanted()
                            && let Err(e) = s.reconcile()
                        {
                            tracing::warn!(error = %e, "reconcile after a volume came back failed");
                        }
                    });
                    if step.await.is_err() {
                        return;
                    }
                }
            });
        }
        let rate = self.config.storage.scrub_rate.0;
        let interval = self.config.storage.scrub_interval_secs;
        if rate > 0 {
            tokio::spawn(scrub_loop(Arc::clone(&self.store), rate, interval));
        }
        if let Some(every) = watchdog_interval() {
            let store = Arc::clone(&self.store);
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
        // Refresh the registry entry: at once when the endpoint's addresses
        // change (the relay answered, a NAT mapping moved), else every minute
        // (free space changes).
        let registry = self.registry.clone();
        let hotkey = self.hotkey.clone();
        let store = Arc::clone(&self.store);
        let endpoint = self.endpoint.clone();
        let config = Arc::clone(&self.config);
        let api_addr = self.api_addr;
        tokio::spawn(async move {
            let mut addrs = endpoint.watch_addr();
            let mut last = member_of(&endpoint, &config, &hotkey, &store, api_addr);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    changed = addrs.updated() => if changed.is_err() { return },
                }
                let member = member_of(&endpoint, &config, &hotkey, &store, api_addr);
                if member.addrs != last.addrs || member.relay != last.relay {
                    tracing::info!(addrs = ?member.addrs, relay = ?member.relay, "addresses changed; publishing them");
                }
                if let Err(e) = registry
                    .publish(&member, &hotkey, endpoint.secret_key())
                    .await
                {
                    tracing::warn!(error = %e, "registry refresh failed");
                }
                last = member;
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

/// How often the node looks for its volumes' markers.
const VOLUME_CHECK_EVERY: Duration = Duration::from_secs(5);

async fn scrub_loop(store: Arc<Store>, rate: u64, interval: u64) {
    let mut cursor = None;
    loop {
        let older_than = cairn_store::unix_secs().saturating_sub(interval);
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
