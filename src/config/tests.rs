use super::*;

fn cli() -> Cli {
    Cli::default()
}

#[test]
fn embedded_default_serves_one_environment() {
    let cfg = Config::load(&cli()).unwrap();
    assert_eq!(cfg.path, "/realtime/");
    // Agnost's client library derives /realtime/realtime/ from its base URL.
    assert_eq!(cfg.paths, vec!["/realtime/", "/realtime/realtime/"]);
    assert_eq!(cfg.cors_origins, CorsOrigins::Any);
    assert!(!cfg.cors_credentials);
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:4000");
    assert_eq!(cfg.environments, vec![EnvSettings::default_env()]);
    assert!(cfg.master_token_generated);
    assert_eq!(cfg.master_token.len(), 32);
    assert_eq!(cfg.ping_interval, Duration::from_millis(25_000));
    assert_eq!(cfg.ping_timeout, Duration::from_millis(20_000));
    assert_eq!(cfg.max_payload_bytes, 1_000_000);
    assert_eq!(cfg.backlog, 1024);
}

#[test]
fn flags_override_the_file() {
    let mut c = cli();
    c.shards = Some(3);
    c.path = vec!["/socket.io".into()];
    let cfg = Config::from_toml(
        &c,
        "x.toml",
        "[server]\nshards = 1\nmaster_token = \"t\"\nping_interval_ms = 10000\n\
         [[environments]]\nid = \"a\"\necho_messages = true\n",
    )
    .unwrap();
    assert_eq!(cfg.shard_count, 3);
    assert_eq!(cfg.path, "/socket.io/");
    assert_eq!(cfg.paths, vec!["/socket.io/"]);
    assert_eq!(cfg.master_token, "t");
    assert!(!cfg.master_token_generated);
    assert_eq!(cfg.ping_interval, Duration::from_millis(10_000));
    assert_eq!(cfg.environments.len(), 1);
    assert!(cfg.environments[0].enabled);
    assert!(cfg.environments[0].echo_messages);
}

#[test]
fn bad_file_names_file_line_and_reason() {
    let err = Config::from_toml(&cli(), "bad.toml", "[server]\nshards = 2\nbogus = 1\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("bad.toml:3:1: "), "{text}");
    assert!(text.contains("bogus"), "{text}");

    let err = Config::from_toml(&cli(), "bad.toml", "[server]\nshards = \"two\"\n").unwrap_err();
    assert!(err.to_string().starts_with("bad.toml:2:"), "{err}");
}

#[test]
fn invalid_values_are_refused() {
    let dup = "[[environments]]\nid = \"a\"\n[[environments]]\nid = \"a\"\n";
    assert!(Config::from_toml(&cli(), "f", dup)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    assert!(Config::from_toml(&cli(), "f", "[server]\nshards = 0\n").is_err());
    assert!(Config::from_toml(&cli(), "f", "[server]\npath = \"nope\"\n").is_err());
    assert!(Config::from_toml(&cli(), "f", "[server]\nmaster_token = \"\"\n").is_err());
}

#[test]
fn example_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ringcast.example.toml");
    let mut c = cli();
    c.config = Some(path.into());
    let cfg = Config::load(&c).unwrap();
    assert_eq!(cfg.environments.len(), 2);
    assert_eq!(
        cfg.environments[0].session_secret.as_deref(),
        Some("a-long-random-secret")
    );
    assert_eq!(cfg.environments[0].rate_limits.len(), 2);
    assert_eq!(cfg.environments[1].api_keys.len(), 2);
    assert_eq!(cfg.trusted_proxies.len(), 2);
    assert_eq!(cfg.rate_limit_slots, 262_144);
    assert_eq!(cfg.master_token, "change-me");
    assert_eq!(cfg.channel_name_bytes_max, 256);
}

#[test]
fn invalid_values_name_file_and_line() {
    let text =
        "[[environments]]\nid = \"a\"\n[[environments.api_keys]]\nkey = \"k\"\nips = [\"300.1.2.3\"]\n";
    let err = Config::from_toml(&cli(), "bad-ip.toml", text)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("bad-ip.toml:5:1: "), "{err}");
    assert!(err.contains("300.1.2.3"), "{err}");
    let dup = "[[environments]]\nid = \"a\"\n\n[[environments]]\nid = \"a\"\n";
    let err = Config::from_toml(&cli(), "dup.toml", dup)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("dup.toml:5:1: "), "{err}");
    let proxy = "[server]\ntrusted_proxies = [\"nope\"]\n";
    let err = Config::from_toml(&cli(), "p.toml", proxy)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("p.toml:2:1: "), "{err}");
}

#[test]
fn master_token_may_start_with_a_hyphen() {
    // Random url-safe tokens start with `-` one time in 64.
    let cli = Cli::try_parse_from(["ringcast", "--master-token", "-Ab_c", "--shards", "1"]).unwrap();
    assert_eq!(cli.master_token.as_deref(), Some("-Ab_c"));
}

#[test]
fn paths_and_cors_from_the_file() {
    let cfg = Config::from_toml(
        &cli(),
        "x.toml",
        "[server]\npath = [\"/a\", \"/b/\", \"/a/\"]\ncors_origins = [\"https://app.example.com\", \"*.example.org\"]\n\
         cors_credentials = true\n",
    )
    .unwrap();
    assert_eq!(cfg.paths, vec!["/a/", "/b/"], "normalized, duplicates dropped");
    assert_eq!(cfg.path, "/a/");
    assert!(cfg.cors_origins.allows("https://app.example.com"));
    assert!(cfg.cors_origins.allows("https://x.example.org"));
    assert!(!cfg.cors_origins.allows("https://evil.com"));
    assert!(cfg.cors_credentials);
    let one = Config::from_toml(
        &cli(),
        "x.toml",
        "[server]\npath = \"/socket.io\"\ncors_origins = \"*\"\n",
    )
    .unwrap();
    assert_eq!(one.paths, vec!["/socket.io/"]);
    assert_eq!(one.cors_origins, CorsOrigins::Any);
    assert!(Config::from_toml(&cli(), "x.toml", "[server]\npath = []\n").is_err());
}
