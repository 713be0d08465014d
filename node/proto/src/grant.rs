//! Read grants: an owner's signed leave for one node to read its shards.
//!
//! A miner serves a shard's bytes only to the nodes that placed it there
//! (its owners), to validators (repair), and to a node that presents a
//! grant signed by one of its owners. Without this rule any member could
//! fetch the same 1 KiB positions of k other shards of a segment and answer
//! a challenge on a shard it threw away (Reed-Solomon works position by
//! position), or read a data shard's plain bytes.
//!
//! A grant names the owner, the reader (a node id: it is useless to anyone
//! else, who cannot complete the QUIC handshake as that node), an expiry,
//! and optionally one shard. Without a shard it covers every shard the owner
//! placed on the miner: a miner knows who placed a shard, not which dataset
//! it belongs to, so a dataset-wide grant could not be checked there.
//! Expiry is at most [`MAX_GRANT_SECS`] ahead of the miner's clock.
//!
//! As a token (for `cairn grant` and a reader's config) a grant is
//! `cairngrant1` followed by lower-case base32 of its encoding.

use cairn_proof::ShardId;

use crate::{Error, NodeId, Result, SecretKey, Signature};

/// Longest a grant may run: 30 days.
pub const MAX_GRANT_SECS: u64 = 30 * 86_400;
/// Encoded length with and without a shard.
pub const GRANT_LEN: usize = 1 + 32 + 32 + 8 + 1 + 32 + 64;
const GRANT_LEN_NO_SHARD: usize = GRANT_LEN - 32;
const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"cairn 2026-11 read grant v1";
const TOKEN_PREFIX: &str = "cairngrant1";

/// An owner's leave for `reader` to read its shards until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub owner: NodeId,
    pub reader: NodeId,
    /// Unix seconds after which the grant is void.
    pub expires: u64,
    /// Only this shard; `None`: every shard the owner placed.
    pub shard: Option<ShardId>,
    signature: [u8; 64],
}

/// Why a grant does not let a peer read a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRefusal {
    OtherReader,
    NotAnOwner,
    OtherShard,
    Expired,
    TooLong,
    BadSignature,
}

impl std::fmt::Display for GrantRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GrantRefusal::OtherReader => "the grant was made out to another node",
            GrantRefusal::NotAnOwner => "the grant's signer did not place this shard here",
            GrantRefusal::OtherShard => "the grant covers another shard",
            GrantRefusal::Expired => "the grant has expired; ask the owner for a new one",
            GrantRefusal::TooLong => "the grant runs longer than 30 days; ask for a shorter one",
            GrantRefusal::BadSignature => {
                "the grant's signature does not verify (not signed by the owner it names, or altered)"
            }
        })
    }
}

