//! The local registry: a directory shared by the nodes of one machine or
//! LAN, one JSON file per member. The embedded default: no chain needed.
//!
//! Each entry is signed twice over its whole content (every field of the
//! member record): by the member's hotkey and by its node key, so neither
//! a hotkey nor a node id can be claimed by someone who lacks the other
//! key, and no field can be changed after signing. The validator right here
//! is the signed role: whoever may write the directory is the network's
//! authority (one machine or one trusted LAN; see docs/THREATS.md).

use std::path::{Path, PathBuf};

use cairn_proto::{NodeId, Role, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::{Hotkey, decode_hex, encode_hex, ss58_to_public, verify_hotkey_signature};
use crate::registry::{Member, Registry, WeightEntry};

/// A registry in a directory: one signed JSON file per member.
///
/// Nodes on one machine share it directly; nodes on a LAN can share it over
/// a network filesystem. A file is written whole and renamed, so readers
/// never see half an entry.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
    /// The relay members may name (ours); see [`super::keep_own_relay`].
    accepted_relay: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SignedEntry {
    member: Member,
    /// sr25519 signature by the member's hotkey over [`binding_message`].
    signature: String,
    /// ed25519 signature by the member's node key over the same message.
    node_signature: String,
}

/// What both keys sign: every field of the member record, as its JSON.
fn binding_message(m: &Member) -> Vec<u8> {
    let mut msg = b"cairn local registry v2\0".to_vec();
    msg.extend_from_slice(&serde_json::to_vec(m).expect("a member serializes"));
    msg
}

impl LocalRegistry {
    /// Opens the registry in `dir`, creating it group-writable (the node
    /// and a validator beside it run as two users of one group).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)))
                .map_err(|e| Error::io(format!("create registry {}", dir.display()), e))?;
        }
        Ok(LocalRegistry {
            dir: dir.to_path_buf(),
            accepted_relay: None,
        })
    }

    /// Keeps members' relays when they are this one (this node's own
    /// `network.relay` URL); others are dropped.
    pub fn accepting_relay(mut self, relay: Option<String>) -> Self {
        self.accepted_relay = relay;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, id: &NodeId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Reads and checks the entry of `id`: both signatures, and that the
    /// file is the one of the node it describes.
    fn read_entry(path: &Path, id: &NodeId) -> Result<Option<Member>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        Self::parse_entry(&bytes, id, &path.display().to_string()).map(Some)
    }

    /// Checks the bytes of `id`'s entry file (`shown` names it in errors):
    /// both signatures, and that it describes `id`. What a reader does with
    /// a file anyone with write access to the directory may have written;
    /// the fuzz target `local_registry_entry` drives it.
    pub fn parse_entry(bytes: &[u8], id: &NodeId, shown: &str) -> Result<Member> {
        let bad = |why: String| Error::Registry(format!("{shown}: {why}"));
        let entry: SignedEntry = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut m = entry.member;
        if m.node_id != *id {
            return Err(bad(format!("describes node {}, not {id}", m.node_id)));
        }
        let message = binding_message(&m);
        let public =
            ss58_to_public(&m.hotkey).ok_or_else(|| bad(format!("bad hotkey {}", m.hotkey)))?;
        let sig: [u8; 64] = decode_hex(&entry.signature)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("bad signature encoding".into()))?;
        if !verify_hotkey_signature(&public, &message, &sig) {
            return Err(bad(format!(
                "the hotkey's signature does not cover this entry of node {} and hotkey {}",
                m.node_id, m.hotkey
            )));
        }
        let node_sig: [u8; 64] = decode_hex(&entry.node_signature)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("bad node signature encoding".into()))?;
        m.node_id
            .verify(&message, &Signature::from_bytes(&node_sig))
            .map_err(|_| bad("the node key's signature does not cover this entry".into()))?;
        // The signed role is the right here; a field of the file is not.
        m.validator_permit = m.role == Role::Validator;
        Ok(m)
    }

    /// One member's entry, read now (the synchronous [`Registry::member`]).
    pub fn read(&self, id: &NodeId) -> Result<Option<Member>> {
        Ok(Self::read_entry(&self.entry_path(id), id)?.map(|m| self.vetted_relay(m)))
    }

    /// The member with its relay kept only if it is ours (after the
    /// signatures are checked: they cover the relay as written).
    fn vetted_relay(&self, mut m: Member) -> Member {
        m.relay = super::keep_own_relay(m.relay.take(), self.accepted_relay.as_deref());
        m
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
            let id = p
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.starts_with('.'))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<NodeId>().ok());
            let Some(id) = id else {
                continue;
            };
            match Self::read_entry(&p, &id) {
                Ok(Some(m)) => out.push(self.vetted_relay(m)),
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
            "updated": cairn_store::unix_secs(),
            "weights": weights,
        });
        let json = serde_json::to_vec_pretty(&doc).expect("serializable");
        self.write_file(&format!("weights-{}.json", validator.node_id), &json)
    }

    async fn publish(&self, me: &Member, hotkey: &Hotkey, node_key: &SecretKey) -> Result<()> {
        if me.hotkey != hotkey.ss58() {
            return Err(Error::Registry(
                "member hotkey differs from the signing hotkey".into(),
            ));
        }
        if me.node_id != node_key.public() {
            return Err(Error::Registry(
                "member node id differs from the signing node key".into(),
            ));
        }
        let mut signed = me.clone();
        signed.validator_permit = false;
        let message = binding_message(&signed);
        let entry = SignedEntry {
            member: signed,
            signature: encode_hex(&hotkey.sign(&message)),
            node_signature: encode_hex(&node_key.sign(&message).to_bytes()),
        };
        let json = serde_json::to_vec_pretty(&entry).expect("serializable");
        self.write_file(&format!("{}.json", me.node_id), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(hk: &Hotkey, key: &SecretKey, role: Role) -> Member {
        Member {
            node_id: key.public(),
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
    async fn publish_and_read_back_with_every_field_signed() {
        let d = tempfile::tempdir().unwrap();
        let r = LocalRegistry::open(d.path()).unwrap();
        let hk = Hotkey::from_uri("//Alice").unwrap();
        let key = SecretKey::from_bytes(&[1; 32]);
        let m = member(&hk, &key, Role::Miner);
        r.publish(&m, &hk, &key).await.unwrap();
        assert_eq!(r.member(&m.node_id).await.unwrap(), Some(m.clone()));
        assert_eq!(r.members().await.unwrap(), vec![m.clone()]);
        let p = r.entry_path(&m.node_id);
        let original = std::fs::read_to_string(&p).unwrap();
        // Any field changed after signing breaks the entry: the role, the
        // free space, the addresses, a validator permit written in.
        for (from, to) in [
            ("\"miner\"", "\"validator\""),
            ("\"free\": 5", "\"free\": 18446744073709551615"),
            ("127.0.0.1:1", "127.0.0.1:2"),
            ("\"validator_permit\": false", "\"validator_permit\": true"),
        ] {
            assert!(original.contains(from), "{from}");
            std::fs::write(&p, original.replace(from, to)).unwrap();
            assert!(
                r.member(&m.node_id).await.is_err(),
                "{from} -> {to} accepted"
            );
            assert!(
                r.members().await.unwrap().is_empty(),
                "bad entries are skipped"
            );
        }
        // An entry copied under another node's name is not that node.
        std::fs::write(&p, &original).unwrap();
        let other = SecretKey::from_bytes(&[2; 32]).public();
        std::fs::copy(&p, r.entry_path(&other)).unwrap();
        assert!(r.member(&other).await.is_err());
        // Someone else's hotkey or node key cannot sign for this member.
        let bob = Hotkey::from_uri("//Bob").unwrap();
        assert!(r.publish(&m, &bob, &key).await.is_err());
        assert!(
            r.publish(&m, &hk, &SecretKey::from_bytes(&[3; 32]))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_validator_right_is_the_signed_role() {
        let d = tempfile::tempdir().unwrap();
        let r = LocalRegistry::open(d.path()).unwrap();
        let hk = Hotkey::from_uri("//Charlie").unwrap();
        let key = SecretKey::from_bytes(&[4; 32]);
        let mut v = member(&hk, &key, Role::Validator);
        v.validator_permit = false;
        r.publish(&v, &hk, &key).await.unwrap();
        assert!(r.member(&v.node_id).await.unwrap().unwrap().is_validator());
        let key2 = SecretKey::from_bytes(&[5; 32]);
        let mut m = member(&hk, &key2, Role::Miner);
        m.validator_permit = true;
        r.publish(&m, &hk, &key2).await.unwrap();
        assert!(!r.member(&m.node_id).await.unwrap().unwrap().is_validator());
    }
}
