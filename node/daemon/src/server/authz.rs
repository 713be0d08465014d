//! Who may do what: every authorization rule of the protocol server, in one
//! table, read before a handler runs.
//!
//! | request | right | slot |
//! |---|---|---|
//! | `Info` | member | control |
//! | `PutShard` | member; `on_behalf` validator | put |
//! | `GetShard` | a shard's owner, a validator, or an owner's grant ([`may_read_shard`]) | get |
//! | `Challenge` | validator | challenge |
//! | `Inventory`, `Has` | member | control |
//! | `PutManifest` | the dataset's owner or a validator ([`may_store_manifest`]) | put |
//! | `PutPlacement` | its owner or a validator before its body ([`may_place`]); its signer, the owner or a validator after ([`may_store_placement`]) | put |
//! | `GetManifest`, `GetPlacement` | member | get |
//! | `DeleteShard` | a holder; `on_behalf` validator | control |
//! | `DeleteManifest` | the dataset's owner ([`may_delete_records`]) | control |
//! | `Audit`, `Release` | member, on a validator (which checks it is the dataset's owner) | control |
//! | `Vetted` | member, on a validator | control |
//! | `Verdicts` | member, on a validator; answered about the asker only | control |
//! | `DialBack` | member, on a validator; dials the asker's registered addresses only, one per asker per minute, two at once ([`DialBacks`](super::DialBacks)) | control |
//!
//! A right comes from the registry's record of the peer's node id (the
//! chain, or the local registry's signed entry), never from what a request
//! says about its sender.

use cairn_proof::ShardId;
use cairn_proto::wire::{ErrorCode, Request};
use cairn_proto::{Grant, NodeId, Placement};

use crate::registry::Member;
use crate::server::Refusal;

/// What a peer must be to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Anyone who completed the QUIC handshake.
    Anyone,
    /// A registered member of the network.
    Member,
    /// A member with the validator right.
    Validator,
}

/// Which pool of concurrent requests a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Writes that move bulk bytes in (shards, manifests, placements).
    Put,
    /// Reads that move bulk bytes out.
    Get,
    /// Proofs: disk reads and hashing.
    Challenge,
    /// Everything small.
    Control,
}

/// The table: the right and the slot of each request kind.
pub fn rule(req: &Request) -> (Right, Slot) {
    match req {
        Request::Info => (Right::Member, Slot::Control),
        Request::PutShard { on_behalf, .. } => (on_behalf_right(on_behalf), Slot::Put),
        Request::GetShard { .. } => (Right::Member, Slot::Get),
        Request::Challenge { .. } => (Right::Validator, Slot::Challenge),
        Request::Inventory { .. } | Request::Has { .. } => (Right::Member, Slot::Control),
        Request::PutManifest { .. } | Request::PutPlacement { .. } => (Right::Member, Slot::Put),
        Request::GetManifest { .. } | Request::GetPlacement { .. } => (Right::Member, Slot::Get),
        Request::DeleteShard { on_behalf, .. } => (on_behalf_right(on_behalf), Slot::Control),
        Request::DeleteManifest { .. }
        | Request::Audit { .. }
        | Request::Release { .. }
        | Request::Vetted
        | Request::Verdicts
        | Request::DialBack => (Right::Member, Slot::Control),
    }
}

fn on_behalf_right(on_behalf: &Option<[u8; 32]>) -> Right {
    if on_behalf.is_some() {
        Right::Validator
    } else {
        Right::Member
    }
}

/// Checks a peer against the right a request needs; returns its member
/// record when it has one.
pub fn check<'a>(
    right: Right,
    peer: &NodeId,
    member: Option<&'a Member>,
) -> Result<Option<&'a Member>, Refusal> {
    match (right, member) {
        (Right::Anyone, m) => Ok(m),
        (_, None) => Err(Refusal::new(
            ErrorCode::NotRegistered,
            format!(
                "node {peer} is not registered on this network; register it (`cairn register`, or `cairn init` with the shared registry) and reconnect"
            ),
        )),
        (Right::Member, Some(m)) => Ok(Some(m)),
        (Right::Validator, Some(m)) if m.is_validator() => Ok(Some(m)),
        (Right::Validator, Some(_)) => Err(Refusal::new(
            ErrorCode::NotValidator,
            "only validators may challenge or act on behalf of another node (challenges are answered for validators only)",
        )),
    }
}

/// The owner a shard request acts for: the peer, or whom a validator names
/// (repair places shards for the pinner). [`check`] has already required
/// the validator right when `on_behalf` is set.
pub fn acting_owner(peer: NodeId, on_behalf: Option<[u8; 32]>) -> Result<NodeId, Refusal> {
    match on_behalf {
        None => Ok(peer),
        Some(b) => NodeId::from_bytes(&b)
            .map_err(|_| Refusal::new(ErrorCode::BadRequest, "on_behalf is not a node id")),
    }
}

