//! Property tests of challenges and proofs: tampering, uniformity, detection.

use cairn_proof::{
    CHUNK_LEN, Challenge, Error, GROUP_LEN, MAX_PROOF_LEN, MAX_SAMPLES, ShardId, chunk_count,
    chunk_range, prove, shard_id_and_outboard, verify,
};
use cairn_testkit::bytes;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any single flipped bit, in the binding, a chunk byte or a tree node, is refused.
    #[test]
    fn a_flipped_bit_anywhere_is_rejected(
        len in 0usize..(40 * GROUP_LEN),
        seed in any::<u64>(),
        nonce in any::<[u8; 32]>(),
        samples in 1u16..60,
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let d = bytes(len, seed);
        let (id, ob) = shard_id_and_outboard(&d);
        let c = Challenge::new(id, len as u64, nonce, samples).unwrap();
        let mut p = prove(&c, &d[..], &ob[..]).unwrap();
        prop_assert!(verify(&c, &p).is_ok());
        prop_assert!(p.len() <= MAX_PROOF_LEN);
        let i = pick.index(p.len());
        p[i] ^= 1 << bit;
        let e = verify(&c, &p).unwrap_err();
        prop_assert!(e.is_proof_rejection(), "{e}");
    }

    /// A proof for a different nonce, shard or length never verifies.
    #[test]
    fn proofs_do_not_transfer_between_challenges(
        len in 1usize..(20 * GROUP_LEN),
        seed in any::<u64>(),
        n1 in any::<[u8; 32]>(),
        n2 in any::<[u8; 32]>(),
        samples in 1u16..50,
    ) {
        prop_assume!(n1 != n2);
        let d = bytes(len, seed);
        let (id, ob) = shard_id_and_outboard(&d);
        let c1 = Challenge::new(id, len as u64, n1, samples).unwrap();
        let p1 = prove(&c1, &d[..], &ob[..]).unwrap();
        let c2 = Challenge::new(id, len as u64, n2, samples).unwrap();
        prop_assert!(verify(&c2, &p1).is_err());
        let c3 = Challenge::new(ShardId([1; 32]), len as u64, n1, samples).unwrap();
        prop_assert!(verify(&c3, &p1).is_err());
        let c4 = Challenge::new(id, len as u64 + 1, n1, samples).unwrap();
        prop_assert!(verify(&c4, &p1).is_err());
    }
}

/// The flaw of proofs made of hashes only: a prover that kept just the tree
/// (even down to every chunk's chaining value, 1/32 of the shard) can answer
/// with leaf chaining values and siblings. Such a proof is refused whether
/// sent as is or padded to length.
#[test]
fn a_proof_of_hashes_without_chunk_bytes_is_rejected() {
    let len = 64 * GROUP_LEN;
    let d = bytes(len, 5);
    let (id, ob) = shard_id_and_outboard(&d);
    let c = Challenge::new(id, len as u64, [3; 32], 10).unwrap();
    let honest = prove(&c, &d[..], &ob[..]).unwrap();

    // The hash-only answer: for each sampled chunk, its chaining value in
    // place of its bytes.
    let leaf_cvs = leaf_chaining_values(&d);
    let mut hashes_only = honest[..33].to_vec();
    for i in c.sampled_chunks() {
        hashes_only.extend_from_slice(&leaf_cvs[i as usize]);
    }
    assert!(matches!(
        verify(&c, &hashes_only),
        Err(Error::ProofLength { .. })
    ));
    // Padded to the right length with the hashes repeated: the bytes do not hash to the id.
    let mut padded = hashes_only.clone();
    while padded.len() < honest.len() {
        let take = (honest.len() - padded.len()).min(hashes_only.len() - 33);
        padded.extend_from_slice(&hashes_only[33..33 + take]);
    }
    assert!(matches!(verify(&c, &padded), Err(Error::ProofRootMismatch)));
    // And the outboard alone cannot make the honest bytes: prove with zeroed data fails.
    let zeros = vec![0u8; len];
    let forged = prove(&c, &zeros[..], &ob[..]).unwrap();
    assert!(matches!(verify(&c, &forged), Err(Error::ProofRootMismatch)));
}

fn leaf_chaining_values(d: &[u8]) -> Vec<[u8; 32]> {
    use blake3::hazmat::HasherExt;
    (0..chunk_count(d.len() as u64))
        .map(|g| {
            let r = chunk_range(d.len() as u64, g);
            let mut h = blake3::Hasher::new();
            h.set_input_offset(r.start);
            h.update(&d[r.start as usize..r.end as usize]);
            h.finalize_non_root()
        })
        .collect()
}

