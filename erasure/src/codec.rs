//! Encoding a segment into k + m shards and decoding it back from any k.
//!
//! Both sides own their buffers, sized for a full segment and allocated once;
//! encoding and decoding a stream of segments allocates nothing per segment.
//! Full data shards are borrowed straight from the segment (the code is
//! systematic), so encoding adds no copy to the library call.

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::{Error, MAX_TOTAL_SHARDS, Params};

/// Encodes segments into shards, reusing its parity and padding buffers.
pub struct Encoder {
    params: Params,
    rs: ReedSolomon,
    parity: Vec<u8>,
    pad: Vec<u8>,
}

/// The k + m shards of one segment, borrowed from the segment and the encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncodedSegment<'a> {
    segment: &'a [u8],
    pad: &'a [u8],
    parity: &'a [u8],
    first_padded: usize,
    shard_len: usize,
    data_shards: usize,
    total_shards: usize,
}

impl<'a> EncodedSegment<'a> {
    /// Bytes per shard of this segment.
    pub fn shard_len(&self) -> usize {
        self.shard_len
    }

    /// k + m.
    pub fn shard_count(&self) -> usize {
        self.total_shards
    }

    /// Shard `index` (0..k are data, k..k+m parity). Panics if out of range.
    pub fn shard(&self, index: usize) -> &'a [u8] {
        let sl = self.shard_len;
        if index < self.first_padded {
            &self.segment[index * sl..(index + 1) * sl]
        } else if index < self.data_shards {
            let i = index - self.first_padded;
            &self.pad[i * sl..(i + 1) * sl]
        } else {
            assert!(index < self.total_shards, "shard index out of range");
            let i = index - self.data_shards;
            &self.parity[i * sl..(i + 1) * sl]
        }
    }

    /// All shards in index order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        (0..self.total_shards).map(|i| self.shard(i))
    }
}

impl Encoder {
    /// An encoder for `params`; allocates `(m + k) * segment_size / k` bytes once.
    pub fn new(params: Params) -> Result<Self, Error> {
        let rs = ReedSolomon::new(params.data_shards(), params.parity_shards())?;
        let max_shard = params.shard_len(params.segment_size());
        Ok(Encoder {
            params,
            rs,
            parity: vec![0; max_shard * params.parity_shards()],
            pad: vec![0; max_shard * params.data_shards()],
        })
    }

    /// The parameters this encoder was built with.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Encodes one segment (1..=segment_size bytes). The short last segment is
    /// padded with zeros to k shards of `ceil(len / k)` bytes; decoding with
    /// the segment length restores the exact bytes.
    pub fn encode<'a>(&'a mut self, segment: &'a [u8]) -> Result<EncodedSegment<'a>, Error> {
        self.params.check_segment_len(segment.len())?;
        let k = self.params.data_shards();
        let m = self.params.parity_shards();
        let sl = self.params.shard_len(segment.len());
        // Shards 0..first_padded lie entirely inside the segment; the rest
        // need zero padding and are copied into `pad`.
        let first_padded = segment.len() / sl;
        let pad = &mut self.pad[..(k - first_padded) * sl];
        pad.fill(0);
        let tail = &segment[first_padded * sl..];
        pad[..tail.len()].copy_from_slice(tail);

        let mut data: [&[u8]; MAX_TOTAL_SHARDS] = [&[]; MAX_TOTAL_SHARDS];
        for (i, slot) in data.iter_mut().enumerate().take(k) {
            *slot = if i < first_padded {
                &segment[i * sl..(i + 1) * sl]
            } else {
                let j = i - first_padded;
                &pad[j * sl..(j + 1) * sl]
            };
        }
        let parity_bytes = &mut self.parity[..m * sl];
        let mut parity: [&mut [u8]; MAX_TOTAL_SHARDS] = std::array::from_fn(|_| &mut [][..]);
        for (slot, chunk) in parity.iter_mut().zip(parity_bytes.chunks_exact_mut(sl)) {
            *slot = chunk;
        }
        self.rs.encode_sep(&data[..k], &mut parity[..m])?;

        Ok(EncodedSegment {
            segment,
            pad: &self.pad[..(k - first_padded) * sl],
            parity: &self.parity[..m * sl],
            first_padded,
            shard_len: sl,
            data_shards: k,
            total_shards: k + m,
        })
    }
}

