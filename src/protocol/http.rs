//! HTTP/1.1 request heads (the WebSocket upgrade, Engine.IO long-polling, the small JSON
//! APIs) and the responses the server writes.
//!
//! Owns: parsing a request head with httparse into borrowed fields ([`Request`]), query
//! parameters, the `Sec-WebSocket-Accept` computation and response serialization.
//! Does not own: routing, authorization decisions, reading request bodies.
//!
//! Invariants: never panics on input; the head is bounded (64 headers, `headers_bytes_max`)
//! and the bound is enforced even before the head is complete.

use base64::Engine as _;
use sha1::{Digest, Sha1};

#[cfg(test)]
mod tests;

/// Most headers accepted in one request head.
pub const HEADERS_MAX: usize = 64;

/// The GUID RFC 6455 4.2.2 appends to `Sec-WebSocket-Key`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed request head; all strings borrow the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The target up to `?`.
    pub path: &'a str,
    /// The target after `?` (empty if none), not percent-decoded.
    pub query: &'a str,
    /// Bytes of the head including the final CRLFCRLF; the body starts here.
    pub header_len: usize,
    /// 0 when absent.
    pub content_length: usize,
    /// `Upgrade` lists the `websocket` token.
    pub upgrade_websocket: bool,
    /// `Connection` lists the `upgrade` token.
    pub connection_upgrade: bool,
    pub ws_key: Option<&'a str>,
    pub ws_version: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub x_forwarded_for: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// Agnost's `Session` header (the signed-in user's session token).
    pub session: Option<&'a str>,
    /// A CORS preflight's `Access-Control-Request-Headers`.
    pub cors_request_headers: Option<&'a str>,
    /// Whether the connection may carry another request after this one:
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("malformed HTTP request")]
    Malformed,
    #[error("more than {HEADERS_MAX} headers")]
    TooManyHeaders,
    #[error("request head longer than {max} bytes")]
    HeadersTooLarge { max: usize },
}

/// Parses a request head at the start of `buf`; `Ok(None)` means incomplete.
///
/// A head longer than `headers_bytes_max` is rejected, also while still incomplete, so a
/// client can't make us buffer an endless head. `Transfer-Encoding` is rejected as
/// `Malformed`: no endpoint takes chunked bodies, and refusing it rules out smuggling.
pub fn parse_request(buf: &[u8], headers_bytes_max: usize) -> Result<Option<Request<'_>>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let header_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > headers_bytes_max => {
            return Err(Error::HeadersTooLarge {
                max: headers_bytes_max,
            })
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
        Err(_) => return Err(Error::Malformed),
    };
    if header_len > headers_bytes_max {
        return Err(Error::HeadersTooLarge {
            max: headers_bytes_max,
        });
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(Error::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut request = Request {
        method,
        path,
        query,
        header_len,
        content_length: 0,
        upgrade_websocket: false,
        connection_upgrade: false,
        ws_key: None,
        ws_version: None,
        origin: None,
        x_forwarded_for: None,
        authorization: None,
        session: None,
        cors_request_headers: None,
        keep_alive: parsed.version == Some(1),
    };
    let mut content_length = None;
    for header in parsed.headers.iter() {
        let name = header.name;
        // Values of headers we don't read may be any bytes; the ones we read must be text.
        let value = || {
            std::str::from_utf8(header.value)
                .map(|v| v.trim_matches([' ', '\t']))
                .map_err(|_| Error::Malformed)
        };
        if name.eq_ignore_ascii_case("content-length") {
            let n = value()?.parse::<usize>().map_err(|_| Error::Malformed)?;
            // Conflicting lengths are a request-smuggling vector.
            if content_length.is_some_and(|previous| previous != n) {
                return Err(Error::Malformed);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Error::Malformed);
        } else if name.eq_ignore_ascii_case("upgrade") {
            request.upgrade_websocket |= has_token(value()?, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value()?;
            request.connection_upgrade |= has_token(value, "upgrade");
            if has_token(value, "close") {
                request.keep_alive = false;
            } else if has_token(value, "keep-alive") {
                request.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            request.ws_key = Some(value()?);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            request.ws_version = Some(value()?);
        } else if name.eq_ignore_ascii_case("origin") {
            request.origin = Some(value()?);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            request.x_forwarded_for = Some(value()?);
        } else if name.eq_ignore_ascii_case("authorization") {
            request.authorization = Some(value()?);
        } else if name.eq_ignore_ascii_case("session") {
            request.session = Some(value()?);
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            request.cors_request_headers = Some(value()?);
        }
    }
    request.content_length = content_length.unwrap_or(0);
    Ok(Some(request))
}

/// Whether the comma-separated header `value` contains `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
}

/// The raw (not percent-decoded) value of the first `name` parameter in `query`; `""` for a
/// bare `name` with no `=`. EIO, transport and sid values never need decoding; callers
/// comparing other values should compare raw forms.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .strip_prefix('?')
        .unwrap_or(query)
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if pair == name => Some(""),
            _ => None,
        })
}