impl Grant {
    /// A grant from `owner_key`'s node to `reader`.
    pub fn signed(
        owner_key: &SecretKey,
        reader: NodeId,
        expires: u64,
        shard: Option<ShardId>,
    ) -> Grant {
        let mut g = Grant {
            owner: owner_key.public(),
            reader,
            expires,
            shard,
            signature: [0; 64],
        };
        g.signature = owner_key.sign(&g.signed_bytes()).to_bytes();
        g
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = CONTEXT.to_vec();
        b.extend_from_slice(&self.body());
        b
    }

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(GRANT_LEN);
        b.push(VERSION);
        b.extend_from_slice(self.owner.as_bytes());
        b.extend_from_slice(self.reader.as_bytes());
        b.extend_from_slice(&self.expires.to_le_bytes());
        match &self.shard {
            None => b.push(0),
            Some(id) => {
                b.push(1);
                b.extend_from_slice(&id.0);
            }
        }
        b
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes a grant and checks its signature (not whether it lets anyone
    /// read anything: see [`Grant::allows`]).
    pub fn decode(bytes: &[u8]) -> Result<Grant> {
        let g = Grant::decode_unverified(bytes)?;
        if !g.signature_holds() {
            return Err(Error::BadGrant("the signature does not verify".into()));
        }
        Ok(g)
    }

    /// Decodes a grant without checking its signature: how a request
    /// carries it, so that a miner refuses a grant made out to another
    /// reader, or for another owner, shard or time, before it spends a
    /// signature check on it ([`Grant::allows`] checks the signature last).
    pub fn decode_unverified(bytes: &[u8]) -> Result<Grant> {
        let bad = |why: &str| Error::BadGrant(why.to_string());
        if bytes.len() != GRANT_LEN && bytes.len() != GRANT_LEN_NO_SHARD {
            return Err(bad("wrong length"));
        }
        if bytes[0] != VERSION {
            return Err(bad("unknown version"));
        }
        let key = |b: &[u8]| {
            NodeId::from_bytes(b.try_into().expect("32"))
                .map_err(|_| bad("a node id is not a valid key"))
        };
        let owner = key(&bytes[1..33])?;
        let reader = key(&bytes[33..65])?;
        let expires = u64::from_le_bytes(bytes[65..73].try_into().expect("8"));
        let (shard, rest) = match (bytes[73], bytes.len()) {
            (0, GRANT_LEN_NO_SHARD) => (None, &bytes[74..]),
            (1, GRANT_LEN) => (
                Some(ShardId(bytes[74..106].try_into().expect("32"))),
                &bytes[106..],
            ),
            _ => return Err(bad("bad shard field")),
        };
        Ok(Grant {
            owner,
            reader,
            expires,
            shard,
            signature: rest.try_into().expect("64"),
        })
    }

    /// The owner it names signed it as it is.
    fn signature_holds(&self) -> bool {
        self.owner
            .verify(
                &self.signed_bytes(),
                &Signature::from_bytes(&self.signature),
            )
            .is_ok()
    }

    /// Whether this grant lets `peer` read `shard`, placed by `owners`, at
    /// unix time `now`. The signature is checked last, once everything
    /// cheaper holds.
    pub fn allows(
        &self,
        peer: &NodeId,
        shard: &ShardId,
        owners: &[NodeId],
        now: u64,
    ) -> std::result::Result<(), GrantRefusal> {
        if self.reader != *peer {
            return Err(GrantRefusal::OtherReader);
        }
        if !owners.contains(&self.owner) {
            return Err(GrantRefusal::NotAnOwner);
        }
        if self.shard.is_some_and(|s| s != *shard) {
            return Err(GrantRefusal::OtherShard);
        }
        if now > self.expires {
            return Err(GrantRefusal::Expired);
        }
        if self.expires - now > MAX_GRANT_SECS {
            return Err(GrantRefusal::TooLong);
        }
        if !self.signature_holds() {
            return Err(GrantRefusal::BadSignature);
        }
        Ok(())
    }

    /// The grant as a token to hand to the reader.
    pub fn to_token(&self) -> String {
        let mut s = TOKEN_PREFIX.to_string();
        s.push_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.encode())
                .to_lowercase(),
        );
        s
    }

    /// Reads a token made by [`Grant::to_token`].
    pub fn from_token(token: &str) -> Result<Grant> {
        let t = token.trim();
        let body = t.strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
            Error::BadGrant(format!(
                "a grant token starts with {TOKEN_PREFIX:?}, as `cairn grant` prints it"
            ))
        })?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::BadGrant("not base32".into()))?;
        Grant::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes(&[b; 32])
    }

    #[test]
    fn a_grant_round_trips_and_allows_only_its_reader() {
        let (owner, reader, other) = (key(1), key(2), key(3));
        let shard = ShardId([5; 32]);
        for scope in [None, Some(shard)] {
            let g = Grant::signed(&owner, reader.public(), 1_000, scope);
            let back = Grant::from_token(&g.to_token()).unwrap();
            assert_eq!(back, g);
            let owners = [owner.public()];
            assert_eq!(back.allows(&reader.public(), &shard, &owners, 900), Ok(()));
            assert_eq!(
                back.allows(&other.public(), &shard, &owners, 900),
                Err(GrantRefusal::OtherReader)
            );
            assert_eq!(
                back.allows(&reader.public(), &shard, &[other.public()], 900),
                Err(GrantRefusal::NotAnOwner)
            );
            assert_eq!(
                back.allows(&reader.public(), &shard, &owners, 1_001),
                Err(GrantRefusal::Expired)
            );
        }
        let one = Grant::signed(&owner, reader.public(), 1_000, Some(shard));
        assert_eq!(
            one.allows(&reader.public(), &ShardId([6; 32]), &[owner.public()], 0),
            Err(GrantRefusal::OtherShard)
        );
        let long = Grant::signed(&owner, reader.public(), MAX_GRANT_SECS + 10, None);
        assert_eq!(
            long.allows(&reader.public(), &shard, &[owner.public()], 0),
            Err(GrantRefusal::TooLong)
        );
    }

    #[test]
    fn a_forged_or_mangled_grant_is_refused() {
        let g = Grant::signed(&key(1), key(2).public(), 1_000, None);
        let mut b = g.encode();
        // the reader rewritten to someone else: the signature no longer holds
        b[33..65].copy_from_slice(key(3).public().as_bytes());
        assert!(matches!(Grant::decode(&b), Err(Error::BadGrant(_))));
        // As a request carries it: decoded, and refused by what it names
        // before its signature is checked; then by its signature.
        let carried = Grant::decode_unverified(&b).unwrap();
        let owners = [key(1).public()];
        assert_eq!(
            carried.allows(&key(2).public(), &ShardId([5; 32]), &owners, 900),
            Err(GrantRefusal::OtherReader)
        );
        assert_eq!(
            carried.allows(&key(3).public(), &ShardId([5; 32]), &owners, 900),
            Err(GrantRefusal::BadSignature)
        );
        for cut in [0, 1, 73, GRANT_LEN_NO_SHARD - 1] {
            assert!(Grant::decode(&g.encode()[..cut]).is_err());
        }
        assert!(Grant::from_token("cairngrant1!!").is_err());
        assert!(Grant::from_token("hello").is_err());
    }
}