impl Encoder {
    /// Encodes a segment the caller holds as its k data shards, each a
    /// buffer of its own (`data[i]` is bytes `[i * sl, (i + 1) * sl)` of
    /// the `segment_len`-byte segment, zero-padded past its end, where `sl`
    /// is [`Params::shard_len`]), and returns its m parity shards, each a
    /// buffer of its own: nothing of the segment is copied, and every shard
    /// can be handed on (and freed) alone. The shards are those
    /// [`Encoder::encode`] gives.
    pub fn encode_shards(
        &mut self,
        segment_len: usize,
        data: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, Error> {
        self.params.check_segment_len(segment_len)?;
        let k = self.params.data_shards();
        let m = self.params.parity_shards();
        let sl = self.params.shard_len(segment_len);
        if data.len() != k {
            return Err(Error::DataShardCount { got: data.len(), k });
        }
        if let Some((index, d)) = data.iter().enumerate().find(|(_, d)| d.len() != sl) {
            return Err(Error::ShardLengthMismatch {
                index,
                got: d.len(),
                expected: sl,
            });
        }
        let mut parity: Vec<Vec<u8>> = (0..m).map(|_| vec![0; sl]).collect();
        let mut par: [&mut [u8]; MAX_TOTAL_SHARDS] = std::array::from_fn(|_| &mut [][..]);
        for (slot, shard) in par.iter_mut().zip(parity.iter_mut()) {
            *slot = shard;
        }
        self.rs.encode_sep(data, &mut par[..m])?;
        Ok(parity)
    }
}

/// Restores segments from any k of their k + m shards, reusing one buffer.
///
/// Shards can be copied in ([`Decoder::decode`]) or written straight into
/// their slot ([`Decoder::begin`], [`Decoder::slot`], [`Decoder::finish`]),
/// which lets a network reader fill the decoder without an extra copy.
pub struct Decoder {
    params: Params,
    rs: ReedSolomon,
    work: Vec<u8>,
    present: [bool; MAX_TOTAL_SHARDS],
    segment_len: usize,
    shard_len: usize,
}

impl Decoder {
    /// A decoder for `params`; allocates `(k + m) * segment_size / k` bytes once.
    pub fn new(params: Params) -> Result<Self, Error> {
        let rs = ReedSolomon::new(params.data_shards(), params.parity_shards())?;
        let max_shard = params.shard_len(params.segment_size());
        Ok(Decoder {
            params,
            rs,
            work: vec![0; max_shard * params.total_shards()],
            present: [false; MAX_TOTAL_SHARDS],
            segment_len: 0,
            shard_len: 0,
        })
    }

    /// The parameters this decoder was built with.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Starts a segment of `segment_len` bytes: forgets all shards given so far.
    pub fn begin(&mut self, segment_len: usize) -> Result<(), Error> {
        self.params.check_segment_len(segment_len)?;
        self.segment_len = segment_len;
        self.shard_len = self.params.shard_len(segment_len);
        self.present = [false; MAX_TOTAL_SHARDS];
        Ok(())
    }

    /// Bytes per shard of the current segment.
    pub fn shard_len(&self) -> usize {
        self.shard_len
    }

    /// The buffer for shard `index`, to be filled completely by the caller; the
    /// shard counts as given from now on (undo with [`Decoder::discard`]).
    pub fn slot(&mut self, index: usize) -> Result<&mut [u8], Error> {
        let total = self.params.total_shards();
        if index >= total {
            return Err(Error::ShardIndexOutOfRange { index, total });
        }
        if self.present[index] {
            return Err(Error::DuplicateShard { index });
        }
        self.present[index] = true;
        let sl = self.shard_len;
        Ok(&mut self.work[index * sl..(index + 1) * sl])
    }

    /// Forgets shard `index` (for example when its bytes failed verification).
    pub fn discard(&mut self, index: usize) {
        if index < MAX_TOTAL_SHARDS {
            self.present[index] = false;
        }
    }

    /// Number of distinct shards given for the current segment.
    pub fn shards_given(&self) -> usize {
        self.present.iter().filter(|p| **p).count()
    }

