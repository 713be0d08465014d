//! Fixed work of the paths a board's node spends its CPU on, for counting
//! instructions per cargo profile (`count.sh` runs it under qemu-user with
//! an instruction-counting plugin).
//!
//! Timing a benchmark under emulation on a shared machine moved the same
//! row by 40% between two runs; the number of guest instructions does not
//! move. `cairn-insn-count <workload> <n>` does `n` units of one
//! workload; the difference between two `n` is the cost of the units alone,
//! without the setup.

use std::hint::black_box;
use std::process::ExitCode;

use cairn_erasure::{Decoder, Encoder, Params};
use cairn_proof::{
    Challenge, OutboardBuilder, ShardId, ShardVerifier, group_count, group_range, prove, verify,
};

const SEGMENT: usize = 8 << 20;
const SHARD: usize = 2 << 20;
const WORKLOADS: &str = "encode, decode, hash, outboard, verify_shard, prove, verify (per 8 MiB segment or 2 MiB shard)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(workload), Some(Ok(n))) = (args.get(1), args.get(2).map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: cairn-insn-count <workload> <n>; workloads: {WORKLOADS}");
        return ExitCode::from(2);
    };
    match run(workload, n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-insn-count: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(workload: &str, n: usize) -> Result<(), String> {
    let segment: Vec<u8> = (0..SEGMENT)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    let shard = &segment[..SHARD];
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match workload {
        "encode" | "decode" => {
            let params = Params::with_segment_near(4, 2, SEGMENT).map_err(|e| err(&e))?;
            let seg = &segment[..params.segment_size()];
            let mut enc = Encoder::new(params).map_err(|e| err(&e))?;
            if workload == "encode" {
                for _ in 0..n {
                    black_box(enc.encode(black_box(seg)).map_err(|e| err(&e))?);
                }
                return Ok(());
            }
            let shards: Vec<Vec<u8>> = enc
                .encode(seg)
                .map_err(|e| err(&e))?
                .shards()
                .map(<[u8]>::to_vec)
                .collect();
            let mut dec = Decoder::new(params).map_err(|e| err(&e))?;
            for _ in 0..n {
                // Two data shards missing: rebuilt from two data and two parity.
                dec.begin(seg.len()).map_err(|e| err(&e))?;
                for (i, s) in shards.iter().enumerate().skip(2) {
                    dec.slot(i).map_err(|e| err(&e))?.copy_from_slice(s);
                }
                black_box(dec.finish().map_err(|e| err(&e))?);
            }
        }
        "hash" => {
            for _ in 0..n {
                black_box(blake3::hash(black_box(shard)));
            }
        }
        "outboard" => {
            for _ in 0..n {
                black_box(outboard(black_box(shard))?);
            }
        }
        "verify_shard" => {
            let (id, ob) = outboard(shard)?;
            let len = shard.len() as u64;
            for _ in 0..n {
                let v = ShardVerifier::new(id, len, &ob).map_err(|e| err(&e))?;
                for g in 0..group_count(len) {
                    let r = group_range(len, g);
                    v.verify_group(g, &shard[r.start as usize..r.end as usize])
                        .map_err(|e| err(&e))?;
                }
            }
        }
        "prove" | "verify" => {
            let (id, ob) = outboard(shard)?;
            let c = Challenge::new(id, shard.len() as u64, [7; 32], 44).map_err(|e| err(&e))?;
            let proof = prove(&c, shard, &ob[..]).map_err(|e| err(&e))?;
            for _ in 0..n {
                if workload == "prove" {
                    black_box(prove(black_box(&c), shard, &ob[..]).map_err(|e| err(&e))?);
                } else {
                    verify(black_box(&c), &proof).map_err(|e| err(&e))?;
                }
            }
        }
        #[cfg(feature = "metadata")]
        "metadata" => metadata(n).map_err(|e| err(&e))?,
        other => return Err(format!("no workload {other:?}; one of: {WORKLOADS}")),
    }
    Ok(())
}

fn outboard(shard: &[u8]) -> Result<(ShardId, Vec<u8>), String> {
    let mut b = OutboardBuilder::new(shard.len() as u64).map_err(|e| e.to_string())?;
    b.update(shard).map_err(|e| e.to_string())?;
    b.finalize().map_err(|e| e.to_string())
}

/// `n` records of a shard record's size written (each synced, as the node
/// writes them), read back, and read again after a reopen of the store:
/// RocksDB's write, read and recovery paths, in a fresh directory under the
/// system's temporary directory.
#[cfg(feature = "metadata")]
fn metadata(n: usize) -> Result<(), cairn_store::StoreError> {
    let dir = std::env::temp_dir().join(format!("cairn-insn-count-{}", std::process::id()));
    let result = metadata_in(&dir, n);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(feature = "metadata")]
fn metadata_in(dir: &std::path::Path, n: usize) -> Result<(), cairn_store::StoreError> {
    let key = |i: usize| blake3::hash(&i.to_le_bytes()).as_bytes().to_vec();
    let value = [0x5a; 160];
    {
        let store = cairn_store::Store::open(dir, 1 << 30)?;
        let kv = store.kv("insn")?;
        for i in 0..n {
            kv.put(&key(i), &value)?;
        }
        for i in 0..n {
            black_box(kv.get(&key(i))?);
        }
    }
    let store = cairn_store::Store::open(dir, 1 << 30)?;
    let kv = store.kv("insn")?;
    for i in 0..n {
        black_box(kv.get(&key(i))?);
    }
    Ok(())
}
