//! Dataset records a node keeps: manifests (opaque bytes keyed by their
//! content id, with the peer that stored them) and placements (the newest
//! signed version per content id, with its owner), each in its own column
//! family. The store checks versions and owners; what a record means is
//! cairn-proto's business.

use cairn_proto::NodeId;
use rocksdb::{IteratorMode, WriteBatch};

use crate::{
    CF_COUNTERS, CF_KV, CF_MANIFESTS, CF_PLACEMENTS, MANIFEST_BYTES, Result, Store, StoreError,
};

impl Store {
    /// Stores a manifest (opaque bytes, keyed by its content id) for `owner`.
    pub fn put_manifest(&self, cid: &[u8; 32], bytes: &[u8], owner: &NodeId) -> Result<()> {
        let _g = self.commit_lock.lock().expect("lock");
        let cf = self.cf(CF_MANIFESTS);
        let mut b = WriteBatch::default();
        let mut value = Vec::with_capacity(32 + bytes.len());
        value.extend_from_slice(owner.as_bytes());
        value.extend_from_slice(bytes);
        let old = self.db.get_pinned_cf(cf, cid)?.map(|v| v.len() as u64);
        let total = self
            .counter(MANIFEST_BYTES)?
            .saturating_sub(old.unwrap_or(0))
            .saturating_add(value.len() as u64);
        b.put_cf(cf, cid, value);
        b.put_cf(self.cf(CF_COUNTERS), MANIFEST_BYTES, total.to_le_bytes());
        self.db.write_opt(b, &Self::synced())?;
        Ok(())
    }

    /// A stored manifest and the peer that stored it.
    pub fn get_manifest(&self, cid: &[u8; 32]) -> Result<Option<(NodeId, Vec<u8>)>> {
        let Some(v) = self.db.get_cf(self.cf(CF_MANIFESTS), cid)? else {
            return Ok(None);
        };
        if v.len() < 32 {
            return Err(StoreError::CorruptRecord(
                "manifest record too short".into(),
            ));
        }
        let owner = NodeId::from_bytes(v[..32].try_into().expect("32"))
            .map_err(|e| StoreError::CorruptRecord(format!("manifest owner: {e}")))?;
        Ok(Some((owner, v[32..].to_vec())))
    }

    /// Removes a manifest; only its owner (or `force`) may.
    pub fn delete_manifest(&self, cid: &[u8; 32], requester: &NodeId, force: bool) -> Result<bool> {
        let _g = self.commit_lock.lock().expect("lock");
        let cf = self.cf(CF_MANIFESTS);
        let Some(v) = self.db.get_cf(cf, cid)? else {
            return Ok(false);
        };
        if !force && v.get(..32) != Some(requester.as_bytes().as_slice()) {
            return Err(StoreError::NotManifestOwner);
        }
        let total = self.counter(MANIFEST_BYTES)?.saturating_sub(v.len() as u64);
        let mut b = WriteBatch::default();
        b.delete_cf(cf, cid);
        b.put_cf(self.cf(CF_COUNTERS), MANIFEST_BYTES, total.to_le_bytes());
        self.db.write_opt(b, &Self::synced())?;
        Ok(true)
    }

    /// Stores a placement record if it is newer than the one held. Returns
    /// the version now held and whether `bytes` replaced it.
    pub fn put_placement(
        &self,
        cid: &[u8; 32],
        version: u64,
        owner: &NodeId,
        bytes: &[u8],
    ) -> Result<(u64, bool)> {
        let _g = self.commit_lock.lock().expect("lock");
        if let Some(old) = self.db.get_cf(self.cf(CF_PLACEMENTS), cid)?
            && old.len() >= 40
        {
            let held = u64::from_le_bytes(old[..8].try_into().expect("8"));
            if held >= version {
                return Ok((held, false));
            }
            if old[8..40] != owner.as_bytes()[..] {
                return Err(StoreError::PlacementOwnerMismatch);
            }
        }
        let mut value = Vec::with_capacity(40 + bytes.len());
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(owner.as_bytes());
        value.extend_from_slice(bytes);
        self.db
            .put_cf_opt(self.cf(CF_PLACEMENTS), cid, value, &Self::synced())?;
        Ok((version, true))
    }

    /// The placement record held for a CID.
    pub fn get_placement(&self, cid: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PLACEMENTS), cid)?
            .filter(|v| v.len() >= 40)
            .map(|v| v[40..].to_vec()))
    }

    /// Drops the placement record of a CID.
    pub fn delete_placement(&self, cid: &[u8; 32]) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_PLACEMENTS), cid, &Self::synced())?;
        Ok(())
    }

    /// Moves placements out of the key-value space, where the first
    /// release kept them under `placement/`: runs at open, O(1) once done.
    pub(crate) fn migrate_placements(&self) -> Result<()> {
        const OLD_PREFIX: &[u8] = b"placement/";
        let mut b = WriteBatch::default();
        let iter = self.db.iterator_cf(
            self.cf(CF_KV),
            IteratorMode::From(OLD_PREFIX, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(OLD_PREFIX) {
                break;
            }
            b.put_cf(self.cf(CF_PLACEMENTS), &k[OLD_PREFIX.len()..], v);
            b.delete_cf(self.cf(CF_KV), k);
        }
        if !b.is_empty() {
            self.db.write_opt(b, &Self::synced())?;
        }
        Ok(())
    }
}
