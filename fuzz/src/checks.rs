//! One check per fuzz target (the module doc of the crate says what they
//! assert). Bounds are stated next to each decoder's call: they are what
//! the decoder may allocate for an input of `n` bytes, whatever its length
//! fields announce.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use cairn_node::registry::subtensor::{commitment_fields, parse_commitment};
use cairn_proof::{Challenge, ShardId, ShardVerifier, prove, shard_id_and_outboard, verify};
use cairn_proto::wire::{Request, Response};
use cairn_proto::{Cid, Grant, Manifest, NodeId, Placement, Role, SecretKey};

use crate::{Unstructured, bounded, take};

const KIB: usize = 1024;

/// A frame body from a peer (version, kind, payload): requests carry at most
/// 1,024 shard ids, so decoding allocates at most the body plus 96 KiB; a
/// request that decodes re-encodes to exactly its bytes.
pub fn request(data: &[u8]) {
    let Ok(r) = bounded(data.len() + 96 * KIB, || Request::decode(data)) else {
        return;
    };
    let frame = r.encode();
    assert_eq!(&frame[4..], data, "a request has one encoding: {r:?}");
}

/// A reply from a peer: the body plus 96 KiB (inventory pages, node lists
/// and bitmaps are bounded before they are allocated); decode(encode(r)) == r.
pub fn response(data: &[u8]) {
    let Ok(r) = bounded(data.len() + 96 * KIB, || Response::decode(data)) else {
        return;
    };
    let frame = r.encode();
    let back = Response::decode(&frame[4..]).expect("an encoded response decodes");
    assert_eq!(back, r);
}

/// A manifest from a peer (its CID is the BLAKE3 of these bytes): at most 4x
/// the bytes plus 64 KiB; one that decodes is canonical (re-encodes to its
/// bytes, so its CID is the hash of what was received) and its decoder fits
/// the reader's bound.
pub fn manifest(data: &[u8]) {
    let Ok(m) = bounded(4 * data.len() + 64 * KIB, || Manifest::decode(data)) else {
        return;
    };
    assert_eq!(m.encode(), data, "a manifest has one encoding");
    assert_eq!(m.cid(), Cid(*blake3::hash(data).as_bytes()));
    let p = m
        .decoder_params()
        .expect("a decoded manifest has decoder params");
    let decoder = p.shard_len(p.segment_size()) as u64 * m.total_shards() as u64;
    assert!(decoder <= cairn_proto::records::MAX_DECODER_BYTES);
    let _ = m.stored_bytes();
}

/// A signed placement: arbitrary bytes decode within 4x plus 64 KiB and
/// re-encode to themselves; an honest placement round-trips, and any byte of
/// it changed fails to decode.
pub fn placement(data: &[u8]) {
    if let Ok(p) = bounded(4 * data.len() + 64 * KIB, || Placement::decode(data)) {
        assert_eq!(p.encode(), data, "a placement has one encoding");
    }
    let mut u = Unstructured::new(data);
    let Some((key, cid, version, owner)) = take::<([u8; 32], [u8; 32], u64, [u8; 32])>(&mut u)
    else {
        return;
    };
    let miners: Vec<NodeId> = (0..8u8).map(|i| node(&[i; 32])).collect();
    let Some(holders) = take::<Vec<Option<u8>>>(&mut u) else {
        return;
    };
    let holders: Vec<Option<NodeId>> = holders
        .iter()
        .take(256)
        .map(|h| h.map(|i| miners[usize::from(i % 8)]))
        .collect();
    let key = SecretKey::from_bytes(&key);
    let honest = Placement::signed(Cid(cid), version, node(&owner), &holders, &key);
    let bytes = honest.encode();
    assert_eq!(
        Placement::decode(&bytes).expect("an honest placement"),
        honest
    );
    assert_eq!(honest.holders_by_shard(), holders);
    tampered_fail(&mut u, &bytes, |b| Placement::decode(b).is_ok());
}

