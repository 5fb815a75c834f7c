//! Air-gapped transfer: `admin export` writes a directory of bundles and
//! an index.json, `admin import` on another server checks it, verifies
//! every bundle against its own trusted keys and publishes and releases
//! what is new; the real binary does both, as an operator would.

use std::path::Path;
use std::process::{Command, Output};

use server::blobs::sha256_hex;
use server::clock::{Clock, SystemClock};
use server::transfer::{Index, INDEX};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_noreboot-server");

/// `noreboot-server admin` on `s`'s database, trusting what `s` trusts.
pub(crate) fn admin(s: &TestServer, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .args(s.storage.args())
        .arg("--trusted-keys")
        .arg(s.trusted_dir())
        .args(["--as", "cli-test"])
        .args(args)
        .env("NOREBOOT_LOG", "warn")
        .output()
        .unwrap()
}

/// Asserts the exit status and answers stderr.
fn fails(out: Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

fn export(s: &TestServer, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["export", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    admin(s, &args)
}

fn import(s: &TestServer, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["import", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    admin(s, &args)
}

fn read_index(dir: &Path) -> Index {
    serde_json::from_slice(&std::fs::read(dir.join(INDEX)).unwrap()).unwrap()
}

/// Lets `to` trust the key `from` signs with (read by the next binary run).
fn trust(to: &TestServer, from: &TestServer) {
    from.key
        .public_key()
        .write(&to.trusted_dir().join("source.pub"))
        .unwrap();
}

/// Each level as (build-id, level, name, sha256, size, signer, CVEs, feeds).
type LevelRow = (
    String,
    i64,
    String,
    String,
    i64,
    String,
    Vec<String>,
    Vec<String>,
);

async fn levels(s: &TestServer) -> Vec<LevelRow> {
    s.ctx
        .levels(None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| {
            (
                l.build_id,
                l.level,
                l.name,
                l.sha256,
                l.size,
                l.signer,
                l.cves.into_iter().map(|c| c.cve).collect(),
                l.feeds,
            )
        })
        .collect()
}

async fn actions(s: &TestServer) -> Vec<String> {
    s.ctx
        .audit_log(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect()
}

/// A source server: KERNEL_A level 1 (test, stable), level 2 (test and a
/// `canary` feed), KERNEL_B level 1 released to stable and rolled back.
/// Answers the bundles as published.
async fn source() -> (TestServer, Vec<Vec<u8>>) {
    let a = TestServer::start().await;
    let feeds = |f: &[&str]| f.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let bundles = vec![
        a.bundle(KERNEL_A, 1, &["CVE-2024-1086"]),
        a.bundle(KERNEL_A, 2, &["CVE-2024-1086", "CVE-2025-0001"]),
        a.bundle(KERNEL_B, 1, &["CVE-2023-0002"]),
    ];
    a.ctx
        .publish(ACTOR, bundles[0].clone(), &feeds(&["test", "stable"]))
        .await
        .unwrap();
    a.ctx.create_feed(ACTOR, "canary", 0).await.unwrap();
    a.ctx
        .publish(ACTOR, bundles[1].clone(), &feeds(&["test", "canary"]))
        .await
        .unwrap();
    a.ctx
        .publish(ACTOR, bundles[2].clone(), &feeds(&["stable"]))
        .await
        .unwrap();
    a.ctx.rollback(ACTOR, "stable", KERNEL_B).await.unwrap();
    (a, bundles)
}

#[tokio::test]
async fn export_then_import_into_a_fresh_server_carries_levels_cves_and_releases() {
    let (a, bundles) = source().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("export");
    let out = ok(export(&a, &dir, &[]));
    assert!(out.contains("exported 3 bundles"), "{out}");

    // A plain directory: the index and one <sha256>.nrb per level, each
    // the published file byte for byte (what an agent's mirror needs).
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = bundles
        .iter()
        .map(|b| format!("{}.nrb", sha256_hex(b)))
        .chain([INDEX.to_string()])
        .collect();
    want.sort();
    assert_eq!(names, want);
    for b in &bundles {
        assert_eq!(
            &std::fs::read(dir.join(format!("{}.nrb", sha256_hex(b)))).unwrap(),
            b
        );
    }
    let index = read_index(&dir);
    assert_eq!(
        (index.format.as_str(), index.version),
        ("noreboot-export", 1)
    );
    let e = index
        .bundles
        .iter()
        .find(|e| e.kernel.build_id == KERNEL_A && e.level == 2)
        .unwrap();
    assert_eq!(e.sha256, sha256_hex(&bundles[1]));
    assert_eq!(e.size, bundles[1].len() as u64);
    assert_eq!(e.kernel.release, "6.1.0-47-cloud-amd64");
    assert_eq!(e.kernel.version.as_deref(), Some("6.1.170-3"));
    assert_eq!(e.name, "noreboot_test_2");
    assert_eq!(e.cves, ["CVE-2024-1086", "CVE-2025-0001"]);
    assert_eq!(e.feeds, ["canary", "test"]);
    assert_eq!(e.signer, a.key.key_id().to_string());
    assert_eq!(e.published_at, "2025-06-15T15:06:40Z");
    let b1 = index
        .bundles
        .iter()
        .find(|e| e.kernel.build_id == KERNEL_B)
        .unwrap();
    assert!(b1.feeds.is_empty(), "withdrawn releases are not exported");
    assert_eq!(actions(&a).await[0], "export");

    // A fresh server that trusts the same vendor key imports it all.
    let b = TestServer::start().await;
    trust(&b, &a);
    let started = std::time::Instant::now();
    let out = ok(import(&b, &dir, &[]));
    eprintln!("import of 3 bundles: {:?}", started.elapsed());
    assert!(out.contains("3 published, 0 present already"), "{out}");
    assert!(
        out.contains(
            "feeds in the index that do not exist here (nothing released to them): canary"
        ),
        "{out}"
    );
    let mut want = levels(&a).await;
    // `canary` does not exist on b.
    want[1].7 = vec!["test".to_string()];
    assert_eq!(levels(&b).await, want);
    for bytes in &bundles {
        assert_eq!(
            &b.ctx.blobs.get(&sha256_hex(bytes)).await.unwrap().unwrap(),
            bytes
        );
    }
    let acts = actions(&b).await;
    assert_eq!(acts[0], "import");
    assert_eq!(acts.iter().filter(|a| *a == "publish").count(), 3);

    // Hosts registered on b get their feed's level (b's clock: after the
    // binary's publications, which used the real time).
    b.clock.set(SystemClock.now() + 60);
    assert_eq!(b.target_on("stable", KERNEL_A).await, Some(1));
    assert_eq!(b.target_on("test", KERNEL_A).await, Some(2));
    assert_eq!(b.target_on("stable", KERNEL_B).await, None);

    // Importing again changes nothing but the audit trail.
    let before = actions(&b).await.len();
    let out = ok(import(&b, &dir, &[]));
    assert!(
        out.contains("0 published, 3 present already, 0 skipped"),
        "{out}"
    );
    assert_eq!(levels(&b).await, want);
    let acts = actions(&b).await;
    assert_eq!(acts.len(), before + 1);
    assert_eq!(acts[0], "import");
}

#[tokio::test]
async fn import_feed_selection_keeps_local_rollbacks_and_skips_superseded_levels() {
    let (a, _) = source().await;
    let tmp = tempfile::tempdir().unwrap();

    // Export filters: one kernel; or only the stable feed's releases.
    let only_b = tmp.path().join("only-b");
    ok(export(&a, &only_b, &["--kernel", KERNEL_B]));
    let i = read_index(&only_b);
    assert_eq!(i.bundles.len(), 1);
    assert_eq!(i.bundles[0].kernel.build_id, KERNEL_B);
    let stable = tmp.path().join("stable");
    ok(export(&a, &stable, &["--feed", "stable"]));
    let i = read_index(&stable);
    assert_eq!(i.bundles.len(), 1);
    assert_eq!(
        (i.bundles[0].level, i.bundles[0].feeds.clone()),
        (1, vec!["stable".to_string()])
    );
    let out = export(&a, &tmp.path().join("x"), &["--feed", "nosuch"]);
    assert!(fails(out, 3).contains("nosuch"));

    let full = tmp.path().join("full");
    ok(export(&a, &full, &[]));

    // --feed test: released to test only.
    let b = TestServer::start().await;
    trust(&b, &a);
    ok(import(&b, &full, &["--feed", "test"]));
    let feeds: Vec<Vec<String>> = levels(&b).await.into_iter().map(|l| l.7).collect();
    assert_eq!(feeds, [vec!["test"], vec!["test"], vec![]]);
    b.clock.set(SystemClock.now() + 60);
    // b rolls KERNEL_A level 2 back on test; importing again releases
    // level 1 to stable (never released there) but leaves test alone.
    b.ctx.rollback(ACTOR, "test", KERNEL_A).await.unwrap();
    let out = ok(import(&b, &full, &[]));
    assert!(out.contains("released to stable"), "{out}");
    let feeds: Vec<Vec<String>> = levels(&b).await.into_iter().map(|l| l.7).collect();
    assert_eq!(feeds, [vec!["stable", "test"], vec![], vec![]]);
    assert_eq!(actions(&b).await[..2], ["import", "promote"]);
    let out = import(&b, &full, &["--feed", "nosuch"]);
    assert!(fails(out, 3).contains("no feed named \"nosuch\""));

    // A server that got level 2 first: level 1 comes later, superseded.
    let c = TestServer::start().await;
    trust(&c, &a);
    let kernel_a2 = tmp.path().join("a2");
    a.ctx
        .export(
            ACTOR,
            &kernel_a2,
            &[KERNEL_A.to_string()],
            &["canary".to_string()],
            false,
        )
        .await
        .unwrap();
    c.ctx.create_feed(ACTOR, "canary", 0).await.unwrap();
    ok(import(&c, &kernel_a2, &[]));
    let out = ok(import(&c, &full, &[]));
    assert!(
        out.contains("1 published, 1 present already, 1 skipped"),
        "{out}"
    );
    let got: Vec<(String, i64, Vec<String>)> = levels(&c)
        .await
        .into_iter()
        .map(|l| (l.0, l.1, l.7))
        .collect();
    assert_eq!(
        got,
        [
            (
                KERNEL_A.to_string(),
                2,
                vec!["canary".to_string(), "test".to_string()]
            ),
            (KERNEL_B.to_string(), 1, vec![]),
        ]
    );
}

#[tokio::test]
async fn import_refuses_tampered_missing_extra_untrusted_and_conflicting_bundles() {
    let (a, bundles) = source().await;
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    ok(export(&a, &good, &[]));
    let copy = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
        d
    };
    let file2 = format!("{}.nrb", sha256_hex(&bundles[1]));

    let b = TestServer::start().await;
    trust(&b, &a);

    // One flipped byte: refused, naming the file, before anything is recorded.
    let tampered = copy("tampered");
    let mut bytes = std::fs::read(tampered.join(&file2)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(tampered.join(&file2), bytes).unwrap();
    let err = fails(import(&b, &tampered, &[]), 4);
    assert!(
        err.contains(&file2) && err.contains("changed or damaged"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");

    // A file the index names is missing; a .nrb the index does not name.
    let missing = copy("missing");
    std::fs::remove_file(missing.join(&file2)).unwrap();
    let err = fails(import(&b, &missing, &[]), 3);
    assert!(
        err.contains(&format!("named in index.json but missing: {file2}")),
        "{err}"
    );
    let extra = copy("extra");
    std::fs::write(extra.join("stray.nrb"), &bundles[0]).unwrap();
    std::fs::write(extra.join("README"), "ignored").unwrap();
    let err = fails(import(&b, &extra, &[]), 4);
    assert!(err.contains("not in index.json: stray.nrb"), "{err}");

    // No index: an unfinished export (or none at all).
    let unfinished = copy("unfinished");
    std::fs::remove_file(unfinished.join(INDEX)).unwrap();
    let err = fails(import(&b, &unfinished, &[]), 3);
    assert!(err.contains("has no index.json"), "{err}");

    // An index that lies about a bundle it lists.
    let lying = copy("lying");
    let mut index = read_index(&lying);
    index.bundles[0].cves.push("CVE-2099-0001".into());
    std::fs::write(lying.join(INDEX), serde_json::to_vec(&index).unwrap()).unwrap();
    let err = fails(import(&b, &lying, &[]), 4);
    assert!(err.contains("does not describe this bundle"), "{err}");

    assert!(levels(&b).await.is_empty());
    // Every attempt is in the audit trail, with its error.
    let audit = b.ctx.audit_log(100).await.unwrap();
    assert_eq!(audit.len(), 5);
    assert!(audit
        .iter()
        .all(|e| e.action == "import" && e.detail.contains("\"error\":\"")));

    // A server that does not trust the signing key refuses, naming the file.
    let c = TestServer::start().await;
    let err = fails(import(&c, &good, &[]), 4);
    assert!(
        err.contains("bundle refused: ") && err.contains("not trusted"),
        "{err}"
    );
    assert!(err.contains(".nrb: "), "{err}");
    assert!(levels(&c).await.is_empty());

    // A level published here already with another bundle: refused whole.
    c.publish(KERNEL_B, 1, &["stable"]).await;
    trust(&c, &a);
    let err = fails(import(&c, &good, &[]), 4);
    let file_b = format!("{}.nrb", sha256_hex(&bundles[2]));
    assert!(
        err.contains(&file_b) && err.contains("different bundle"),
        "{err}"
    );
    assert_eq!(levels(&c).await.len(), 1);

    // The good export still imports.
    ok(import(&b, &good, &[]));
    assert_eq!(levels(&b).await.len(), 3);
}

#[tokio::test]
async fn empty_export_and_replacing_an_export() {
    let a = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("export");
    ok(export(&a, &dir, &[]));
    let index = read_index(&dir);
    assert!(index.bundles.is_empty());
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1);
    let b = TestServer::start().await;
    let out = ok(import(&b, &dir, &[]));
    assert!(out.contains("0 published"), "{out}");
    assert_eq!(actions(&b).await, ["import"]);

    // Not over an export (or anything else) without --force.
    a.publish(KERNEL_A, 1, &["stable"]).await;
    a.publish(KERNEL_B, 1, &["stable"]).await;
    let err = fails(export(&a, &dir, &[]), 4);
    assert!(err.contains("is not empty"), "{err}");
    ok(export(&a, &dir, &["--force"]));
    assert_eq!(read_index(&dir).bundles.len(), 2);
    // Replaced by a smaller export: the other kernel's bundle goes.
    let out = ok(export(&a, &dir, &["--force", "--kernel", KERNEL_A]));
    assert!(out.contains("removed from the previous export"), "{out}");
    let nrb = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".nrb")
        })
        .count();
    assert_eq!(nrb, 1);
    let err = fails(
        export(
            &a,
            &tmp.path().join("y"),
            &["--kernel", KERNEL_A.get(..8).unwrap()],
        ),
        3,
    );
    assert!(err.contains("no kernel with build-id"), "{err}");
}
