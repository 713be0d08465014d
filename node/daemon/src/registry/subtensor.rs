//! The subtensor backend of the registry: the Bittensor chain, through subxt.
//!
//! Calls are encoded from the chain's own metadata (dynamic), so the node
//! follows the runtime it talks to rather than a compiled-in copy. Reads:
//! the subnet's neurons (`SubnetworkN`, `Keys`, `ValidatorPermit`,
//! `TotalHotkeyAlpha`) and each neuron's cairn address, published with
//! `Commitments.set_commitment` as two raw fields: the iroh node id (32
//! bytes) and `cairn1;<role>;<addr>,<addr>...` (axon info would reject
//! loopback and LAN-only addresses, and holds no node id). Writes:
//! `set_commitment`, `burned_register` (only on `cairn register`) and
//! `set_weights`.
//!
//! Every chain error reaches the operator by name with what to do about it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sp_core::Pair as _;
use sp_core::sr25519;
use subxt::dynamic::{At, Value};
use subxt::ext::scale_value::{Composite, Primitive, ValueDef};
use subxt::utils::{AccountId32, MultiSignature};
use subxt::{OnlineClient, SubstrateConfig};

use crate::error::{Error, Result};
use crate::identity::{Hotkey, public_to_ss58};
use crate::registry::{Member, WeightEntry};
use cairn_proto::{NodeId, Role};
use cairn_proto::{SecretKey, Signature};

type Api = OnlineClient<SubstrateConfig>;

/// How long a metagraph read is reused.
const MEMBERS_TTL: Duration = Duration::from_secs(30);
/// A peer the cached metagraph does not know (a node that just published)
/// causes a re-read at most this often, whatever arrives: unknown peers
/// cannot make a node read the chain per connection.
pub const MISS_REFRESH: Duration = Duration::from_secs(5);
/// Every chain read has this deadline.
const CHAIN_DEADLINE: Duration = Duration::from_secs(20);
/// An extrinsic must be finalized within this.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(180);

/// Signs extrinsics with an sr25519 key (a hotkey, or a coldkey for registration).
pub struct PairSigner(pub sr25519::Pair);

impl subxt::tx::Signer<SubstrateConfig> for PairSigner {
    fn account_id(&self) -> AccountId32 {
        AccountId32(self.0.public().0)
    }
    fn sign(&self, payload: &[u8]) -> MultiSignature {
        MultiSignature::Sr25519(self.0.sign(payload).0)
    }
}

type AtBlock = subxt::client::ClientAtBlock<
    SubstrateConfig,
    subxt::client::OnlineClientAtBlockImpl<SubstrateConfig>,
>;

/// Reads one storage entry at a block already resolved (one block for many reads).
async fn fetch_at<K, V>(at: &AtBlock, pallet: &str, entry: &str, keys: K) -> Result<Option<V>>
where
    K: subxt::ext::frame_decode::storage::IntoEncodableValues
        + subxt::ext::frame_decode::storage::IntoDecodableValues
        + Clone,
    V: subxt::ext::scale_decode::DecodeAsType,
{
    let addr = subxt::dynamic::storage::<K, V>(pallet, entry);
    match at.storage().try_fetch(addr, keys).await {
        Ok(Some(v)) => v
            .decode()
            .map(Some)
            .map_err(|e| explain(&format!("decoding {pallet}.{entry}"), e)),
        Ok(None) => Ok(None),
        Err(e) => Err(explain(&format!("reading {pallet}.{entry}"), e)),
    }
}

/// One neuron of the subnet's metagraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: [u8; 32],
    pub stake: u64,
    pub validator_permit: bool,
    /// The cairn address published by this hotkey, if any.
    pub address: Option<Commitment>,
}

/// What a node commits on chain, its signature checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitment {
    pub node: NodeId,
    pub role: Role,
    pub addrs: Vec<std::net::SocketAddr>,
    /// The relay it can be reached through (behind a NAT), if any.
    pub relay: Option<String>,
}

/// The longest relay URL a commitment carries (the address text is at most
/// 128 bytes; the addresses get the rest).
const MAX_COMMITTED_RELAY: usize = 72;

