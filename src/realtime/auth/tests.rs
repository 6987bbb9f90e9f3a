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
    assert_eq!(
        verify_hs256(&t, b"k", 1000),
        Some(Verified {
            user: "u1".into(),
            expires_at_s: Some(2000)
        })
    );
    assert_eq!(
        verify_hs256(&t, b"k", 1999).map(|v| v.user).as_deref(),
        Some("u1")
    );
    let fractional = sign(HS, r#"{"sub":"u1","exp":1999.5}"#, b"k");
    assert_eq!(
        verify_hs256(&fractional, b"k", 1999).and_then(|v| v.expires_at_s),
        Some(2000)
    );
    assert_eq!(verify_hs256(&fractional, b"k", 2000), None);
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
            credentials: Credentials::default(),
            valid_until_s: u64::MAX,
        })
    );
    let session = sign(HS, r#"{"sub":"alice"}"#, b"s3cret");
    let with_session = format!(r#"{{"envId":"default","echoMessages":true,"session":"{session}"}}"#);
    let alice = SessionCheck::Valid {
        user: "alice".into(),
        expires_at_s: None,
        secret: secret_print("s3cret"),
    };
    assert_eq!(
        auth(&with_session),
        Ok(Identity::Client {
            env: 0,
            echo: true,
            credentials: Credentials {
                session: alice,
                ..Credentials::default()
            },
            // A session that is not required does not time the admission.
            valid_until_s: u64::MAX,
        })
    );
    // An invalid session that is not required is ignored, not refused.
    let forged = sign(HS, r#"{"sub":"alice"}"#, b"wrong");
    let ignored = auth(&format!(r#"{{"session":"{forged}"}}"#)).unwrap();
    let Identity::Client { credentials, .. } = ignored else {
        panic!("a client")
    };
    assert_eq!(credentials.session, SessionCheck::Invalid);
    assert_eq!(credentials.session.user(), None);
    // A key that is not required is remembered all the same.
    let Ok(Identity::Client { credentials, .. }) = auth(r#"{"apiKey":"k","session":""}"#) else {
        panic!("accepted")
    };
    assert_eq!(credentials.api_key.as_deref(), Some("k"));
    assert_eq!(
        credentials.session,
        SessionCheck::Absent,
        "an empty session is none"
    );
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
            credentials: Credentials {
                api_key: Some("good".into()),
                session: SessionCheck::Valid {
                    user: "bob".into(),
                    expires_at_s: Some(2000),
                    secret: secret_print("k2"),
                },
                ..Credentials::default()
            },
            // The required session expires then.
            valid_until_s: 2000,
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

/// The rules a connected client is held to are the rules it connected
/// under, both ways: for every environment it connected to, every later
/// version of that environment and every later time, asking [`admit`] with
/// the credentials it kept gives the same answer as connecting again with
/// the same handshake from the same peer would.
#[test]
fn a_connected_client_is_held_to_the_connect_rules() {
    let key = |k: &str| ApiKey {
        key: k.into(),
        allow_realtime: true,
        expires_at: None,
        origins: Rule::All,
        ips: Rule::All,
    };
    let base = EnvSettings {
        session_secret: Some("secret-a".into()),
        api_keys: vec![
            key("k-all"),
            ApiKey {
                origins: Rule::List(vec!["*.example.com".into()]),
                ..key("k-web")
            },
            ApiKey {
                ips: Rule::List(vec!["10.0.0.0/8".into()]),
                ..key("k-lan")
            },
            ApiKey {
                expires_at: Some(Timestamp(1500)),
                ..key("k-until-1500")
            },
        ],
        ..EnvSettings::named("e")
    };
    let variants: Vec<EnvSettings> = {
        let with = |f: &dyn Fn(&mut EnvSettings)| {
            let mut env = base.clone();
            f(&mut env);
            env
        };
        let mut v = vec![base.clone()];
        v.push(with(&|e| e.api_key_required = true));
        v.push(with(&|e| e.session_required = true));
        v.push(with(&|e| {
            e.api_key_required = true;
            e.session_required = true;
        }));
        v.push(with(&|e| e.suspended = true));
        v.push(with(&|e| e.enabled = false));
        v.push(with(&|e| {
            e.api_key_required = true;
            e.api_keys.retain(|k| k.key != "k-all");
        }));
        v.push(with(&|e| e.api_keys.clear()));
        v.push(with(&|e| {
            e.api_key_required = true;
            e.api_keys[0].allow_realtime = false;
        }));
        v.push(with(&|e| {
            e.api_key_required = true;
            e.api_keys[0].expires_at = Some(Timestamp(1200));
        }));
        v.push(with(&|e| {
            e.api_key_required = true;
            e.api_keys[1].origins = Rule::List(vec!["https://other.org".into()]);
            e.api_keys[2].ips = Rule::List(vec!["192.0.2.0/24".into()]);
        }));
        v.push(with(&|e| {
            e.session_required = true;
            e.session_secret = Some("secret-b".into());
        }));
        v
    };
    let session = sign(HS, r#"{"sub":"ann","exp":1800}"#, b"secret-a");
    let forever = sign(HS, r#"{"sub":"bob"}"#, b"secret-a");
    let forged = sign(HS, r#"{"sub":"eve"}"#, b"not-the-secret");
    let keys = [
        "",
        r#""apiKey":"k-all","#,
        r#""apiKey":"k-web","#,
        r#""apiKey":"k-lan","#,
        r#""apiKey":"k-until-1500","#,
        r#""apiKey":"nope","#,
        r#""apiKey":5,"#,
    ];
    let sessions = [
        String::new(),
        format!(r#""session":"{session}","#),
        format!(r#""session":"{forever}","#),
        format!(r#""session":"{forged}","#),
        r#""session":7,"#.to_owned(),
    ];
    let peers = [
        Peer::default(),
        Peer {
            origin: Some("https://app.example.com"),
            ip: Some("10.1.1.1".parse().unwrap()),
        },
        Peer {
            origin: Some("https://evil.org"),
            ip: Some("192.0.2.9".parse().unwrap()),
        },
    ];
    let outcome = |r: Result<u64, Refusal>| r.map(|_| ()).map_err(|r| r.code);
    let mut compared = 0;
    for before in &variants {
        for after in &variants {
            let (s_before, s_after) = (
                Settings::new(vec![before.clone()]),
                Settings::new(vec![after.clone()]),
            );
            for key in keys {
                for session in &sessions {
                    let auth_json = format!(r#"{{{key}{session}"envId":"e"}}"#);
                    for peer in peers {
                        let Ok(Identity::Client { credentials, .. }) =
                            authenticate(&s_before, "m", peer, &auth_json, 1000)
                        else {
                            continue;
                        };
                        for now in [1000, 1300, 1600, 2000] {
                            let live = outcome(admit(after, &credentials, now));
                            let again = authenticate(&s_after, "m", peer, &auth_json, now)
                                .map(|_| ())
                                .map_err(|r| r.code);
                            assert_eq!(
                                live, again,
                                "{auth_json} from {peer:?} at {now}:\n  connected under {before:?}\n  now {after:?}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 1000, "only {compared} cases compared");
}

/// What [`admit`] says until when: the earliest expiry among what it
/// required (a key or session that is not required does not time it).
#[test]
fn an_admission_holds_until_the_first_required_expiry() {
    let session = SessionCheck::Valid {
        user: "u".into(),
        expires_at_s: Some(3000),
        secret: secret_print("s"),
    };
    let credentials = Credentials {
        api_key: Some("k".into()),
        session,
        ..Credentials::default()
    };
    let mut env = EnvSettings {
        session_secret: Some("s".into()),
        api_keys: vec![ApiKey {
            key: "k".into(),
            allow_realtime: true,
            expires_at: Some(Timestamp(2000)),
            origins: Rule::All,
            ips: Rule::All,
        }],
        ..EnvSettings::named("e")
    };
    assert_eq!(admit(&env, &credentials, 1000), Ok(u64::MAX));
    env.session_required = true;
    assert_eq!(admit(&env, &credentials, 1000), Ok(3000));
    env.api_key_required = true;
    assert_eq!(admit(&env, &credentials, 1000), Ok(2000));
    assert_eq!(
        admit(&env, &credentials, 2000).unwrap_err().code,
        "expired_api_key"
    );
    env.api_key_required = false;
    assert_eq!(admit(&env, &credentials, 2999), Ok(3000));
    assert_eq!(
        admit(&env, &credentials, 3000).unwrap_err().code,
        "invalid_session_token"
    );
}
