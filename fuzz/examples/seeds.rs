//! Writes the seed corpora: real encodings of every decoder's input, made
//! by the code that writes them (`fuzz/corpus/<target>/seed-*`).
//!
//! `cargo run -p cairn-fuzz --example seeds` (from the repository root).
//! The key file seed from the `bittensor-wallet` package itself
//! (`seed-btwallet`) is written by `run.sh seeds` with the test Python.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_api::{FileSpec, PinRequest};
use cairn_node::identity::Hotkey;
use cairn_node::registry::subtensor::commitment_fields;
use cairn_node::registry::{LocalRegistry, Member, Registry};
use cairn_proof::{Challenge, ShardId, prove, shard_id_and_outboard};
use cairn_proto::wire::{
    DialBackReport, ErrorCode, InventoryEntry, NodeInfo, Request, Response, Verdict,
    VerdictOutcome, VerdictReport,
};
use cairn_proto::{
    Cid, Entry, EntryKind, Grant, Manifest, Placement, Role, SecretKey, SegmentRecord, ShardState,
};

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut w = Writer { root, count: 0 };
    let id = ShardId([3; 32]);
    let owner = SecretKey::from_bytes(&[1; 32]);
    let reader = SecretKey::from_bytes(&[2; 32]).public();
    let grant = Grant::signed(&owner, reader, 1_900_000_000, Some(id));

    for (i, r) in [
        Request::PutShard {
            id,
            len: 2 << 20,
            on_behalf: None,
        },
        Request::PutShard {
            id,
            len: 5,
            on_behalf: Some([9; 32]),
        },
        Request::GetShard {
            id,
            offset: 16384,
            length: 4096,
            grant: None,
        },
        Request::GetShard {
            id,
            offset: 0,
            length: u64::MAX,
            grant: Some(grant.clone()),
        },
        Request::Challenge {
            id,
            len: 2 << 20,
            nonce: [1; 32],
            samples: 44,
        },
        Request::Inventory {
            after: Some(id),
            limit: 1024,
        },
        Request::PutManifest {
            cid: [4; 32],
            len: 1000,
        },
        Request::GetManifest { cid: [4; 32] },
        Request::DeleteShard {
            id,
            on_behalf: Some([5; 32]),
        },
        Request::DeleteManifest { cid: [4; 32] },
        Request::Info,
        Request::Audit { cid: [5; 32] },
        Request::Release { cid: [5; 32] },
        Request::PutPlacement {
            cid: [6; 32],
            len: 77,
        },
        Request::GetPlacement { cid: [6; 32] },
        Request::Has {
            ids: vec![id, ShardId([8; 32])],
        },
        Request::Vetted,
        Request::Verdicts,
        Request::DialBack,
    ]
    .iter()
    .enumerate()
    {
        w.write("request", &format!("{i:02}"), &r.encode()[4..])?;
    }

    for (i, r) in [
        Response::Ok,
        Response::Error {
            code: ErrorCode::Full,
            message: "the store is full".into(),
        },
        Response::ShardData {
            shard_len: 2 << 20,
            start: 16384,
            length: 16384,
            outboard_len: 8128,
        },
        Response::Proof(vec![2; 300]),
        Response::Inventory {
            entries: vec![InventoryEntry {
                id,
                len: 9,
                state: ShardState::Lost,
            }],
            more: true,
        },
        Response::Blob { len: 12 },
        Response::Has(vec![true, false, true]),
        Response::Nodes(vec![[1; 32], [2; 32]]),
        Response::Info(NodeInfo {
            version: "0.1.0".into(),
            role: "miner".into(),
            capacity: 1 << 40,
            used: 2,
            free: 3,
            shards: 4,
        }),
        Response::Verdicts(VerdictReport {
            score_ppm: 912_345,
            weight: 700,
            disqualified: false,
            contained: true,
            vetted: true,
            audits: 40,
            passes: 38,
            failures: 1,
            timeouts: 1,
            shards_assigned: 12,
            verified_bytes: 24 << 20,
            verdicts: vec![
                Verdict {
                    at_ms: 1_800_000_000_000,
                    shard: id,
                    outcome: VerdictOutcome::Pass,
                    attempt: 1,
                    latency_ms: Some(41),
                    deadline_ms: 2000,
                    reason: String::new(),
                },
                Verdict {
                    at_ms: 1_800_000_001_000,
                    shard: ShardId([9; 32]),
                    outcome: VerdictOutcome::WrongProof,
                    attempt: 1,
                    latency_ms: Some(52),
                    deadline_ms: 2000,
                    reason: "wrong proof for shard 0909: chunk 17 does not hash".into(),
                },
            ],
        }),
        Response::DialedBack(DialBackReport {
            reached: false,
            rtt_ms: None,
            detail: "dialed 203.0.113.21:7440 from a fresh socket: timed out".into(),
        }),
    ]
    .iter()
    .enumerate()
    {
        w.write("response", &format!("{i:02}"), &r.encode()[4..])?;
    }

    for (name, m) in manifests(&owner) {
        w.write("manifest", name, &m.encode())?;
    }

    let miners: Vec<_> = (10..16u8)
        .map(|i| SecretKey::from_bytes(&[i; 32]).public())
        .collect();
    let holders: Vec<_> = (0..12)
        .map(|i| (i % 5 != 4).then(|| miners[i % 6]))
        .collect();
    let p = Placement::signed(Cid([6; 32]), 3, owner.public(), &holders, &owner);
    w.write("placement", "signed", &p.encode())?;
    let p = Placement::signed(Cid([6; 32]), 0, owner.public(), &[], &owner);
    w.write("placement", "empty", &p.encode())?;

    w.write("grant", "shard", &grant.encode())?;
    let any = Grant::signed(&owner, reader, 1_900_000_000, None);
    w.write("grant", "any", &any.encode())?;
    w.write("grant", "token", any.to_token().as_bytes())?;

    // The structured targets read their own layout from any bytes: seeds of
    // a few sizes, and a real proof after a challenge's fields.
    let shard: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (sid, outboard) = shard_id_and_outboard(&shard);
    let c = Challenge::new(sid, shard.len() as u64, [1; 32], 8)?;
    let honest = prove(&c, shard.as_slice(), outboard.as_slice())?;
    for n in [40, 200, 1200] {
        let mut bytes = vec![0; n];
        blake3::Hasher::new()
            .update(&(n as u64).to_le_bytes())
            .finalize_xof()
            .fill(&mut bytes);
        for t in [
            "challenge",
            "proof",
            "shard_reply",
            "placement",
            "grant",
            "commitment",
        ] {
            w.write(t, &format!("bytes{n}"), &bytes)?;
        }
    }
    let mut with_proof = Vec::new();
    with_proof.extend_from_slice(&sid.0);
    with_proof.extend_from_slice(&(shard.len() as u64).to_le_bytes());
    with_proof.extend_from_slice(&[1; 32]);
    with_proof.extend_from_slice(&8u16.to_le_bytes());
    with_proof.extend_from_slice(&honest);
    w.write("challenge", "honest", &with_proof)?;
    let mut reply = Vec::new();
    reply.extend_from_slice(&sid.0);
    reply.extend_from_slice(&(shard.len() as u64).to_le_bytes());
    reply.extend_from_slice(&outboard);
    w.write("shard_reply", "outboard", &reply)?;

    let addrs: Vec<SocketAddr> = vec!["203.0.113.7:7440".parse()?, "[2001:db8::7]:7440".parse()?];
    let fields = commitment_fields(
        &owner,
        &[9; 32],
        75,
        Role::Miner,
        &addrs,
        Some("http://203.0.113.3:3340/"),
    );
    w.write("commitment", "fields", &fields.join(&0xff))?;

    let dir = tempfile::tempdir()?;
    let hotkey = Hotkey::generate(&dir.path().join("hotkey"))?;
    w.write(
        "key_file",
        "generated",
        &std::fs::read(dir.path().join("hotkey"))?,
    )?;
    let registry = LocalRegistry::open(&dir.path().join("registry"))?;
    let key = cairn_fuzz::local_registry_key();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    for role in [Role::Miner, Role::Validator] {
        let me = Member {
            node_id: key.public(),
            role,
            addrs: addrs.clone(),
            relay: Some("http://203.0.113.3:3340/".into()),
            hotkey: hotkey.ss58(),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: 1 << 30,
            free: 1 << 29,
            api: Some("127.0.0.1:7441".parse()?),
        };
        rt.block_on(registry.publish(&me, &hotkey, &key))?;
        let entry = std::fs::read(
            dir.path()
                .join("registry")
                .join(format!("{}.json", key.public())),
        )?;
        w.write("local_registry_entry", role.as_str(), &entry)?;
    }

    for (name, text) in [
        ("prefix", "bytes=0-16383"),
        ("suffix", "bytes=-4096"),
        ("open", "bytes=1048576-"),
        ("several", "bytes=0-1,5-6"),
        ("path", "train/shard%2000.tar%3Fx"),
    ] {
        let mut b = (300_000_000u64).to_le_bytes().to_vec();
        b.extend_from_slice(text.as_bytes());
        w.write("range_header", name, &b)?;
    }

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    w.write(
        "config",
        "node.toml",
        &std::fs::read(repo.join("node/node.toml"))?,
    )?;
    w.write(
        "config",
        "env",
        b"[storage]\ncapacity = \"10 GiB\"\n\0STORAGE_CAPACITY=2 TiB",
    )?;

    let header = PinRequest {
        name: "imagenet-val".into(),
        files: vec![
            FileSpec {
                path: "a/b.bin".into(),
                size: 7,
                executable: false,
                dir: false,
            },
            FileSpec {
                path: "empty".into(),
                size: 0,
                executable: false,
                dir: true,
            },
            FileSpec {
                path: "run.sh".into(),
                size: 70,
                executable: true,
                dir: false,
            },
        ],
        single_file: false,
        data_shards: Some(4),
        parity_shards: Some(2),
        segment_size: Some(8 << 20),
    };
    let mut body = cairn_api::encode_pin_header(&header)?;
    body.extend_from_slice(b"file bytes follow");
    w.write("pin_header", "three", &body)?;
    w.write(
        "pin_header",
        "default",
        &cairn_api::encode_pin_header(&PinRequest::default())?,
    )?;

    println!("wrote {} seeds under {}", w.count, w.root.display());
    Ok(())
}

