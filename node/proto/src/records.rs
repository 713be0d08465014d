//! The records of a pinned dataset: what it is, and where its shards live.
//!
//! A [`Manifest`] is immutable and content-addressed: the files (path, size,
//! offset in the packed stream, BLAKE3), the erasure parameters, and for
//! every segment its length, BLAKE3 and the ids of its k + m shards. Its CID
//! is the BLAKE3 of its canonical encoding, so pinning the same data with the
//! same parameters gives the same CID wherever and whenever it is done.
//!
//! A [`Placement`] is the mutable part: which miner holds each shard. It
//! names its CID, carries a version that only grows (repair publishes a new
//! one), and is signed by the node key of its writer: the pinner, or a
//! validator repairing on its behalf.

use std::fmt;
use std::str::FromStr;

use cairn_proof::ShardId;

use crate::{Error, NodeId, Result, SecretKey, Signature};

/// Version 2 names the dataset's owner (version 1 did not).
const MANIFEST_MAGIC: &[u8; 8] = b"CAIRNMF2";
const PLACEMENT_MAGIC: &[u8; 8] = b"CAIRNPL1";
/// Longest path in a manifest, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Largest segment a manifest may ask readers to decode.
pub const MAX_MANIFEST_SEGMENT: u64 = 64 << 20;
/// Most memory a reader's decoder may need for one segment (k + m shards of
/// `ceil(segment / k)` bytes): a manifest asking for more is refused before
/// anything is allocated (k = 1, m = 255 and 256 MiB segments would be 64 GiB).
pub const MAX_DECODER_BYTES: u64 = 256 << 20;

/// A content id: BLAKE3 of a manifest's canonical bytes, shown as `cairn1...`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(pub [u8; 32]);

const CID_PREFIX: &str = "cairn1";

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{CID_PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadCid {
            input: s.chars().take(70).collect(),
            why: why.to_string(),
        };
        let body = s
            .trim()
            .strip_prefix(CID_PREFIX)
            .ok_or_else(|| bad("it does not start with cairn1"))?;
        if body.len() != 52 {
            return Err(bad(&format!("{} characters after cairn1", body.len())));
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("not base32"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad("wrong length"))?;
        Ok(Cid(arr))
    }
}

/// What an entry of a dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    /// An empty directory (other directories are implied by file paths).
    Dir,
}

/// A file (or empty directory) of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Relative path, `/`-separated, no `.` or `..` components.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Where the file's bytes start in the packed stream.
    pub offset: u64,
    #[serde(serialize_with = "hex32")]
    pub blake3: [u8; 32],
    pub executable: bool,
}

/// One segment of the packed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    pub len: u64,
    pub blake3: [u8; 32],
    /// k data shard ids then m parity shard ids.
    pub shards: Vec<ShardId>,
}

/// The immutable description of a pinned dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The node that pinned the dataset: the only one that may place,
    /// unpin or ask for audits of it. Part of the content id, so the same
    /// files pinned by two owners are two datasets.
    pub owner: NodeId,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub segment_size: u64,
    pub total_len: u64,
    /// True when the pin was a single file rather than a directory.
    pub single_file: bool,
    /// Sorted by path.
    pub entries: Vec<Entry>,
    pub segments: Vec<SegmentRecord>,
}

fn hex32<S: serde::Serializer>(v: &[u8; 32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&data_encoding::HEXLOWER.encode(v))
}

/// Checks a dataset path: relative, `/`-separated, no empty, `.` or `..` parts.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &'static str| Error::BadPath {
        path: path.chars().take(300).collect(),
        why,
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(bad("empty or too long"));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(bad("must be relative, with / separators"));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("empty, . or .. component"));
        }
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::BadManifest("truncated".into()));
        }
        let (h, r) = self.buf.split_at(n);
        self.buf = r;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn b32(&mut self) -> Result<[u8; 32]> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
    /// A flag: exactly 0 or 1, so a manifest has one encoding (its CID is
    /// the hash of its bytes; fuzzing found 2..=255 accepted as `true`).
    fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            f => Err(Error::BadManifest(format!(
                "a flag byte is {f}, not 0 or 1"
            ))),
        }
    }
    /// A count that must fit in what is left, at `min_each` bytes per item.
    fn count(&mut self, min_each: usize) -> Result<usize> {
        let n = self.u64()? as usize;
        if n.saturating_mul(min_each) > self.buf.len() {
            return Err(Error::BadManifest(
                "a count exceeds the bytes present".into(),
            ));
        }
        Ok(n)
    }
}