/// An owner's grant (bytes in `GetShard`, a token from a user): arbitrary
/// bytes and tokens do not panic; an honest grant round-trips as bytes and as
/// a token, and any byte of it changed fails to decode.
pub fn grant(data: &[u8]) {
    if let Ok(g) = Grant::decode(data) {
        assert_eq!(g.encode(), data, "a grant has one encoding");
    }
    // As a request carries it (the signature checked by `allows`).
    if let Ok(g) = Grant::decode_unverified(data) {
        assert_eq!(g.encode(), data, "a carried grant has one encoding");
    }
    let _ = Grant::from_token(&String::from_utf8_lossy(data));
    let mut u = Unstructured::new(data);
    let Some((owner, reader, expires, shard)) =
        take::<([u8; 32], [u8; 32], u64, Option<[u8; 32]>)>(&mut u)
    else {
        return;
    };
    let honest = Grant::signed(
        &SecretKey::from_bytes(&owner),
        node(&reader),
        expires,
        shard.map(ShardId),
    );
    let bytes = honest.encode();
    assert_eq!(Grant::decode(&bytes).expect("an honest grant"), honest);
    assert_eq!(
        Grant::from_token(&honest.to_token()).expect("its token"),
        honest
    );
    tampered_fail(&mut u, &bytes, |b| Grant::decode(b).is_ok());
    // Carried by a request, a changed grant lets nobody read anything, even
    // where everything it names holds.
    tampered_fail(&mut u, &bytes, |b| {
        Grant::decode_unverified(b).is_ok_and(|g| {
            let shard = g.shard.unwrap_or(ShardId([0; 32]));
            g.allows(&g.reader, &shard, &[g.owner], g.expires).is_ok()
        })
    });
}

/// A challenge's parameters as a request carries them, and a proof from the
/// prover: `verify` allocates at most 64 KiB whatever the proof, and accepts
/// only a proof of exactly the length the challenge gives (the honest seed
/// shows the accepting path; `proof` checks that nothing else is accepted).
pub fn challenge(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some((id, len, nonce, samples)) = take::<([u8; 32], u64, [u8; 32], u16)>(&mut u) else {
        return;
    };
    let Ok(c) = Challenge::new(ShardId(id), len, nonce, samples) else {
        return;
    };
    let chunks = cairn_proof::chunk_count(len);
    assert!(c.indices().iter().all(|i| *i < chunks));
    assert!(c.proof_len() <= cairn_proof::MAX_PROOF_LEN);
    let proof = u.take_rest();
    if bounded(64 * KIB, || verify(&c, proof)).is_ok() {
        assert_eq!(proof.len(), c.proof_len());
        assert_eq!(proof[0], cairn_proof::PROOF_VERSION);
    }
}

/// A prover's answer: the honest proof of a shard passes; the same proof
/// with bytes changed, cut or extended fails; a proof made from a shard with
/// bytes changed passes only if it is byte for byte the honest one (the
/// change missed every sampled group); a proof does not answer another
/// challenge.
pub fn proof(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some((shard, (nonce, samples))) = shard_and(&mut u, take::<([u8; 32], u8)>) else {
        return;
    };
    let (id, outboard) = shard_id_and_outboard(&shard);
    let c = Challenge::new(id, shard.len() as u64, nonce, u16::from(samples % 32) + 1)
        .expect("a valid challenge");
    let honest = prove(&c, shard.as_slice(), outboard.as_slice()).expect("an honest proof");
    verify(&c, &honest).expect("the honest proof verifies");
    tampered_fail(&mut u, &honest, |p| verify(&c, p).is_ok());

    let mut other = c;
    other.nonce[0] ^= 1;
    assert!(
        verify(&other, &honest).is_err(),
        "a proof answered another challenge"
    );

    // A holder whose copy rotted somewhere answers from what it has.
    let Some((at, xor)) = take::<(u32, u8)>(&mut u) else {
        return;
    };
    let mut rotten = shard.clone();
    rotten[at as usize % shard.len()] ^= xor.max(1);
    if let Ok(p) = prove(&c, rotten.as_slice(), outboard.as_slice()) {
        assert_eq!(
            verify(&c, &p).is_ok(),
            p == honest,
            "a proof from a changed shard was judged wrongly"
        );
    }
}

