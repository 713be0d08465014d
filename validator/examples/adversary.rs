//! A hostile member of the network, for the trust-boundary tests: it holds
//! a registered identity (a node directory made by `cairn init`, local or on
//! chain) and mounts one attack against a peer over real QUIC, then prints
//! what the peer answered as one JSON line: `{"attack": ..., "codes":
//! {"ok": n, "forbidden": n, ...}}` (and the attack's own figures).
//!
//! ```text
//! adversary --data-dir DIR --peer NODE_ID --addr IP:PORT ATTACK [ARGS]
//!   challenge SHARD_ID LEN            challenge as if a validator
//!   delete-shard SHARD_ID OWNER       delete a shard on behalf of its owner
//!   claim-shard SHARD_ID              claim another's shard by a put of its id
//!                                     with no bytes, then read it ("claim" and
//!                                     "read": the peer's answers)
//!   put-manifest CID                  store a copy of another's manifest (fetched from the peer)
//!   delete-manifest CID               delete another's manifest and placement
//!   put-placement CID VERSION self|owner
//!                                     a placement of another's dataset at VERSION,
//!                                     naming itself or the real owner, signed by itself
//!   hostile-manifest                  a manifest (its own) asking readers for 64 GiB
//!   big-manifest MIB                  a manifest (its own) of about MIB MiB, stored on the
//!                                     peer ("cid": its content id)
//!   placement-flood CID N             N placements at once of another's dataset CID,
//!                                     signed by itself and naming itself the owner
//!   manifest-bodies N MIB             N manifests of MIB MiB at once, sent in full, whose
//!                                     bytes are not the CID they claim
//!   shadow-shard FILE READER          a dataset (its own, one 1 MiB segment, k=4 m=2)
//!                                     whose data shard 0 is named by the id of
//!                                     FILE's first 256 KiB (another's shard) but
//!                                     holds other bytes, decodable from its parity;
//!                                     stored on the peer with no holder for shard 0;
//!                                     reports a read grant for READER (a gateway)
//!   audit CID N                       N audit requests for CID
//!   release CID                       tell a validator CID was unpinned
//!   stall-manifests N LEN SECS        N manifests announcing LEN bytes, none sent, held SECS
//!   trickle-puts N LEN SECS           N shard puts announcing LEN bytes, sending one byte
//!                                     a second for SECS, then nothing (and the answer
//!                                     within a minute)
//!   slow-manifest MIB SECS            a manifest of MIB MiB, 1 MiB sent at once and then
//!                                     160 KiB/s (above the pace a node asks) for SECS,
//!                                     then nothing (and the answer within a minute)
//!   slow-placement CID MIB SECS       the same with a placement of MIB MiB for CID
//!   fresh-identities N                N connections, each from a new unregistered key
//!   hold-connections N                N connections from new unregistered keys, all held
//!                                     open until the last is tried: each "unreachable"
//!                                     if refused, else what its request was answered
//!   uni-streams N                     N unidirectional streams (cairn reads none), 1 MiB
//!                                     written on each: "ok" each one that took it
//!   stall-requests N SECS             N streams announcing a 60,000-byte request and
//!                                     sending 100 bytes of it; the answers within SECS
//!   stall-reads N SECS                a 24 MiB shard of its own stored on the peer, then N
//!                                     reads of it whose bytes it leaves untaken for SECS:
//!                                     "complete" or "reset" each
//!   placement CID                     (a probe) the placement the peer holds: version, owner, signer
//!   verdicts                          ask a validator for verdicts: whose come back (audits, verdicts, shards)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_node::config::Config;
use cairn_node::identity::load_node_key;
use cairn_node::net::Client;
use cairn_node::net::endpoint::bind_endpoint;
use cairn_node::{EndpointAddr, Error, NodeId};
use cairn_proof::ShardId;
use cairn_proto::wire::{ErrorCode, Request, Response};
use cairn_proto::{Cid, Entry, EntryKind, Manifest, Placement, SegmentRecord};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    peer: NodeId,
    #[arg(long)]
    addr: std::net::SocketAddr,
    #[command(subcommand)]
    attack: Attack,
}

