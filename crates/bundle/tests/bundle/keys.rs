//! Key files and trusted key directories.

use std::os::unix::fs::PermissionsExt;

use bundle::{KeyError, PublicKey, SecretKey, TrustedKeys};

#[test]
fn files_round_trip_with_modes() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let sk = dir.path().join("k.key");
    let pk = dir.path().join("k.pub");
    key.write(&sk).unwrap();
    key.public_key().write(&pk).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sk), 0o600);
    assert_eq!(mode(&pk), 0o644);
    assert_eq!(SecretKey::read(&sk).unwrap().key_id(), key.key_id());
    assert_eq!(PublicKey::read(&pk).unwrap(), key.public_key());
    // Never overwritten.
    assert!(matches!(key.write(&sk), Err(KeyError::Io { .. })));
    let text = std::fs::read_to_string(&pk).unwrap();
    assert!(text.contains(&key.key_id().to_string()), "{text}");
}

#[test]
fn trusted_dir() {
    let dir = tempfile::tempdir().unwrap();
    let a = SecretKey::generate().unwrap();
    let b = SecretKey::generate().unwrap();
    a.public_key().write(&dir.path().join("a.pub")).unwrap();
    // Pasted by hand: CRLF and a trailing blank line.
    let text = b.public_key().to_minisign_string().replace('\n', "\r\n") + "\r\n";
    std::fs::write(dir.path().join("b.pub"), text).unwrap();
    std::fs::write(dir.path().join("README"), "not a key").unwrap();
    let keys = TrustedKeys::load_dir(dir.path()).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.get(&a.key_id()).is_some() && keys.get(&b.key_id()).is_some());

    std::fs::write(
        dir.path().join("c.pub"),
        "untrusted comment: x\nRWQnotakey\n",
    )
    .unwrap();
    let err = TrustedKeys::load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("c.pub") && err.contains("base64"), "{err}");
    // Skipping: the good keys stay usable and the bad file is named.
    let (keys, skipped) = TrustedKeys::load_dir_skipping(dir.path()).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, dir.path().join("c.pub"));
    assert!(
        skipped[0].1.to_string().contains("base64"),
        "{}",
        skipped[0].1
    );
    std::fs::remove_file(dir.path().join("c.pub")).unwrap();

    // Same id, different key.
    let forged = PublicKey::from_base64(&{
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut raw = b64.decode(b.public_key().to_base64()).unwrap();
        raw[2..10].copy_from_slice(&a.key_id().0);
        b64.encode(raw)
    })
    .unwrap();
    std::fs::write(dir.path().join("d.pub"), forged.to_minisign_string()).unwrap();
    let err = TrustedKeys::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, KeyError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains(&a.key_id().to_string()), "{err}");
    // Skipping keeps the first file's key and leaves the second out.
    let (keys, skipped) = TrustedKeys::load_dir_skipping(dir.path()).unwrap();
    assert_eq!(keys.get(&a.key_id()), Some(&a.public_key()));
    assert_eq!(skipped.len(), 1);
    assert!(matches!(skipped[0].1, KeyError::Conflict { .. }));
    assert!(TrustedKeys::load_dir_skipping(&dir.path().join("nope")).is_err());

    let missing = TrustedKeys::load_dir(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope"), "{missing}");
}

#[test]
fn malformed_key_files() {
    let sk = SecretKey::generate().unwrap();
    let pub_text = sk.public_key().to_minisign_string();
    for (text, needle) in [
        ("".to_string(), "line 1"),
        (pub_text.replace("untrusted comment: ", ""), "line 1"),
        (pub_text.lines().next().unwrap().to_string(), "line 2"),
        (format!("{pub_text}more\n"), "after the key"),
        (sk.to_minisign_string(), "bytes"),
    ] {
        let err = PublicKey::from_minisign_str(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let err = SecretKey::from_minisign_str(&pub_text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bytes"), "{err}");
}