/// A connection to a subtensor endpoint, for one subnet.
#[derive(Clone)]
pub struct Subtensor {
    api: Api,
    rpc: subxt::rpcs::RpcClient,
    netuid: u16,
    endpoint: String,
    cache: Arc<tokio::sync::Mutex<Option<Metagraph>>>,
    /// Metagraph reads so far (for `/metrics` and tests).
    reads: Arc<std::sync::atomic::AtomicU64>,
    /// Failed metagraph reads and failed submissions (for `/metrics`).
    errors: Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// The relay members may name in their commitments (ours).
    accepted_relay: Option<String>,
}

/// The members as last read from the chain.
struct Metagraph {
    read_at: Instant,
    /// The block it was read at.
    block: u64,
    members: Vec<Member>,
}

/// Turns a subxt error into one an operator can act on.
pub fn explain(context: &str, e: impl std::fmt::Display) -> Error {
    let mut s = e.to_string();
    // Subtensor's transaction validity errors arrive as bare numbers.
    if let Some(code) = s
        .split("\"custom\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u8>().ok())
    {
        let name = match code {
            0 => "ColdkeyInSwapSchedule",
            1 => "StakeAmountTooLow",
            2 => "BalanceTooLow (InsufficientBalance)",
            3 => "SubnetDoesntExist (SubNetworkDoesNotExist)",
            4 => "HotkeyAccountDoesntExist (HotKeyAccountNotExists)",
            5 => "NotEnoughStakeToWithdraw",
            6 => "RateLimitExceeded",
            7 => "InsufficientLiquidity",
            10 => "HotKeyNotRegisteredInNetwork (NotRegistered)",
            11 => "InvalidIpAddress",
            12 => "ServingRateLimitExceeded (RateLimit)",
            _ => "custom transaction error",
        };
        s = format!("{s} = {name}");
    }
    let hint = if s.contains("HotKeyNotRegisteredInSubNet")
        || s.contains("HotKeyAccountNotExists")
        || s.contains("NotRegistered")
    {
        "the hotkey is not registered on this subnet: run `cairn register` (burned registration, paid by the coldkey)"
    } else if s.contains("NeuronNoValidatorPermit") || s.contains("NoValidatorPermit") {
        "this hotkey holds no validator permit: stake more to it, or wait for the next epoch after staking"
    } else if s.contains("SettingWeightsTooFast")
        || s.contains("RateLimit")
        || s.contains("TooMany")
    {
        "rate limited by the chain: wait for the subnet's rate limit (blocks) to pass and retry"
    } else if s.contains("NotEnoughBalance")
        || s.contains("InsufficientBalance")
        || s.contains("Payment")
        || s.contains("balance too low")
    {
        "insufficient balance: fund the paying key (the coldkey for registration, the hotkey's account for fees)"
    } else if s.contains("Connection")
        || s.contains("connect")
        || s.contains("refused")
        || s.contains("Transport")
    {
        "the subtensor endpoint is unreachable: check chain.endpoint and that the node runs"
    } else if s.contains("SubNetworkDoesNotExist") || s.contains("NetworkDoesNotExist") {
        "no such subnet: check chain.netuid"
    } else {
        "see the chain's error above"
    };
    Error::Chain(format!("{context}: {s}; {hint}"))
}

/// Raw bytes of a `Value` holding a byte array or sequence.
fn value_bytes<T>(v: &Value<T>) -> Option<Vec<u8>> {
    match &v.value {
        ValueDef::Composite(c) => {
            let vals: Vec<&Value<T>> = c.values().collect();
            if vals.len() == 1 && !matches!(vals[0].value, ValueDef::Primitive(_)) {
                return value_bytes(vals[0]);
            }
            vals.iter()
                .map(|x| match &x.value {
                    ValueDef::Primitive(Primitive::U128(n)) => u8::try_from(*n).ok(),
                    _ => None,
                })
                .collect()
        }
        ValueDef::Variant(var) => {
            let vals: Vec<&Value<T>> = var.values.values().collect();
            if vals.len() == 1 {
                value_bytes(vals[0])
            } else {
                None
            }
        }
        _ => None,
    }
}

/// What a node key signs in a commitment: the hotkey that publishes it, the
/// subnet, the node id and the address text. A commitment copied to another
/// hotkey or subnet no longer verifies.
fn commitment_message(hotkey: &[u8; 32], netuid: u16, node: &NodeId, text: &[u8]) -> Vec<u8> {
    let mut m = b"cairn commitment v1\0".to_vec();
    m.extend_from_slice(hotkey);
    m.extend_from_slice(&netuid.to_le_bytes());
    m.extend_from_slice(node.as_bytes());
    m.extend_from_slice(text);
    m
}

/// Encodes this node's address for `set_commitment`: the node id, the
/// address text (`cairn1;<role>;<addr>,...[;relay=<url>]`) and the node
/// key's signature over both, the hotkey and the subnet. A relay URL longer
/// than [`MAX_COMMITTED_RELAY`] is left out.
pub fn commitment_fields(
    node_key: &SecretKey,
    hotkey: &[u8; 32],
    netuid: u16,
    role: Role,
    addrs: &[std::net::SocketAddr],
    relay: Option<&str>,
) -> Vec<Vec<u8>> {
    let relay = relay
        .filter(|r| r.len() <= MAX_COMMITTED_RELAY && !r.contains(';'))
        .map(|r| format!(";relay={r}"))
        .unwrap_or_default();
    let mut text = format!("cairn1;{role};");
    for (i, a) in addrs.iter().enumerate() {
        let next = if i == 0 {
            a.to_string()
        } else {
            format!(",{a}")
        };
        if text.len() + next.len() + relay.len() > 128 {
            break;
        }
        text.push_str(&next);
    }
    text.push_str(&relay);
    let node = node_key.public();
    let sig = node_key.sign(&commitment_message(hotkey, netuid, &node, text.as_bytes()));
    vec![
        node.as_bytes().to_vec(),
        text.into_bytes(),
        sig.to_bytes().to_vec(),
    ]
}

/// The members among the neurons: those that published a verified cairn
/// address. A node id claimed by two hotkeys (only its key's holder can
/// sign such claims) counts for neither. A committed relay is kept only if
/// it is `accepted_relay` (this node's own relay): a member cannot point
/// its dialers at an address of its choosing.
pub fn members_of(neurons: Vec<Neuron>, accepted_relay: Option<&str>) -> Vec<Member> {
    let mut claims: std::collections::HashMap<NodeId, usize> = std::collections::HashMap::new();
    for n in &neurons {
        if let Some(c) = &n.address {
            *claims.entry(c.node).or_default() += 1;
        }
    }
    neurons
        .into_iter()
        .filter_map(|n| {
            let Commitment {
                node: node_id,
                role,
                addrs,
                relay,
            } = n.address?;
            if claims.get(&node_id).copied().unwrap_or(0) > 1 {
                tracing::warn!(node = %node_id.fmt_short(), "a node id claimed by several hotkeys; ignored for all of them");
                return None;
            }
            Some(Member {
                node_id,
                role,
                addrs,
                relay: super::keep_own_relay(relay, accepted_relay),
                hotkey: public_to_ss58(&n.hotkey),
                uid: Some(n.uid),
                stake: n.stake,
                validator_permit: n.validator_permit,
                capacity: 0,
                free: 1 << 30,
                api: None,
            })
        })
        .collect()
}

/// Decodes what [`commitment_fields`] wrote for `hotkey` on `netuid`;
/// `None` unless the node key's signature holds.
pub fn parse_commitment(fields: &[Vec<u8>], hotkey: &[u8; 32], netuid: u16) -> Option<Commitment> {
    let id: [u8; 32] = fields.first()?.as_slice().try_into().ok()?;
    let node = NodeId::from_bytes(&id).ok()?;
    let raw_text = fields.get(1)?;
    let sig: [u8; 64] = fields.get(2)?.as_slice().try_into().ok()?;
    node.verify(
        &commitment_message(hotkey, netuid, &node, raw_text),
        &Signature::from_bytes(&sig),
    )
    .ok()?;
    let text = std::str::from_utf8(raw_text).ok()?;
    let mut parts = text.splitn(4, ';');
    if parts.next()? != "cairn1" {
        return None;
    }
    let role = parts.next()?.parse().ok()?;
    let addrs = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|a| a.parse().ok())
        .collect();
    // Only a URL iroh accepts as a relay, normalized as iroh prints it.
    let relay = parts
        .next()
        .and_then(|r| r.strip_prefix("relay="))
        .and_then(|r| r.parse::<iroh::RelayUrl>().ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|u| u.to_string());
    Some(Commitment {
        node,
        role,
        addrs,
        relay,
    })
}