    /// Reconstructs the segment from the shards given since [`Decoder::begin`].
    pub fn finish(&mut self) -> Result<&[u8], Error> {
        let k = self.params.data_shards();
        let total = self.params.total_shards();
        let have = self.shards_given();
        if have < k {
            return Err(Error::NotEnoughShards { have, need: k });
        }
        let sl = self.shard_len;
        if !self.present[..k].iter().all(|p| *p) {
            let present = self.present;
            let mut shards: [(&mut [u8], bool); MAX_TOTAL_SHARDS] =
                std::array::from_fn(|_| (&mut [][..], false));
            for (i, (slot, chunk)) in shards
                .iter_mut()
                .zip(self.work[..total * sl].chunks_exact_mut(sl))
                .enumerate()
            {
                *slot = (chunk, present[i]);
            }
            self.rs.reconstruct_data(&mut shards[..total])?;
        }
        // Data shards sit at the front of `work`, in order: the segment is a prefix.
        Ok(&self.work[..self.segment_len])
    }

    /// Restores a segment of `segment_len` bytes from `(index, bytes)` pairs.
    /// Any k distinct shards suffice; extra shards are accepted and ignored.
    pub fn decode(
        &mut self,
        segment_len: usize,
        shards: &[(usize, &[u8])],
    ) -> Result<&[u8], Error> {
        self.begin(segment_len)?;
        let expected = self.shard_len;
        for &(index, bytes) in shards {
            if bytes.len() != expected {
                return Err(Error::ShardLengthMismatch {
                    index,
                    got: bytes.len(),
                    expected,
                });
            }
            self.slot(index)?.copy_from_slice(bytes);
        }
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params::new(4, 2, 4096).unwrap()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    #[test]
    fn full_segment_data_shards_are_the_segment() {
        let mut enc = Encoder::new(params()).unwrap();
        let seg = data(4096);
        let e = enc.encode(&seg).unwrap();
        assert_eq!(e.shard_len(), 1024);
        let joined: Vec<u8> = (0..4).flat_map(|i| e.shard(i).to_vec()).collect();
        assert_eq!(joined, seg);
    }

    #[test]
    fn short_segment_round_trips_from_parity_only_mix() {
        let p = params();
        let mut enc = Encoder::new(p).unwrap();
        let mut dec = Decoder::new(p).unwrap();
        for len in [1, 2, 3, 5, 1023, 1025, 4095, 4096] {
            let seg = data(len);
            let e = enc.encode(&seg).unwrap();
            let shards: Vec<(usize, Vec<u8>)> = e
                .shards()
                .enumerate()
                .map(|(i, s)| (i, s.to_vec()))
                .collect();
            // drop shards 0 and 2
            let given: Vec<(usize, &[u8])> = shards
                .iter()
                .filter(|(i, _)| *i != 0 && *i != 2)
                .map(|(i, s)| (*i, s.as_slice()))
                .collect();
            assert_eq!(dec.decode(len, &given).unwrap(), &seg[..], "len {len}");
        }
    }

    #[test]
    fn too_few_shards_is_a_clear_error() {
        let p = params();
        let mut enc = Encoder::new(p).unwrap();
        let seg = data(4096);
        let e = enc.encode(&seg).unwrap();
        let given: Vec<(usize, &[u8])> = (0..3).map(|i| (i, e.shard(i))).collect();
        let mut dec = Decoder::new(p).unwrap();
        let err = dec.decode(4096, &given).unwrap_err();
        assert_eq!(err, Error::NotEnoughShards { have: 3, need: 4 });
        assert!(err.to_string().contains("at least k = 4"));
    }

    #[test]
    fn bad_shard_inputs_are_rejected() {
        let p = params();
        let mut dec = Decoder::new(p).unwrap();
        let s = vec![0u8; 1024];
        assert_eq!(
            dec.decode(4096, &[(6, &s)]),
            Err(Error::ShardIndexOutOfRange { index: 6, total: 6 })
        );
        assert_eq!(
            dec.decode(4096, &[(1, &s), (1, &s)]),
            Err(Error::DuplicateShard { index: 1 })
        );
        assert_eq!(
            dec.decode(4096, &[(1, &s[..10])]),
            Err(Error::ShardLengthMismatch {
                index: 1,
                got: 10,
                expected: 1024
            })
        );
        assert!(matches!(
            dec.decode(0, &[]),
            Err(Error::BadSegmentLength { .. })
        ));
        let mut enc = Encoder::new(p).unwrap();
        let big = vec![0; 4097];
        assert!(matches!(
            enc.encode(&big),
            Err(Error::BadSegmentLength { len: 4097, .. })
        ));
        assert!(matches!(
            enc.encode(&[]),
            Err(Error::BadSegmentLength { .. })
        ));
    }
}