/// Indices are uniform over the chunks: Pearson's chi-square over 64 chunks
/// and 64,000 draws from 2,000 nonces stays below the 0.1% critical value.
#[test]
fn indices_are_uniform_chi_square() {
    let groups = 64u64;
    let samples = 32u16;
    let mut counts = vec![0u64; groups as usize];
    let nonces = 2000u32;
    for n in 0..nonces {
        let mut nonce = [0u8; 32];
        nonce[..4].copy_from_slice(&n.to_le_bytes());
        let c =
            Challenge::new(ShardId([42; 32]), groups * CHUNK_LEN as u64, nonce, samples).unwrap();
        for i in c.indices() {
            counts[i as usize] += 1;
        }
    }
    let total = f64::from(nonces) * f64::from(samples);
    let expected = total / groups as f64;
    let chi2: f64 = counts
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    // chi-square, 63 degrees of freedom: 0.1% critical value 103.4; also not suspiciously perfect.
    println!("chi-square over {groups} groups: {chi2:.1} (63 dof, 0.1% critical 103.4)");
    assert!(chi2 < 103.4, "chi2 = {chi2}");
    assert!(chi2 > 30.0, "chi2 = {chi2} is too uniform for random draws");
}

/// A prover that lost a fraction f of its chunks fails a c-sample challenge
/// with probability 1-(1-f)^c, even at its best: this one kept every chaining
/// value of the tree (down to each chunk's) and lost only the chunks' bytes,
/// so a sample of any chunk it still has passes. (A prover that simply lost
/// chunks and proves from what is on disk fails more often: a lost chunk
/// spoils the chaining values of its whole 16 KiB group.) Prints the table
/// for both; asserts the best cheater's rate within 4.5 standard errors of
/// the formula and the naive one's at or above it.
#[test]
fn detection_rate_matches_one_minus_one_minus_f_to_the_c() {
    let chunks = 400usize;
    let len = chunks * CHUNK_LEN;
    let d = bytes(len, 11);
    let (id, ob) = shard_id_and_outboard(&d);
    let trials = 1500u32;
    println!("\n  f      c   trials  caught   observed  1-(1-f)^c   naive prover");
    for f in [0.01f64, 0.10, 0.50] {
        let lost_count = (f * chunks as f64).round() as usize;
        // lose every (chunks/lost)-th chunk: spread over the shard
        let lost: Vec<u64> = (0..lost_count)
            .map(|j| (j * chunks / lost_count) as u64)
            .collect();
        let mut damaged = d.clone();
        for &i in &lost {
            let r = chunk_range(len as u64, i);
            damaged[r.start as usize..r.end as usize].fill(0);
        }
        for c_samples in [1u16, 10, 44] {
            let (mut caught, mut naive_caught) = (0u32, 0u32);
            for t in 0..trials {
                let mut nonce = [0u8; 32];
                nonce[..4].copy_from_slice(&t.to_le_bytes());
                nonce[4] = c_samples as u8;
                nonce[5] = lost_count as u8;
                let ch = Challenge::new(id, len as u64, nonce, c_samples).unwrap();
                // The best cheater: the honest proof with the bytes of the
                // sampled lost chunks (which it does not have) zeroed.
                let mut p = prove(&ch, &d[..], &ob[..]).unwrap();
                for i in ch.sampled_chunks() {
                    if lost.binary_search(&i).is_ok() {
                        let r = chunk_range(len as u64, i);
                        let chunk = &d[r.start as usize..r.end as usize];
                        let at = p.windows(chunk.len()).position(|w| w == chunk).unwrap();
                        p[at..at + chunk.len()].fill(0);
                    }
                }
                if verify(&ch, &p).is_err() {
                    caught += 1;
                }
                let naive = prove(&ch, &damaged[..], &ob[..]).unwrap();
                if verify(&ch, &naive).is_err() {
                    naive_caught += 1;
                }
            }
            let observed = f64::from(caught) / f64::from(trials);
            let expected = 1.0 - (1.0 - f).powi(i32::from(c_samples));
            let se = (expected * (1.0 - expected) / f64::from(trials)).sqrt();
            let naive = f64::from(naive_caught) / f64::from(trials);
            println!(
                "  {:<5}  {:>2}  {trials:>6}  {caught:>6}   {observed:>7.4}   {expected:>7.4}    {naive:>7.4}",
                format!("{:.0}%", f * 100.0),
                c_samples
            );
            assert!(
                (observed - expected).abs() <= 4.5 * se + 1e-9,
                "f={f} c={c_samples}: observed {observed}, expected {expected}"
            );
            assert!(naive >= observed - 4.5 * se, "naive {naive} < {observed}");
        }
    }
}

#[test]
fn largest_challenge_fits_the_proof_bound() {
    let len = 1u64 << 40; // 1 TiB shard: the deepest tree, every sample a full chunk
    let c = Challenge::new(ShardId([0; 32]), len, [1; 32], MAX_SAMPLES).unwrap();
    assert!(
        c.proof_len() <= MAX_PROOF_LEN,
        "{} > {MAX_PROOF_LEN}",
        c.proof_len()
    );
}
