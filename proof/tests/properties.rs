//! Property tests of challenges and proofs: tampering, uniformity, detection.

use cairn_proof::{
    Challenge, Error, GROUP_LEN, MAX_PROOF_LEN, MAX_SAMPLES, ShardId, group_count, group_range,
    prove, shard_id_and_outboard, verify,
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
/// (the outboard, 1/256 of the shard) can answer with leaf chaining values and
/// siblings. Such a proof is refused whether sent as is or padded to length.
#[test]
fn a_proof_of_hashes_without_chunk_bytes_is_rejected() {
    let len = 64 * GROUP_LEN;
    let d = bytes(len, 5);
    let (id, ob) = shard_id_and_outboard(&d);
    let c = Challenge::new(id, len as u64, [3; 32], 10).unwrap();
    let honest = prove(&c, &d[..], &ob[..]).unwrap();

    // The hash-only answer: for each sampled group, its chaining value (which
    // the tree-only prover has in the outboard) in place of its bytes.
    let leaf_cvs = leaf_chaining_values(&d);
    let mut hashes_only = honest[..33].to_vec();
    for g in c.sampled_groups() {
        hashes_only.extend_from_slice(&leaf_cvs[g as usize]);
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
    (0..group_count(d.len() as u64))
        .map(|g| {
            let r = group_range(d.len() as u64, g);
            let mut h = blake3::Hasher::new();
            h.set_input_offset(r.start);
            h.update(&d[r.start as usize..r.end as usize]);
            h.finalize_non_root()
        })
        .collect()
}

/// Indices are uniform over the groups: Pearson's chi-square over 64 groups
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
            Challenge::new(ShardId([42; 32]), groups * GROUP_LEN as u64, nonce, samples).unwrap();
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

/// A prover that lost a fraction f of its chunk groups (and answers honestly
/// with what it has) fails a c-sample challenge with probability 1-(1-f)^c.
/// Prints the table; asserts each rate within 4.5 standard errors.
#[test]
fn detection_rate_matches_one_minus_one_minus_f_to_the_c() {
    let groups = 200usize;
    let len = groups * GROUP_LEN;
    let d = bytes(len, 11);
    let (id, ob) = shard_id_and_outboard(&d);
    let trials = 1500u32;
    println!("\n  f      c   trials  caught   observed  1-(1-f)^c");
    for f in [0.01f64, 0.10, 0.50] {
        let lost = (f * groups as f64).round() as usize;
        let mut damaged = d.clone();
        // lose every (groups/lost)-th group: spread over the shard
        for j in 0..lost {
            let g = j * groups / lost;
            let r = group_range(len as u64, g as u64);
            damaged[r.start as usize..r.end as usize].fill(0);
        }
        for c_samples in [1u16, 10, 44] {
            let mut caught = 0u32;
            for t in 0..trials {
                let mut nonce = [0u8; 32];
                nonce[..4].copy_from_slice(&t.to_le_bytes());
                nonce[4] = c_samples as u8;
                nonce[5] = lost as u8;
                let ch = Challenge::new(id, len as u64, nonce, c_samples).unwrap();
                let p = prove(&ch, &damaged[..], &ob[..]).unwrap();
                if verify(&ch, &p).is_err() {
                    caught += 1;
                }
            }
            let observed = f64::from(caught) / f64::from(trials);
            let expected = 1.0 - (1.0 - f).powi(i32::from(c_samples));
            let se = (expected * (1.0 - expected) / f64::from(trials)).sqrt();
            println!(
                "  {:<5}  {:>2}  {trials:>6}  {caught:>6}   {observed:>7.4}   {expected:>7.4}",
                format!("{:.0}%", f * 100.0),
                c_samples
            );
            assert!(
                (observed - expected).abs() <= 4.5 * se + 1e-9,
                "f={f} c={c_samples}: observed {observed}, expected {expected}"
            );
        }
    }
}

#[test]
fn largest_challenge_fits_the_proof_bound() {
    let len = 1u64 << 36; // 64 GiB shard: deep tree, every sample a full group
    let c = Challenge::new(ShardId([0; 32]), len, [1; 32], MAX_SAMPLES).unwrap();
    assert!(
        c.proof_len() <= MAX_PROOF_LEN,
        "{} > {MAX_PROOF_LEN}",
        c.proof_len()
    );
}
