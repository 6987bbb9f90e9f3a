//! The TLS configuration from certificate and key files (modern defaults,
//! each bad file named with its reason), and one connection's seal of a
//! write against a rustls client, handshaken in memory.

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

/// A server connection under `config`, with `queue_bytes_max`, and a
/// rustls client trusting `cert`, handshaken in memory.
fn handshaken(
    config: Arc<ServerConfig>,
    cert: &str,
    queue_bytes_max: usize,
) -> (Tls, rustls::ClientConnection) {
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("certificate");
    roots.add(der).expect("trust it");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
    let tls = Tls::new(config, queue_bytes_max).expect("server");
    let mut wire = Vec::new();
    while client.is_handshaking() || tls.is_handshaking() {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client writes");
        }
        let mut server = tls.conn.borrow_mut();
        server.read_tls(&mut &wire[..]).expect("server reads");
        server.process_new_packets().expect("server handshakes");
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).expect("server writes");
        }
        client.read_tls(&mut &wire[..]).expect("client reads");
        client.process_new_packets().expect("client handshakes");
    }
    (tls, client)
}

/// One write takes at most 64 KiB of plaintext from a connection, or its
/// queue cap if that is smaller, so the ciphertext a connection holds
/// while its write is in flight is bounded by both; what it seals is what
/// the client reads.
#[test]
fn a_write_seals_at_most_the_queue_cap_or_64_kib() {
    let (cert, key) = self_signed();
    let config = load(&files("limit", &cert, &key)).expect("load");
    let plaintext: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    for (queue_bytes_max, taken_max) in [(4096, 4096), (4 << 20, 64 * 1024)] {
        let (tls, mut client) = handshaken(config.clone(), &cert, queue_bytes_max);
        // The session tickets rustls sends after the handshake.
        let mut tickets = Vec::new();
        assert_eq!(tls.seal(&[], &mut tickets).expect("seal"), 0);
        let mut ciphertext = Vec::new();
        let taken = tls
            .seal(&[IoSlice::new(&plaintext)], &mut ciphertext)
            .expect("seal");
        assert!(
            taken > 0 && taken <= taken_max,
            "{taken} bytes taken with a cap of {queue_bytes_max}"
        );
        // Record overhead: 22 bytes per record of at most 16 KiB.
        let records = taken.div_ceil(16 * 1024);
        assert_eq!(ciphertext.len(), taken + records * 22, "{records} records");
        let mut read = Vec::new();
        for wire in [&tickets, &ciphertext] {
            let mut wire = &wire[..];
            while !wire.is_empty() {
                client.read_tls(&mut wire).expect("client reads");
                let state = client.process_new_packets().expect("client decrypts");
                let mut chunk = vec![0; state.plaintext_bytes_to_read()];
                client.reader().read_exact(&mut chunk).expect("plaintext");
                read.extend_from_slice(&chunk);
            }
        }
        assert!(read == plaintext[..taken], "the client reads what was sealed");
    }
}
