use expect_test::{expect, Expect};

use super::*;

const UPGRADE: &str = "GET /realtime/?EIO=4&transport=websocket HTTP/1.1\r\n\
Host: example.com\r\n\
upgrade: WebSocket\r\n\
Connection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: http://example.com\r\n\
X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
\r\n";

fn check(request: &str, expect: Expect) {
    let actual = match parse_request(request.as_bytes(), 1024) {
        Ok(Some(r)) => format!("{r:#?}"),
        Ok(None) => "incomplete".to_owned(),
        Err(e) => format!("error {e:?}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn parse_upgrade() {
    check(
        UPGRADE,
        expect![[r#"
            Request {
                method: "GET",
                path: "/realtime/",
                query: "EIO=4&transport=websocket",
                header_len: 262,
                content_length: 0,
                upgrade_websocket: true,
                connection_upgrade: true,
                ws_key: Some(
                    "dGhlIHNhbXBsZSBub25jZQ==",
                ),
                ws_version: Some(
                    "13",
                ),
                origin: Some(
                    "http://example.com",
                ),
                x_forwarded_for: Some(
                    "10.0.0.1, 10.0.0.2",
                ),
                authorization: None,
                session: None,
                cors_request_headers: None,
                keep_alive: true,
            }"#]],
    );
    assert_eq!(UPGRADE.len(), 262);
}

#[test]
fn parse_request_cases() {
    check(
        "POST /api/x HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"a\":1}",
        expect![[r#"
            Request {
                method: "POST",
                path: "/api/x",
                query: "",
                header_len: 88,
                content_length: 12,
                upgrade_websocket: false,
                connection_upgrade: false,
                ws_key: None,
                ws_version: None,
                origin: None,
                x_forwarded_for: None,
                authorization: Some(
                    "Bearer t",
                ),
                session: None,
                cors_request_headers: None,
                keep_alive: false,
            }"#]],
    );
    check(
        "GET /health HTTP/1.1\r\n\r\n",
        expect![[r#"
            Request {
                method: "GET",
                path: "/health",
                query: "",
                header_len: 24,
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
                keep_alive: true,
            }"#]],
    );
    // Every strict prefix of a request head is incomplete.
    for n in 0..UPGRADE.len() {
        check(&UPGRADE[..n], expect!["incomplete"]);
    }
    check(
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        expect![[r#"
            Request {
                method: "GET",
                path: "/",
                query: "",
                header_len: 56,
                content_length: 1,
                upgrade_websocket: false,
                connection_upgrade: false,
                ws_key: None,
                ws_version: None,
                origin: None,
                x_forwarded_for: None,
                authorization: None,
                session: None,
                cors_request_headers: None,
                keep_alive: true,
            }"#]],
    );

    // Negative space.
    check(
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        expect!["error Malformed"],
    );
    check(
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        expect!["error Malformed"],
    );
    check(
        "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        expect!["error Malformed"],
    );
    check(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        expect!["error Malformed"],
    );
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nOrigin: \xff\r\n\r\n", 1024),
        Err(Error::Malformed)
    );
    // Non-UTF-8 values of headers we don't read are fine.
    assert!(matches!(
        parse_request(b"GET / HTTP/1.1\r\nX-Other: \xff\r\n\r\n", 1024),
        Ok(Some(_))
    ));
    check(
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        expect!["error Malformed"],
    );
    check("GET\r\n\r\n", expect!["error Malformed"]);
    check("\x16\x03\x01\x02\x00", expect!["error Malformed"]);
    check("GET / HTTP/2.0\r\n\r\n", expect!["error Malformed"]);
    let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let too_many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        parse_request(too_many.as_bytes(), 4096),
        Err(Error::TooManyHeaders)
    );
}

#[test]
fn headers_too_large_even_when_incomplete() {
    let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(2000));
    assert_eq!(
        parse_request(big.as_bytes(), 1024),
        Err(Error::HeadersTooLarge { max: 1024 })
    );
    assert_eq!(
        parse_request(&big.as_bytes()[..1500], 1024),
        Err(Error::HeadersTooLarge { max: 1024 })
    );
    assert_eq!(parse_request(&big.as_bytes()[..1000], 1024), Ok(None));
    assert!(matches!(parse_request(big.as_bytes(), 4096), Ok(Some(_))));
}

#[test]
fn connection_and_upgrade_tokens() {
    for (connection, upgrade, expected) in [
        ("Upgrade", "websocket", (true, true)),
        ("upgrade", "WEBSOCKET", (true, true)),
        ("keep-alive,upgrade", "h2c, websocket", (true, true)),
        ("keep-alive", "websocket", (true, false)),
        ("Upgraded", "websockets", (false, false)),
    ] {
        let request = format!("GET / HTTP/1.1\r\nConnection: {connection}\r\nUpgrade: {upgrade}\r\n\r\n");
        let r = parse_request(request.as_bytes(), 1024).unwrap().unwrap();
        assert_eq!((r.upgrade_websocket, r.connection_upgrade), expected, "{request}");
    }
}

#[test]
fn query_params() {
    let q = "EIO=4&transport=websocket&flag&empty=&t=a%20b";
    assert_eq!(query_param(q, "EIO"), Some("4"));
    assert_eq!(query_param(q, "transport"), Some("websocket"));
    assert_eq!(query_param(q, "flag"), Some(""));
    assert_eq!(query_param(q, "empty"), Some(""));
    assert_eq!(query_param(q, "t"), Some("a%20b"));
    assert_eq!(query_param(q, "eio"), None);
    assert_eq!(query_param(q, "EI"), None);
    assert_eq!(query_param("", "EIO"), None);
    assert_eq!(query_param("?EIO=3&EIO=4", "EIO"), Some("3"));
    assert_eq!(query_param("a=b=c", "a"), Some("b=c"));
}

#[test]
fn accept_key_rfc_example() {
    // RFC 6455 1.3.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn responses() {
    expect![[r#"
        HTTP/1.1 101 Switching Protocols
        Upgrade: websocket
        Connection: Upgrade
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=

    "#]]
    .assert_eq(
        &String::from_utf8(switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
            .unwrap()
            .replace("\r\n", "\n"),
    );
    expect![[r#"
        HTTP/1.1 200 OK
        Content-Type: application/json
        Content-Length: 11
        Connection: close

        {"ok":true}"#]]
    .assert_eq(
        &String::from_utf8(json_response(200, r#"{"ok":true}"#).encode(false, b""))
            .unwrap()
            .replace("\r\n", "\n"),
    );
    expect![[r#"
        HTTP/1.1 400 Bad Request
        Content-Type: application/json
        Content-Length: 52
        Connection: close

        {"error":"Unsupported \"EIO\"","code":"bad_request"}"#]]
    .assert_eq(
        &String::from_utf8(json_error(400, "bad_request", "Unsupported \"EIO\"").encode(false, b""))
            .unwrap()
            .replace("\r\n", "\n"),
    );
    // The response parses back with httparse, and the length is the body's.
    let response = json_error(404, "not_found", "é").encode(true, b"X-A: b\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = parsed.parse(&response).unwrap() else {
        panic!()
    };
    assert_eq!(parsed.code, Some(404));
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name == "Content-Length")
        .unwrap()
        .value;
    assert_eq!(
        std::str::from_utf8(length).unwrap().parse::<usize>().unwrap(),
        response.len() - n
    );
}

/// HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes it
/// unless told to keep it.
#[test]
fn keep_alive_follows_the_version_and_the_connection_header() {
    let keep = |head: &str| parse_request(head.as_bytes(), 1024).unwrap().unwrap().keep_alive;
    assert!(keep("GET / HTTP/1.1\r\n\r\n"));
    assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert!(!keep("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n"));
    assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
    assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    let r = parse_request(
        b"OPTIONS / HTTP/1.1\r\nSession: tok\r\nAccess-Control-Request-Headers: authorization\r\n\r\n",
        1024,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.session, Some("tok"));
    assert_eq!(r.cors_request_headers, Some("authorization"));
}

#[test]
fn fuzz_entry_survives_prefixes() {
    for n in 0..UPGRADE.len() {
        crate::protocol::fuzzing::upgrade_request(&UPGRADE.as_bytes()[..n]);
    }
}

mod proptests;
