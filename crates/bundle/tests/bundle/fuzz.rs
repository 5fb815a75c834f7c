//! A fixed-seed mutation loop: random edits of a good bundle never panic,
//! and never open unless every signed byte is unchanged.

use bundle::container;
use bundle::signature::Signature;
use bundle::SecretKey;

use crate::{make, trusted};

/// xorshift64*: deterministic, so a failure reproduces with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The parts a signature covers: everything but the untrusted comment.
fn signed_parts(sig: &[u8]) -> Option<(bundle::KeyId, String, Vec<String>)> {
    let s = Signature::parse(sig).ok()?;
    let text = s.to_minisign_string();
    let lines = text.lines().skip(1).map(String::from).collect();
    Some((s.key_id(), s.trusted_comment().to_string(), lines))
}

#[test]
fn random_mutations() {
    const SEED: u64 = 0x6e6f_7265_626f_6f74;
    let key = SecretKey::generate().unwrap();
    let keys = trusted(&key);
    let good = make(&key);
    let orig = container::read(&good).unwrap();
    let orig_sig = signed_parts(orig.signature.unwrap()).unwrap();
    let mut rng = Rng(SEED);
    let (mut opened, mut refused) = (0, 0);
    for round in 0..4000 {
        let mut b = good.clone();
        let kind = rng.below(7);
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len().max(1));
            match kind {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.next() as u8,
                2 => b.truncate(at),
                3 => {
                    let n = 1 + rng.below(600);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    b.splice(at..at, bytes);
                }
                4 => {
                    let end = (at + 1 + rng.below(700)).min(b.len());
                    b.drain(at..end);
                }
                5 => {
                    // Swap two 512-byte blocks.
                    let (x, y) = (rng.below(b.len() / 512), rng.below(b.len() / 512));
                    for i in 0..512 {
                        b.swap(x * 512 + i, y * 512 + i);
                    }
                }
                _ => {
                    let n = (1 + rng.below(64)).min(b.len() - at);
                    for byte in &mut b[at..at + n] {
                        *byte = rng.next() as u8;
                    }
                }
            }
            if b.is_empty() {
                break;
            }
        }
        // inspect must not panic either.
        let _ = bundle::inspect(&b, Some(&keys)).to_string();
        match bundle::open(&b, &keys) {
            Err(_) => refused += 1,
            Ok(v) => {
                opened += 1;
                let m = container::read(&b).unwrap();
                assert!(
                    m.manifest == orig.manifest
                        && m.module == orig.module
                        && signed_parts(m.signature.unwrap()).as_ref() == Some(&orig_sig)
                        && v.module == orig.module,
                    "round {round} (seed {SEED:#x}, kind {kind}): a mutated bundle opened"
                );
            }
        }
    }
    eprintln!("random_mutations: {opened} opened (untrusted comment or trailing zeros), {refused} refused");
    assert!(
        refused > 3500,
        "too few mutations refused ({refused}): is the loop mutating?"
    );
}
