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
    assert_eq!(cfg.admin_token.as_deref(), Some("change-me-too"));
    assert_eq!(cfg.auth_failures_max, 10);
    assert!(cfg.console);
    assert_eq!(cfg.channel_name_bytes_max, 256);
    assert_eq!(cfg.channels_per_connection_max, 128);
    assert_eq!(cfg.profile_bytes_max, 8192);
    assert_eq!(cfg.warnings(), Vec::<String>::new());
}

/// A profile update publishes one presence event per channel at once: the
/// limits that bound it must fit the queue cap, or the server says so.
#[test]
fn limits_whose_update_burst_exceeds_the_queue_cap_are_warned_about() {
    let load = |server: &str| Config::from_toml(&cli(), "f", &format!("[server]\n{server}")).unwrap();
    assert_eq!(load("").warnings(), Vec::<String>::new(), "the defaults fit");
    let small_queue = load("send_queue_bytes_max = 262144\n");
    let warnings = small_queue.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("up to 1089536 bytes"), "{warnings:?}");
    let fitted = load("send_queue_bytes_max = 262144\nprofile_bytes_max = 1024\n");
    assert_eq!(fitted.warnings(), Vec::<String>::new());
    let unlimited = load("channels_per_connection_max = 0\n");
    assert!(unlimited.warnings()[0].contains("unbounded"));
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
fn cluster_from_flags_or_file() {
    let cfg = Config::load(&cli()).unwrap();
    assert_eq!(cfg.cluster, None, "alone by default");
    let cli = Cli::try_parse_from([
        "ringcast",
        "--redis",
        "redis://127.0.0.1:7000/1",
        "--node-id",
        "a",
    ])
    .unwrap();
    let cluster = Config::load(&cli).unwrap().cluster.unwrap();
    assert_eq!(
        (cluster.redis.port, cluster.redis.db, cluster.node_id.as_str()),
        (7000, 1, "a")
    );
    assert_eq!(cluster.node_ttl, Duration::from_secs(10));
    let toml = "[cluster]\nredis = \"redis://h\"\nnode_ttl_ms = 5000\nrate_sync_ms = 50\n";
    let cluster = Config::from_toml(&Cli::default(), "f.toml", toml)
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(cluster.redis.host, "h");
    assert!(cluster.node_id.ends_with(":4000"), "{}", cluster.node_id);
    assert_eq!(cluster.node_ttl, Duration::from_secs(5));
    assert_eq!(cluster.rate_sync_interval, Duration::from_millis(50));
    let err = Config::from_toml(
        &Cli::default(),
        "f.toml",
        "[cluster]\nredis = \"redis://h\"\nnode_ttl_ms = 60000\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("node_ttl_ms"), "{err}");
    let err = Config::from_toml(&Cli::default(), "f.toml", "[cluster]\nredis = \"http://h\"\n").unwrap_err();
    assert!(err.to_string().contains("redis://"), "{err}");
}

#[test]
fn parses_redis_urls() {
    let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
    assert_eq!(u.password, None);
    let u = RedisUrl::parse("redis://localhost").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.db), ("localhost", 6379, 0));
    let u = RedisUrl::parse("redis://:secret@h:1/").unwrap();
    assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
    let u = RedisUrl::parse("redis://bob:pw@[::1]:7000").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.user.as_deref()),
        ("::1", 7000, Some("bob"))
    );
    for bad in ["http://h", "redis://", "redis://h:x", "redis://h/db"] {
        assert!(RedisUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn example_cluster_section_loads_when_uncommented() {
    let text = include_str!("../../ringcast.example.toml");
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with("[cluster]") || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cluster = Config::from_toml(&cli(), "example", &uncommented)
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(cluster.redis.port, 6379);
    assert_eq!(cluster.node_id, "realtime-1");
    assert_eq!(cluster.node_ttl, Duration::from_secs(10));
    assert_eq!(cluster.rate_sync_interval, Duration::from_millis(100));
    assert_eq!(cluster.queue_commands_max, 65_536);
}

#[test]
fn admin_token_and_console_switch() {
    let cfg = Config::from_toml(&cli(), "f", "[server]\nadmin_token = \"ops\"\n").unwrap();
    assert_eq!(cfg.admin_token.as_deref(), Some("ops"));
    assert!(cfg.console, "the console is on by default");
    assert_eq!(cfg.auth_failures_max, 10);
    let cfg = Config::from_toml(
        &cli(),
        "f",
        "[server]\nconsole = false\npath = \"/admin/x/\"\nauth_failures_max = 0\n",
    )
    .unwrap();
    assert!(!cfg.console);
    assert_eq!(cfg.auth_failures_max, 0);
    assert_eq!(cfg.admin_token, None);
    assert!(Config::from_toml(&cli(), "f", "[server]\nadmin_token = \"\"\n").is_err());
    let err = Config::from_toml(&cli(), "f", "[server]\npath = \"/admin/\"\n").unwrap_err();
    assert!(err.to_string().contains("web console"), "{err}");
    let flags = Cli {
        admin_token: Some("-flag".into()),
        ..cli()
    };
    assert_eq!(
        Config::load(&flags).unwrap().admin_token.as_deref(),
        Some("-flag")
    );
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