/// Manifests as a pin makes them: several files, one file, an empty
/// directory only, a short last segment.
fn manifests(owner: &SecretKey) -> Vec<(&'static str, Manifest)> {
    let build = |files: &[(&str, u64, bool)], single: bool, k: u16, m: u16, seg: u64| {
        let params = cairn_erasure::Params::new(usize::from(k), usize::from(m), seg as usize)
            .expect("valid params");
        let mut offset = 0;
        let entries: Vec<Entry> = files
            .iter()
            .map(|(path, size, dir)| {
                let e = Entry {
                    path: path.to_string(),
                    kind: if *dir {
                        EntryKind::Dir
                    } else {
                        EntryKind::File
                    },
                    size: *size,
                    offset,
                    blake3: *blake3::hash(path.as_bytes()).as_bytes(),
                    executable: path.ends_with(".sh"),
                };
                offset += size;
                e
            })
            .collect();
        let segments = (0..params.segment_count(offset))
            .map(|s| SegmentRecord {
                len: params.segment_len(offset, s) as u64,
                blake3: [s as u8; 32],
                shards: (0..k + m)
                    .map(|i| ShardId([i as u8 ^ s as u8; 32]))
                    .collect(),
            })
            .collect();
        Manifest {
            owner: owner.public(),
            data_shards: k,
            parity_shards: m,
            segment_size: seg,
            total_len: offset,
            single_file: single,
            entries,
            segments,
        }
    };
    vec![
        (
            "files",
            build(
                &[
                    ("a/x.bin", 70_000, false),
                    ("a/y.sh", 10, false),
                    ("b", 0, true),
                ],
                false,
                4,
                2,
                4 * 64 * 64,
            ),
        ),
        (
            "single",
            build(
                &[("model.safetensors", 100_000, false)],
                true,
                10,
                4,
                10 * 64 * 100,
            ),
        ),
        (
            "empty-dir",
            build(&[("empty", 0, true)], false, 4, 2, 4 * 64),
        ),
        ("nothing", build(&[], false, 1, 1, 64)),
    ]
}

struct Writer {
    root: PathBuf,
    count: usize,
}

impl Writer {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        self.count += 1;
        Ok(())
    }
}
