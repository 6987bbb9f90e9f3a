//! HTTP before the upgrade: `/health`, the upgrade itself, and the errors
//! for bad Engine.IO parameters, methods, paths and headers (Engine.IO's
//! own `{"code","message"}` JSON on the Engine.IO path).

use sonic_rs::JsonValueTrait;

use crate::support::http::{self, get, upgrade};
use crate::support::sio::parse_connect_reply;
use crate::support::ws::{accept_key, OP_TEXT};
use crate::support::{encode_frame, engine_open, random_mask, TestServer, WsClient};

const GOOD_QUERY: &str = "?EIO=4&transport=websocket";

#[test]
fn health_answers_200_json() {
    let server = TestServer::start(2);
    let response = get(server.addr(), "/health");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type of {response:?}"
    );
    assert!(response.json().is_object(), "{response:?}");
}

#[test]
fn upgrade_answers_101_with_the_rfc_accept_key() {
    // The harness's accept computation against RFC 6455's own example.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let server = TestServer::start(2);
    // `WsClient::connect` asserts the 101 and the accept key.
    let mut ws = WsClient::connect(server.addr(), &format!("/realtime/{GOOD_QUERY}"));
    let open = ws.read_frame();
    assert!(open.text().starts_with("0{"), "{open:?}");
}

#[test]
fn wrong_engineio_version_is_400_unsupported_protocol_version() {
    let server = TestServer::start(2);
    for query in [
        "?EIO=3&transport=websocket",
        "?EIO=5&transport=websocket",
        "?EIO=x&transport=polling",
    ] {
        upgrade(server.addr(), "GET", &format!("/realtime/{query}"), &[]).assert_engineio_error(400, 5);
    }
}

#[test]
fn missing_engineio_version_is_400_unsupported_protocol_version() {
    let server = TestServer::start(2);
    upgrade(server.addr(), "GET", "/realtime/?transport=websocket", &[]).assert_engineio_error(400, 5);
}

#[test]
fn missing_or_unknown_transport_is_400_transport_unknown() {
    let server = TestServer::start(2);
    upgrade(server.addr(), "GET", "/realtime/?EIO=4", &[]).assert_engineio_error(400, 0);
    upgrade(server.addr(), "GET", "/realtime/", &[]).assert_engineio_error(400, 0);
    get(server.addr(), "/realtime/?EIO=4&transport=flash").assert_engineio_error(400, 0);
}

#[test]
fn post_handshake_is_400_bad_handshake_method() {
    let server = TestServer::start(2);
    let response = http::request(
        server.addr(),
        &format!("POST /realtime/{GOOD_QUERY} HTTP/1.1\r\nContent-Type: text/plain"),
        "40",
    );
    response.assert_engineio_error(400, 2);
}

#[test]
fn unknown_path_is_404_json() {
    let server = TestServer::start(2);
    get(server.addr(), "/nope").assert_json_error(404);
    get(server.addr(), "/").assert_json_error(404);
    // A WebSocket upgrade on another path is not ours either.
    upgrade(server.addr(), "GET", &format!("/socket.io/{GOOD_QUERY}"), &[]).assert_json_error(404);
}

#[test]
fn upgrade_without_websocket_key_is_400() {
    let server = TestServer::start(2);
    let response = upgrade(
        server.addr(),
        "GET",
        &format!("/realtime/{GOOD_QUERY}"),
        &["sec-websocket-key"],
    );
    response.assert_engineio_error(400, 3);
}

#[test]
fn get_without_upgrade_headers_is_400() {
    let server = TestServer::start(2);
    let response = get(server.addr(), &format!("/realtime/{GOOD_QUERY}"));
    response.assert_engineio_error(400, 3);
}

#[test]
fn path_flag_moves_the_endpoint() {
    let server = TestServer::start_with(2, &["--path", "/socket.io/"], None);
    assert_eq!(server.path(), "/socket.io/");
    let open = engine_open(&server);
    assert!(open.packet.starts_with("0{"), "{}", open.packet);
    upgrade(server.addr(), "GET", &format!("/realtime/{GOOD_QUERY}"), &[]).assert_json_error(404);
}

#[test]
fn upgrade_request_in_small_pieces_works() {
    let server = TestServer::start(2);
    let target = format!("/realtime/{GOOD_QUERY}");
    let mut ws = WsClient::connect_with(server.addr(), &target, &[], 7);
    let open = ws.read_frame();
    assert!(open.text().starts_with("0{"), "{open:?}");
}

#[test]
fn frames_sent_with_the_upgrade_request_are_processed() {
    let server = TestServer::start(2);
    // A client may pipeline its first frames behind the request head.
    let mut early = encode_frame(true, 0, OP_TEXT, b"6", Some(random_mask()));
    early.extend(encode_frame(true, 0, OP_TEXT, b"40{}", Some(random_mask())));
    let target = format!("/realtime/{GOOD_QUERY}");
    let mut ws = WsClient::connect_with(server.addr(), &target, &early, usize::MAX);
    let open = ws.read_frame();
    assert!(open.text().starts_with("0{"), "{open:?}");
    let connected = ws.read_frame();
    parse_connect_reply(connected.text());
}

#[test]
fn oversized_request_head_is_rejected() {
    let server = TestServer::start(2);
    let cookie = "c".repeat(64 * 1024);
    let response = http::request(
        server.addr(),
        &format!("GET /realtime/{GOOD_QUERY} HTTP/1.1\r\nCookie: {cookie}"),
        "",
    );
    assert!(
        (400..500).contains(&response.status),
        "status {} for a 64 KiB head",
        response.status
    );
}
