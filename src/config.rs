//! Static configuration: parsed once at start-up from the command line, an
//! optional TOML file and the environment, into typed values.
//!
//! Precedence: command-line flag, then `RINGCAST_*` environment variable
//! (where one exists), then the `[server]` table of the file, then the
//! built-in default. Environments come from the file's `[[environments]]`
//! array; without a file the embedded default is one environment `default`
//! (realtime on, no API key, no session).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

use crate::realtime::settings::{parse_net, EnvSettings};

/// How the cluster is configured (`--redis`, `[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: RedisUrl,
    /// This node's name in logs and in Redis (default: host name + port).
    pub node_id: String,
    /// A node whose heartbeat is older than this is dead: its members leave.
    pub node_ttl: Duration,
    /// How often local rate-limit counts are exchanged through Redis.
    pub rate_sync_interval: Duration,
    /// Commands waiting for the link; beyond, messages for other nodes are
    /// dropped (and counted).
    pub queue_commands_max: usize,
}

/// `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl RedisUrl {
    /// Parses a `redis://` URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{url}`: a Redis URL starts with redis://"))?;
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => ((!user.is_empty()).then(|| user.to_owned()), Some(pass.to_owned())),
                None => (None, Some(u.to_owned())),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(|| format!("`{url}`: unclosed ["))?;
            (h.to_owned(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            None => 6379,
        };
        let path = path.trim_end_matches('/');
        let db = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| format!("`{url}`: bad database number `{path}`"))?
        };
        Ok(Self {
            host,
            port,
            db,
            user,
            password,
        })
    }
}

/// The certificate chain and private key (PEM files) of a TLS listener:
/// with them the server speaks only `https://` and `wss://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Command-line flags. Every flag is optional and overrides the file.
#[derive(Debug, Clone, Parser, Default)]
#[command(
    name = "ringcast",
    version,
    about = "io_uring thread-per-core Socket.IO pub/sub server"
)]
pub struct Cli {
    /// Address to listen on [default: 0.0.0.0:4000].
    #[arg(long, global = true)]
    pub listen: Option<SocketAddr>,
    /// Number of shards (threads pinned to cores) [default: one per core].
    #[arg(long, global = true)]
    pub shards: Option<usize>,
    /// Socket.IO path; repeat the flag to serve several [default:
    /// /realtime/ and /realtime/realtime/, the paths Agnost's clients use].
    #[arg(long, global = true)]
    pub path: Vec<String>,
    /// Token of the app backend's master connection and HTTP API. Generated
    /// and printed once when not given anywhere.
    #[arg(
        long,
        global = true,
        env = "RINGCAST_MASTER_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub master_token: Option<String>,
    /// A second token accepted by the web console at `/admin/` and its API
    /// (the master token works there too) [default: none].
    #[arg(
        long,
        global = true,
        env = "RINGCAST_ADMIN_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub admin_token: Option<String>,
    /// Engine.IO ping interval in milliseconds [default: 25000].
    #[arg(long, global = true)]
    pub ping_interval_ms: Option<u64>,
    /// Engine.IO ping timeout in milliseconds [default: 20000].
    #[arg(long, global = true)]
    pub ping_timeout_ms: Option<u64>,
    /// Largest Engine.IO packet accepted, in bytes [default: 1000000].
    #[arg(long, global = true)]
    pub max_payload_bytes: Option<usize>,
    /// Listen backlog of each shard's socket [default: 1024].
    #[arg(long, global = true)]
    pub backlog: Option<i32>,
    /// Use the epoll driver even where io_uring works.
    #[arg(long, global = true)]
    pub epoll: bool,
    /// Log level or filter (`info`, `debug`, `ringcast=trace`, ...);
    /// `RUST_LOG` is used when this is absent [default: info].
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// TOML configuration file (see `ringcast.example.toml`).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Join a cluster through this Redis: `redis://HOST[:PORT][/DB]`
    /// (Redis 7 or later). Without it the node runs alone.
    #[arg(long, global = true, env = "RINGCAST_REDIS")]
    pub redis: Option<String>,
    /// This node's name in the cluster [default: host name + port].
    #[arg(long, global = true)]
    pub node_id: Option<String>,
    /// Serve TLS (`https://`, `wss://`) with this certificate chain (PEM,
    /// the server's certificate first); needs --tls-key. Re-read on SIGHUP.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    /// Re-read on SIGHUP.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// What to do instead of serving (nothing: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands. Each takes the server's flags too, so it sees the
/// configuration the server would run with.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Check this host against the configuration: io_uring, limits, kernel
    /// settings, cores. One line per check (ok / warn / fail) with the fix;
    /// exit status 1 when a check fails.
    Doctor(DoctorArgs),
}