impl Subtensor {
    /// Connects; `backend` is `legacy` (chains that serve only the legacy
    /// RPCs, such as chopsticks) or `default`.
    pub async fn connect(endpoint: &str, backend: &str, netuid: u16) -> Result<Subtensor> {
        let rpc = subxt::rpcs::RpcClient::from_insecure_url(endpoint)
            .await
            .map_err(|e| explain(&format!("connecting to {endpoint}"), e))?;
        let api = if backend == "legacy" {
            let b = subxt::backend::LegacyBackend::builder().build(rpc.clone());
            Api::from_backend(Arc::new(b)).await
        } else {
            Api::from_rpc_client(rpc.clone()).await
        }
        .map_err(|e| explain(&format!("connecting to {endpoint}"), e))?;
        Ok(Subtensor {
            api,
            rpc,
            netuid,
            endpoint: endpoint.to_string(),
            cache: Arc::default(),
            reads: Arc::default(),
            errors: Arc::default(),
            accepted_relay: None,
        })
    }

    /// Keeps members' committed relays when they are this one (this node's
    /// own `network.relay` URL); others are dropped.
    pub fn accepting_relay(mut self, relay: Option<String>) -> Self {
        self.accepted_relay = relay;
        self
    }

    pub fn netuid(&self) -> u16 {
        self.netuid
    }

