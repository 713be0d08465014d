//! Identities: the node key (ed25519, the iroh endpoint id) and the hotkey
//! (sr25519, the Bittensor identity), read from the key files btcli writes.
//!
//! The node key lives in `<data_dir>/node.key` (hex, mode 0600), created by
//! `cairn init`. The hotkey is a bittensor-wallet JSON key file
//! (`~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>`: `secretSeed`,
//! `publicKey`, `ss58Address`, ...); in local mode `cairn init` generates one
//! in the same format so that every tool reads it alike.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use iroh::SecretKey;
use serde::{Deserialize, Serialize};
use sp_core::crypto::{Pair as _, Ss58Codec};
use sp_core::sr25519;

use crate::error::{Error, Result};

fn key_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Key {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Path of the node key in a data directory.
pub fn node_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.key")
}

/// Reads the node key, or says to run `cairn init`.
pub fn load_node_key(data_dir: &Path) -> Result<SecretKey> {
    let path = node_key_path(data_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            key_err(
                &path,
                format!(
                    "not found; create the node's identity with `cairn init --data-dir {}`",
                    data_dir.display()
                ),
            )
        } else {
            key_err(&path, e.to_string())
        }
    })?;
    let bytes = decode_hex(text.trim())
        .filter(|b| b.len() == 32)
        .ok_or_else(|| key_err(&path, "not a node key (expected 64 hex digits)"))?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&bytes);
    Ok(SecretKey::from_bytes(&k))
}

/// Creates a new node key; refuses to overwrite an existing one.
pub fn create_node_key(data_dir: &Path) -> Result<SecretKey> {
    let path = node_key_path(data_dir);
    let key = SecretKey::generate();
    write_secret(
        &path,
        format!("{}\n", encode_hex(&key.to_bytes())).as_bytes(),
    )?;
    Ok(key)
}

/// Writes a new file readable by its owner only; fails if it exists.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                key_err(path, "already exists; refusing to overwrite a key")
            } else {
                key_err(path, e.to_string())
            }
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| key_err(path, e.to_string()))
}

/// A Bittensor hotkey (sr25519).
#[derive(Clone)]
pub struct Hotkey {
    pair: sr25519::Pair,
}

impl std::fmt::Debug for Hotkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hotkey({})", self.ss58())
    }
}

/// The JSON of a bittensor-wallet key file (fields this code reads or writes).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_seed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ss58_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crypto_type: Option<u8>,
}

/// Where btcli keeps a hotkey: `<wallets>/<wallet>/hotkeys/<hotkey>`.
pub fn wallet_hotkey_path(wallets: &Path, wallet: &str, hotkey: &str) -> PathBuf {
    wallets.join(wallet).join("hotkeys").join(hotkey)
}

/// btcli's default wallets directory, `~/.bittensor/wallets`.
pub fn default_wallets_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".bittensor")
        .join("wallets")
}