/// Flags of `ringcast doctor` beyond the server's.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Connections to plan for [default: `connections_max` of the
    /// configuration, when it is set].
    #[arg(long)]
    pub connections: Option<u64>,
    /// Read `proc/` and `sys/` under this directory instead of `/` (a copy
    /// of another host's files, or a test tree). The live io_uring probe is
    /// skipped then, because the running kernel is not the one described.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub shard_count: usize,
    /// The first Socket.IO path (the one the listening line names), always
    /// starting and ending with `/`.
    pub path: String,
    /// Every Socket.IO path served, `path` first.
    pub paths: Vec<String>,
    /// Origins whose browsers may read the answers to cross-origin requests
    /// (long-polling, Agnost's get-members route, `/health`).
    pub cors_origins: CorsOrigins,
    /// Whether those answers allow credentials (cookies); the allowed
    /// origin is then echoed instead of `*`.
    pub cors_credentials: bool,
    pub master_token: String,
    /// True when the token was generated because none was configured.
    pub master_token_generated: bool,
    /// A token the web console accepts besides the master token (for
    /// operators who must not hold the backend's token).
    pub admin_token: Option<String>,
    /// Whether `/admin/` (the web console) and its API are served.
    pub console: bool,
    /// Wrong bearer tokens one client IP may send per minute (console and
    /// HTTP API) before its bearer requests are refused until the minute
    /// ends (0: no limit).
    pub auth_failures_max: u32,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload_bytes: usize,
    pub backlog: i32,
    pub epoll: bool,
    /// io_uring submission queue size of each shard: the most operations
    /// one `io_uring_enter` runs (small on purpose, see
    /// `ringcast_shards::runtime::RuntimeConfig::ring_entries`).
    pub ring_entries: u32,
    /// Largest HTTP request head accepted, in bytes (431 beyond).
    pub http_head_bytes_max: usize,
    /// Time a client has to send its HTTP request head (and an API body).
    pub http_head_timeout: Duration,
    /// Time a client has, after the upgrade, to send its Socket.IO connect.
    pub connect_timeout: Duration,
    /// Bytes queued for one connection beyond which it is closed as a slow
    /// consumer.
    pub send_queue_bytes_max: usize,
    /// A connection whose writes made no progress this long has stopped
    /// reading: producers stop pacing themselves to it.
    pub send_stall_timeout: Duration,
    /// WebSocket connections the server holds at once (0: no limit beyond
    /// file descriptors); over it, upgrades get 503.
    pub connections_max: usize,
    /// WebSocket connections one client IP may hold at once (0: no limit).
    pub connections_per_ip_max: usize,
    /// On SIGTERM/SIGINT, clients are disconnected spread over this window so
    /// their reconnects do not arrive at once.
    pub drain_window: Duration,
    /// On SIGTERM/SIGINT, the process exits by this time at the latest.
    pub shutdown_deadline: Duration,
    /// Slots in each shard's inbound mesh queue, in messages.
    pub mesh_queue_messages_max: usize,
    /// Messages for other shards a shard may hold back while their inboxes
    /// are full; at this many its readers stop reading until they drain.
    pub mesh_backlog_messages_max: usize,
    /// Longest wait for every shard's part of a member list, metrics scrape
    /// or settings change; then the answer says what is missing.
    pub gather_timeout: Duration,
    /// Longest channel name accepted, in bytes.
    pub channel_name_bytes_max: usize,
    /// Channels one connection may be in at once (0: no limit); a join
    /// beyond gets an `error` event `channel_limit_exceeded`.
    pub channels_per_connection_max: usize,
    /// Largest member profile (`update` data: JSON plus binary attachments),
    /// in bytes (0: no limit beyond `max_payload_bytes`); a larger one gets
    /// an `error` event `profile_too_large`.
    pub profile_bytes_max: usize,
    /// Proxies whose `X-Forwarded-For` is believed when finding a client's IP.
    pub trusted_proxies: Vec<IpNet>,
    /// Slots of the shared rate-limit table (each 8 bytes); bounds how many
    /// environment + IP + limiter keys are tracked at once.
    pub rate_limit_slots: usize,
    /// The file the configuration came from, re-read on SIGHUP.
    pub file: Option<PathBuf>,
    /// The cluster this node joins (`--redis`, `[cluster]`); `None`: alone.
    pub cluster: Option<ClusterConfig>,
    /// TLS on the listener (`--tls-cert`/`--tls-key`, `[server]`); `None`:
    /// plain HTTP and WebSocket.
    pub tls: Option<TlsFiles>,
    pub(crate) environments: Vec<EnvSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    environments: Option<Vec<EnvSettings>>,
    #[serde(default)]
    cluster: FileCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    redis: Option<String>,
    node_id: Option<String>,
    node_ttl_ms: Option<u64>,
    rate_sync_ms: Option<u64>,
    queue_commands_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<SocketAddr>,
    shards: Option<usize>,
    path: Option<OneOrMany>,
    cors_origins: Option<OneOrMany>,
    cors_credentials: Option<bool>,
    master_token: Option<String>,
    admin_token: Option<String>,
    console: Option<bool>,
    auth_failures_max: Option<u32>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    max_payload_bytes: Option<usize>,
    backlog: Option<i32>,
    ring_entries: Option<u32>,
    mesh_queue_messages_max: Option<usize>,
    mesh_backlog_messages_max: Option<usize>,
    gather_timeout_ms: Option<u64>,
    channel_name_bytes_max: Option<usize>,
    channels_per_connection_max: Option<usize>,
    profile_bytes_max: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    rate_limit_slots: Option<usize>,
    http_head_bytes_max: Option<usize>,
    http_head_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    send_queue_bytes_max: Option<usize>,
    send_stall_timeout_ms: Option<u64>,
    connections_max: Option<usize>,
    connections_per_ip_max: Option<usize>,
    drain_window_ms: Option<u64>,
    shutdown_deadline_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// A string, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// Which origins CORS allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin (`*`), as Agnost's server does.
    Any,
    /// Origins (`https://app.example.com`) and host patterns
    /// (`app.example.com`, `*.example.com`).
    List(Vec<String>),
}

