//! Encode and decode of 8 MiB segments, beside memcpy and the bare library call.
//!
//! `cargo bench -p cairn-erasure` runs criterion, then prints a ratio table
//! (MB/s, fraction of memcpy, fraction of the bare reed-solomon-erasure call).

use std::hint::black_box;

use cairn_erasure::{Decoder, Encoder, Params};
use criterion::{Criterion, Throughput};
use reed_solomon_erasure::galois_8::ReedSolomon;

use cairn_testkit::ratio;

const SEGMENT: usize = 8 << 20;

fn segment() -> Vec<u8> {
    (0..SEGMENT)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect()
}

/// The bare library call the wrapper is measured against: parity of k
/// borrowed data slices into m preallocated buffers.
struct Bare {
    rs: ReedSolomon,
    parity: Vec<Vec<u8>>,
    shard_len: usize,
    k: usize,
}

impl Bare {
    fn new(k: usize, m: usize) -> Self {
        let shard_len = Params::with_segment_near(k, m, SEGMENT)
            .unwrap()
            .segment_size()
            / k;
        Bare {
            rs: ReedSolomon::new(k, m).unwrap(),
            parity: vec![vec![0; shard_len]; m],
            shard_len,
            k,
        }
    }
    fn encode(&mut self, seg: &[u8]) {
        let data: Vec<&[u8]> = seg.chunks_exact(self.shard_len).take(self.k).collect();
        self.rs.encode_sep(&data, &mut self.parity).unwrap();
    }
}

/// A decoder whose slots already hold the shards that survived (as the
/// network writes them there), with the first m data shards missing.
fn primed_decoder(params: Params, seg: &[u8]) -> (Decoder, Vec<usize>) {
    let (k, m) = (params.data_shards(), params.parity_shards());
    let mut enc = Encoder::new(params).unwrap();
    let e = enc.encode(seg).unwrap();
    let shards: Vec<Vec<u8>> = e.shards().map(|s| s.to_vec()).collect();
    let mut dec = Decoder::new(params).unwrap();
    dec.begin(seg.len()).unwrap();
    let given: Vec<usize> = (m..k + m).collect();
    for &i in &given {
        dec.slot(i).unwrap().copy_from_slice(&shards[i]);
    }
    (dec, given)
}

fn decode_primed(dec: &mut Decoder, given: &[usize], len: usize) {
    dec.begin(len).unwrap();
    for &i in given {
        dec.slot(i).unwrap();
    }
    black_box(dec.finish().unwrap());
}

/// The bare library call for decode: reconstruct the first m data shards.
fn bare_reconstruct(rs: &ReedSolomon, bufs: &mut [Vec<u8>], m: usize) {
    let mut shards: Vec<(&mut [u8], bool)> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| (b.as_mut_slice(), i >= m))
        .collect();
    rs.reconstruct_data(&mut shards).unwrap();
}

fn criterion_benches(c: &mut Criterion, seg: &[u8]) {
    let mut g = c.benchmark_group("erasure_8MiB");
    g.throughput(Throughput::Bytes(SEGMENT as u64));
    g.sample_size(20);
    let mut dst = vec![0u8; SEGMENT];
    g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(seg))));
    for (k, m) in [(4, 2), (10, 4)] {
        let params = Params::with_segment_near(k, m, SEGMENT).unwrap();
        let seg = &seg[..params.segment_size()];
        let len = seg.len();
        let mut enc = Encoder::new(params).unwrap();
        g.bench_function(format!("encode_k{k}_m{m}"), |b| {
            b.iter(|| {
                black_box(enc.encode(black_box(seg)).unwrap());
            })
        });
        let (mut dec, given) = primed_decoder(params, seg);
        g.bench_function(format!("decode_k{k}_m{m}_{m}_missing"), |b| {
            b.iter(|| decode_primed(&mut dec, &given, len))
        });
    }
    g.finish();
}

fn ratio_table(seg: &[u8]) {
    let mut rows = Vec::new();
    for (k, m) in [(4usize, 2usize), (10, 4)] {
        let params = Params::with_segment_near(k, m, SEGMENT).unwrap();
        let seg = &seg[..params.segment_size()];
        let len = seg.len();
        let mut bare = Bare::new(k, m);
        let bare_enc = ratio::mbps(len, || bare.encode(black_box(seg)));
        let mut enc = Encoder::new(params).unwrap();
        let wrap_enc = ratio::mbps(len, || {
            black_box(enc.encode(black_box(seg)).unwrap());
        });
        let e = enc.encode(seg).unwrap();
        let mut bufs: Vec<Vec<u8>> = e.shards().map(|s| s.to_vec()).collect();
        let bare_dec = ratio::mbps(len, || bare_reconstruct(&bare.rs, &mut bufs, m));
        let (mut dec, given) = primed_decoder(params, seg);
        let wrap_dec = ratio::mbps(len, || decode_primed(&mut dec, &given, len));
        let shards: Vec<Vec<u8>> = enc
            .encode(seg)
            .unwrap()
            .shards()
            .map(|s| s.to_vec())
            .collect();
        let copied: Vec<(usize, &[u8])> =
            given.iter().map(|&i| (i, shards[i].as_slice())).collect();
        let wrap_dec_copy = ratio::mbps(len, || {
            black_box(dec.decode(len, &copied).unwrap());
        });
        let lib = format!("bare encode_sep k{k} m{m}");
        let lib_dec = format!("bare reconstruct_data k{k} m{m}");
        rows.push(ratio::Row {
            name: lib.clone(),
            bytes: len,
            mbps: bare_enc,
            versus: None,
        });
        rows.push(ratio::Row {
            name: format!("Encoder::encode k={k} m={m}"),
            bytes: len,
            mbps: wrap_enc,
            versus: Some((lib, bare_enc)),
        });
        rows.push(ratio::Row {
            name: lib_dec.clone(),
            bytes: len,
            mbps: bare_dec,
            versus: None,
        });
        rows.push(ratio::Row {
            name: format!("Decoder slots+finish k={k} m={m}, {m} lost"),
            bytes: len,
            mbps: wrap_dec,
            versus: Some((lib_dec.clone(), bare_dec)),
        });
        rows.push(ratio::Row {
            name: format!("Decoder::decode (copying in) k={k} m={m}"),
            bytes: len,
            mbps: wrap_dec_copy,
            versus: Some((lib_dec, bare_dec)),
        });
    }
    ratio::print_table(
        "erasure, 8 MiB segments, one thread (MB/s of segment bytes)",
        &rows,
    );
}

fn main() {
    let seg = segment();
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    criterion_benches(&mut c, &seg);
    c.final_summary();
    if !ratio::quick_mode() {
        ratio_table(&seg);
    }
}
