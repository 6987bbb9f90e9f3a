use std::path::PathBuf;

use super::*;

/// A self-signed certificate for `localhost` and its key, as PEM.
fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("generate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// Writes `cert` and `key` into a fresh directory; returns their files.
fn files(name: &str, cert: &str, key: &str) -> TlsFiles {
    let dir = std::env::temp_dir().join(format!("ringcast-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert).expect("write cert");
    std::fs::write(&key_file, key).expect("write key");
    TlsFiles {
        cert: cert_file,
        key: key_file,
    }
}

fn refusal(files: &TlsFiles) -> LoadError {
    match load(files) {
        Ok(_) => panic!("{files:?} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_matching_pair_loads_with_modern_defaults() {
    let (cert, key) = self_signed();
    let config = load(&files("good", &cert, &key)).expect("load");
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(config.ticketer.enabled(), "stateless resumption");
    let versions: Vec<_> = config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| s.version().version)
        .collect();
    assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
    assert!(versions.iter().all(|v| matches!(
        v,
        rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
    )));
}

#[test]
fn each_bad_file_is_named_with_its_reason() {
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();

    let missing = TlsFiles {
        cert: PathBuf::from("/nonexistent/ringcast/cert.pem"),
        key: PathBuf::from("/nonexistent/ringcast/key.pem"),
    };
    let e = refusal(&missing);
    assert_eq!(e.file, "/nonexistent/ringcast/cert.pem");
    assert!(e.reason.starts_with("cannot read"), "{e}");

    let swapped = files("swapped", &key, &cert);
    let e = refusal(&swapped);
    assert_eq!(e.file, swapped.cert.display().to_string());
    assert!(e.reason.contains("no certificate"), "{e}");

    let no_key = files("nokey", &cert, &cert);
    let e = refusal(&no_key);
    assert_eq!(e.file, no_key.key.display().to_string());
    assert!(e.reason.contains("no private key"), "{e}");

    let mismatch = files("mismatch", &cert, &other_key);
    let e = refusal(&mismatch);
    assert_eq!(e.file, mismatch.key.display().to_string());
    assert_eq!(e.reason, "the private key does not match the certificate");

    let garbage = files("garbage", "-----BEGIN CERTIFICATE-----\nnot base64!\n", &key);
    let e = refusal(&garbage);
    assert_eq!(e.file, garbage.cert.display().to_string());
    assert!(e.reason.contains("not valid PEM"), "{e}");
}