impl Hotkey {
    /// Reads a bittensor-wallet key file.
    pub fn load(path: &Path) -> Result<Hotkey> {
        let bytes = std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                key_err(
                    path,
                    "hotkey not found; create it with `btcli wallet new_hotkey` (or `cairn init` in local mode), \
                     or point chain.wallet_path / chain.wallet / chain.hotkey at the right file",
                )
            } else {
                key_err(path, e.to_string())
            }
        })?;
        Self::from_key_file(&bytes, path)
    }

    /// Reads the bytes of a bittensor-wallet key file (`path` names it in
    /// errors). What [`Hotkey::load`] does after reading; the fuzz target
    /// `key_file` drives it.
    pub fn from_key_file(bytes: &[u8], path: &Path) -> Result<Hotkey> {
        let text = String::from_utf8_lossy(bytes);
        let trimmed = text.trim_start();
        if trimmed.starts_with("$NACL")
            || trimmed.starts_with("$BT")
            || trimmed.starts_with("gAAAA")
        {
            return Err(key_err(
                path,
                "the key file is encrypted; cairn needs an unencrypted hotkey (btcli writes hotkeys unencrypted unless asked otherwise)",
            ));
        }
        let kf: KeyFile = serde_json::from_str(trimmed).map_err(|e| {
            key_err(
                path,
                format!("not a bittensor key file (expected JSON with secretSeed): {e}"),
            )
        })?;
        let pair = if let Some(seed) = &kf.secret_seed {
            let seed = decode_hex(seed)
                .filter(|s| s.len() == 32)
                .ok_or_else(|| key_err(path, "secretSeed is not 32 bytes of 0x-hex"))?;
            sr25519::Pair::from_seed_slice(&seed)
                .map_err(|e| key_err(path, format!("secretSeed: {e:?}")))?
        } else if let Some(pk) = &kf.private_key {
            let sk = decode_hex(pk)
                .filter(|s| s.len() == 64)
                .ok_or_else(|| key_err(path, "privateKey is not 64 bytes of 0x-hex"))?;
            sr25519::Pair::from_seed_slice(&sk)
                .map_err(|e| key_err(path, format!("privateKey: {e:?}")))?
        } else {
            return Err(key_err(
                path,
                "has neither secretSeed nor privateKey (is it a public-only key file?)",
            ));
        };
        let hotkey = Hotkey { pair };
        if let Some(public) = kf.public_key.as_deref().and_then(decode_hex)
            && public != hotkey.public()
        {
            return Err(key_err(
                path,
                "publicKey does not match the secret; the file is corrupt",
            ));
        }
        if let Some(addr) = &kf.ss58_address
            && *addr != hotkey.ss58()
        {
            return Err(key_err(
                path,
                format!("ss58Address {addr} does not match the secret; the file is corrupt"),
            ));
        }
        Ok(hotkey)
    }

    /// Generates a hotkey and writes it as a bittensor-wallet key file (0600).
    pub fn generate(path: &Path) -> Result<Hotkey> {
        let seed: [u8; 32] = rand::random();
        let pair = sr25519::Pair::from_seed_slice(&seed).expect("32-byte seed");
        let hotkey = Hotkey { pair };
        let public = format!("0x{}", encode_hex(&hotkey.public()));
        let kf = KeyFile {
            secret_seed: Some(format!("0x{}", encode_hex(&seed))),
            private_key: None,
            public_key: Some(public.clone()),
            account_id: Some(public),
            ss58_address: Some(hotkey.ss58()),
            crypto_type: Some(1),
        };
        let json = serde_json::to_vec(&kf).expect("serializable");
        write_secret(path, &json)?;
        Ok(hotkey)
    }

    /// From a Substrate URI such as `//Alice` (development keys, tests).
    pub fn from_uri(uri: &str) -> Result<Hotkey> {
        sr25519::Pair::from_string(uri, None)
            .map(|pair| Hotkey { pair })
            .map_err(|e| Error::Key {
                path: uri.to_string(),
                message: format!("not a key URI: {e:?}"),
            })
    }

    /// The 32-byte public key (the account id).
    pub fn public(&self) -> [u8; 32] {
        self.pair.public().0
    }

    /// SS58 address with the generic Substrate prefix (42), as btcli prints it.
    pub fn ss58(&self) -> String {
        self.pair.public().to_ss58check()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message).0
    }

    pub fn pair(&self) -> &sr25519::Pair {
        &self.pair
    }
}

/// Checks an sr25519 signature by `public` over `message`.
pub fn verify_hotkey_signature(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let sig = sr25519::Signature::from_raw(*signature);
    let pk = sr25519::Public::from_raw(*public);
    sr25519::Pair::verify(&sig, message, &pk)
}

/// Decodes an SS58 address to its 32-byte public key.
pub fn ss58_to_public(addr: &str) -> Option<[u8; 32]> {
    sr25519::Public::from_ss58check(addr).ok().map(|p| p.0)
}

/// Encodes a 32-byte public key as SS58 (prefix 42).
pub fn public_to_ss58(public: &[u8; 32]) -> String {
    sr25519::Public::from_raw(*public).to_ss58check()
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    data_encoding::HEXLOWER_PERMISSIVE.decode(s.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_key_round_trip_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let k = create_node_key(d.path()).unwrap();
        let again = load_node_key(d.path()).unwrap();
        assert_eq!(k.public(), again.public());
        let mode = std::fs::metadata(node_key_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(create_node_key(d.path()).is_err(), "never overwrites");
    }

    #[test]
    fn missing_node_key_says_run_init() {
        let d = tempfile::tempdir().unwrap();
        let e = load_node_key(d.path()).unwrap_err().to_string();
        assert!(e.contains("cairn init"), "{e}");
    }

    #[test]
    fn generated_hotkey_loads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hk");
        let h = Hotkey::generate(&p).unwrap();
        let l = Hotkey::load(&p).unwrap();
        assert_eq!(h.ss58(), l.ss58());
        assert!(h.ss58().starts_with('5'));
        let sig = l.sign(b"hello");
        assert!(verify_hotkey_signature(&h.public(), b"hello", &sig));
        assert!(!verify_hotkey_signature(&h.public(), b"hellO", &sig));
        assert_eq!(ss58_to_public(&h.ss58()), Some(h.public()));
    }

    #[test]
    fn malformed_hotkey_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let cases: [(&str, &str); 5] = [
            ("not json", "not a bittensor key file"),
            ("$NACL....", "encrypted"),
            ("{\"publicKey\":\"0x00\"}", "neither secretSeed"),
            ("{\"secretSeed\":\"0x1234\"}", "secretSeed is not 32 bytes"),
            (
                "{\"secretSeed\":\"0xefc893ea5d93fb1d3a60c5ecfd303409dd195499e6ffc6b94ab7468922672681\",\"ss58Address\":\"5Wrong\"}",
                "does not match",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = d.path().join(format!("k{i}"));
            std::fs::write(&p, text).unwrap();
            let e = Hotkey::load(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = Hotkey::load(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("btcli wallet new_hotkey"), "{e}");
    }
}
