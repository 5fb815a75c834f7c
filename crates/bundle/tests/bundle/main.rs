//! Integration tests of the bundle file, built into one binary: round
//! trips, every kind of tampering, interoperability with minisign and GNU
//! tar, and a fixed-seed mutation loop.

mod fuzz;
mod interop;
mod keys;
mod roundtrip;
mod tamper;

use bundle::container;
use bundle::manifest::{Cve, Function, Kernel, Manifest, Module, Target, FORMAT};
use bundle::{Bundle, SecretKey, TrustedKeys};

/// A valid manifest (module fields left for `Bundle::create`).
pub fn manifest() -> Manifest {
    Manifest {
        format: FORMAT,
        name: "nr_cve_2024_1086".into(),
        level: 2,
        kernel: Kernel {
            release: "6.1.0-47-cloud-amd64".into(),
            build_id: "8d1e4a6c0f27b93e5a1d2c3b4a59687766554433".into(),
            version: Some("6.1.170-3".into()),
        },
        effective_version: Some("6.1.192-3".into()),
        cves: vec![
            Cve {
                id: "CVE-2024-1086".into(),
                description: "nf_tables: use-after-free in nft_verdict_init".into(),
            },
            Cve {
                id: "CVE-2023-52340".into(),
                description: "ipv6: ICMPv6 \"Packet Too Big\" memory exhaustion".into(),
            },
        ],
        description: "Two fixes:\n\tnf_tables verdicts\n\tipv6 route cache\n".into(),
        targets: vec![
            Target {
                object: "vmlinux".into(),
                functions: vec![
                    Function {
                        name: "ip6_route_output_flags".into(),
                        sympos: 0,
                    },
                    Function {
                        name: "s_start".into(),
                        sympos: 2,
                    },
                ],
            },
            Target {
                object: "nf_tables".into(),
                functions: vec![Function {
                    name: "nft_verdict_init".into(),
                    sympos: 0,
                }],
            },
        ],
        module: Module::default(),
        toolchain: [
            (
                "compiler".to_string(),
                "gcc-12 (Debian 12.2.0-14) 12.2.0".to_string(),
            ),
            (
                "linker".to_string(),
                "GNU ld (GNU Binutils for Debian) 2.40".to_string(),
            ),
        ]
        .into_iter()
        .collect(),
        created: "2025-03-01T10:20:30Z".into(),
        builder: Some("tests".into()),
        not_carried: Vec::new(),
    }
}

/// Module bytes: not a multiple of 512, so padding is exercised.
pub fn module() -> Vec<u8> {
    let mut m = b"\x7fELF\x02\x01\x01".to_vec();
    m.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    m
}

/// The key's public half as the only trusted key.
pub fn trusted(key: &SecretKey) -> TrustedKeys {
    TrustedKeys::from_keys([key.public_key()]).unwrap()
}

/// A valid bundle of `manifest()` and `module()`.
pub fn make(key: &SecretKey) -> Vec<u8> {
    Bundle::create(
        manifest(),
        &module(),
        key,
        "timestamp:0\tfile:manifest.json",
    )
    .unwrap()
    .into_bytes()
}

/// A bundle of arbitrary (possibly invalid) manifest JSON, properly signed,
/// so that checks after the signature can be reached.
pub fn signed_raw(key: &SecretKey, json: &[u8], module: &[u8]) -> Vec<u8> {
    let sig = bundle::signature::sign(key, json, "raw").unwrap();
    container::write(json, sig.to_minisign_string().as_bytes(), module)
}

/// A manifest serialised without validation, with the module pinned.
pub fn json_of(mut m: Manifest, module: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    m.module = Module {
        sha256: hex::encode(sha2::Sha256::digest(module)),
        size: module.len() as u64,
    };
    m.to_json()
}

/// Byte ranges of the three members' data in a bundle written by
/// `container::write`.
pub fn layout(bytes: &[u8]) -> [std::ops::Range<usize>; 3] {
    let m = container::read(bytes).unwrap();
    let start = |s: &[u8]| s.as_ptr() as usize - bytes.as_ptr() as usize;
    let sig = m.signature.unwrap();
    [
        start(m.manifest)..start(m.manifest) + m.manifest.len(),
        start(sig)..start(sig) + sig.len(),
        start(m.module)..start(m.module) + m.module.len(),
    ]
}

/// Rewrites a header's size field and checksum, as a forger would.
pub fn set_size(bytes: &mut [u8], header: usize, size: u64) {
    let h = &mut bytes[header..header + 512];
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    fix_checksum(h);
}

/// Recomputes a header's checksum after an edit.
pub fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}
