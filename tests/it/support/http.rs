//! Plain HTTP/1.1 requests over a raw `TcpStream`, for the non-upgrade
//! answers (`/health`, 400 and 404 JSON errors).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sonic_rs::{JsonValueTrait, Value};

use super::ws::find;

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on a response the tests accept.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Header names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses the body as JSON, panicking with the whole response if it is not.
    pub(crate) fn json(&self) -> Value {
        sonic_rs::from_str(&self.body).unwrap_or_else(|error| panic!("body of {self:?} is not JSON: {error}"))
    }

    /// Asserts `status` and Engine.IO's error body, exactly
    /// `{"code":<code>,"message":<Engine.IO's message for it>}`.
    pub(crate) fn assert_engineio_error(&self, status: u16, code: u8) {
        assert_eq!(self.status, status, "response {self:?}");
        let message = match code {
            0 => "Transport unknown",
            1 => "Session ID unknown",
            2 => "Bad handshake method",
            3 => "Bad request",
            4 => "Forbidden",
            5 => "Unsupported protocol version",
            _ => panic!("Engine.IO has no error code {code}"),
        };
        assert_eq!(
            self.body,
            format!(r#"{{"code":{code},"message":"{message}"}}"#),
            "response {self:?}"
        );
    }

    /// Asserts `status` and an error body `{"error":<string>,"code":<any>,...}`.
    pub(crate) fn assert_json_error(&self, status: u16) {
        assert_eq!(self.status, status, "response {self:?}");
        let json = self.json();
        assert!(json.is_object(), "error body of {self:?} is not an object");
        assert!(
            json.get("error").is_some_and(|e| e.is_str()),
            "error body of {self:?} has no string \"error\""
        );
        assert!(
            json.get("code").is_some(),
            "error body of {self:?} has no \"code\""
        );
    }
}

/// Sends `head` (request line + headers, without the final blank line) and
/// `body`, and reads the response up to its Content-Length or EOF.
pub(crate) fn request(addr: SocketAddr, head: &str, body: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the test server");
    let mut request = format!("{head}\r\nHost: {addr}\r\n");
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .expect("send the HTTP request");

    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse_complete(&bytes) {
            return response;
        }
        assert!(bytes.len() < RESPONSE_BYTES_MAX, "response too long");
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "incomplete HTTP response: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        stream.set_read_timeout(Some(remaining)).expect("set timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("HTTP response timed out: {:?}", String::from_utf8_lossy(&bytes))
            }
            Err(_) => break,
        }
    }
    // EOF: whatever arrived is the whole response.
    let end = find(&bytes, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let (status, headers) = parse_head(&bytes[..end]);
    let body = String::from_utf8_lossy(&bytes[end + 4..]).into_owned();
    Response {
        status,
        headers,
        body,
    }
}

/// `GET target` with no other headers.
pub(crate) fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, &format!("GET {target} HTTP/1.1"), "")
}

/// A WebSocket upgrade request for `target` with everything a client sends,
/// minus the headers named in `omit` (lowercase).
pub(crate) fn upgrade(addr: SocketAddr, method: &str, target: &str, omit: &[&str]) -> Response {
    let headers = [
        ("upgrade", "Upgrade: websocket"),
        ("connection", "Connection: Upgrade"),
        ("sec-websocket-key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "Sec-WebSocket-Version: 13"),
    ];
    let mut head = format!("{method} {target} HTTP/1.1");
    for (name, line) in headers {
        if !omit.contains(&name) {
            head.push_str("\r\n");
            head.push_str(line);
        }
    }
    request(addr, &head, "")
}

/// The response at the front of `bytes` once its head and its
/// Content-Length worth of body are complete; `None` until then.
pub(crate) fn parse_response(bytes: &[u8]) -> Option<Response> {
    parse_complete(bytes)
}

fn parse_complete(bytes: &[u8]) -> Option<Response> {
    let end = find(bytes, b"\r\n\r\n")?;
    let (status, headers) = parse_head(&bytes[..end]);
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")?
        .1
        .parse()
        .expect("numeric Content-Length");
    let body = bytes.get(end + 4..end + 4 + length)?;
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}
