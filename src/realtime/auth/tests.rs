use super::*;
use crate::realtime::settings::{ApiKey, EnvSettings, Rule, Timestamp};

fn sign(header: &str, payload: &str, secret: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

fn settings() -> Settings {
    let key = |k: &str| ApiKey {
        key: k.into(),
        allow_realtime: true,
        expires_at: None,
        origins: Rule::All,
        ips: Rule::All,
    };
    Settings::new(vec![
        EnvSettings {
            session_secret: Some("s3cret".into()),
            ..EnvSettings::default_env()
        },
        EnvSettings {
            enabled: false,
            ..EnvSettings::named("off")
        },
        EnvSettings {
            suspended: true,
            ..EnvSettings::named("suspended")
        },
        EnvSettings {
            api_key_required: true,
            session_required: true,
            session_secret: Some("k2".into()),
            api_keys: vec![
                key("good"),
                ApiKey {
                    allow_realtime: false,
                    ..key("norealtime")
                },
                ApiKey {
                    expires_at: Some(Timestamp(100)),
                    ..key("old")
                },
                ApiKey {
                    origins: Rule::List(vec!["*.example.com".into()]),
                    ..key("web")
                },
                ApiKey {
                    ips: Rule::List(vec!["10.0.0.0/8".into()]),
                    ..key("lan")
                },
            ],
            ..EnvSettings::named("locked")
        },
    ])
}

/// The refusal's code, after checking that its title is Agnost's for that
/// code, letter for letter (apps show and compare these strings).
fn code(r: Result<Identity, Refusal>) -> &'static str {
    let refusal = r.unwrap_err();
    let agnost = match refusal.code {
        "no_environment_found" => "No Environment Found",
        "suspended_environment" => "Suspended Environment",
        "realtime_not_allowed" => "Realtime Disabled",
        "missing_api_key" => "Missing API Key",
        "invalid_api_key" => "Invalid API Key",
        "unauthorizez_api_key" => "Unauthorized API Key",
        "expired_api_key" => "Expired API Key",
        "missing_request_origin" => "Origin Domain Not Found",
        "domain_not_authorized" => "Origin Domain Not Authorized",
        "missing_client_IP" => "IP Address Not Found",
        "ip_not_authorized" => "IP Address Not Authorized",
        "missing_session_token" => "Missing Session Token",
        "invalid_session_token" => "Invalid Session Token",
        "invalid_access_token" => "Invalid Access Token",
        "invalid_handshake" => "Invalid Handshake",
        other => panic!("unexpected code {other}"),
    };
    assert_eq!(refusal.title, format!("Realtime Connection Error - {agnost}"));
    refusal.code
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
    let s = settings();
    let none = Peer::default();
    let auth = |json: &str| authenticate(&s, "master", none, json, 1000);
    assert_eq!(auth(r#"{"accessToken":"master"}"#), Ok(Identity::Master));
    assert_eq!(code(auth(r#"{"accessToken":"nope"}"#)), "invalid_access_token");
    assert_eq!(
        auth(""),
        Ok(Identity::Client {
            env: 0,
            echo: false,
            user: None,
            api_key: None
        })
    );
    let session = sign(HS, r#"{"sub":"alice"}"#, b"s3cret");
    let with_session = format!(r#"{{"envId":"default","echoMessages":true,"session":"{session}"}}"#);
    assert_eq!(
        auth(&with_session),
        Ok(Identity::Client {
            env: 0,
            echo: true,
            user: Some("alice".into()),
            api_key: None
        })
    );
    // An invalid session that is not required is ignored, not refused.
    let forged = sign(HS, r#"{"sub":"alice"}"#, b"wrong");
    let ignored = auth(&format!(r#"{{"session":"{forged}"}}"#)).unwrap();
    assert!(matches!(ignored, Identity::Client { user: None, .. }));
    assert_eq!(code(auth(r#"{"envId":"x"}"#)), "no_environment_found");
    assert_eq!(code(auth(r#"{"envId":"off"}"#)), "realtime_not_allowed");
    assert_eq!(code(auth(r#"{"envId":"suspended"}"#)), "suspended_environment");
    assert_eq!(code(auth("[1]")), "invalid_handshake");
}

#[test]
fn api_keys_then_sessions_in_order() {
    let s = settings();
    let session = sign(HS, r#"{"sub":"bob","exp":2000}"#, b"k2");
    let ok = |key: &str, peer: Peer<'_>| {
        authenticate(
            &s,
            "m",
            peer,
            &format!(r#"{{"envId":"locked","apiKey":"{key}","session":"{session}"}}"#),
            1000,
        )
    };
    let none = Peer::default();
    let lan: IpAddr = "10.1.2.3".parse().unwrap();
    let wan: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        ok("good", none),
        Ok(Identity::Client {
            env: 3,
            echo: false,
            user: Some("bob".into()),
            api_key: Some("good".into())
        })
    );
    let missing = authenticate(&s, "m", none, r#"{"envId":"locked"}"#, 1000);
    assert_eq!(code(missing), "missing_api_key");
    assert_eq!(code(ok("bogus", none)), "invalid_api_key");
    assert_eq!(code(ok("norealtime", none)), "unauthorizez_api_key");
    assert_eq!(code(ok("old", none)), "expired_api_key");
    assert_eq!(code(ok("web", none)), "missing_request_origin");
    let evil = Peer {
        origin: Some("https://evil.org"),
        ip: None,
    };
    assert_eq!(code(ok("web", evil)), "domain_not_authorized");
    let good_origin = Peer {
        origin: Some("https://app.example.com"),
        ip: None,
    };
    assert!(ok("web", good_origin).is_ok());
    assert_eq!(code(ok("lan", none)), "missing_client_IP");
    assert_eq!(
        code(ok(
            "lan",
            Peer {
                origin: None,
                ip: Some(wan)
            }
        )),
        "ip_not_authorized"
    );
    assert!(ok(
        "lan",
        Peer {
            origin: None,
            ip: Some(lan)
        }
    )
    .is_ok());
    let no_session = authenticate(&s, "m", none, r#"{"envId":"locked","apiKey":"good"}"#, 1000);
    assert_eq!(code(no_session), "missing_session_token");
    let expired = authenticate(
        &s,
        "m",
        none,
        &format!(r#"{{"envId":"locked","apiKey":"good","session":"{session}"}}"#),
        3000,
    );
    assert_eq!(code(expired), "invalid_session_token");
}

#[test]
fn refusal_data_shape() {
    let r = Refusal::new("T", "c", "d \"q\"");
    assert_eq!(
        r.data_json(),
        r#"{"origin":"client_error","code":"c","message":"d \"q\""}"#
    );
}
