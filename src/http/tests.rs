use super::*;
use crate::config::{Cli, Config};
use crate::protocol::http::parse_request;

fn config() -> Config {
    Config::load(&Cli::default()).expect("default config")
}

fn route_of(head: &str) -> Route {
    let request = parse_request(head.as_bytes(), 16 * 1024)
        .expect("well-formed")
        .expect("complete");
    route(&request, &config())
}

fn refused(head: &str) -> String {
    match route_of(head) {
        Route::Reply(r) => format!("{} {}", r.status, String::from_utf8(r.body).unwrap()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const WS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[test]
fn engine_io_requests_are_routed_by_transport_and_sid() {
    assert_eq!(
        route_of("GET /realtime/?EIO=4&transport=polling&t=x HTTP/1.1\r\n\r\n"),
        Route::Open {
            transport: Transport::Polling,
            accept: None
        }
    );
    // Both default paths: Agnost's client library uses the second.
    assert_eq!(
        route_of("POST /realtime/realtime/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\n\r\n"),
        Route::Session {
            sid: "abc".into(),
            transport: Transport::Polling,
            accept: None
        }
    );
    assert_eq!(
        route_of(&format!(
            "GET /realtime?EIO=4&transport=websocket&sid=abc HTTP/1.1\r\n{WS}\r\n"
        )),
        Route::Session {
            sid: "abc".into(),
            transport: Transport::WebSocket,
            accept: Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        }
    );
    assert!(matches!(
        route_of(&format!(
            "GET /realtime/?EIO=4&transport=websocket HTTP/1.1\r\n{WS}\r\n"
        )),
        Route::Open {
            transport: Transport::WebSocket,
            accept: Some(_)
        }
    ));
    assert_eq!(
        route_of("OPTIONS /realtime/?EIO=4&transport=polling HTTP/1.1\r\n\r\n"),
        Route::Preflight
    );
}

#[test]
fn engine_io_refusals_carry_engine_io_codes() {
    assert_eq!(
        refused("GET /realtime/?EIO=4&transport=flash HTTP/1.1\r\n\r\n"),
        r#"400 {"code":0,"message":"Transport unknown"}"#
    );
    assert_eq!(
        refused("GET /realtime/?EIO=4 HTTP/1.1\r\n\r\n"),
        r#"400 {"code":0,"message":"Transport unknown"}"#
    );
    assert_eq!(
        refused("GET /realtime/?EIO=3&transport=polling HTTP/1.1\r\n\r\n"),
        r#"400 {"code":5,"message":"Unsupported protocol version"}"#
    );
    assert_eq!(
        refused("POST /realtime/?EIO=4&transport=polling HTTP/1.1\r\n\r\n"),
        r#"400 {"code":2,"message":"Bad handshake method"}"#
    );
    assert_eq!(
        refused("PUT /realtime/?EIO=4&transport=polling&sid=a HTTP/1.1\r\n\r\n"),
        r#"400 {"code":3,"message":"Bad request"}"#
    );
    assert_eq!(
        refused("GET /realtime/?EIO=4&transport=websocket HTTP/1.1\r\n\r\n"),
        r#"400 {"code":3,"message":"Bad request"}"#
    );
}

#[test]
fn other_routes() {
    assert_eq!(route_of("GET /api/send HTTP/1.1\r\n\r\n"), Route::Api);
    assert_eq!(route_of("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
    assert_eq!(
        route_of("POST /env-1/agnost/realtime/get-members HTTP/1.1\r\n\r\n"),
        Route::AgnostMembers {
            env_id: "env-1".into()
        }
    );
    assert_eq!(
        route_of("OPTIONS /env-1/agnost/realtime/get-members HTTP/1.1\r\n\r\n"),
        Route::Preflight
    );
    assert!(refused("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n").starts_with("404 "));
    assert!(refused("GET /env-1/agnost/realtime/get-members HTTP/1.1\r\n\r\n").starts_with("405 {\"errors\""));
}