    /// The raw RPC client (tests advance blocks with `dev_newBlock`).
    pub fn rpc(&self) -> &subxt::rpcs::RpcClient {
        &self.rpc
    }

    async fn at(&self, what: &str) -> Result<AtBlock> {
        self.api
            .at_current_block()
            .await
            .map_err(|e| explain(&format!("reading {what}"), e))
    }

    async fn fetch<K, V>(&self, pallet: &str, entry: &str, keys: K) -> Result<Option<V>>
    where
        K: subxt::ext::frame_decode::storage::IntoEncodableValues
            + subxt::ext::frame_decode::storage::IntoDecodableValues
            + Clone,
        V: subxt::ext::scale_decode::DecodeAsType,
    {
        let at = self.at(&format!("{pallet}.{entry}")).await?;
        fetch_at(&at, pallet, entry, keys).await
    }

    /// The subnet's neurons and their published addresses.
    pub async fn neurons(&self) -> Result<Vec<Neuron>> {
        Ok(self.neurons_with_block().await?.1)
    }

    /// [`Subtensor::neurons`], with the block they were read at.
    async fn neurons_with_block(&self) -> Result<(u64, Vec<Neuron>)> {
        let at = self.at("the metagraph").await?;
        let block = at.block_number();
        let n: u16 = fetch_at::<(u16,), u16>(&at, "SubtensorModule", "SubnetworkN", (self.netuid,))
            .await?
            .unwrap_or(0);
        let permits: Vec<bool> = fetch_at::<(u16,), Vec<bool>>(
            &at,
            "SubtensorModule",
            "ValidatorPermit",
            (self.netuid,),
        )
        .await?
        .unwrap_or_default();
        let mut out = Vec::with_capacity(usize::from(n));
        for uid in 0..n {
            let Some(key) = fetch_at::<(u16, u16), AccountId32>(
                &at,
                "SubtensorModule",
                "Keys",
                (self.netuid, uid),
            )
            .await?
            else {
                continue;
            };
            let stake: u64 = fetch_at::<(AccountId32, u16), u64>(
                &at,
                "SubtensorModule",
                "TotalHotkeyAlpha",
                (key, self.netuid),
            )
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
            let commitment: Option<Value> = fetch_at::<(u16, AccountId32), Value>(
                &at,
                "Commitments",
                "CommitmentOf",
                (self.netuid, key),
            )
            .await
            .ok()
            .flatten();
            let address = commitment.and_then(|c| {
                let mut fields = c.at("info")?.at("fields")?;
                // BoundedVec is a newtype around the Vec: step inside.
                while let ValueDef::Composite(list) = &fields.value
                    && list.len() == 1
                    && matches!(list.values().next()?.value, ValueDef::Composite(_))
                {
                    fields = list.values().next()?;
                }
                let ValueDef::Composite(list) = &fields.value else {
                    return None;
                };
                let raw: Vec<Vec<u8>> = list.values().filter_map(value_bytes).collect();
                parse_commitment(&raw, &key.0, self.netuid)
            });
            out.push(Neuron {
                uid,
                hotkey: key.0,
                stake,
                validator_permit: permits.get(usize::from(uid)).copied().unwrap_or(false),
                address,
            });
        }
        Ok((block, out))
    }

