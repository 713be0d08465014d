//! Dataset records a node keeps: manifests (bytes keyed by their content
//! id, with the dataset's owner) and placements (the newest signed version
//! per content id, with its owner), each in its own column family.
//!
//! Records count: their bytes are part of the space the store uses (inside
//! `capacity`) and are charged to the dataset owner's quota like its shards.
//! The store keeps owners consistent and versions growing; who may write or
//! delete a record is the server's rule (`cairn_node::server::authz`), what a
//! record means is cairn-proto's.

use cairn_proto::NodeId;
use rocksdb::WriteBatch;

use crate::{
    CF_COUNTERS, CF_KV, CF_MANIFESTS, CF_PEERS, CF_PLACEMENTS, RECORD_BYTES, Result, Store,
    StoreError,
};

/// Bytes of a record's key and header, counted with its body.
const RECORD_OVERHEAD: u64 = 32 + 40;

/// Where a manifest's owner is kept apart from the manifest (which may be
/// 64 MiB), in the key-value space under a prefix no namespace can have
/// (namespaces are letters, digits, `-` and `_`): asking who owns a
/// dataset, as every placement sent for it does, reads 32 bytes.
fn owner_index_key(cid: &[u8; 32]) -> Vec<u8> {
    let mut key = b".manifest-owner/".to_vec();
    key.extend_from_slice(cid);
    key
}

impl Store {
    /// Stores a manifest (opaque bytes, keyed by its content id) of a dataset
    /// owned by `owner`, charged to `owner`. A manifest already held is kept
    /// (the same content id is the same bytes). Returns whether it was new.
    /// `limit` refuses it when the space is short: records a peer sends; a
    /// node's own records (of what it pins or repairs) are counted, not refused.
    pub fn put_manifest(
        &self,
        cid: &[u8; 32],
        bytes: &[u8],
        owner: &NodeId,
        limit: bool,
    ) -> Result<bool> {
        let _g = self.commit_lock.lock().expect("lock");
        let cf = self.cf(CF_MANIFESTS);
        if self.db.get_pinned_cf(cf, cid)?.is_some() {
            return Ok(false);
        }
        let size = bytes.len() as u64 + RECORD_OVERHEAD;
        if limit {
            self.check_record_space(size)?;
        }
        let mut value = Vec::with_capacity(32 + bytes.len());
        value.extend_from_slice(owner.as_bytes());
        value.extend_from_slice(bytes);
        let mut b = WriteBatch::default();
        b.put_cf(cf, cid, value);
        b.put_cf(self.cf(CF_KV), owner_index_key(cid), owner.as_bytes());
        self.charge(&mut b, owner, size, true)?;
        self.db.write_opt(b, &Self::synced())?;
        Ok(true)
    }

    /// Fails with [`StoreError::Full`] unless `size` more bytes fit.
    fn check_record_space(&self, size: u64) -> Result<()> {
        let free = self.free_bytes()?;
        if size > free {
            return Err(StoreError::Full {
                needed: size,
                free,
                capacity: self.capacity(),
            });
        }
        Ok(())
    }

    /// Adds (or removes) `size` bytes of records to the counter and to
    /// `owner`'s usage, in batch `b`.
    fn charge(&self, b: &mut WriteBatch, owner: &NodeId, size: u64, add: bool) -> Result<()> {
        let total = self.counter(RECORD_BYTES)?;
        let usage = self.peer_usage(owner)?;
        let (total, usage) = if add {
            (total.saturating_add(size), usage.saturating_add(size))
        } else {
            (total.saturating_sub(size), usage.saturating_sub(size))
        };
        b.put_cf(self.cf(CF_COUNTERS), RECORD_BYTES, total.to_le_bytes());
        b.put_cf(self.cf(CF_PEERS), owner.as_bytes(), usage.to_le_bytes());
        Ok(())
    }

    /// A stored manifest and its dataset's owner.
    pub fn get_manifest(&self, cid: &[u8; 32]) -> Result<Option<(NodeId, Vec<u8>)>> {
        let Some(v) = self.db.get_cf(self.cf(CF_MANIFESTS), cid)? else {
            return Ok(None);
        };
        let owner = record_owner(&v, 0, "manifest")?;
        Ok(Some((owner, v[32..].to_vec())))
    }