/// A shard as a peer streams it (outboard, then groups): the honest outboard
/// and groups pass, any outboard byte or group byte changed fails; arbitrary
/// (id, length, outboard) allocate at most the outboard's bytes plus 64 KiB.
pub fn shard_reply(data: &[u8]) {
    {
        let mut u = Unstructured::new(data);
        if let Some((id, len)) = take::<([u8; 32], u64)>(&mut u) {
            let outboard = u.take_rest();
            let _ = bounded(outboard.len() + 64 * KIB, || {
                ShardVerifier::new(ShardId(id), len, outboard)
            });
        }
    }
    let mut u = Unstructured::new(data);
    let Some((shard, ())) = shard_and(&mut u, |_| Some(())) else {
        return;
    };
    let len = shard.len() as u64;
    let (id, outboard) = shard_id_and_outboard(&shard);
    let v = ShardVerifier::new(id, len, &outboard).expect("the honest outboard");
    for g in 0..v.groups() {
        let r = cairn_proof::group_range(len, g);
        v.verify_group(g, &shard[r.start as usize..r.end as usize])
            .expect("an honest group");
    }
    if !outboard.is_empty() {
        tampered_fail(&mut u, &outboard, |o| {
            ShardVerifier::new(id, len, o).is_ok()
        });
    }
    let Some(g) = take::<u64>(&mut u) else { return };
    let g = g % v.groups();
    let r = cairn_proof::group_range(len, g);
    let group = &shard[r.start as usize..r.end as usize];
    tampered_fail(&mut u, group, |b| v.verify_group(g, b).is_ok());
}

/// A chain commitment (three fields a hotkey wrote): arbitrary fields never
/// panic; an honest commitment parses to what was committed (the addresses
/// that fit in 128 bytes, the relay if it is an http(s) URL of at most 72
/// bytes), and any byte of its text or signature changed, or another hotkey
/// or subnet, makes it worthless.
pub fn commitment(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some((hotkey, netuid, key, role, addrs, relay)) = take::<(
        [u8; 32],
        u16,
        [u8; 32],
        u8,
        Vec<(bool, [u8; 16], u16)>,
        Option<String>,
    )>(&mut u) else {
        let fields: Vec<Vec<u8>> = data.split(|b| *b == 0xff).map(<[u8]>::to_vec).collect();
        let _ = parse_commitment(&fields, &[0; 32], 0);
        return;
    };
    let role = [Role::Miner, Role::Validator, Role::Client][usize::from(role % 3)];
    let addrs: Vec<SocketAddr> = addrs.into_iter().map(socket_addr).collect();
    let key = SecretKey::from_bytes(&key);
    let fields = commitment_fields(&key, &hotkey, netuid, role, &addrs, relay.as_deref());
    let c = parse_commitment(&fields, &hotkey, netuid).expect("an honest commitment parses");
    assert_eq!(c.node, key.public());
    assert_eq!(c.role, role);
    assert!(
        addrs.starts_with(&c.addrs),
        "{:?} not a prefix of {addrs:?}",
        c.addrs
    );
    assert!(
        fields[1].len() <= 128,
        "commitment text of {} bytes",
        fields[1].len()
    );
    if let Some(r) = &c.relay {
        assert!(
            relay.is_some() && r.starts_with("http"),
            "relay {r:?} from {relay:?}"
        );
    }
    let mut other = hotkey;
    other[0] ^= 1;
    assert!(parse_commitment(&fields, &other, netuid).is_none());
    assert!(parse_commitment(&fields, &hotkey, netuid ^ 1).is_none());
    for i in [1, 2] {
        tampered_fail(&mut u, &fields[i], |b| {
            let mut f = fields.clone();
            f[i] = b.to_vec();
            parse_commitment(&f, &hotkey, netuid).is_some()
        });
    }
}

/// The node id whose entry the local-registry seeds are (`seeds` writes them
/// with this key).
pub fn local_registry_key() -> SecretKey {
    SecretKey::from_bytes(&[7; 32])
}

/// A local registry's entry file (anyone with write access to the shared
/// directory may have written it): never a panic; an entry that passes is
/// the node's it names, and its validator right is its signed role.
pub fn local_registry_entry(data: &[u8]) {
    let id = local_registry_key().public();
    if let Ok(m) = cairn_node::registry::LocalRegistry::parse_entry(data, &id, "fuzz") {
        assert_eq!(m.node_id, id);
        assert_eq!(m.validator_permit, m.role == Role::Validator);
    }
}