/// `Sec-WebSocket-Accept` for `ws_key`: base64(sha1(key + GUID)) (RFC 6455 4.2.2).
pub fn accept_key(ws_key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(ws_key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// The 101 response completing a WebSocket upgrade.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(accept.len() + 100);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A response to send: status, content type, its own headers and body. The
/// headers about the connection (keep-alive or close, CORS) are added when
/// it is encoded ([`Response::encode`]), by whoever knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Whole header lines, each ending in CRLF (a page's security headers,
    /// `Retry-After`, ...).
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
    /// The answer to a `HEAD`: the head tells the body's length, and the
    /// body is not sent.
    pub head_only: bool,
}

impl Response {
    /// A response with a JSON body.
    pub fn json(status: u16, body_json: &str) -> Self {
        Self::with_body(status, "application/json", body_json.as_bytes().to_vec())
    }

    pub fn with_body(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
            head_only: false,
        }
    }

    /// Adds the header `name: value`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        for part in [name, ": ", value, "\r\n"] {
            self.headers.extend_from_slice(part.as_bytes());
        }
        self
    }

    /// The complete response: [`head`] with the response's own headers and
    /// `extra_headers` (whole header lines, each ending in CRLF), then the
    /// body (unless it answers a `HEAD`).
    pub fn encode(&self, keep_alive: bool, extra_headers: &[u8]) -> Vec<u8> {
        let mut out = head(
            self.status,
            self.content_type,
            self.body.len(),
            keep_alive,
            &[&self.headers[..], extra_headers].concat(),
        );
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A response head: status line, `Content-Type`, `Content-Length`,
/// `Connection` (`keep-alive` or `close`), `extra_headers` (whole lines,
/// each ending in CRLF) and the blank line; the body follows.
pub fn head(
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
    extra_headers: &[u8],
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = Vec::with_capacity(128 + extra_headers.len() + content_length);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\nConnection: {connection}\r\n",
            reason_phrase(status),
        )
        .as_bytes(),
    );
    out.extend_from_slice(extra_headers);
    out.extend_from_slice(b"\r\n");
    out
}

/// A response with a JSON body.
pub fn json_response(status: u16, body_json: &str) -> Response {
    Response::json(status, body_json)
}

/// A response with a body of `content_type`.
pub fn text_response(status: u16, content_type: &'static str, body: &str) -> Response {
    Response::with_body(status, content_type, body.as_bytes().to_vec())
}

/// A JSON error response with body `{"error":"<message>","code":"<code>"}`.
pub fn json_error(status: u16, code: &str, message: &str) -> Response {
    json_error_with(status, code, message, None)
}

/// Like [`json_error`], with one more field whose value is raw JSON (for
/// example the partial result of an incomplete gather).
pub fn json_error_with(status: u16, code: &str, message: &str, field: Option<(&str, &str)>) -> Response {
    Response::with_body(status, "application/json", json_error_body(code, message, field))
}

/// `{"error":<message>,"code":<code>[,<name>:<raw JSON>]}`: the body of
/// [`json_error_with`], for callers that add headers of their own.
pub fn json_error_body(code: &str, message: &str, field: Option<(&str, &str)>) -> Vec<u8> {
    let extra = field.map_or(0, |(name, raw)| name.len() + raw.len() + 6);
    let mut body = Vec::with_capacity(message.len() + code.len() + extra + 24);
    body.extend_from_slice(b"{\"error\":");
    super::socketio::write_json_str(&mut body, message);
    body.extend_from_slice(b",\"code\":");
    super::socketio::write_json_str(&mut body, code);
    if let Some((name, raw)) = field {
        body.push(b',');
        super::socketio::write_json_str(&mut body, name);
        body.push(b':');
        body.extend_from_slice(raw.as_bytes());
    }
    body.push(b'}');
    body
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