/// A manifest copy may be stored by its dataset's owner (the pinner
/// publishes it) or by a validator (repair re-publishes it); the owner is
/// the one the manifest itself names (it is part of the content id).
pub fn may_store_manifest(member: &Member, peer: &NodeId, owner: &NodeId) -> Result<(), Refusal> {
    if peer == owner || member.is_validator() {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::Forbidden,
            "only the dataset's owner (or a validator) may store its manifest",
        ))
    }
}

/// Before a placement's body is received: it can be stored only where the
/// dataset's manifest is held, and from anyone but a validator only from
/// the owner that manifest names, so any other is refused before its bytes
/// are taken ([`may_store_placement`] checks the rest once they are).
/// Returns the owner.
pub fn may_place(
    member: &Member,
    peer: &NodeId,
    manifest_owner: Option<NodeId>,
) -> Result<NodeId, Refusal> {
    let Some(owner) = manifest_owner else {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "no manifest of this dataset is held here; store the manifest first",
        ));
    };
    if owner != *peer && !member.is_validator() {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "a placement must be signed and sent by its owner or by a validator",
        ));
    }
    Ok(owner)
}

/// A placement is stored when the peer signed it, it names the owner of
/// the manifest held here, and its signer is that owner (the pinner places
/// its own data) or a validator (repair re-places it).
pub fn may_store_placement(
    member: &Member,
    peer: &NodeId,
    p: &Placement,
    manifest_owner: Option<NodeId>,
) -> Result<(), Refusal> {
    let owner = may_place(member, peer, manifest_owner)?;
    if p.owner != owner {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "the placement names another owner than the dataset's manifest",
        ));
    }
    if p.signer == *peer && (p.signer == p.owner || member.is_validator()) {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::Forbidden,
            "a placement must be signed and sent by its owner or by a validator",
        ))
    }
}

/// A dataset's records (manifest and placement) are deleted only by the
/// owner they name.
pub fn may_delete_records(peer: &NodeId, owner: Option<NodeId>) -> Result<(), Refusal> {
    match owner {
        Some(o) if o != *peer => Err(Refusal::new(
            ErrorCode::Forbidden,
            "only the dataset's owner may delete its manifest and placement",
        )),
        _ => Ok(()),
    }
}

/// Shard bytes go to the nodes that placed the shard here (`owners`), to
/// validators (repair reads any k shards), and to a reader holding an
/// owner's unexpired grant made out to it. Nobody else: a miner that could
/// read the other shards of its segments could rebuild a shard it threw away
/// at challenge time.
pub fn may_read_shard(
    member: &Member,
    peer: &NodeId,
    shard: &ShardId,
    owners: &[NodeId],
    grant: Option<&Grant>,
    now: u64,
) -> Result<(), Refusal> {
    if owners.contains(peer) || member.is_validator() {
        return Ok(());
    }
    let Some(grant) = grant else {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "shard bytes are served to the node that placed the shard, to validators, and to readers with the owner's grant (`cairn grant new`); this node has none",
        ));
    };
    grant
        .allows(peer, shard, owners, now)
        .map_err(|why| Refusal::new(ErrorCode::Forbidden, format!("read grant refused: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::{Cid, Role, SecretKey};

    fn member(id: NodeId, validator: bool) -> Member {
        Member {
            node_id: id,
            role: Role::Client,
            addrs: vec![],
            relay: None,
            hotkey: String::new(),
            uid: None,
            stake: 0,
            validator_permit: validator,
            capacity: 0,
            free: 0,
            api: None,
        }
    }

    /// The check before a placement's body refuses only what the check
    /// after it would refuse, and together they admit exactly what the rule
    /// admits: the manifest held, the placement naming its owner, signed
    /// and sent by that owner or by a validator.
    #[test]
    fn a_placement_is_refused_before_its_body_only_when_it_would_be_after() {
        let keys: Vec<SecretKey> = (1..=3u8).map(|b| SecretKey::from_bytes(&[b; 32])).collect();
        let ids: Vec<NodeId> = keys.iter().map(SecretKey::public).collect();
        let peer = ids[0];
        for validator in [false, true] {
            let m = member(peer, validator);
            for manifest_owner in [None, Some(ids[0]), Some(ids[1])] {
                for (signer, named) in (0..3).flat_map(|s| (0..3).map(move |n| (s, n))) {
                    let p = Placement::signed(
                        Cid([7; 32]),
                        1,
                        ids[named],
                        &[Some(ids[2])],
                        &keys[signer],
                    );
                    let rule = manifest_owner.is_some_and(|o| {
                        p.owner == o && p.signer == peer && (p.signer == p.owner || validator)
                    });
                    let before = may_place(&m, &peer, manifest_owner).is_ok();
                    let after = may_store_placement(&m, &peer, &p, manifest_owner).is_ok();
                    let case = format!(
                        "validator {validator}, manifest owner {manifest_owner:?}, signer {signer}, named {named}"
                    );
                    assert_eq!(after, rule, "{case}");
                    assert!(before || !rule, "refused before its body: {case}");
                }
            }
        }
    }
}