impl Manifest {
    /// k + m.
    pub fn total_shards(&self) -> usize {
        usize::from(self.data_shards) + usize::from(self.parity_shards)
    }

    /// Refuses parameters that would make a reader allocate more than
    /// [`MAX_DECODER_BYTES`] for a segment, or segments over
    /// [`MAX_MANIFEST_SEGMENT`].
    pub fn check_bounds(&self) -> Result<()> {
        let k = u64::from(self.data_shards).max(1);
        let total = u64::from(self.data_shards) + u64::from(self.parity_shards);
        let largest = self.segment_size.min(self.total_len.max(1));
        if self.segment_size > MAX_MANIFEST_SEGMENT {
            return Err(Error::BadManifest(format!(
                "segments of {} bytes exceed the {MAX_MANIFEST_SEGMENT} a reader accepts",
                self.segment_size
            )));
        }
        let decoder = largest.div_ceil(k).saturating_mul(total);
        if decoder > MAX_DECODER_BYTES {
            return Err(Error::BadManifest(format!(
                "k = {}, m = {} with {largest}-byte segments needs {decoder} bytes to decode a segment; a reader allows {MAX_DECODER_BYTES}",
                self.data_shards, self.parity_shards
            )));
        }
        Ok(())
    }

    /// The parameters a reader's decoder needs: those of the manifest, with
    /// the segment size cut to the largest segment the dataset has, so a
    /// small dataset with a large segment size allocates only what it uses.
    pub fn decoder_params(&self) -> Result<cairn_erasure::Params> {
        let p = self.params()?;
        let largest = self
            .segments
            .iter()
            .map(|s| s.len)
            .max()
            .unwrap_or(1)
            .max(1);
        let align = (p.data_shards() * cairn_erasure::SHARD_ALIGN) as u64;
        let size = largest.div_ceil(align) * align;
        Ok(cairn_erasure::Params::new(
            p.data_shards(),
            p.parity_shards(),
            usize::try_from(size.min(self.segment_size))
                .map_err(|_| Error::BadManifest("segment size does not fit this machine".into()))?,
        )?)
    }

    /// The erasure parameters (checked).
    pub fn params(&self) -> Result<cairn_erasure::Params> {
        Ok(cairn_erasure::Params::new(
            usize::from(self.data_shards),
            usize::from(self.parity_shards),
            usize::try_from(self.segment_size)
                .map_err(|_| Error::BadManifest("segment size does not fit this machine".into()))?,
        )?)
    }

