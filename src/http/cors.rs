//! CORS: the headers that let a browser page from another origin read the
//! answers of the routes it may call (long-polling, Agnost's get-members
//! route, `/health`), and the answer to its preflight.
//!
//! Which origins: `cors_origins` (every origin by default, as Agnost's
//! server allows `*`); credentials (cookies) only when `cors_credentials`
//! is set, and then the origin is echoed instead of `*`, as the Fetch
//! standard requires. An origin that is not allowed gets no CORS headers:
//! the browser then keeps the answer from the page.

use crate::config::Config;

/// Methods a preflight may ask for.
const METHODS: &str = "GET, POST, OPTIONS";
/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE_S: u32 = 86_400;

/// The CORS header lines (each ending in CRLF) for an answer to a request
/// with `origin`; empty when there is no `Origin` or it is not allowed.
pub(crate) fn headers(config: &Config, origin: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(origin) = origin.filter(|o| config.cors_origins.allows(o)) else {
        return out;
    };
    let echo = config.cors_credentials || config.cors_origins != crate::config::CorsOrigins::Any;
    if echo {
        push(&mut out, "Access-Control-Allow-Origin", origin);
        push(&mut out, "Vary", "Origin");
    } else {
        push(&mut out, "Access-Control-Allow-Origin", "*");
    }
    if config.cors_credentials {
        push(&mut out, "Access-Control-Allow-Credentials", "true");
    }
    out
}

/// The header lines of a preflight's answer: [`headers`], plus the methods
/// and the request headers it asked for (as socket.io's `cors` module does,
/// the requested headers are allowed as asked).
pub(crate) fn preflight_headers(config: &Config, origin: Option<&str>, requested: Option<&str>) -> Vec<u8> {
    let mut out = headers(config, origin);
    if out.is_empty() {
        return out;
    }
    push(&mut out, "Access-Control-Allow-Methods", METHODS);
    if let Some(requested) = requested.filter(|r| is_header_list(r)) {
        push(&mut out, "Access-Control-Allow-Headers", requested);
    }
    push(
        &mut out,
        "Access-Control-Max-Age",
        &PREFLIGHT_MAX_AGE_S.to_string(),
    );
    out
}

/// Whether `value` is a comma-separated list of header names (so echoing it
/// cannot inject anything into the response head).
fn is_header_list(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b',' | b' '))
}

fn push(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config, CorsOrigins};

    fn config(origins: CorsOrigins, credentials: bool) -> Config {
        let mut config = Config::load(&Cli::default()).expect("default config");
        config.cors_origins = origins;
        config.cors_credentials = credentials;
        config
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn any_origin_without_credentials_is_a_star() {
        let c = config(CorsOrigins::Any, false);
        assert_eq!(
            text(headers(&c, Some("https://a.example"))),
            "Access-Control-Allow-Origin: *\r\n"
        );
        assert_eq!(text(headers(&c, None)), "", "no Origin, no CORS");
    }

    #[test]
    fn credentials_and_lists_echo_the_origin() {
        let c = config(CorsOrigins::Any, true);
        assert_eq!(
            text(headers(&c, Some("https://a.example"))),
            "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n\
             Access-Control-Allow-Credentials: true\r\n"
        );
        let c = config(CorsOrigins::List(vec!["*.example.com".into()]), false);
        assert_eq!(
            text(headers(&c, Some("https://app.example.com"))),
            "Access-Control-Allow-Origin: https://app.example.com\r\nVary: Origin\r\n"
        );
        assert_eq!(text(headers(&c, Some("https://evil.org"))), "");
    }

    #[test]
    fn preflights_allow_the_methods_and_the_asked_headers() {
        let c = config(CorsOrigins::Any, false);
        assert_eq!(
            text(preflight_headers(
                &c,
                Some("https://a.example"),
                Some("authorization, session")
            )),
            "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
             Access-Control-Allow-Headers: authorization, session\r\nAccess-Control-Max-Age: 86400\r\n"
        );
        // Anything that is not a header list is not echoed.
        let evil = text(preflight_headers(
            &c,
            Some("https://a.example"),
            Some("a\r\nSet-Cookie: x"),
        ));
        assert!(!evil.contains("Set-Cookie"), "{evil}");
        let c = config(CorsOrigins::List(vec!["https://ok.example".into()]), false);
        assert_eq!(text(preflight_headers(&c, Some("https://no.example"), None)), "");
    }
}
