//! The `ringcast` binary: parse the configuration, install logging, start
//! the shards, print where they listen, and wait. `ringcast doctor` checks
//! the host instead (see `ringcast::doctor`).

use clap::Parser;
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

use ringcast::config::{Cli, Command, Config};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    opt_out_of_transparent_huge_pages();
    let cli = Cli::parse();
    if let Some(Command::Doctor(args)) = &cli.command {
        std::process::exit(ringcast::doctor::main(&cli, args));
    }
    let filter = match &cli.log_level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ringcast: bad log level: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringcast: configuration error: {e}");
            std::process::exit(2);
        }
    };
    for warning in config.warnings() {
        tracing::warn!("configuration: {warning}");
    }
    if config.master_token_generated {
        println!(
            "master token (generated; pass --master-token or RINGCAST_MASTER_TOKEN to fix it): {}",
            config.master_token
        );
    }
    let path = config.path.clone();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let shard_count = config.shard_count;
    let server = match ringcast::server::start(config) {
        Ok(server) => server,
        // A certificate or key that cannot be used: a configuration error.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("ringcast: configuration error: {e}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    server.handle_signals()?;
    let running = &server.running;
    let driver = if running.uring { "io_uring" } else { "epoll" };
    tracing::info!(addr = %running.local_addr, shards = shard_count, driver, "ringcast started");
    println!(
        "ringcast listening on {scheme}://{}{} shards={}",
        running.local_addr, path, shard_count
    );
    server.join();
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the heap on 4 KiB pages. mimalloc asks for transparent huge pages
/// for its arenas, and a connection's few small objects then pin parts of
/// 2 MiB pages: measured at 19,000 idle connections, 2.7 KB of RSS per
/// connection with huge pages against 1.3 KB without. Per-connection
/// memory is what limits a realtime server, and huge-page compaction stalls
/// hurt latency, so ringcast opts out (only for itself) before it allocates
/// much.
fn opt_out_of_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and only sets
    // a flag on this process; failure (an old kernel) leaves things as they
    // were, which is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
