//! A namespaced key-value space for the state of other components (a node's
//! pins, a validator's audit set and reputations), so that they keep state
//! beside the shards without reaching into the store's own records.
//!
//! A namespace is a plain name; its keys are stored as `<name>/<key>` in one
//! column family, so a scan of one namespace never sees another's. Keys
//! beginning with `.` (which no name can) are the store's own: the index of
//! manifest owners (records.rs).

use rocksdb::IteratorMode;

use crate::{CF_KV, Result, Store, StoreError};

/// One namespace of the key-value space. Every write is synced.
pub struct Kv<'a> {
    store: &'a Store,
    prefix: Vec<u8>,
}

impl Store {
    /// The key-value namespace `name` (letters, digits, `-` and `_`).
    pub fn kv(&self, name: &str) -> Result<Kv<'_>> {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(StoreError::BadNamespace(name.chars().take(40).collect()));
        }
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(b'/');
        Ok(Kv {
            store: self,
            prefix,
        })
    }
}

impl Kv<'_> {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let s = self.store;
        s.db.put_cf_opt(s.cf(CF_KV), self.key(key), value, &Store::synced())?;
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let s = self.store;
        Ok(s.db.get_cf(s.cf(CF_KV), self.key(key))?)
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let s = self.store;
        s.db.delete_cf_opt(s.cf(CF_KV), self.key(key), &Store::synced())?;
        Ok(())
    }

    /// Every entry of the namespace, keys without the namespace, in key order.
    pub fn scan(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let s = self.store;
        let mut out = Vec::new();
        let iter = s.db.iterator_cf(
            s.cf(CF_KV),
            IteratorMode::From(&self.prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&self.prefix) {
                break;
            }
            out.push((k[self.prefix.len()..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespaces_do_not_see_each_other() {
        let d = tempfile::tempdir().unwrap();
        let s = crate::Store::open(d.path(), 1 << 20).unwrap();
        let pins = s.kv("pin").unwrap();
        let pinx = s.kv("pinx").unwrap();
        pins.put(b"a", b"1").unwrap();
        pinx.put(b"a", b"2").unwrap();
        assert_eq!(pins.scan().unwrap(), vec![(b"a".to_vec(), b"1".to_vec())]);
        assert_eq!(pinx.get(b"a").unwrap(), Some(b"2".to_vec()));
        pins.delete(b"a").unwrap();
        assert!(pins.scan().unwrap().is_empty());
        assert!(s.kv("a/b").is_err() && s.kv("").is_err());
    }
}