#[derive(Subcommand)]
enum Attack {
    Challenge {
        shard: ShardId,
        len: u64,
    },
    DeleteShard {
        shard: ShardId,
        owner: NodeId,
    },
    ClaimShard {
        shard: ShardId,
    },
    PutManifest {
        cid: Cid,
    },
    DeleteManifest {
        cid: Cid,
    },
    PutPlacement {
        cid: Cid,
        version: u64,
        name: String,
    },
    HostileManifest,
    BigManifest {
        mib: u64,
    },
    PlacementFlood {
        cid: Cid,
        n: usize,
    },
    ManifestBodies {
        n: usize,
        mib: usize,
    },
    ShadowShard {
        file: PathBuf,
        reader: NodeId,
    },
    Audit {
        cid: Cid,
        n: usize,
    },
    Release {
        cid: Cid,
    },
    StallManifests {
        n: usize,
        len: u64,
        secs: u64,
    },
    TricklePuts {
        n: usize,
        len: u64,
        secs: u64,
    },
    SlowManifest {
        mib: u64,
        secs: u64,
    },
    SlowPlacement {
        cid: Cid,
        mib: u64,
        secs: u64,
    },
    FreshIdentities {
        n: usize,
    },
    HoldConnections {
        n: usize,
    },
    UniStreams {
        n: usize,
    },
    StallRequests {
        n: usize,
        secs: u64,
    },
    StallReads {
        n: usize,
        secs: u64,
    },
    Placement {
        cid: Cid,
    },
    Verdicts,
}

/// What a peer answered, as a short name.
fn code_of(r: &Result<(), Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(Error::Remote { code, .. }) => code_name(*code),
        Err(Error::BadReply { .. }) => "bad-reply".into(),
        Err(_) => "unreachable".into(),
    }
}

fn code_name(code: ErrorCode) -> String {
    code.to_string().replace(' ', "-")
}

/// What came back for a request whose reply was awaited with a time
/// limit: the error's code, `ok`, `closed` (the stream ended without a
/// reply) or `held` (nothing came in time).
fn reply_code<E, T>(waited: Result<Result<Response, E>, T>) -> String {
    match waited {
        Err(_) => "held".into(),
        Ok(Ok(Response::Error { code, .. })) => code_name(code),
        Ok(Ok(_)) => "ok".into(),
        Ok(Err(_)) => "closed".into(),
    }
}

/// Counts the answers the tasks report, each with how long it took; the
/// slowest that was not `held` goes in `extra` as `slowest_refusal_secs`.
async fn tally(
    mut tasks: tokio::task::JoinSet<(String, Duration)>,
    codes: &mut BTreeMap<String, usize>,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) {
    let mut slowest = Duration::ZERO;
    while let Some(Ok((code, took))) = tasks.join_next().await {
        if code != "held" {
            slowest = slowest.max(took);
        }
        *codes.entry(code).or_default() += 1;
    }
    extra.insert("slowest_refusal_secs".into(), slowest.as_secs_f64().into());
}

/// A manifest of the attacker's own (one file of `segments` 1 MiB segments,
/// k = 4, m = 2, naming shards nobody holds): its CID and bytes.
fn own_manifest(key: &cairn_proto::SecretKey, segments: u64) -> (Cid, Vec<u8>) {
    let total_len = segments << 20;
    let m = Manifest {
        owner: key.public(),
        data_shards: 4,
        parity_shards: 2,
        segment_size: 1 << 20,
        total_len,
        single_file: true,
        entries: vec![Entry {
            path: "big.bin".into(),
            kind: EntryKind::File,
            executable: false,
            size: total_len,
            offset: 0,
            blake3: [0; 32],
        }],
        segments: (0..segments)
            .map(|_| SegmentRecord {
                len: 1 << 20,
                blake3: [0; 32],
                shards: vec![ShardId([2; 32]); 6],
            })
            .collect(),
    };
    let bytes = m.encode();
    (Cid(*blake3::hash(&bytes).as_bytes()), bytes)
}