    /// Reads the members from the chain now (with a deadline): the neurons
    /// that published a verified cairn address. A node id claimed by two
    /// hotkeys counts for neither.
    async fn read_members(&self) -> Result<(u64, Vec<Member>)> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (block, neurons) = tokio::time::timeout(CHAIN_DEADLINE, self.neurons_with_block())
            .await
            .map_err(|_| {
                Error::Chain(format!(
                    "reading the metagraph at {} took over {CHAIN_DEADLINE:?}; is the endpoint healthy?",
                    self.endpoint
                ))
            })??;
        Ok((block, members_of(neurons, self.accepted_relay.as_deref())))
    }

    /// Re-reads the metagraph into the cache; on a chain error the last
    /// good read stays (members keep working through an outage).
    async fn refresh(&self, cache: &mut Option<Metagraph>) -> Result<Vec<Member>> {
        match self.read_members().await {
            Ok((block, members)) => {
                *cache = Some(Metagraph {
                    read_at: Instant::now(),
                    block,
                    members: members.clone(),
                });
                Ok(members)
            }
            Err(e) => {
                self.errors[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match cache {
                    Some(m) => {
                        tracing::warn!(error = %e, age_secs = m.read_at.elapsed().as_secs(), "chain unreachable; keeping the last metagraph");
                        // Try again after a short while, not on every call.
                        m.read_at = Instant::now() - MEMBERS_TTL + MISS_REFRESH;
                        Ok(m.members.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Members: the neurons that published a cairn address (cached for 30 s).
    pub async fn members(&self) -> Result<Vec<Member>> {
        let mut cache = self.cache.lock().await;
        if let Some(m) = cache.as_ref()
            && m.read_at.elapsed() < MEMBERS_TTL
        {
            return Ok(m.members.clone());
        }
        self.refresh(&mut cache).await
    }

    /// One member. A node id the cached metagraph does not know causes a
    /// re-read only if the last one is older than [`MISS_REFRESH`].
    pub async fn member(&self, id: &NodeId) -> Result<Option<Member>> {
        let find = |ms: Vec<Member>| ms.into_iter().find(|m| m.node_id == *id);
        if let Some(m) = find(self.members().await?) {
            return Ok(Some(m));
        }
        let mut cache = self.cache.lock().await;
        match cache.as_ref() {
            Some(m) if m.read_at.elapsed() < MISS_REFRESH => {
                Ok(m.members.iter().find(|m| m.node_id == *id).cloned())
            }
            _ => Ok(find(self.refresh(&mut cache).await?)),
        }
    }

    /// The block of the last good metagraph read and how long ago it was.
    pub async fn last_read(&self) -> Option<(u64, std::time::Duration)> {
        self.cache
            .lock()
            .await
            .as_ref()
            .map(|m| (m.block, m.read_at.elapsed()))
    }

    /// Metagraph reads so far.
    pub fn metagraph_reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The chain's time: `Timestamp.Now` of the last block (unix ms).
    pub async fn chain_time_ms(&self) -> Result<Option<u64>> {
        Ok(self
            .storage_value("Timestamp", "Now", vec![])
            .await?
            .and_then(|v| v.as_u128())
            .and_then(|ms| u64::try_from(ms).ok()))
    }

    /// Failed chain calls so far: metagraph reads and submitted extrinsics.
    pub fn chain_errors(&self) -> [(&'static str, u64); 2] {
        let n = |i: usize| self.errors[i].load(std::sync::atomic::Ordering::Relaxed);
        [("metagraph", n(0)), ("submit", n(1))]
    }

    /// Forgets the cached metagraph.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// Submits a call and waits until it is in a block and succeeded.
    pub async fn submit(
        &self,
        pallet: &str,
        call: &str,
        fields: Vec<Value>,
        signer: &sr25519::Pair,
    ) -> Result<()> {
        let what = format!("{pallet}.{call}");
        let payload = subxt::dynamic::tx(pallet, call, Composite::unnamed(fields));
        let signer = PairSigner(signer.clone());
        let work = async {
            let at = self
                .api
                .at_current_block()
                .await
                .map_err(|e| explain(&what, e))?;
            let progress = at
                .transactions()
                .sign_and_submit_then_watch_default(&payload, &signer)
                .await
                .map_err(|e| explain(&what, e))?;
            progress
                .wait_for_finalized_success()
                .await
                .map_err(|e| explain(&what, e))?;
            Ok(())
        };
        let r = tokio::time::timeout(SUBMIT_DEADLINE, work)
            .await
            .map_err(|_| {
                Error::Chain(format!(
                    "{what} was not finalized within {SUBMIT_DEADLINE:?}; check the endpoint and retry"
                ))
            })
            .and_then(|r| r);
        if r.is_err() {
            self.errors[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// Wraps a call in `Sudo.sudo` (tests, local chains).
    pub async fn sudo(
        &self,
        pallet: &str,
        call: &str,
        fields: Vec<(&str, Value)>,
        sudo_key: &sr25519::Pair,
    ) -> Result<()> {
        let inner = Value::unnamed_variant(
            pallet,
            [Value::named_variant(
                call,
                fields.into_iter().map(|(k, v)| (k.to_string(), v)),
            )],
        );
        self.submit("Sudo", "sudo", vec![inner], sudo_key).await
    }

    /// Publishes this node's address, unless the chain already has it.
    pub async fn publish(&self, me: &Member, hotkey: &Hotkey, node_key: &SecretKey) -> Result<()> {
        let fields = commitment_fields(
            node_key,
            &hotkey.public(),
            self.netuid,
            me.role,
            &me.addrs,
            me.relay.as_deref(),
        );
        let current = tokio::time::timeout(CHAIN_DEADLINE, self.neurons())
            .await
            .map_err(|_| {
                Error::Chain(format!(
                    "reading the metagraph took over {CHAIN_DEADLINE:?}"
                ))
            })??
            .into_iter()
            .find(|n| n.hotkey == hotkey.public());
        let Some(current) = current else {
            return Err(Error::Chain(format!(
                "hotkey {} is not registered on subnet {} at {}: run `cairn register` first",
                hotkey.ss58(),
                self.netuid,
                self.endpoint
            )));
        };
        // Ed25519 signatures are deterministic: the same address signs the same.
        if current.address.as_ref().map(|c| {
            commitment_fields(
                node_key,
                &hotkey.public(),
                self.netuid,
                c.role,
                &c.addrs,
                c.relay.as_deref(),
            )
        }) == Some(fields.clone())
        {
            return Ok(());
        }
        let data: Vec<Value> = fields
            .into_iter()
            .map(|f| Value::unnamed_variant(format!("Raw{}", f.len()), [Value::from_bytes(f)]))
            .collect();
        let info = Value::named_composite([("fields", Value::unnamed_composite(data))]);
        self.submit(
            "Commitments",
            "set_commitment",
            vec![Value::u128(u128::from(self.netuid)), info],
            hotkey.pair(),
        )
        .await?;
        self.invalidate().await;
        Ok(())
    }

    /// `burned_register`: the coldkey pays to register `hotkey` on the subnet.
    pub async fn register(&self, coldkey: &sr25519::Pair, hotkey: &[u8; 32]) -> Result<()> {
        self.submit(
            "SubtensorModule",
            "burned_register",
            vec![
                Value::u128(u128::from(self.netuid)),
                Value::from_bytes(hotkey),
            ],
            coldkey,
        )
        .await?;
        self.invalidate().await;
        Ok(())
    }

    /// `set_weights` over the uids of the given hotkeys (unknown ones skipped).
    pub async fn set_weights(&self, hotkey: &Hotkey, weights: &[WeightEntry]) -> Result<()> {
        let neurons = tokio::time::timeout(CHAIN_DEADLINE, self.neurons())
            .await
            .map_err(|_| {
                Error::Chain(format!(
                    "reading the metagraph took over {CHAIN_DEADLINE:?}"
                ))
            })??;
        let mut dests = Vec::new();
        let mut values = Vec::new();
        for w in weights {
            let Some(pk) = crate::identity::ss58_to_public(&w.hotkey) else {
                continue;
            };
            if let Some(n) = neurons.iter().find(|n| n.hotkey == pk) {
                dests.push(Value::u128(u128::from(n.uid)));
                values.push(Value::u128(u128::from(w.weight)));
            }
        }
        let version: u64 = self
            .fetch::<(u16,), u64>("SubtensorModule", "WeightsVersionKey", (self.netuid,))
            .await?
            .unwrap_or(0);
        self.submit(
            "SubtensorModule",
            "set_weights",
            vec![
                Value::u128(u128::from(self.netuid)),
                Value::unnamed_composite(dests),
                Value::unnamed_composite(values),
                Value::u128(u128::from(version)),
            ],
            hotkey.pair(),
        )
        .await
    }

    /// `Incentive` of every uid of the subnet, as u16 fractions.
    pub async fn incentive(&self) -> Result<Vec<u16>> {
        Ok(self
            .fetch::<(u16,), Vec<u16>>("SubtensorModule", "Incentive", (self.netuid,))
            .await?
            .unwrap_or_default())
    }

    /// The block of each uid's last weights (`LastUpdate`), by uid.
    pub async fn last_update(&self) -> Result<Vec<u64>> {
        Ok(self
            .fetch::<(u16,), Vec<u64>>("SubtensorModule", "LastUpdate", (self.netuid,))
            .await?
            .unwrap_or_default())
    }

    /// The weights a validator uid has set: (dest uid, weight).
    pub async fn weights_of(&self, uid: u16) -> Result<Vec<(u16, u16)>> {
        Ok(self
            .fetch::<(u16, u16), Vec<(u16, u16)>>("SubtensorModule", "Weights", (self.netuid, uid))
            .await?
            .unwrap_or_default())
    }

    /// The current block number.
    pub async fn block_number(&self) -> Result<u64> {
        let at = self
            .api
            .at_current_block()
            .await
            .map_err(|e| explain("reading the chain head", e))?;
        Ok(at.block_number())
    }

    /// Reads a plain storage value as a `Value` (diagnostics).
    pub async fn storage_value(
        &self,
        pallet: &str,
        entry: &str,
        keys: Vec<Value>,
    ) -> Result<Option<Value>> {
        self.fetch::<Vec<Value>, Value>(pallet, entry, keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_claimed_by_two_hotkeys_counts_for_neither() {
        let a = SecretKey::from_bytes(&[1; 32]).public();
        let b = SecretKey::from_bytes(&[2; 32]).public();
        let neuron = |uid: u16, node: NodeId, permit: bool| Neuron {
            uid,
            hotkey: [uid as u8; 32],
            stake: 0,
            validator_permit: permit,
            address: Some(Commitment {
                node,
                role: Role::Miner,
                addrs: vec![],
                relay: None,
            }),
        };
        let m = members_of(
            vec![neuron(0, a, false), neuron(1, b, false), neuron(2, a, true)],
            None,
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].node_id, b);
        // The role a node commits grants nothing: the permit does.
        let mut v = neuron(3, SecretKey::from_bytes(&[3; 32]).public(), false);
        v.address.as_mut().unwrap().role = Role::Validator;
        assert!(!members_of(vec![v], None)[0].is_validator());
    }

    #[test]
    fn commitments_round_trip_fit_and_bind_the_hotkey() {
        let key = SecretKey::from_bytes(&[3; 32]);
        let node = key.public();
        let addrs: Vec<std::net::SocketAddr> = (0..20)
            .map(|i| format!("10.0.0.{i}:7440").parse().unwrap())
            .collect();
        let hotkey = [7u8; 32];
        let f = commitment_fields(&key, &hotkey, 5, Role::Miner, &addrs, None);
        assert_eq!((f[0].len(), f[2].len()), (32, 64));
        assert!(f[1].len() <= 128);
        let c = parse_commitment(&f, &hotkey, 5).unwrap();
        assert_eq!((c.node, c.role, c.relay), (node, Role::Miner, None));
        assert!(!c.addrs.is_empty() && c.addrs.iter().all(|x| addrs.contains(x)));
        assert!(parse_commitment(&[vec![1, 2, 3]], &hotkey, 5).is_none());
        // Copied to another hotkey or subnet, or without its signature: no member.
        assert!(parse_commitment(&f, &[8u8; 32], 5).is_none());
        assert!(parse_commitment(&f, &hotkey, 6).is_none());
        assert!(parse_commitment(&f[..2], &hotkey, 5).is_none());
        let mut forged = f.clone();
        forged[1] = b"cairn1;validator;10.0.0.1:7440".to_vec();
        assert!(parse_commitment(&forged, &hotkey, 5).is_none());
    }

    #[test]
    fn a_commitment_carries_the_relay_and_dialers_keep_only_their_own() {
        let key = SecretKey::from_bytes(&[4; 32]);
        let hotkey = [9u8; 32];
        let addrs: Vec<std::net::SocketAddr> = (0..20)
            .map(|i| format!("192.168.1.{i}:7440").parse().unwrap())
            .collect();
        let relay = "https://relay.example.org/";
        let f = commitment_fields(&key, &hotkey, 5, Role::Miner, &addrs, Some(relay));
        assert!(f[1].len() <= 128, "{}", f[1].len());
        let c = parse_commitment(&f, &hotkey, 5).unwrap();
        assert_eq!(c.relay.as_deref(), Some(relay));
        assert!(!c.addrs.is_empty(), "the relay leaves room for addresses");
        // Without a relay the text is what it always was (no republish).
        let plain = commitment_fields(&key, &hotkey, 5, Role::Miner, &addrs[..1], None);
        assert_eq!(plain[1], b"cairn1;miner;192.168.1.0:7440".to_vec());
        // A relay too long to fit, or not a relay URL, is left out.
        let long = format!("https://{}.example.org/", "r".repeat(80));
        let c = parse_commitment(
            &commitment_fields(&key, &hotkey, 5, Role::Miner, &addrs, Some(&long)),
            &hotkey,
            5,
        )
        .unwrap();
        assert_eq!(c.relay, None);
        let c = parse_commitment(
            &commitment_fields(
                &key,
                &hotkey,
                5,
                Role::Miner,
                &addrs,
                Some("file:///etc/passwd"),
            ),
            &hotkey,
            5,
        )
        .unwrap();
        assert_eq!(c.relay, None);
        // A dialer keeps a committed relay only if it is its own.
        let neuron = Neuron {
            uid: 0,
            hotkey,
            stake: 0,
            validator_permit: false,
            address: parse_commitment(&f, &hotkey, 5),
        };
        let m = members_of(vec![neuron.clone()], Some(relay));
        assert_eq!(m[0].relay.as_deref(), Some(relay));
        let m = members_of(vec![neuron.clone()], Some("https://other.example.org/"));
        assert_eq!(m[0].relay, None);
        assert_eq!(members_of(vec![neuron], None)[0].relay, None);
    }
}