impl CorsOrigins {
    pub(crate) fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list
                .iter()
                .any(|pattern| crate::realtime::settings::origin_matches(pattern, origin)),
        }
    }
}

/// Why the configuration was refused. The message names the file, line and
/// reason where there is a file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Builds the configuration from flags (and the file they name).
    pub fn load(cli: &Cli) -> Result<Self, Error> {
        match &cli.config {
            Some(path) => {
                let (shown, text) = read_text(path)?;
                Self::from_toml(cli, &shown, &text)
            }
            None => Self::merge(cli, FileConfig::default()),
        }
    }

    /// Parses a configuration file's text; `path` is used in messages only.
    /// Errors found after parsing also name the file and the line.
    pub fn from_toml(cli: &Cli, path: &str, text: &str) -> Result<Self, Error> {
        Self::merge(cli, parse_file(path, text)?).map_err(|e| locate(e, path, text))
    }

    fn merge(cli: &Cli, file: FileConfig) -> Result<Self, Error> {
        let s = file.server;
        let paths = if !cli.path.is_empty() {
            cli.path.clone()
        } else {
            s.path.map(OneOrMany::into_vec).unwrap_or_else(|| {
                // Agnost's client library derives /realtime/realtime/ from
                // its base URL; socket.io-client apps use /realtime/.
                vec!["/realtime/".into(), "/realtime/realtime/".into()]
            })
        };
        if paths.is_empty() {
            return Err(Error::Invalid("path must name at least one path".into()));
        }
        let mut normalized: Vec<String> = Vec::with_capacity(paths.len());
        for p in paths {
            let p = normalize_path(p)?;
            if !normalized.contains(&p) {
                normalized.push(p);
            }
        }
        let paths = normalized;
        let path = paths[0].clone();
        let cors_origins = match s.cors_origins.map(OneOrMany::into_vec) {
            None => CorsOrigins::Any,
            Some(list) if list.iter().any(|o| o == "*") => CorsOrigins::Any,
            Some(list) => CorsOrigins::List(list),
        };
        let (master_token, generated) = match cli.master_token.clone().or(s.master_token) {
            Some(t) if t.is_empty() => return Err(Error::Invalid("master token is empty".into())),
            Some(t) => (t, false),
            None => (ringcast_shards::conn_id::random_token(32), true),
        };
        let admin_token = match cli.admin_token.clone().or(s.admin_token) {
            Some(t) if t.is_empty() => return Err(Error::Invalid("admin token is empty".into())),
            other => other,
        };
        let shard_count = cli
            .shards
            .or(s.shards)
            .unwrap_or_else(ringcast_shards::topology::default_shard_count);
        if shard_count == 0 || shard_count > ringcast_shards::topology::SHARDS_MAX {
            return Err(Error::Invalid(format!(
                "shards must be between 1 and {}",
                ringcast_shards::topology::SHARDS_MAX
            )));
        }
        let ping_interval_ms = cli.ping_interval_ms.or(s.ping_interval_ms).unwrap_or(25_000);
        let ping_timeout_ms = cli.ping_timeout_ms.or(s.ping_timeout_ms).unwrap_or(20_000);
        if ping_interval_ms == 0 || ping_timeout_ms == 0 {
            return Err(Error::Invalid("ping interval and timeout must be > 0 ms".into()));
        }
        let max_payload_bytes = cli.max_payload_bytes.or(s.max_payload_bytes).unwrap_or(1_000_000);
        if max_payload_bytes < 64 {
            return Err(Error::Invalid("max payload must be at least 64 bytes".into()));
        }
        let console = s.console.unwrap_or(true);
        if console && path.starts_with("/admin/") {
            return Err(Error::Invalid(format!(
                "path `{path}` is the web console's; choose another path or set console = false"
            )));
        }
        let environments = validate_environments(file.environments)?;
        let mut trusted_proxies = Vec::new();
        for entry in s.trusted_proxies.unwrap_or_default() {
            let net = parse_net(&entry).ok_or_else(|| {
                Error::Invalid(format!("trusted proxy `{entry}` is not an IP or CIDR range"))
            })?;
            trusted_proxies.push(net);
        }
        let listen = cli
            .listen
            .or(s.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 4000)));
        let cluster = cluster_config(cli, file.cluster, listen)?;
        // Relative paths in the file are relative to the file's directory.
        let file_dir = cli.config.as_deref().and_then(Path::parent);
        let in_file = |p: PathBuf| match file_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        };
        let tls_cert = cli.tls_cert.clone().or(s.tls_cert.map(in_file));
        let tls_key = cli.tls_key.clone().or(s.tls_key.map(in_file));
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Invalid(
                    "`tls_cert` is set without `tls_key`: TLS needs both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Invalid(
                    "`tls_key` is set without `tls_cert`: TLS needs both".into(),
                ))
            }
        };
        Ok(Self {
            listen,
            shard_count,
            path,
            paths,
            cors_origins,
            cors_credentials: s.cors_credentials.unwrap_or(false),
            master_token,
            master_token_generated: generated,
            admin_token,
            console,
            auth_failures_max: s.auth_failures_max.unwrap_or(10),
            ping_interval: Duration::from_millis(ping_interval_ms),
            ping_timeout: Duration::from_millis(ping_timeout_ms),
            max_payload_bytes,
            backlog: cli.backlog.or(s.backlog).unwrap_or(1024),
            epoll: cli.epoll,
            ring_entries: s.ring_entries.unwrap_or(RING_ENTRIES_DEFAULT),
            http_head_bytes_max: s.http_head_bytes_max.unwrap_or(16 * 1024).max(1024),
            http_head_timeout: Duration::from_millis(s.http_head_timeout_ms.unwrap_or(10_000).max(1)),
            connect_timeout: Duration::from_millis(s.connect_timeout_ms.unwrap_or(10_000).max(1)),
            send_queue_bytes_max: s.send_queue_bytes_max.unwrap_or(4 << 20).max(4096),
            send_stall_timeout: Duration::from_millis(s.send_stall_timeout_ms.unwrap_or(100).max(1)),
            connections_max: s.connections_max.unwrap_or(0),
            connections_per_ip_max: s.connections_per_ip_max.unwrap_or(0),
            drain_window: Duration::from_millis(s.drain_window_ms.unwrap_or(5_000)),
            shutdown_deadline: Duration::from_millis(s.shutdown_deadline_ms.unwrap_or(10_000)),
            mesh_queue_messages_max: s.mesh_queue_messages_max.unwrap_or(65_536).max(1),
            mesh_backlog_messages_max: s.mesh_backlog_messages_max.unwrap_or(4096).max(1),
            gather_timeout: Duration::from_millis(s.gather_timeout_ms.unwrap_or(2000).max(1)),
            channel_name_bytes_max: s.channel_name_bytes_max.unwrap_or(256),
            // Centrifugo's default client channel limit.
            channels_per_connection_max: s.channels_per_connection_max.unwrap_or(128),
            // See ringcast.example.toml for why 8 KiB.
            profile_bytes_max: s.profile_bytes_max.unwrap_or(8 * 1024),
            trusted_proxies,
            rate_limit_slots: s
                .rate_limit_slots
                .unwrap_or(1 << 18)
                .max(crate::realtime::rate_limit::PROBES)
                .next_power_of_two(),
            file: cli.config.clone(),
            cluster,
            tls,
            environments,
        })
    }
}