    /// The canonical bytes (the CID is their BLAKE3).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.entries.len() * 96 + self.segments.len() * (48 + 32 * self.total_shards()),
        );
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&self.data_shards.to_le_bytes());
        out.extend_from_slice(&self.parity_shards.to_le_bytes());
        out.extend_from_slice(&self.segment_size.to_le_bytes());
        out.extend_from_slice(&self.total_len.to_le_bytes());
        out.push(u8::from(self.single_file));
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.path.len() as u32).to_le_bytes());
            out.extend_from_slice(e.path.as_bytes());
            out.push(match e.kind {
                EntryKind::File => 0,
                EntryKind::Dir => 1,
            });
            out.push(u8::from(e.executable));
            out.extend_from_slice(&e.size.to_le_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.blake3);
        }
        out.extend_from_slice(&(self.segments.len() as u64).to_le_bytes());
        for s in &self.segments {
            out.extend_from_slice(&s.len.to_le_bytes());
            out.extend_from_slice(&s.blake3);
            for id in &s.shards {
                out.extend_from_slice(&id.0);
            }
        }
        out
    }

    pub fn cid(&self) -> Cid {
        Cid(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Decodes and checks a manifest: every count bounded by the bytes
    /// present, paths sane and sorted, offsets and segments consistent.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let mut r = Reader { buf: bytes };
        if r.take(8)? != MANIFEST_MAGIC {
            return Err(Error::BadManifest(
                "bad magic (not a cairn manifest of this version)".into(),
            ));
        }
        let owner = NodeId::from_bytes(&r.b32()?)
            .map_err(|_| Error::BadManifest("the owner is not a valid node id".into()))?;
        let data_shards = r.u16()?;
        let parity_shards = r.u16()?;
        let segment_size = r.u64()?;
        let total_len = r.u64()?;
        let single_file = r.flag()?;
        let n_entries = r.count(4 + 2 + 48)?;
        let mut entries = Vec::with_capacity(n_entries);
        for _ in 0..n_entries {
            let plen = r.u32()? as usize;
            if plen > MAX_PATH_LEN {
                return Err(Error::BadManifest("a path is too long".into()));
            }
            let path = String::from_utf8(r.take(plen)?.to_vec())
                .map_err(|_| Error::BadManifest("a path is not UTF-8".into()))?;
            let kind = match r.u8()? {
                0 => EntryKind::File,
                1 => EntryKind::Dir,
                k => return Err(Error::BadManifest(format!("entry kind {k}"))),
            };
            let executable = r.flag()?;
            entries.push(Entry {
                path,
                kind,
                executable,
                size: r.u64()?,
                offset: r.u64()?,
                blake3: r.b32()?,
            });
        }
        let m = Manifest {
            owner,
            data_shards,
            parity_shards,
            segment_size,
            total_len,
            single_file,
            entries,
            segments: Vec::new(),
        };
        let params = m.params()?;
        m.check_bounds()?;
        let total = m.total_shards();
        let n_segments = r.count(8 + 32 + 32 * total)?;
        let mut segments = Vec::with_capacity(n_segments);
        for _ in 0..n_segments {
            let len = r.u64()?;
            let blake3 = r.b32()?;
            let mut shards = Vec::with_capacity(total);
            for _ in 0..total {
                shards.push(ShardId(r.b32()?));
            }
            segments.push(SegmentRecord {
                len,
                blake3,
                shards,
            });
        }
        if !r.buf.is_empty() {
            return Err(Error::BadManifest("trailing bytes".into()));
        }
        let m = Manifest { segments, ..m };
        m.check(&params)?;
        Ok(m)
    }

    fn check(&self, params: &cairn_erasure::Params) -> Result<()> {
        let bad = |why: String| Error::BadManifest(format!("inconsistent: {why}"));
        if params.segment_count(self.total_len) != self.segments.len() as u64 {
            return Err(bad("segment count does not match the total length".into()));
        }
        for (i, s) in self.segments.iter().enumerate() {
            if s.len != params.segment_len(self.total_len, i as u64) as u64 {
                return Err(bad(format!("segment {i} has the wrong length")));
            }
        }
        let mut offset = 0u64;
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            check_path(&e.path)?;
            if prev.is_some_and(|p| p >= e.path.as_str()) {
                return Err(bad("entries are not sorted and unique".into()));
            }
            prev = Some(&e.path);
            if e.offset != offset {
                return Err(bad(format!(
                    "{} is not where the packed stream has it",
                    e.path
                )));
            }
            offset = offset
                .checked_add(e.size)
                .ok_or_else(|| bad("sizes overflow".into()))?;
        }
        if offset != self.total_len {
            return Err(bad("file sizes do not add up to the total length".into()));
        }
        Ok(())
    }

    /// The entry at `path`.
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Total bytes of shards (data + parity) this dataset stores.
    pub fn stored_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.len.div_ceil(u64::from(self.data_shards)) * self.total_shards() as u64)
            .sum()
    }
}

/// Where each shard of a dataset lives, signed by whoever placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub cid: Cid,
    /// Grows with every update (repair); a stored placement is replaced
    /// only by a higher version.
    pub version: u64,
    /// The node that pinned the dataset and owns its shards.
    pub owner: NodeId,
    /// Distinct miners referenced below.
    pub miners: Vec<NodeId>,
    /// Segment-major: `holders[s * (k + m) + i]` indexes `miners`, or
    /// [`Placement::NONE`] when that shard has no holder.
    pub holders: Vec<u16>,
    pub signer: NodeId,
    pub signature: [u8; 64],
}

