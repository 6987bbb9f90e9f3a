use super::*;

#[test]
fn wildcard_matches_exactly_one_level() {
    assert!(origin_matches("*.example.com", "https://app.example.com"));
    assert!(origin_matches("*.example.com", "http://app.example.com:8080"));
    assert!(!origin_matches("*.example.com", "https://a.b.example.com"));
    assert!(!origin_matches("*.example.com", "https://example.com"));
    assert!(!origin_matches("*.example.com", "https://evilexample.com"));
    assert!(origin_matches("example.com", "https://EXAMPLE.com"));
    assert!(origin_matches("https://example.com", "https://example.com/"));
    assert!(!origin_matches("https://example.com", "http://example.com"));
    assert!(!origin_matches("example.com", "https://example.com.evil.org"));
}

#[test]
fn ip_rules_with_cidr() {
    let key = ApiKey {
        key: "k".into(),
        allow_realtime: true,
        expires_at: None,
        origins: Rule::All,
        ips: Rule::List(vec![
            "10.0.0.0/8".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "2001:db8::/32".into(),
        ]),
    };
    assert!(key.ip_allowed("10.1.2.3".parse().unwrap()));
    assert!(key.ip_allowed("127.0.0.1".parse().unwrap()));
    assert!(!key.ip_allowed("127.0.0.2".parse().unwrap()));
    assert!(key.ip_allowed("::1".parse().unwrap()));
    assert!(key.ip_allowed("2001:db8::7".parse().unwrap()));
    assert!(!key.ip_allowed("2001:db9::7".parse().unwrap()));
}

#[test]
fn client_ip_skips_trusted_proxies() {
    let trusted = vec![parse_net("127.0.0.0/8").unwrap(), parse_net("10.0.0.1").unwrap()];
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let direct: IpAddr = "192.0.2.9".parse().unwrap();
    assert_eq!(client_ip(direct, Some("1.1.1.1"), &trusted), Some(direct));
    assert_eq!(
        client_ip(proxy, Some("6.6.6.6, 203.0.113.5, 10.0.0.1"), &trusted),
        Some("203.0.113.5".parse().unwrap())
    );
    assert_eq!(client_ip(proxy, None, &trusted), None);
    assert_eq!(client_ip(proxy, Some("garbage"), &trusted), None);
    assert_eq!(client_ip(proxy, Some("10.0.0.1"), &trusted), None);
    assert_eq!(
        client_ip(proxy, Some("[2001:db8::1]:443"), &trusted),
        Some("2001:db8::1".parse().unwrap())
    );
}

#[test]
fn keys_keep_their_slots_across_changes() {
    let s = Settings::new(vec![EnvSettings::named("a"), EnvSettings::named("b")]);
    assert_eq!(s.key("b"), Some(1));
    let t = s.replaced_by(vec![EnvSettings::named("b"), EnvSettings::named("c")]);
    assert_eq!(t.version, 1);
    assert_eq!(t.key("a"), Some(0));
    assert!(t.get(0).is_none(), "a removed");
    assert_eq!(t.key("b"), Some(1));
    assert_eq!(t.key("c"), Some(2));
    assert_eq!(
        (0..t.key_count())
            .filter(|&k| t.get(k as EnvKey).is_some())
            .count(),
        2
    );
    let u = t.with(EnvSettings::named("a"));
    assert_eq!(u.key("a"), Some(0));
    assert!(u.get(0).is_some());
}

#[test]
fn validation() {
    let mut e = EnvSettings::named("x");
    assert!(e.validate().is_ok());
    e.session_required = true;
    let err = e.validate().unwrap_err();
    assert_eq!(err.field, "session_secret");
    assert!(err.to_string().contains("session_secret"), "{err}");
    e.session_required = false;
    e.rate_limits.push(RateLimit {
        limit: 0,
        window_s: 1,
        message: "m".into(),
    });
    assert_eq!(e.validate().unwrap_err().field, "rate_limits[0].limit");
    e.rate_limits[0] = RateLimit {
        limit: 1,
        window_s: 0,
        message: "m".into(),
    };
    assert_eq!(e.validate().unwrap_err().field, "rate_limits[0].window_s");
    e.rate_limits.clear();
    e.api_keys.push(ApiKey {
        key: "k".into(),
        allow_realtime: true,
        expires_at: None,
        origins: Rule::All,
        ips: Rule::List(vec!["10.0.0.0/8".into(), "not-an-ip".into()]),
    });
    let err = e.validate().unwrap_err();
    assert_eq!(err.field, "api_keys[0].ips[1]");
    assert_eq!(
        err.to_string(),
        "environment `x`: `not-an-ip` is not an IP address or CIDR range"
    );
    e.api_keys[0].ips = Rule::All;
    e.api_keys[0].origins = Rule::List(vec![" ".into()]);
    assert_eq!(e.validate().unwrap_err().field, "api_keys[0].origins[0]");
    e.api_keys[0].origins = Rule::All;
    e.api_keys.push(e.api_keys[0].clone());
    assert_eq!(e.validate().unwrap_err().field, "api_keys[1].key");
    e.api_keys.clear();
    e.session_secret = Some(String::new());
    assert_eq!(e.validate().unwrap_err().field, "session_secret");
}

#[test]
fn rule_serde() {
    let all: Rule = sonic_rs::from_str("\"all\"").unwrap();
    assert_eq!(all, Rule::All);
    let list: Rule = sonic_rs::from_str("[\"a\"]").unwrap();
    assert_eq!(list, Rule::List(vec!["a".into()]));
    assert!(sonic_rs::from_str::<Rule>("\"some\"").is_err());
    assert_eq!(sonic_rs::to_string(&Rule::All).unwrap(), "\"all\"");
}

#[test]
fn rfc3339_round_trips() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2027-01-31T12:34:56Z"), Some(1_801_398_896));
    assert_eq!(
        parse_rfc3339("2027-01-31T14:34:56.789+02:00"),
        Some(1_801_398_896)
    );
    assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
    assert_eq!(format_rfc3339(1_801_398_896), "2027-01-31T12:34:56Z");
    assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    for bad in [
        "",
        "2027-01-31",
        "2027-13-01T00:00:00Z",
        "2027-01-31T00:00:00",
        "1969-12-31T23:59:59Z",
        "2027-01-31T00:00:00+0200",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    let k: ApiKey = sonic_rs::from_str(r#"{"key":"k","expires_at":"2027-01-31T12:34:56Z"}"#).unwrap();
    assert!(k.expired(1_801_398_896) && !k.expired(1_801_398_895));
    let k: ApiKey = sonic_rs::from_str(r#"{"key":"k","expires_at":5}"#).unwrap();
    assert_eq!(k.expires_at, Some(Timestamp(5)));
}
