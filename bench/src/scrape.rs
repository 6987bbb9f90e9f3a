//! The server's own counters, scraped from ringcast's `GET /metrics`
//! (Prometheus text) before and after the measured window: writes and frames
//! written say how well a server coalesces (frames per write), which decides
//! most of its CPU per delivery on loopback.
//!
//! Peers have no such page; a failed scrape is `None`, not an error.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::{Deserialize, Serialize};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// A metrics page larger than this is cut (it is a few KiB per shard).
const PAGE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Counter totals over all shards at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerCounters {
    /// `ringcast_writes_total`: vectored writes to client sockets.
    pub writes: u64,
    /// `ringcast_frames_written_total`: frames those writes carried.
    pub frames_written: u64,
    /// `ringcast_messages_out_total`: frames queued to recipients.
    pub messages_out: u64,
    /// `ringcast_bytes_out_total`.
    pub bytes_out: u64,
}

impl ServerCounters {
    /// `later - self`, counter by counter (a restart would make it wrap; the
    /// suite never restarts a server within a run).
    pub fn delta(&self, later: &Self) -> Self {
        Self {
            writes: later.writes.saturating_sub(self.writes),
            frames_written: later.frames_written.saturating_sub(self.frames_written),
            messages_out: later.messages_out.saturating_sub(self.messages_out),
            bytes_out: later.bytes_out.saturating_sub(self.bytes_out),
        }
    }

    /// Frames per write (the coalescing factor); 0 without writes.
    pub fn frames_per_write(&self) -> f64 {
        if self.writes == 0 {
            0.0
        } else {
            self.frames_written as f64 / self.writes as f64
        }
    }
}

/// Scrapes `http://{addr}/metrics` (`https://` with `tls`); `None` if there
/// is no such page.
pub fn scrape(addr: SocketAddr, host: &str, tls: Option<&Arc<ClientConfig>>) -> Option<ServerCounters> {
    let page = fetch(addr, host, tls)?;
    let counters = parse(&page);
    (counters.writes > 0 || counters.frames_written > 0 || page.contains("ringcast_writes_total"))
        .then_some(counters)
}

fn fetch(addr: SocketAddr, host: &str, tls: Option<&Arc<ClientConfig>>) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    // The server closes after the reply; a read timeout ends a server that does not.
    match tls {
        None => {
            let mut stream = stream;
            stream.write_all(request.as_bytes()).ok()?;
            let _ = stream.take(PAGE_BYTES_MAX).read_to_end(&mut response);
        }
        Some(config) => {
            let conn = ClientConnection::new(config.clone(), crate::link::server_name(addr)).ok()?;
            let mut stream = StreamOwned::new(conn, stream);
            stream.write_all(request.as_bytes()).ok()?;
            let _ = stream.take(PAGE_BYTES_MAX).read_to_end(&mut response);
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Sums each counter over its label sets (one line per shard).
pub fn parse(page: &str) -> ServerCounters {
    let mut counters = ServerCounters::default();
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let value = value as u64;
        match name {
            "ringcast_writes_total" => counters.writes += value,
            "ringcast_frames_written_total" => counters.frames_written += value,
            "ringcast_messages_out_total" => counters.messages_out += value,
            "ringcast_bytes_out_total" => counters.bytes_out += value,
            _ => {}
        }
    }
    counters
}

#[cfg(test)]
mod tests;
