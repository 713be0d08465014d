//! The local registry: a directory shared by the nodes of one machine or
//! LAN, one JSON file per member, each signed by the member's hotkey. The
//! embedded default: no chain needed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::{Hotkey, ss58_to_public, verify_hotkey_signature};
use crate::registry::{Member, Registry, WeightEntry};
use cairn_proto::{NodeId, Role};

/// A registry in a directory: one signed JSON file per member.
///
/// Nodes on one machine share it directly; nodes on a LAN can share it over
/// a network filesystem. A file is written whole and renamed, so readers
/// never see half an entry.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct SignedEntry {
    member: Member,
    /// sr25519 signature by the member's hotkey over the binding message.
    signature: String,
}

fn binding_message(node_id: &NodeId, role: Role, hotkey_ss58: &str) -> Vec<u8> {
    let mut m = b"cairn local registry v1\0".to_vec();
    m.extend_from_slice(node_id.as_bytes());
    m.extend_from_slice(role.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(hotkey_ss58.as_bytes());
    m
}

impl LocalRegistry {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create registry {}", dir.display()), e))?;
        Ok(LocalRegistry {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, id: &NodeId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read_entry(path: &Path) -> Result<Option<Member>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let entry: SignedEntry = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Registry(format!("{}: {e}", path.display())))?;
        let m = entry.member;
        let public = ss58_to_public(&m.hotkey).ok_or_else(|| {
            Error::Registry(format!("{}: bad hotkey {}", path.display(), m.hotkey))
        })?;
        let sig: [u8; 64] = crate::identity::decode_hex(&entry.signature)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                Error::Registry(format!("{}: bad signature encoding", path.display()))
            })?;
        if !verify_hotkey_signature(
            &public,
            &binding_message(&m.node_id, m.role, &m.hotkey),
            &sig,
        ) {
            return Err(Error::Registry(format!(
                "{}: signature does not bind node {} to hotkey {}",
                path.display(),
                m.node_id,
                m.hotkey
            )));
        }
        Ok(Some(m))
    }

    /// One member's entry, read now (the synchronous [`Registry::member`]).
    pub fn read(&self, id: &NodeId) -> Result<Option<Member>> {
        Self::read_entry(&self.entry_path(id))
    }

    /// Removes a member's entry.
    pub fn remove(&self, id: &NodeId) -> Result<()> {
        match std::fs::remove_file(self.entry_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove registry entry", e)),
        }
    }

    /// Writes a file in the registry directory atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let dest = self.dir.join(name);
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &dest))
            .map_err(|e| Error::io(format!("write {}", dest.display()), e))
    }
}

impl Registry for LocalRegistry {
    async fn members(&self) -> Result<Vec<Member>> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read registry {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            let is_entry = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.') && n.len() == 64 + 5);
            if !is_entry {
                continue;
            }
            match Self::read_entry(&p) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping registry entry"),
            }
        }
        out.sort_by_key(|m| *m.node_id.as_bytes());
        Ok(out)
    }

    async fn member(&self, id: &NodeId) -> Result<Option<Member>> {
        self.read(id)
    }

    async fn set_weights(
        &self,
        validator: &Member,
        hotkey: &Hotkey,
        weights: &[WeightEntry],
    ) -> Result<()> {
        let doc = serde_json::json!({
            "validator": validator.node_id.to_string(),
            "hotkey": hotkey.ss58(),
            "updated": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "weights": weights,
        });
        let json = serde_json::to_vec_pretty(&doc).expect("serializable");
        self.write_file(&format!("weights-{}.json", validator.node_id), &json)
    }

    async fn publish(&self, me: &Member, hotkey: &Hotkey) -> Result<()> {
        if me.hotkey != hotkey.ss58() {
            return Err(Error::Registry(
                "member hotkey differs from the signing hotkey".into(),
            ));
        }
        let sig = hotkey.sign(&binding_message(&me.node_id, me.role, &me.hotkey));
        let entry = SignedEntry {
            member: me.clone(),
            signature: crate::identity::encode_hex(&sig),
        };
        let json = serde_json::to_vec_pretty(&entry).expect("serializable");
        self.write_file(&format!("{}.json", me.node_id), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(hk: &Hotkey, n: u8, role: Role) -> Member {
        Member {
            node_id: iroh::SecretKey::from_bytes(&[n; 32]).public(),
            role,
            addrs: vec!["127.0.0.1:1".parse().unwrap()],
            relay: None,
            hotkey: hk.ss58(),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: 10,
            free: 5,
            api: None,
        }
    }

    #[tokio::test]
    async fn publish_and_read_back_with_binding_checked() {
        let d = tempfile::tempdir().unwrap();
        let r = LocalRegistry::open(d.path()).unwrap();
        let hk = Hotkey::from_uri("//Alice").unwrap();
        let m = member(&hk, 1, Role::Miner);
        r.publish(&m, &hk).await.unwrap();
        assert_eq!(r.member(&m.node_id).await.unwrap(), Some(m.clone()));
        assert_eq!(r.members().await.unwrap(), vec![m.clone()]);
        // tampering with the role breaks the binding
        let p = r.entry_path(&m.node_id);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"miner\"", "\"validator\"");
        std::fs::write(&p, text).unwrap();
        assert!(r.member(&m.node_id).await.is_err());
        assert!(
            r.members().await.unwrap().is_empty(),
            "bad entries are skipped"
        );
        // someone else's hotkey cannot sign for this member
        let bob = Hotkey::from_uri("//Bob").unwrap();
        assert!(r.publish(&m, &bob).await.is_err());
    }
}