    /// The owner a stored manifest names, from its index entry: the same
    /// 32 bytes read whatever the manifest's size. A manifest stored by an
    /// earlier release has none; its record is read once and the entry
    /// written then.
    pub fn manifest_owner(&self, cid: &[u8; 32]) -> Result<Option<NodeId>> {
        let index = self.cf(CF_KV);
        if let Some(v) = self.db.get_pinned_cf(index, owner_index_key(cid))? {
            return record_owner(&v, 0, "manifest owner index").map(Some);
        }
        let Some(v) = self.db.get_pinned_cf(self.cf(CF_MANIFESTS), cid)? else {
            return Ok(None);
        };
        let owner = record_owner(&v, 0, "manifest")?;
        drop(v);
        let _g = self.commit_lock.lock().expect("lock");
        // Unless it was deleted meanwhile.
        if self.db.get_pinned_cf(self.cf(CF_MANIFESTS), cid)?.is_some() {
            self.db
                .put_cf(index, owner_index_key(cid), owner.as_bytes())?;
        }
        Ok(Some(owner))
    }

    /// The owner of the dataset `cid` as the records held here name it (the
    /// manifest's, else the placement's), if any is held.
    pub fn records_owner(&self, cid: &[u8; 32]) -> Result<Option<NodeId>> {
        if let Some(owner) = self.manifest_owner(cid)? {
            return Ok(Some(owner));
        }
        match self.db.get_pinned_cf(self.cf(CF_PLACEMENTS), cid)? {
            Some(v) => record_owner(&v, 8, "placement").map(Some),
            None => Ok(None),
        }
    }

    /// Removes the manifest and placement of `cid`; the caller has checked
    /// that the requester owns them. Returns whether anything was held.
    pub fn delete_records(&self, cid: &[u8; 32]) -> Result<bool> {
        let _g = self.commit_lock.lock().expect("lock");
        let mut b = WriteBatch::default();
        let mut freed: Vec<(NodeId, u64)> = Vec::new();
        b.delete_cf(self.cf(CF_KV), owner_index_key(cid));
        for (cf, at) in [(CF_MANIFESTS, 0), (CF_PLACEMENTS, 8)] {
            if let Some(v) = self.db.get_cf(self.cf(cf), cid)? {
                let owner = record_owner(&v, at, cf)?;
                b.delete_cf(self.cf(cf), cid);
                let size = (v.len() - (at + 32)) as u64 + RECORD_OVERHEAD;
                match freed.iter_mut().find(|(o, _)| *o == owner) {
                    Some((_, s)) => *s += size,
                    None => freed.push((owner, size)),
                }
            }
        }
        if freed.is_empty() {
            // An index entry a manifest left behind (deleted by an earlier
            // release) goes all the same; nothing is written otherwise.
            let index = self.cf(CF_KV);
            if self
                .db
                .get_pinned_cf(index, owner_index_key(cid))?
                .is_some()
            {
                self.db.delete_cf(index, owner_index_key(cid))?;
            }
            return Ok(false);
        }
        // One charge per owner: a batch keeps only the last put of a key.
        let mut total = self.counter(RECORD_BYTES)?;
        for (owner, size) in &freed {
            total = total.saturating_sub(*size);
            let usage = self.peer_usage(owner)?.saturating_sub(*size);
            b.put_cf(self.cf(CF_PEERS), owner.as_bytes(), usage.to_le_bytes());
        }
        b.put_cf(self.cf(CF_COUNTERS), RECORD_BYTES, total.to_le_bytes());
        self.db.write_opt(b, &Self::synced())?;
        Ok(true)
    }

    /// Stores a placement record if it is newer than the one held, charged
    /// to `owner`. Returns the version now held and whether `bytes`
    /// replaced it. A placement naming another owner than the one held is
    /// refused. `limit` as for [`Store::put_manifest`].
    pub fn put_placement(
        &self,
        cid: &[u8; 32],
        version: u64,
        owner: &NodeId,
        bytes: &[u8],
        limit: bool,
    ) -> Result<(u64, bool)> {
        let _g = self.commit_lock.lock().expect("lock");
        let old = self.db.get_cf(self.cf(CF_PLACEMENTS), cid)?;
        let mut old_size = 0;
        if let Some(old) = &old {
            let held_owner = record_owner(old, 8, "placement")?;
            if held_owner != *owner {
                return Err(StoreError::PlacementOwnerMismatch);
            }
            let held = u64::from_le_bytes(old[..8].try_into().expect("8"));
            if held >= version {
                return Ok((held, false));
            }
            old_size = old.len() as u64 - 40 + RECORD_OVERHEAD;
        }
        let size = bytes.len() as u64 + RECORD_OVERHEAD;
        if limit && size > old_size {
            self.check_record_space(size - old_size)?;
        }
        let mut value = Vec::with_capacity(40 + bytes.len());
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(owner.as_bytes());
        value.extend_from_slice(bytes);
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_PLACEMENTS), cid, value);
        if size >= old_size {
            self.charge(&mut b, owner, size - old_size, true)?;
        } else {
            self.charge(&mut b, owner, old_size - size, false)?;
        }
        self.db.write_opt(b, &Self::synced())?;
        Ok((version, true))
    }

    /// The bytes of every record held, counted the way puts charge them.
    pub(crate) fn record_bytes_counted(&self) -> Result<u64> {
        let mut sum = 0u64;
        for (cf, header) in [(CF_MANIFESTS, 32u64), (CF_PLACEMENTS, 40)] {
            for item in self
                .db
                .iterator_cf(self.cf(cf), rocksdb::IteratorMode::Start)
            {
                let (_, v) = item?;
                sum += (v.len() as u64).saturating_sub(header) + RECORD_OVERHEAD;
            }
        }
        Ok(sum)
    }

    /// The placement record held for a CID.
    pub fn get_placement(&self, cid: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_PLACEMENTS), cid)?
            .filter(|v| v.len() >= 40)
            .map(|v| v[40..].to_vec()))
    }
}

