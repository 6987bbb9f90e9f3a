//! One blocking connection to Redis speaking RESP2 through the
//! `redis-protocol` codec: commands encoded into one write buffer (a
//! pipeline), replies decoded zero-copy out of one read buffer.
//!
//! Every read and write has a timeout, so a Redis that stops answering is
//! noticed (and the link reconnects) instead of blocking a thread forever.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, BytesFrame};

use crate::config::RedisUrl;

/// Time to establish a TCP connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a connection is no longer usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("redis i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis protocol: {0}")]
    Protocol(String),
    #[error("redis closed the connection")]
    Closed,
    #[error("redis error reply: {0}")]
    Reply(String),
}

pub(crate) struct Conn {
    stream: TcpStream,
    out: BytesMut,
    input: BytesMut,
    scratch: Box<[u8]>,
}

impl Conn {
    /// Connects, authenticates and selects the database of `url`.
    pub(crate) fn open(url: &RedisUrl, io_timeout: Duration) -> Result<Self, Error> {
        let mut last = None;
        let mut stream = None;
        for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => return Err(last.map_or(Error::Closed, Error::Io)),
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        let mut conn = Self {
            stream,
            out: BytesMut::with_capacity(16 * 1024),
            input: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        };
        if let Some(password) = &url.password {
            match &url.user {
                Some(user) => conn.call(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => conn.call(&[b"AUTH", password.as_bytes()])?,
            };
        }
        if url.db != 0 {
            conn.call(&[b"SELECT", url.db.to_string().as_bytes()])?;
        }
        Ok(conn)
    }

    /// A second handle on the same socket, for writing while another thread
    /// reads (the subscriber connection).
    pub(crate) fn writer(&self) -> Result<Writer, Error> {
        Ok(Writer {
            stream: self.stream.try_clone()?,
            out: BytesMut::new(),
        })
    }

    /// Appends one command to the pipeline.
    pub(crate) fn push(&mut self, args: &[&[u8]]) {
        encode(&mut self.out, args);
    }

    /// Commands queued and not yet written, in bytes.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.out.len()
    }

    /// Writes every queued command.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads the next reply (an error reply is returned as a frame, not as
    /// an `Err`: pipelined callers decide).
    pub(crate) fn read(&mut self) -> Result<BytesFrame, Error> {
        loop {
            match decode_bytes_mut(&mut self.input) {
                Ok(Some((frame, _, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            let n = self.stream.read(&mut self.scratch)?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.input.extend_from_slice(&self.scratch[..n]);
        }
    }

    /// One command and its reply; an error reply is an `Err`.
    pub(crate) fn call(&mut self, args: &[&[u8]]) -> Result<BytesFrame, Error> {
        self.push(args);
        self.flush()?;
        match self.read()? {
            BytesFrame::Error(e) => Err(Error::Reply(e.to_string())),
            frame => Ok(frame),
        }
    }

    /// Replies of `n` pipelined commands, flushed first.
    pub(crate) fn replies(&mut self, n: usize) -> Result<Vec<BytesFrame>, Error> {
        self.flush()?;
        (0..n).map(|_| self.read()).collect()
    }
}

/// The writing half of a connection another thread reads.
pub(crate) struct Writer {
    stream: TcpStream,
    out: BytesMut,
}

impl Writer {
    pub(crate) fn send(&mut self, args: &[&[u8]]) -> Result<(), Error> {
        self.out.clear();
        encode(&mut self.out, args);
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    /// Ends the connection (both halves), waking its reader.
    pub(crate) fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn encode(out: &mut BytesMut, args: &[&[u8]]) {
    let frames: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    // Encoding into a growable buffer cannot fail.
    let _ = extend_encode_borrowed(out, &BorrowedFrame::Array(&frames), false);
}

/// The bytes of a bulk or simple string reply.
pub(crate) fn bytes(frame: &BytesFrame) -> Option<&Bytes> {
    match frame {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b),
        _ => None,
    }
}

pub(crate) fn integer(frame: &BytesFrame) -> Option<i64> {
    match frame {
        BytesFrame::Integer(i) => Some(*i),
        _ => None,
    }
}

/// The items of an array reply (empty for anything else).
pub(crate) fn array(frame: BytesFrame) -> Vec<BytesFrame> {
    match frame {
        BytesFrame::Array(items) => items,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        encode(&mut out, &[b"SPUBLISH", b"t", b"\x00\xff"]);
        assert_eq!(&out[..], b"*3\r\n$8\r\nSPUBLISH\r\n$1\r\nt\r\n$2\r\n\x00\xff\r\n");
    }
}