impl Config {
    /// Combinations that are allowed but probably not meant, one sentence
    /// each (logged at start-up).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        // One `update` publishes a presence event per channel of the sender
        // in one go, with nothing between them to pace it: a member in all
        // of those channels gets them all at once.
        let (channels, profile) = (self.channels_per_connection_max, self.profile_bytes_max);
        let burst_bytes = if channels == 0 || profile == 0 {
            None
        } else {
            // A presence event beyond its profile: the channel name, the
            // socket id and the frame around them.
            let event_bytes = profile + self.channel_name_bytes_max + 64;
            Some(channels.saturating_mul(event_bytes))
        };
        match burst_bytes {
            Some(bytes) if bytes <= self.send_queue_bytes_max => {}
            _ => warnings.push(format!(
                "one profile update can queue {} for a member that shares the sender's channels \
                 (channels_per_connection_max x profile_bytes_max), more than send_queue_bytes_max ({} bytes), \
                 which closes that member as a slow consumer; lower profile_bytes_max or \
                 channels_per_connection_max, or raise send_queue_bytes_max",
                burst_bytes.map_or_else(|| "unbounded bytes".to_owned(), |b| format!("up to {b} bytes")),
                self.send_queue_bytes_max
            )),
        }
        warnings
    }
}

/// Default io_uring submission queue size of a shard: at most ~1 ms of
/// loopback sends per `io_uring_enter` on the machine the benchmarks run on.
pub const RING_ENTRIES_DEFAULT: u32 = 128;

