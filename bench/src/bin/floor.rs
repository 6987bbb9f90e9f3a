//! `floor`: the kernel's cost of loopback TCP writes, the physical floor a
//! server's CPU per delivery is read against (see `ringcast_bench::floor`).
//!
//!     floor                                   # 1,000 connections, K = 1,4,16,64, cheapest of 3 × 0.5 s each
//!     floor --connections 100,1000,5000       # the floor at three connection counts
//!     floor --connections 50 --duration-s 0.2 --json floor.json
//!     floor --serve-handshakes 127.0.0.1:0    # the connect floor: a server for `load run connect`

use clap::Parser;
use ringcast_bench::floor::{self, FloorOptions};

#[derive(Debug, Parser)]
#[command(about = "Sender CPU per loopback TCP write and per frame, at K frames per write")]
struct Cli {
    #[command(flatten)]
    options: FloorOptions,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
    /// Instead of measuring writes, serve the bare minimum of a Socket.IO
    /// WebSocket handshake on this address until killed (the connect floor,
    /// for `load run connect`; see `ringcast_bench::floor::handshake`).
    #[arg(long, value_name = "ADDR")]
    serve_handshakes: Option<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(addr) = cli.serve_handshakes {
        return Ok(floor::handshake::serve(addr)?);
    }
    let report = floor::run(&cli.options)?;
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if !cli.quiet {
        println!(
            "floor: loopback TCP, {}-byte frames, cheapest of {} × {} s per point{}\n",
            report.frame_bytes,
            report.repeats,
            report.duration_s,
            if report.pinned {
                ", sender on CPU 0, receiver on CPU 1"
            } else {
                ""
            }
        );
        print!("{}", report.markdown());
    }
    Ok(())
}
