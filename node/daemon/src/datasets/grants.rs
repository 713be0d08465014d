//! Read grants on both sides: an owner signs them for readers of its
//! datasets; a reader keeps the ones it was given, one per owner, and shows
//! them to the miners when it fetches that owner's shards.

use cairn_api::GrantView;
use cairn_proof::ShardId;
use cairn_proto::grant::MAX_GRANT_SECS;
use cairn_proto::{Grant, NodeId};
use cairn_store::unix_secs;

use super::Datasets;
use crate::error::{Error, Result};

/// The key-value namespace of the grants this node holds, by owner.
const GRANTS: &str = "grant";

/// A grant as the API shows it.
pub fn view(g: &Grant) -> GrantView {
    GrantView {
        token: g.to_token(),
        owner: g.owner.to_string(),
        reader: g.reader.to_string(),
        expires: g.expires,
        shard: g.shard.map(|s| s.to_hex()),
    }
}

impl Datasets {
    /// Signs a grant for `reader` to read the shards this node placed, for
    /// `ttl_secs` (at most 30 days), optionally one shard only.
    pub fn issue_grant(
        &self,
        reader: NodeId,
        ttl_secs: u64,
        shard: Option<ShardId>,
    ) -> Result<Grant> {
        if ttl_secs == 0 || ttl_secs > MAX_GRANT_SECS {
            return Err(Error::BadRequest(format!(
                "a grant runs between 1 second and 30 days ({MAX_GRANT_SECS} s), not {ttl_secs} s"
            )));
        }
        if reader == self.node_id {
            return Err(Error::BadRequest(
                "a node reads its own shards without a grant".into(),
            ));
        }
        Ok(Grant::signed(
            &self.key,
            reader,
            unix_secs().saturating_add(ttl_secs),
            shard,
        ))
    }

    /// Keeps a grant made out to this node (replacing an older one of the
    /// same owner).
    pub fn add_grant(&self, token: &str) -> Result<Grant> {
        let g = Grant::from_token(token)?;
        if g.reader != self.node_id {
            return Err(Error::BadRequest(format!(
                "this grant was made out to node {}; this node is {}: ask the owner for a grant to this node's id",
                g.reader, self.node_id
            )));
        }
        if g.expires < unix_secs() {
            return Err(Error::BadRequest(
                "this grant has expired; ask the owner for a new one".into(),
            ));
        }
        self.store
            .kv(GRANTS)?
            .put(g.owner.as_bytes(), &g.encode())?;
        Ok(g)
    }

    /// The grant to show for `owner`'s shards: none for this node's own, or
    /// when none is kept or it expired.
    pub(crate) fn grant_for(&self, owner: &NodeId) -> Option<Grant> {
        if *owner == self.node_id {
            return None;
        }
        let bytes = self.store.kv(GRANTS).ok()?.get(owner.as_bytes()).ok()??;
        Grant::decode(&bytes)
            .ok()
            .filter(|g| g.expires >= unix_secs())
    }
}