/// Longest node TTL accepted: a dead node must drop out of member lists
/// within 15 s.
const NODE_TTL_MS_MAX: u64 = 15_000;

fn cluster_config(cli: &Cli, file: FileCluster, listen: SocketAddr) -> Result<Option<ClusterConfig>, Error> {
    let Some(url) = cli.redis.clone().or(file.redis) else {
        return Ok(None);
    };
    let redis = RedisUrl::parse(&url).map_err(|e| Error::Invalid(format!("cluster redis {e}")))?;
    let node_id = match cli.node_id.clone().or(file.node_id) {
        Some(id) if id.is_empty() => return Err(Error::Invalid("node_id is empty".into())),
        Some(id) => id,
        None => format!("{}:{}", host_name(), listen.port()),
    };
    let node_ttl_ms = file.node_ttl_ms.unwrap_or(10_000);
    if !(2_000..=NODE_TTL_MS_MAX).contains(&node_ttl_ms) {
        return Err(Error::Invalid(format!(
            "cluster node_ttl_ms must be between 2000 and {NODE_TTL_MS_MAX}"
        )));
    }
    let rate_sync_ms = file.rate_sync_ms.unwrap_or(100);
    if !(10..=1_000).contains(&rate_sync_ms) {
        return Err(Error::Invalid(
            "cluster rate_sync_ms must be between 10 and 1000".into(),
        ));
    }
    Ok(Some(ClusterConfig {
        redis,
        node_id,
        node_ttl: Duration::from_millis(node_ttl_ms),
        rate_sync_interval: Duration::from_millis(rate_sync_ms),
        queue_commands_max: file.queue_commands_max.unwrap_or(65_536).max(16),
    }))
}

