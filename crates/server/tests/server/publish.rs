//! Publishing: signed bundles are accepted, stored by hash and their
//! kernel registered; unsigned, tampered, untrusted and malformed ones are
//! refused with a message naming the problem, and leave no trace.

use bundle::container;
use bundle::manifest::Module;
use reqwest::{Method, StatusCode};
use server::blobs::sha256_hex;
use server::model::Role;

use crate::common::*;

async fn publish_http(
    s: &TestServer,
    token: &str,
    query: &str,
    bytes: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    s.call(
        Method::POST,
        &format!("/api/v1/admin/publish{query}"),
        Some(token),
        Some(Body::Raw(bytes, "application/octet-stream")),
    )
    .await
}

#[tokio::test]
async fn signed_bundle_is_published_stored_by_hash_and_audited() {
    let s = TestServer::start().await;
    let token = s.token("release-bot", Role::Admin).await;
    let bytes = s.bundle(KERNEL_A, 1, &["CVE-2024-1086", "CVE-2023-0001"]);
    let (status, body) = publish_http(&s, &token, "?feed=test&feed=stable", bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sha = sha256_hex(&bytes);
    assert_eq!(body["sha256"], sha.as_str());
    assert_eq!(body["new_kernel"], true);
    assert_eq!(body["feeds"], serde_json::json!(["stable", "test"]));
    assert_eq!(s.ctx.blobs.get(&sha).await.unwrap().unwrap(), bytes);

    let (_, kernels) = s
        .call(Method::GET, "/api/v1/admin/kernels", Some(&token), None)
        .await;
    let k = &kernels["kernels"][0];
    assert_eq!(k["build_id"], KERNEL_A);
    assert_eq!(k["release"], "6.1.0-47-cloud-amd64");
    assert_eq!(k["version"], "6.1.170-3");
    assert_eq!(k["newest_level"], 1);

    let (_, levels) = s
        .call(
            Method::GET,
            &format!("/api/v1/admin/levels?kernel={KERNEL_A}"),
            Some(&token),
            None,
        )
        .await;
    let l = &levels["levels"][0];
    assert_eq!(l["level"], 1);
    assert_eq!(l["size"], bytes.len());
    assert_eq!(l["effective_version"], "6.1.170-3+nr1");
    assert_eq!(l["cves"][0]["cve"], "CVE-2023-0001");
    assert_eq!(l["cves"][1]["description"], "CVE-2024-1086 test fix");
    assert_eq!(l["signer"], s.key.key_id().to_string());
    assert_eq!(l["published_at"], "2025-06-15T15:06:40Z");

    let (_, audit) = s
        .call(Method::GET, "/api/v1/admin/audit", Some(&token), None)
        .await;
    let a = &audit["audit"][0];
    assert_eq!(a["action"], "publish");
    assert_eq!(a["actor"], "release-bot");
    assert_eq!(a["target"], format!("{KERNEL_A} level 1"));
    assert_eq!(a["detail"]["sha256"], sha.as_str());
}

#[tokio::test]
async fn unsigned_tampered_untrusted_and_malformed_bundles_are_refused() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;

    // Unsigned: a well-formed manifest and module without the signature.
    let module = b"\x7fELF unsigned";
    let mut m = manifest(KERNEL_A, 1, &[]);
    m.module = Module {
        sha256: sha256_hex(module),
        size: module.len() as u64,
    };
    let unsigned = container::write_members(&[
        (container::MANIFEST, &m.to_json()),
        (container::MODULE, module),
    ])
    .unwrap();

    // Tampered: the signed manifest's text changed after signing.
    let mut tampered = s.bundle(KERNEL_A, 1, &[]);
    let at = tampered
        .windows(10)
        .position(|w| w == b"test patch")
        .unwrap();
    tampered[at..at + 10].copy_from_slice(b"evil patch");

    // Swapped module: the signature is fine, the module is not the one it pins.
    let mut swapped = s.bundle(KERNEL_A, 1, &[]);
    let at = swapped.windows(4).position(|w| w == b"\x7fELF").unwrap();
    swapped[at + 4] ^= 0x20;

    let stranger = bundle::SecretKey::generate().unwrap();
    let untrusted = make_bundle(&stranger, KERNEL_A, 1, &[]);

    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("unsigned", unsigned, "unsigned"),
        ("tampered manifest", tampered, "bad signature"),
        ("swapped module", swapped, "sha256"),
        ("untrusted key", untrusted, "not trusted"),
        ("garbage", b"this is not a tar file".to_vec(), "bundle"),
        ("empty", Vec::new(), "bundle"),
    ];
    for (what, bytes, expect) in cases {
        let (status, body) = publish_http(&s, &token, "?feed=stable", bytes).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.starts_with("bundle refused: "), "{what}: {msg}");
        assert!(
            msg.contains(expect),
            "{what}: {msg:?} should mention {expect:?}"
        );
    }
    assert!(s.ctx.levels(None).await.unwrap().is_empty());
    assert!(s.ctx.kernels().await.unwrap().is_empty());
    // Only the token creation is in the audit trail.
    assert_eq!(s.ctx.audit_log(100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn levels_only_move_forward() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    let (status, _) = publish_http(&s, &token, "", s.bundle(KERNEL_A, 2, &[])).await;
    assert_eq!(status, StatusCode::CREATED);
    for level in [1, 2] {
        let (status, body) = publish_http(&s, &token, "", s.bundle(KERNEL_A, level, &[])).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("not newer than level 2"),
            "{body}"
        );
    }
    // Another kernel has its own levels.
    let (status, _) = publish_http(&s, &token, "", s.bundle(KERNEL_B, 1, &[])).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = publish_http(&s, &token, "", s.bundle(KERNEL_A, 3, &[])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["new_kernel"], false);
}

#[tokio::test]
async fn publish_to_unknown_feed_records_nothing() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    let (status, body) = publish_http(&s, &token, "?feed=nosuch", s.bundle(KERNEL_A, 1, &[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nosuch"));
    let (status, body) = publish_http(&s, &token, "?level=1", s.bundle(KERNEL_A, 1, &[])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(s.ctx.levels(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn no_trusted_keys_refuses_everything_with_the_directory_named() {
    let dir = tempfile::tempdir().unwrap();
    let opts = server::Options {
        db_url: Storage::new(dir.path()).db_url,
        data_dir: dir.path().to_path_buf(),
        trusted_keys: None,
    };
    let ctx = server::Context::open(&opts, std::sync::Arc::new(server::clock::SystemClock))
        .await
        .unwrap();
    let key = bundle::SecretKey::generate().unwrap();
    let err = ctx
        .publish(ACTOR, make_bundle(&key, KERNEL_A, 1, &[]), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no trusted keys"), "{err}");
    assert!(err.contains("trusted.d"), "{err}");
}

/// Issue 16, point 11: a data directory the server creates is 0700 and
/// its SQLite database 0600, whatever the umask (with the usual 022 they
/// were 0755 and 0644: the fleet's tokens readable by every local user).
#[tokio::test]
async fn a_new_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/data");
    let opts = server::Options {
        db_url: None,
        data_dir: data.clone(),
        trusted_keys: None,
    };
    let ctx = server::Context::open(&opts, std::sync::Arc::new(server::clock::SystemClock))
        .await
        .unwrap();
    // Something written, so SQLite has made its files.
    ctx.publish(ACTOR, vec![0u8; 10], &[]).await.unwrap_err();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("noreboot.db")), 0o600);
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().contains("noreboot.db") {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}