/// Sends `request` and its body slowly: 1 MiB at once, then 16 KiB every
/// 100 ms (160 KiB/s, above the pace a node asks of a body) for `secs`,
/// then nothing; what the peer answered within a minute more, and when.
async fn slow_body(
    client: &Client,
    addr: &EndpointAddr,
    request: &Request,
    secs: u64,
) -> (String, Duration) {
    let started = Instant::now();
    let (mut send, mut recv) = match client.open_request(addr, request).await {
        Ok(s) => s,
        Err(e) => return (code_of(&Err(e)), started.elapsed()),
    };
    let reply = tokio::spawn({
        let peer = addr.id;
        async move { Client::read_reply(&mut recv, &peer).await }
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent = send.write_all(&vec![9u8; 1 << 20]).await.is_ok();
    while sent && Instant::now() < deadline && !reply.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent = send.write_all(&[9u8; 16 << 10]).await.is_ok();
    }
    let r = tokio::time::timeout(Duration::from_secs(60), reply).await;
    let r = r.map(|joined| joined.map_err(drop).and_then(|r| r.map_err(drop)));
    (reply_code(r), started.elapsed())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(Some(&cli.data_dir.join("node.toml")), std::env::vars())?;
    config.data_dir = cli.data_dir.clone();
    let key = load_node_key(&config.data_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut net = config.network.clone();
        net.listen.set_port(0);
        let endpoint = bind_endpoint(key.clone(), &net, 1024).await?;
        let client = Client::new(endpoint.clone());
        let addr = EndpointAddr::new(cli.peer).with_ip_addr(cli.addr);
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        let mut extra = serde_json::Map::new();
        let name = match &cli.attack {
            Attack::Challenge { .. } => "challenge",
            Attack::DeleteShard { .. } => "delete-shard",
            Attack::ClaimShard { .. } => "claim-shard",
            Attack::PutManifest { .. } => "put-manifest",
            Attack::DeleteManifest { .. } => "delete-manifest",
            Attack::PutPlacement { .. } => "put-placement",
            Attack::HostileManifest => "hostile-manifest",
            Attack::BigManifest { .. } => "big-manifest",
            Attack::PlacementFlood { .. } => "placement-flood",
            Attack::ManifestBodies { .. } => "manifest-bodies",
            Attack::ShadowShard { .. } => "shadow-shard",
            Attack::Audit { .. } => "audit",
            Attack::Release { .. } => "release",
            Attack::StallManifests { .. } => "stall-manifests",
            Attack::TricklePuts { .. } => "trickle-puts",
            Attack::SlowManifest { .. } => "slow-manifest",
            Attack::SlowPlacement { .. } => "slow-placement",
            Attack::FreshIdentities { .. } => "fresh-identities",
            Attack::HoldConnections { .. } => "hold-connections",
            Attack::UniStreams { .. } => "uni-streams",
            Attack::StallRequests { .. } => "stall-requests",
            Attack::StallReads { .. } => "stall-reads",
            Attack::Placement { .. } => "placement",
            Attack::Verdicts => "verdicts",
        };
        match cli.attack {
            Attack::Challenge { shard, len } => {
                let ch = cairn_proof::Challenge::new(shard, len, rand::random(), 8)?;
                let r = client.challenge(&addr, &ch).await.map(|_| ());
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::DeleteShard { shard, owner } => {
                let r = client.delete_shard(&addr, shard, Some(owner)).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::ClaimShard { shard } => {
                let claim = client.put_shard(&addr, shard, &[], None).await;
                extra.insert("claim".into(), code_of(&claim).into());
                let read = client.get_shard(&addr, shard, 0, u64::MAX, None).await;
                extra.insert("read".into(), code_of(&read.map(|_| ())).into());
            }
            Attack::PutManifest { cid } => {
                let bytes = client.get_manifest(&addr, cid.0).await?;
                let r = client.put_manifest(&addr, cid.0, &bytes).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::DeleteManifest { cid } => {
                let r = client.delete_manifest(&addr, cid.0).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::PutPlacement { cid, version, name } => {
                let real = client.get_placement(&addr, cid).await?;
                let owner = match name.as_str() {
                    "self" => key.public(),
                    "owner" => real.owner,
                    other => bail!("put-placement names `self` or `owner`, not {other:?}"),
                };
                let forged = Placement::signed(cid, version, owner, &real.holders_by_shard(), &key);
                let r = client.put_placement(&addr, &forged).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::HostileManifest => {
                let total = 256usize;
                let m = Manifest {
                    owner: key.public(),
                    data_shards: 1,
                    parity_shards: 255,
                    segment_size: 64 << 20,
                    total_len: 64 << 20,
                    single_file: true,
                    entries: vec![],
                    segments: vec![SegmentRecord {
                        len: 64 << 20,
                        blake3: [0; 32],
                        shards: vec![ShardId([1; 32]); total],
                    }],
                };
                let bytes = m.encode();
                let cid = Cid(*blake3::hash(&bytes).as_bytes());
                extra.insert("cid".into(), cid.to_string().into());
                let r = client.put_manifest(&addr, cid.0, &bytes).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::BigManifest { mib } => {
                // 232 bytes of record per 1 MiB segment.
                let (cid, bytes) = own_manifest(&key, (mib << 20) / 232);
                extra.insert("cid".into(), cid.to_string().into());
                extra.insert("bytes".into(), bytes.len().into());
                let r = client.put_manifest(&addr, cid.0, &bytes).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::PlacementFlood { cid, n } => {
                let forged = Placement::signed(cid, 1, key.public(), &[Some(cli.peer)], &key);
                // One connection, many streams (as a member's client sends).
                let shared = std::sync::Arc::new(Client::new(endpoint.clone()));
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let client = shared.clone();
                    let (addr, forged) = (addr.clone(), forged.clone());
                    tasks
                        .spawn(async move { code_of(&client.put_placement(&addr, &forged).await) });
                }
                while let Some(Ok(code)) = tasks.join_next().await {
                    *codes.entry(code).or_default() += 1;
                }
            }
            Attack::ManifestBodies { n, mib } => {
                let body = std::sync::Arc::new(vec![7u8; mib << 20]);
                let shared = std::sync::Arc::new(Client::new(endpoint.clone()));
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let client = shared.clone();
                    let (addr, body) = (addr.clone(), body.clone());
                    tasks.spawn(async move {
                        code_of(&client.put_manifest(&addr, [7; 32], &body).await)
                    });
                }
                while let Some(Ok(code)) = tasks.join_next().await {
                    *codes.entry(code).or_default() += 1;
                }
            }
            Attack::ShadowShard { file, reader } => {
                let (k, m, seg) = (4usize, 2usize, 1usize << 20);
                let sl = seg / k;
                let victim =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let Some(victims_first) = victim.get(..sl) else {
                    bail!("{} is shorter than one shard ({sl} bytes)", file.display());
                };
                let target = cairn_proof::shard_id_and_outboard(victims_first).0;
                let segment: Vec<u8> = (0..seg).map(|i| (i * 7 + i / 1000 + 13) as u8).collect();
                let mut encoder =
                    cairn_erasure::Encoder::new(cairn_erasure::Params::new(k, m, seg)?)?;
                let encoded = encoder.encode(&segment)?;
                let shards: Vec<Vec<u8>> = encoded.shards().map(<[u8]>::to_vec).collect();
                let mut ids: Vec<ShardId> = shards
                    .iter()
                    .map(|s| cairn_proof::shard_id_and_outboard(s).0)
                    .collect();
                ids[0] = target;
                let hash = *blake3::hash(&segment).as_bytes();
                let manifest = Manifest {
                    owner: key.public(),
                    data_shards: k as u16,
                    parity_shards: m as u16,
                    segment_size: seg as u64,
                    total_len: seg as u64,
                    single_file: true,
                    entries: vec![cairn_proto::Entry {
                        path: "shadow.bin".into(),
                        kind: cairn_proto::EntryKind::File,
                        size: seg as u64,
                        offset: 0,
                        blake3: hash,
                        executable: false,
                    }],
                    segments: vec![SegmentRecord {
                        len: seg as u64,
                        blake3: hash,
                        shards: ids.clone(),
                    }],
                };
                let bytes = manifest.encode();
                let cid = Cid(*blake3::hash(&bytes).as_bytes());
                extra.insert("cid".into(), cid.to_string().into());
                extra.insert("shard".into(), target.to_string().into());
                // What the owner of a public dataset hands its readers.
                let expires = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
                    + 3600;
                let grant = cairn_proto::Grant::signed(&key, reader, expires, None);
                extra.insert("grant".into(), grant.to_token().into());
                for (id, shard) in ids.iter().zip(&shards).skip(1) {
                    let r = client.put_shard(&addr, *id, shard, None).await;
                    *codes.entry(code_of(&r)).or_default() += 1;
                }
                let r = client.put_manifest(&addr, cid.0, &bytes).await;
                *codes.entry(code_of(&r)).or_default() += 1;
                let mut holders = vec![Some(cli.peer); k + m];
                holders[0] = None;
                let placement = Placement::signed(cid, 1, key.public(), &holders, &key);
                let r = client.put_placement(&addr, &placement).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::Audit { cid, n } => {
                for _ in 0..n {
                    let r = client.audit(&addr, cid.0).await;
                    *codes.entry(code_of(&r)).or_default() += 1;
                }
            }
            Attack::Release { cid } => {
                let r = client.release(&addr, cid.0).await;
                *codes.entry(code_of(&r)).or_default() += 1;
            }
            Attack::StallManifests { n, len, secs } => {
                let mut held = Vec::new();
                for i in 0..n {
                    let mut cid = [0u8; 32];
                    cid[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    match client
                        .open_request(&addr, &Request::PutManifest { cid, len })
                        .await
                    {
                        Ok(s) => held.push(s),
                        Err(e) => *codes.entry(code_of(&Err(e))).or_default() += 1,
                    }
                }
                // Whatever the peer answers while the bodies never come.
                let deadline = Instant::now() + Duration::from_secs(secs);
                let mut tasks = tokio::task::JoinSet::new();
                for (send, mut recv) in held {
                    let peer = cli.peer;
                    tasks.spawn(async move {
                        // The stream stays open, silent, until the task ends.
                        let _send = send;
                        let started = Instant::now();
                        let r = tokio::time::timeout_at(
                            deadline.into(),
                            Client::read_reply(&mut recv, &peer),
                        )
                        .await;
                        (reply_code(r), started.elapsed())
                    });
                }
                tally(tasks, &mut codes, &mut extra).await;
            }
            Attack::TricklePuts { n, len, secs } => {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..n {
                    let client_addr = addr.clone();
                    let ep = endpoint.clone();
                    tasks.spawn(async move {
                        let client = Client::new(ep);
                        let id = ShardId([i as u8 + 1; 32]);
                        let started = Instant::now();
                        let (mut send, mut recv) = match client
                            .open_request(
                                &client_addr,
                                &Request::PutShard {
                                    id,
                                    len,
                                    on_behalf: None,
                                },
                            )
                            .await
                        {
                            Ok(s) => s,
                            Err(e) => return (code_of(&Err(e)), started.elapsed()),
                        };
                        let deadline = Instant::now() + Duration::from_secs(secs);
                        let reply = tokio::spawn({
                            let peer = client_addr.id;
                            async move { Client::read_reply(&mut recv, &peer).await }
                        });
                        while Instant::now() < deadline && !reply.is_finished() {
                            if send.write_all(&[0u8]).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        // Then silence, and whatever the peer says within a minute.
                        let r = tokio::time::timeout(Duration::from_secs(60), reply).await;
                        let r = r.map(|joined| joined.map_err(drop).and_then(|r| r.map_err(drop)));
                        (reply_code(r), started.elapsed())
                    });
                }
                tally(tasks, &mut codes, &mut extra).await;
            }
            Attack::SlowManifest { mib, secs } => {
                let request = Request::PutManifest {
                    cid: [9; 32],
                    len: mib << 20,
                };
                let (code, took) = slow_body(&client, &addr, &request, secs).await;
                *codes.entry(code).or_default() += 1;
                extra.insert("secs".into(), took.as_secs_f64().into());
            }
            Attack::SlowPlacement { cid, mib, secs } => {
                let request = Request::PutPlacement {
                    cid: cid.0,
                    len: mib << 20,
                };
                let (code, took) = slow_body(&client, &addr, &request, secs).await;
                *codes.entry(code).or_default() += 1;
                extra.insert("secs".into(), took.as_secs_f64().into());
            }
            Attack::FreshIdentities { n } => {
                let started = Instant::now();
                for _ in 0..n {
                    let ep = bind_endpoint(cairn_proto::SecretKey::generate(), &net, 16).await?;
                    let c = Client::new(ep.clone()).with_connect_timeout(Duration::from_secs(5));
                    let r = c.has(&addr, &[ShardId([0; 32])]).await.map(|_| ());
                    *codes.entry(code_of(&r)).or_default() += 1;
                    ep.close().await;
                }
                extra.insert("secs".into(), started.elapsed().as_secs_f64().into());
            }
            Attack::HoldConnections { n } => {
                let mut held = Vec::new();
                for _ in 0..n {
                    let ep = bind_endpoint(cairn_proto::SecretKey::generate(), &net, 16).await?;
                    let c = Client::new(ep.clone()).with_connect_timeout(Duration::from_secs(5));
                    let r = c.has(&addr, &[ShardId([0; 32])]).await.map(|_| ());
                    *codes.entry(code_of(&r)).or_default() += 1;
                    held.push((ep, c));
                }
                for (ep, _client) in held {
                    ep.close().await;
                }
            }
            Attack::UniStreams { n } => {
                let conn = endpoint.connect(addr.clone(), cairn_proto::ALPN).await?;
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..n {
                    let sent = tokio::time::timeout(Duration::from_secs(2), async {
                        let mut s = conn.open_uni().await?;
                        s.write_all(&chunk).await?;
                        anyhow::Ok(())
                    })
                    .await;
                    let code = match sent {
                        Ok(Ok(())) => "ok",
                        Ok(Err(_)) => "closed",
                        Err(_) => "held",
                    };
                    *codes.entry(code.into()).or_default() += 1;
                }
            }
            Attack::StallRequests { n, secs } => {
                let mut frame = 60_000u32.to_be_bytes().to_vec();
                frame.extend_from_slice(&[0u8; 100]);
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let client = Client::new(endpoint.clone());
                    let (addr, frame) = (addr.clone(), frame.clone());
                    tasks.spawn(async move {
                        let r = tokio::time::timeout(
                            Duration::from_secs(secs),
                            client.raw_request(&addr, &frame, false),
                        )
                        .await;
                        (reply_code(r), started.elapsed())
                    });
                }
                tally(tasks, &mut codes, &mut extra).await;
            }
            Attack::StallReads { n, secs } => {
                let shard: Vec<u8> = (0..24usize << 20)
                    .map(|i| (i * 31 + i / 4096) as u8)
                    .collect();
                let id = cairn_proof::shard_id_and_outboard(&shard).0;
                client.put_shard(&addr, id, &shard, None).await?;
                let mut held = Vec::new();
                for _ in 0..n {
                    let get = Request::GetShard {
                        id,
                        offset: 0,
                        length: u64::MAX,
                        grant: None,
                    };
                    let (send, mut recv) = client.open_request(&addr, &get).await?;
                    Client::read_reply(&mut recv, &cli.peer).await?;
                    held.push((send, recv));
                }
                // The attack: the bytes are left untaken.
                tokio::time::sleep(Duration::from_secs(secs)).await;
                for (_send, mut recv) in held {
                    let code = loop {
                        match recv.read_chunk(1 << 20).await {
                            Ok(Some(_)) => {}
                            Ok(None) => break "complete",
                            Err(_) => break "reset",
                        }
                    };
                    *codes.entry(code.into()).or_default() += 1;
                }
            }
            Attack::Placement { cid } => {
                let r = client.get_placement(&addr, cid).await;
                if let Ok(p) = &r {
                    extra.insert("version".into(), p.version.into());
                    extra.insert("owner".into(), p.owner.to_string().into());
                    extra.insert("signer".into(), p.signer.to_string().into());
                }
                *codes.entry(code_of(&r.map(|_| ()))).or_default() += 1;
            }
            Attack::Verdicts => {
                let r = client.verdicts(&addr).await;
                if let Ok(v) = &r {
                    extra.insert("audits".into(), v.audits.into());
                    extra.insert("verdicts".into(), v.verdicts.len().into());
                    let shards: Vec<String> =
                        v.verdicts.iter().map(|d| d.shard.to_string()).collect();
                    extra.insert("shards".into(), shards.into());
                }
                *codes.entry(code_of(&r.map(|_| ()))).or_default() += 1;
            }
        }
        endpoint.close().await;
        let mut out = serde_json::Map::new();
        out.insert("attack".into(), name.into());
        out.insert(
            "codes".into(),
            serde_json::to_value(&codes).context("codes")?,
        );
        out.extend(extra);
        println!("{}", serde_json::Value::Object(out));
        Ok(())
    })
}