/// The owner stored at `at` in a record's value.
fn record_owner(v: &[u8], at: usize, what: &str) -> Result<NodeId> {
    let b: [u8; 32] = v
        .get(at..at + 32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StoreError::CorruptRecord(format!("{what} record too short")))?;
    NodeId::from_bytes(&b).map_err(|e| StoreError::CorruptRecord(format!("{what} owner: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::Store;
    use cairn_proto::SecretKey;

    #[test]
    fn records_count_against_space_and_the_owners_quota() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), 10_000).unwrap();
        let owner = SecretKey::from_bytes(&[1; 32]).public();
        let other = SecretKey::from_bytes(&[2; 32]).public();
        assert!(s.put_manifest(&[7; 32], &[0; 1000], &owner, true).unwrap());
        assert!(
            !s.put_manifest(&[7; 32], &[0; 1000], &other, true).unwrap(),
            "kept"
        );
        assert_eq!(s.records_owner(&[7; 32]).unwrap(), Some(owner));
        s.put_placement(&[7; 32], 2, &owner, &[1; 500], true)
            .unwrap();
        assert!(matches!(
            s.put_placement(&[7; 32], 3, &other, &[1; 500], true),
            Err(crate::StoreError::PlacementOwnerMismatch)
        ));
        assert_eq!(
            s.put_placement(&[7; 32], 1, &owner, &[1; 9], true).unwrap(),
            (2, false)
        );
        let used = s.peer_usage(&owner).unwrap();
        assert!(used >= 1500, "{used}");
        assert_eq!(s.stats().unwrap().record_bytes, used);
        assert_eq!(s.free_bytes().unwrap(), 10_000 - used);
        // no room: refused as full, nothing changed
        assert!(matches!(
            s.put_manifest(&[8; 32], &[0; 9000], &owner, true),
            Err(crate::StoreError::Full { .. })
        ));
        // the node's own records are counted, not refused
        assert!(s.put_manifest(&[8; 32], &[0; 9000], &owner, false).unwrap());
        s.delete_records(&[8; 32]).unwrap();
        assert!(s.delete_records(&[7; 32]).unwrap());
        assert_eq!(s.peer_usage(&owner).unwrap(), 0);
        assert_eq!(s.stats().unwrap().record_bytes, 0);
        assert!(!s.delete_records(&[7; 32]).unwrap());
    }

    #[test]
    fn a_manifests_owner_is_read_from_its_index_and_the_index_made_for_old_records() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), 1 << 20).unwrap();
        let owner = SecretKey::from_bytes(&[1; 32]).public();
        s.put_manifest(&[7; 32], &[0; 1000], &owner, true).unwrap();
        assert_eq!(s.manifest_owner(&[7; 32]).unwrap(), Some(owner));
        // The index is what is read: a different owner there is believed.
        let other = SecretKey::from_bytes(&[2; 32]).public();
        let index = s.cf(crate::CF_KV);
        s.db.put_cf(index, super::owner_index_key(&[7; 32]), other.as_bytes())
            .unwrap();
        assert_eq!(s.manifest_owner(&[7; 32]).unwrap(), Some(other));
        // A record from before the index: read once, the entry written.
        s.db.delete_cf(index, super::owner_index_key(&[7; 32]))
            .unwrap();
        assert_eq!(s.manifest_owner(&[7; 32]).unwrap(), Some(owner));
        assert!(
            s.db.get_cf(index, super::owner_index_key(&[7; 32]))
                .unwrap()
                .is_some()
        );
        s.delete_records(&[7; 32]).unwrap();
        assert_eq!(s.manifest_owner(&[7; 32]).unwrap(), None);
    }
}