/// This machine's host name (`localhost` if it has none).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Re-reads only the environments of configuration file `path` (SIGHUP).
/// Server-wide settings need a restart and are not looked at.
pub(crate) fn reload_environments(path: &Path) -> Result<Vec<EnvSettings>, Error> {
    let (shown, text) = read_text(path)?;
    let file = parse_file(&shown, &text)?;
    validate_environments(file.environments).map_err(|e| locate(e, &shown, &text))
}

/// Gives an error found after parsing the file's line: the line where the
/// value it names (in backticks) appears, the second one for a duplicate.
fn locate(error: Error, path: &str, text: &str) -> Error {
    let Error::Invalid(reason) = error else {
        return error;
    };
    let names: Vec<&str> = reason.split('`').skip(1).step_by(2).collect();
    let occurrence = if reason.contains("defined twice") || reason.contains("listed twice") {
        2
    } else {
        1
    };
    let line = names
        .iter()
        .rev()
        .find_map(|name| nth_line_quoting(text, name, occurrence))
        .or_else(|| {
            reason
                .contains("trusted proxy")
                .then(|| nth_line_containing(text, "trusted_proxies", 1))
                .flatten()
        })
        .unwrap_or(1);
    Error::Parse {
        path: path.to_owned(),
        line,
        column: 1,
        reason,
    }
}

/// The 1-based line of the `n`-th `"name"` in `text`.
fn nth_line_quoting(text: &str, name: &str, n: usize) -> Option<usize> {
    nth_line_containing(text, &format!("\"{name}\""), n)
}

fn nth_line_containing(text: &str, needle: &str, n: usize) -> Option<usize> {
    let (offset, _) = text.match_indices(needle).nth(n - 1)?;
    Some(line_column(text, offset).0)
}

fn validate_environments(envs: Option<Vec<EnvSettings>>) -> Result<Vec<EnvSettings>, Error> {
    let environments = envs.unwrap_or_else(|| vec![EnvSettings::default_env()]);
    for (i, env) in environments.iter().enumerate() {
        env.validate().map_err(|e| Error::Invalid(e.to_string()))?;
        if environments[..i].iter().any(|e| e.id == env.id) {
            return Err(Error::Invalid(format!(
                "environment `{}` is defined twice",
                env.id
            )));
        }
    }
    Ok(environments)
}

fn read_text(path: &Path) -> Result<(String, String), Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    Ok((shown, text))
}

fn parse_file(path: &str, text: &str) -> Result<FileConfig, Error> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        Error::Parse {
            path: path.to_owned(),
            line,
            column,
            reason: e.message().to_owned(),
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

fn normalize_path(mut path: String) -> Result<String, Error> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(Error::Invalid(format!(
            "path `{path}` must start with / and hold no ? # or spaces"
        )));
    }
    if !path.ends_with('/') {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
