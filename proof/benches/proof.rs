//! Outboard, proof generation and verification, beside memcpy and plain BLAKE3.
//!
//! `cargo bench -p cairn-proof` runs criterion, then prints a ratio table.

use std::hint::black_box;

use cairn_proof::{
    Challenge, OutboardBuilder, ShardVerifier, group_count, group_range, prove, verify,
};
use criterion::{Criterion, Throughput};

use cairn_testkit::ratio;

/// A shard of an 8 MiB segment with k = 4.
const SHARD: usize = 2 << 20;
const SAMPLES: u16 = 44;

fn shard() -> Vec<u8> {
    (0..SHARD)
        .map(|i| ((i * 2654435761usize) >> 11) as u8)
        .collect()
}

fn outboard(shard: &[u8]) -> (cairn_proof::ShardId, Vec<u8>) {
    let mut b = OutboardBuilder::new(shard.len() as u64).unwrap();
    b.update(shard).unwrap();
    b.finalize().unwrap()
}

fn stream_verify(id: cairn_proof::ShardId, shard: &[u8], ob: &[u8]) {
    let v = ShardVerifier::new(id, shard.len() as u64, ob).unwrap();
    for g in 0..group_count(shard.len() as u64) {
        let r = group_range(shard.len() as u64, g);
        v.verify_group(g, &shard[r.start as usize..r.end as usize])
            .unwrap();
    }
}

fn main() {
    let data = shard();
    let (id, ob) = outboard(&data);
    let challenge = Challenge::new(id, SHARD as u64, [7; 32], SAMPLES).unwrap();
    let proof = prove(&challenge, &data[..], &ob[..]).unwrap();
    let proof_len = proof.len();

    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("shard_2MiB");
        g.throughput(Throughput::Bytes(SHARD as u64));
        g.sample_size(20);
        let mut dst = vec![0u8; SHARD];
        g.bench_function("memcpy", |b| {
            b.iter(|| dst.copy_from_slice(black_box(&data)))
        });
        g.bench_function("blake3_hash", |b| b.iter(|| blake3::hash(black_box(&data))));
        g.bench_function("outboard", |b| b.iter(|| outboard(black_box(&data))));
        g.bench_function("stream_verify", |b| {
            b.iter(|| stream_verify(id, &data, &ob))
        });
        g.finish();
        let mut g = c.benchmark_group("proof_c44_of_2MiB");
        g.throughput(Throughput::Bytes(proof_len as u64));
        g.bench_function("prove", |b| {
            b.iter(|| prove(black_box(&challenge), &data[..], &ob[..]).unwrap())
        });
        g.bench_function("verify", |b| {
            b.iter(|| verify(black_box(&challenge), &proof).unwrap())
        });
        g.finish();
    }
    c.final_summary();
    if ratio::quick_mode() {
        return;
    }

    let hash = ratio::mbps(SHARD, || {
        black_box(blake3::hash(black_box(&data)));
    });
    let ob_rate = ratio::mbps(SHARD, || {
        black_box(outboard(black_box(&data)));
    });
    let sv_rate = ratio::mbps(SHARD, || stream_verify(id, &data, &ob));
    let prove_rate = ratio::mbps(proof_len, || {
        black_box(prove(&challenge, &data[..], &ob[..]).unwrap());
    });
    let verify_rate = ratio::mbps(proof_len, || verify(&challenge, &proof).unwrap());
    let lib = "blake3::hash".to_string();
    let rows = vec![
        ratio::Row {
            name: lib.clone(),
            bytes: SHARD,
            mbps: hash,
            versus: None,
        },
        ratio::Row {
            name: "OutboardBuilder (id + outboard)".into(),
            bytes: SHARD,
            mbps: ob_rate,
            versus: Some((lib.clone(), hash)),
        },
        ratio::Row {
            name: "ShardVerifier (outboard check + all groups)".into(),
            bytes: SHARD,
            mbps: sv_rate,
            versus: Some((lib, hash)),
        },
        ratio::Row {
            name: format!("prove c={SAMPLES} (MB/s of proof bytes)"),
            bytes: proof_len,
            mbps: prove_rate,
            versus: None,
        },
        ratio::Row {
            name: format!("verify c={SAMPLES} (MB/s of proof bytes)"),
            bytes: proof_len,
            mbps: verify_rate,
            versus: None,
        },
    ];
    ratio::print_table("proof, 2 MiB shard, one thread", &rows);
    let verify_us = proof_len as f64 / verify_rate;
    println!(
        "  proof of {SAMPLES} samples: {proof_len} bytes; prove {:.0} us, verify {verify_us:.0} us per challenge",
        proof_len as f64 / prove_rate,
    );
    // Proof v1, measured in this run as the work that dominated it: each
    // sampled group (distinct groups of the same challenge) was sent whole
    // and hashed by the verifier.
    let groups = challenge.sampled_groups().len();
    let group = &data[..16 << 10];
    let v1_rate = ratio::mbps(groups * group.len(), || {
        for _ in 0..groups {
            black_box(blake3::hash(black_box(group)));
        }
    });
    let v1_len = groups * (group.len() + 7 * 32);
    let v1_us = (groups * group.len()) as f64 / v1_rate;
    println!(
        "  v1 ({groups} whole 16 KiB groups), same run: about {v1_len} bytes, at least {v1_us:.0} us to verify; \
         v2 is {:.1}x smaller and {:.1}x cheaper to verify",
        v1_len as f64 / proof_len as f64,
        v1_us / verify_us
    );
}