impl Placement {
    pub const NONE: u16 = u16::MAX;

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 32 * self.miners.len() + 2 * self.holders.len());
        out.extend_from_slice(PLACEMENT_MAGIC);
        out.extend_from_slice(&self.cid.0);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&(self.miners.len() as u64).to_le_bytes());
        for n in &self.miners {
            out.extend_from_slice(n.as_bytes());
        }
        out.extend_from_slice(&(self.holders.len() as u64).to_le_bytes());
        for h in &self.holders {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out.extend_from_slice(self.signer.as_bytes());
        out
    }

    /// Builds and signs a placement.
    pub fn signed(
        cid: Cid,
        version: u64,
        owner: NodeId,
        holders_by_shard: &[Option<NodeId>],
        key: &SecretKey,
    ) -> Placement {
        let mut miners: Vec<NodeId> = Vec::new();
        let mut holders = Vec::with_capacity(holders_by_shard.len());
        for h in holders_by_shard {
            holders.push(match h {
                None => Self::NONE,
                Some(n) => match miners.iter().position(|m| m == n) {
                    Some(i) => i as u16,
                    None => {
                        miners.push(*n);
                        (miners.len() - 1) as u16
                    }
                },
            });
        }
        let mut p = Placement {
            cid,
            version,
            owner,
            miners,
            holders,
            signer: key.public(),
            signature: [0; 64],
        };
        p.signature = key.sign(&p.body()).to_bytes();
        p
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a placement and checks its signature (not whether the signer
    /// may sign it: that is the caller's policy).
    pub fn decode(bytes: &[u8]) -> Result<Placement> {
        let mut r = Reader { buf: bytes };
        if r.take(8)? != PLACEMENT_MAGIC {
            return Err(Error::BadPlacement(
                "bad magic (not a cairn placement)".into(),
            ));
        }
        let cid = Cid(r.b32()?);
        let version = r.u64()?;
        let node = |b: [u8; 32]| {
            NodeId::from_bytes(&b)
                .map_err(|_| Error::BadPlacement("a node id is not a valid key".into()))
        };
        let owner = node(r.b32()?)?;
        let n = r.count(32)?;
        let mut miners = Vec::with_capacity(n);
        for _ in 0..n {
            miners.push(node(r.b32()?)?);
        }
        let h = r.count(2)?;
        let mut holders = Vec::with_capacity(h);
        for _ in 0..h {
            let v = r.u16()?;
            if v != Self::NONE && usize::from(v) >= miners.len() {
                return Err(Error::BadPlacement("a holder index is out of range".into()));
            }
            holders.push(v);
        }
        let signer = node(r.b32()?)?;
        let signature: [u8; 64] = r.take(64)?.try_into().expect("64");
        if !r.buf.is_empty() {
            return Err(Error::BadPlacement("trailing bytes".into()));
        }
        let p = Placement {
            cid,
            version,
            owner,
            miners,
            holders,
            signer,
            signature,
        };
        let sig = Signature::from_bytes(&signature);
        signer
            .verify(&p.body(), &sig)
            .map_err(|_| Error::BadPlacement("the signature does not verify".into()))?;
        Ok(p)
    }

    /// Holder of shard `index` of segment `segment` in a `total`-shard code.
    pub fn holder(&self, segment: usize, index: usize, total: usize) -> Option<NodeId> {
        let h = *self.holders.get(segment * total + index)?;
        (h != Self::NONE).then(|| self.miners[usize::from(h)])
    }

    /// Holders as a flat list, one per shard.
    pub fn holders_by_shard(&self) -> Vec<Option<NodeId>> {
        self.holders
            .iter()
            .map(|&h| (h != Self::NONE).then(|| self.miners[usize::from(h)]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            owner: SecretKey::from_bytes(&[5; 32]).public(),
            data_shards: 2,
            parity_shards: 1,
            segment_size: 256,
            total_len: 300,
            single_file: false,
            entries: vec![
                Entry {
                    path: "a/b.txt".into(),
                    kind: EntryKind::File,
                    size: 100,
                    offset: 0,
                    blake3: [1; 32],
                    executable: false,
                },
                Entry {
                    path: "a/empty".into(),
                    kind: EntryKind::Dir,
                    size: 0,
                    offset: 100,
                    blake3: [0; 32],
                    executable: false,
                },
                Entry {
                    path: "c.bin".into(),
                    kind: EntryKind::File,
                    size: 200,
                    offset: 100,
                    blake3: [2; 32],
                    executable: true,
                },
            ],
            segments: vec![
                SegmentRecord {
                    len: 256,
                    blake3: [3; 32],
                    shards: vec![ShardId([4; 32]); 3],
                },
                SegmentRecord {
                    len: 44,
                    blake3: [5; 32],
                    shards: vec![ShardId([6; 32]); 3],
                },
            ],
        }
    }

    #[test]
    fn manifest_round_trips_and_cid_is_stable() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.cid(), sample().cid());
        let s = m.cid().to_string();
        assert!(s.starts_with("cairn1") && s.len() == 58, "{s}");
        assert_eq!(s.parse::<Cid>().unwrap(), m.cid());
    }

    #[test]
    fn a_manifest_has_one_encoding() {
        // Byte 60 is `single_file`: any value but 0 or 1 used to decode as
        // `true`, giving one manifest many byte strings (found by fuzzing).
        let mut bytes = sample().encode();
        assert_eq!(bytes[60], 0);
        for flag in [2u8, 38, 255] {
            bytes[60] = flag;
            let e = Manifest::decode(&bytes).unwrap_err().to_string();
            assert!(e.contains("not 0 or 1"), "{e}");
        }
    }

    #[test]
    fn malformed_cids_say_what_a_cid_is() {
        for bad in [
            "",
            "cairn1",
            "Qm123",
            "cairn1!!!!",
            &format!("cairn1{}", "a".repeat(51)),
        ] {
            let e = bad.parse::<Cid>().unwrap_err().to_string();
            assert!(
                e.contains("malformed CID") && e.contains("cairn pin"),
                "{e}"
            );
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.entries[2].offset = 99;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.entries.swap(0, 2);
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.entries[0].path = "../etc/passwd".into();
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample();
        m.segments.pop();
        assert!(Manifest::decode(&m.encode()).is_err());
        let bytes = sample().encode();
        for cut in [0, 7, 8, 20, bytes.len() - 1] {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        // a huge count in a short buffer is refused before allocating
        let mut huge = bytes[..29 + 32].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Manifest::decode(&huge).is_err());
    }

    #[test]
    fn parameters_that_would_need_a_huge_decoder_are_refused() {
        let mut m = sample();
        m.data_shards = 1;
        m.parity_shards = 255;
        m.segment_size = 64 << 20;
        m.total_len = 64 << 20;
        let e = m.check_bounds().unwrap_err().to_string();
        assert!(e.contains("needs") && e.contains("allows"), "{e}");
        let mut m = sample();
        m.segment_size = 256 << 20;
        assert!(m.check_bounds().unwrap_err().to_string().contains("exceed"));
        // a small dataset with a large segment size decodes with small buffers
        let mut m = sample();
        m.segment_size = 64 << 20;
        let p = m.decoder_params().unwrap();
        assert!(p.segment_size() <= 256, "{}", p.segment_size());
    }

    #[test]
    fn placement_is_signed_and_checked() {
        let k = SecretKey::from_bytes(&[7; 32]);
        let a = SecretKey::from_bytes(&[1; 32]).public();
        let b = SecretKey::from_bytes(&[2; 32]).public();
        let p = Placement::signed(
            Cid([9; 32]),
            1,
            k.public(),
            &[Some(a), Some(b), None, Some(a)],
            &k,
        );
        let d = Placement::decode(&p.encode()).unwrap();
        assert_eq!(d, p);
        assert_eq!(d.holder(1, 0, 2), None);
        assert_eq!(d.holder(1, 1, 2), Some(a));
        let mut bytes = p.encode();
        bytes[45] ^= 1; // version
        assert!(Placement::decode(&bytes).is_err());
    }
}