/// A `Range` header against a file length, and a gateway URL's path: a
/// range that parses lies inside the file; a path that decodes comes back
/// from the CLI's encoding unchanged, and so does any string.
pub fn range_header(data: &[u8]) {
    let (len, rest) = match data.split_first_chunk::<8>() {
        Some((l, r)) => (u64::from_le_bytes(*l), r),
        None => (data.len() as u64, data),
    };
    let text = String::from_utf8_lossy(rest);
    use cairn_node::gateway::range::{decode_path, parse_range};
    if let Some(Ok((start, end))) = parse_range(&text, len) {
        assert!(
            start < end && end <= len,
            "{text:?} on {len}: {start}..{end}"
        );
    }
    if let Some(p) = decode_path(&text) {
        assert_eq!(
            decode_path(&cairn_api::encode_path(&p)).as_deref(),
            Some(p.as_str())
        );
    }
    assert_eq!(
        decode_path(&cairn_api::encode_path(&text)).as_deref(),
        Some(&*text)
    );
}

/// A config file, and a `CAIRN_*` override after a NUL: never a panic.
pub fn config(data: &[u8]) {
    let (text, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let text = String::from_utf8_lossy(text);
    let env: Vec<(String, String)> = env
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .and_then(|e| {
            let (k, v) = e.split_once('=')?;
            Some((format!("CAIRN_{k}"), v.to_string()))
        })
        .into_iter()
        .collect();
    let _ = cairn_node::config::Config::parse(&text, "fuzz.toml", env);
}

/// A bittensor-wallet key file: never a panic; a key that loads is the one
/// its public fields name.
pub fn key_file(data: &[u8]) {
    let _ = cairn_node::identity::Hotkey::from_key_file(data, Path::new("fuzz-hotkey"));
}

/// The pin body's header from a client: at most 16x the bytes plus 64 KiB,
/// never more than it announces; a header that decodes re-encodes to one
/// that decodes to the same request.
pub fn pin_header(data: &[u8]) {
    let decoded = bounded(16 * data.len() + 64 * KIB, || {
        cairn_api::decode_pin_header(data)
    });
    let Ok(Some((header, used))) = decoded else {
        return;
    };
    assert!(used <= data.len());
    let again = cairn_api::encode_pin_header(&header).expect("a decoded header encodes");
    let (back, n) = cairn_api::decode_pin_header(&again)
        .expect("an encoded header decodes")
        .expect("complete");
    assert_eq!(n, again.len());
    assert_eq!(back, header);
}

/// The node id of a 32-byte secret.
fn node(secret: &[u8; 32]) -> NodeId {
    SecretKey::from_bytes(secret).public()
}

fn socket_addr((v6, ip, port): (bool, [u8; 16], u16)) -> SocketAddr {
    if v6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
    } else {
        let [a, b, c, d, ..] = ip;
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
    }
}

/// A shard of 1 byte to 300 KiB (so up to 19 groups and a real outboard)
/// from a few input bytes, and whatever `rest` takes after them.
fn shard_and<'a, T>(
    u: &mut Unstructured<'a>,
    rest: impl FnOnce(&mut Unstructured<'a>) -> Option<T>,
) -> Option<(Vec<u8>, T)> {
    let (len, seed) = take::<(u32, [u8; 8])>(u)?;
    let len = len as usize % (300 * KIB) + 1;
    let mut shard = vec![0; len];
    blake3::Hasher::new()
        .update(&seed)
        .finalize_xof()
        .fill(&mut shard);
    Some((shard, rest(u)?))
}

/// Changes `honest` as the input says (up to 4 bytes flipped, then maybe cut
/// or extended) and asserts `accepts` refuses anything that differs.
fn tampered_fail(u: &mut Unstructured<'_>, honest: &[u8], accepts: impl Fn(&[u8]) -> bool) {
    let Some((flips, cut)) = take::<(Vec<(u32, u8)>, Option<i8>)>(u) else {
        return;
    };
    let mut bytes = honest.to_vec();
    for (at, xor) in flips.into_iter().take(4) {
        if !bytes.is_empty() {
            let i = at as usize % bytes.len();
            bytes[i] ^= xor;
        }
    }
    match cut {
        Some(n) if n < 0 => bytes.truncate(bytes.len().saturating_sub(n.unsigned_abs().into())),
        Some(n) => bytes.extend(std::iter::repeat_n(0u8, n as usize)),
        None => {}
    }
    if bytes != honest {
        assert!(!accepts(&bytes), "a changed encoding was accepted");
    }
}
