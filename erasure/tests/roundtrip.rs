//! Property tests: any k of the k + m shards of every segment restore any stream.

use cairn_erasure::{Decoder, Encoder, Params, Segmenter};
use cairn_testkit::bytes;
use proptest::prelude::*;

/// Segments the stream (fed in chunks of `chunk`), encodes every segment,
/// keeps the shards whose bit is set in `keep_mask` rotated per segment, and
/// decodes. Returns the restored stream.
fn round_trip(params: Params, input: &[u8], chunk: usize, keep: &[usize]) -> Vec<u8> {
    let mut segmenter = Segmenter::new(params.segment_size());
    let mut encoder = Encoder::new(params).unwrap();
    let mut decoder = Decoder::new(params).unwrap();
    let mut out = Vec::with_capacity(input.len());
    let n = params.total_shards();
    let mut per_segment = |bytes: &[u8], index: u64| {
        let e = encoder.encode(bytes).unwrap();
        let given: Vec<(usize, &[u8])> = keep
            .iter()
            .map(|&i| {
                let i = (i + index as usize) % n;
                (i, e.shard(i))
            })
            .collect();
        let restored = decoder.decode(bytes.len(), &given).unwrap();
        out.extend_from_slice(restored);
    };
    for piece in input.chunks(chunk.max(1)) {
        segmenter
            .push::<()>(piece, |s| {
                per_segment(s.bytes, s.index);
                Ok(())
            })
            .unwrap();
    }
    if let Some(s) = segmenter.finish() {
        per_segment(s.bytes, s.index);
    }
    out
}

/// A random choice of exactly k distinct shard indices out of k + m.
fn k_of_n(k: usize, n: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..n).collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(move |v| v[..k].to_vec())
}

fn params_strategy() -> impl Strategy<Value = Params> {
    (1usize..=12, 1usize..=6, 1usize..=8)
        .prop_map(|(k, m, mult)| Params::new(k, m, k * cairn_erasure::SHARD_ALIGN * mult).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_k_shards_restore_any_stream(
        (params, keep) in params_strategy().prop_flat_map(|p| {
            (Just(p), k_of_n(p.data_shards(), p.total_shards()))
        }),
        size_kind in 0usize..6,
        random_len in 0usize..20_000,
        chunk in 1usize..5000,
        seed in any::<u64>(),
    ) {
        let s = params.segment_size();
        let len = match size_kind {
            0 => 0,
            1 => 1,
            2 => s - 1,
            3 => s,
            4 => s + 1,
            _ => random_len.min(4 * s + 17),
        };
        let input = bytes(len, seed);
        let out = round_trip(params, &input, chunk, &keep);
        prop_assert_eq!(out, input);
    }

    /// Encoding a segment in place gives the shards `encode` gives, with the
    /// data shards left where they are (no copy) and nothing past the
    /// segment size.
    #[test]
    fn encoding_separate_shards_gives_the_same_shards(
        params in params_strategy(),
        len_fraction in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let len = ((params.segment_size() as f64 * len_fraction) as usize).max(1);
        let data = bytes(len, seed);
        let mut encoder = Encoder::new(params).unwrap();
        let expected: Vec<Vec<u8>> = encoder.encode(&data).unwrap().shards().map(|s| s.to_vec()).collect();
        let (k, sl) = (params.data_shards(), params.shard_len(len));
        let shards: Vec<Vec<u8>> = (0..k)
            .map(|i| {
                let mut s = data[(i * sl).min(len)..((i + 1) * sl).min(len)].to_vec();
                s.resize(sl, 0);
                s
            })
            .collect();
        let views: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
        let parity = encoder.encode_shards(len, &views).unwrap();
        let got: Vec<Vec<u8>> = shards.iter().cloned().chain(parity).collect();
        prop_assert_eq!(got.len(), params.total_shards());
        prop_assert_eq!(got, expected);
        // The wrong number of data shards, or one of the wrong length, is named.
        let few = matches!(
            encoder.encode_shards(len, &views[1..]),
            Err(cairn_erasure::Error::DataShardCount { .. })
        );
        prop_assert!(few, "too few data shards were not named");
        let mut short = views.clone();
        short[k - 1] = &views[k - 1][..sl - 1];
        let short_named = matches!(
            encoder.encode_shards(len, &short),
            Err(cairn_erasure::Error::ShardLengthMismatch { .. })
        );
        prop_assert!(short_named, "a short data shard was not named");
    }
}

#[test]
fn default_parameters_restore_with_m_shards_missing() {
    for (k, m) in [(4usize, 2usize), (10, 4)] {
        let params = Params::new(k, m, 64 * 1024 * k).unwrap();
        let len = 3 * params.segment_size() + 12345;
        let input = bytes(len, 7);
        // keep exactly the last k shards: every data shard that is missing is rebuilt
        let keep: Vec<usize> = (m..k + m).collect();
        assert_eq!(round_trip(params, &input, 100_000, &keep), input);
    }
}

#[test]
fn every_k_subset_of_a_small_code_restores() {
    let params = Params::new(3, 3, 3 * 64).unwrap();
    let input = bytes(1000, 3);
    for mask in 0u32..64 {
        if mask.count_ones() != 3 {
            continue;
        }
        let keep: Vec<usize> = (0..6).filter(|i| mask & (1 << i) != 0).collect();
        assert_eq!(
            round_trip(params, &input, 77, &keep),
            input,
            "mask {mask:b}"
        );
    }
}
