use super::*;
use crate::config::{Cli, Config, EnvConfig};

fn sign(header: &str, payload: &str, secret: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

fn shared() -> Shared {
    let cli = Cli {
        master_token: Some("master".into()),
        shards: Some(1),
        ..Cli::default()
    };
    let mut cfg = Config::load(&cli).unwrap();
    cfg.environments = vec![
        EnvConfig {
            session_secret: Some("s3cret".into()),
            ..EnvConfig::default_env()
        },
        EnvConfig {
            id: "off".into(),
            enabled: false,
            ..EnvConfig::default_env()
        },
    ];
    Shared::new(cfg)
}

const HS: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[test]
fn verifies_hs256_and_claims() {
    let t = sign(HS, r#"{"sub":"u1","exp":2000}"#, b"k");
    assert_eq!(verify_hs256(&t, b"k", 1000).as_deref(), Some("u1"));
    assert_eq!(verify_hs256(&t, b"k", 2000), None, "expired");
    assert_eq!(verify_hs256(&t, b"other", 1000), None, "wrong secret");
    let none = sign(r#"{"alg":"none"}"#, r#"{"sub":"u1"}"#, b"k");
    assert_eq!(verify_hs256(&none, b"k", 1000), None, "alg none");
    let nosub = sign(HS, r#"{"exp":2000}"#, b"k");
    assert_eq!(verify_hs256(&nosub, b"k", 1000), None);
    let early = sign(HS, r#"{"sub":"u","nbf":5000}"#, b"k");
    assert_eq!(verify_hs256(&early, b"k", 1000), None);
    assert_eq!(verify_hs256("a.b", b"k", 0), None);
    assert_eq!(verify_hs256("a.b.c.d", b"k", 0), None);
    let mut tampered = t.clone();
    tampered.insert(tampered.find('.').unwrap() + 2, 'x');
    assert_eq!(verify_hs256(&tampered, b"k", 1000), None);
}

#[test]
fn deeply_nested_token_json_is_refused_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let t = sign(&deep, &deep, b"k");
    assert_eq!(verify_hs256(&t, b"k", 0), None);
}

#[test]
fn identities() {
    let s = shared();
    assert_eq!(
        authenticate(&s, r#"{"accessToken":"master"}"#, 0),
        Ok(Identity::Master)
    );
    assert_eq!(
        authenticate(&s, r#"{"accessToken":"nope"}"#, 0).unwrap_err().code,
        "invalid_access_token"
    );
    assert_eq!(
        authenticate(&s, "", 0),
        Ok(Identity::Client {
            env: 0,
            echo: false,
            user: None
        })
    );
    let session = sign(HS, r#"{"sub":"alice"}"#, b"s3cret");
    let auth = format!(r#"{{"envId":"default","echoMessages":true,"session":"{session}"}}"#);
    assert_eq!(
        authenticate(&s, &auth, 0),
        Ok(Identity::Client {
            env: 0,
            echo: true,
            user: Some("alice".into())
        })
    );
    assert_eq!(
        authenticate(&s, r#"{"envId":"x"}"#, 0).unwrap_err().code,
        "no_environment_found"
    );
    assert_eq!(
        authenticate(&s, r#"{"envId":"off"}"#, 0).unwrap_err().code,
        "realtime_not_allowed"
    );
    assert_eq!(authenticate(&s, "[1]", 0).unwrap_err().code, "invalid_handshake");
}

#[test]
fn refusal_data_shape() {
    let r = Refusal::new("T", "c", "d \"q\"");
    assert_eq!(
        r.data_json(),
        r#"{"origin":"client_error","code":"c","message":"d \"q\""}"#
    );
}
