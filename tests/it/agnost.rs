//! What Agnost's own client library needs beyond socket.io-client: its
//! socket path (`/realtime/realtime/`, served by default) and its
//! get-members route, `POST {baseUrl}/agnost/realtime/get-members` with the
//! API key in `Authorization` and the session in `Session`, answered with
//! the channel's members or refused in Agnost's error shape.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::support::poll::HttpConn;
use crate::support::sio::hs256_jwt;
use crate::support::{engine_open, ShardBarrier, Sio, TestServer};

const CONFIG: &str = r#"
[[environments]]
id = "default"

[[environments]]
id = "locked"
api_key_required = true
session_required = true
session_secret = "agnost-secret"

[[environments.api_keys]]
key = "pk_web"
origins = ["https://app.example.com"]
ips = "all"

[[environments.api_keys]]
key = "pk_off"
allow_realtime = false
"#;

fn members(conn: &mut HttpConn, env: &str, headers: &str, body: &str) -> (u16, Value) {
    let response = conn.request(
        "POST",
        &format!("/{env}/agnost/realtime/get-members"),
        &format!("Content-Type: application/json\r\n{headers}"),
        body.as_bytes(),
    );
    let json = sonic_rs::from_str(&response.body).unwrap_or_else(|e| panic!("{response:?}: {e}"));
    (response.status, json)
}

/// `(status, code)` of an Agnost-shaped refusal.
fn refusal(answer: (u16, Value)) -> (u16, String) {
    let (status, json) = answer;
    let errors = json
        .get("errors")
        .and_then(|e| e.as_array())
        .unwrap_or_else(|| panic!("{json:?}"));
    assert_eq!(errors.len(), 1, "{json:?}");
    let error = &errors[0];
    assert_eq!(
        error.get("origin").and_then(|o| o.as_str()),
        Some("client_error"),
        "{json:?}"
    );
    assert!(error
        .get("message")
        .and_then(|m| m.as_str())
        .is_some_and(|m| !m.is_empty()));
    (
        status,
        error
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn the_library_s_socket_path_is_served_by_default() {
    let server = TestServer::start(2);
    let target = "/realtime/realtime/?EIO=4&transport=websocket";
    let open =
        crate::support::sio::engine_open_over(crate::support::WsClient::connect(server.addr(), target));
    let mut sio = Sio::connect_after_open(open, r#"{"envId":"default"}"#);
    sio.emit(r#"["message",{"eventName":"hi","message":1,"echo":true}]"#);
    sio.expect(r#"42["hi",{"channel":null,"message":1}]"#);
    // And the first path as well.
    assert!(engine_open(&server).packet.starts_with("0{"));
}

#[test]
fn get_members_lists_the_channel_with_the_environment_s_rules() {
    let server = TestServer::start_with(2, &[], Some(CONFIG));
    let mut barrier = ShardBarrier::new(&server);
    let session = hs256_jwt("agnost-secret", r#"{"sub":"u1"}"#);
    let auth = format!(r#"{{"envId":"locked","apiKey":"pk_web","session":"{session}"}}"#);
    let origin = "Origin: https://app.example.com\r\n";
    let open = crate::support::sio::engine_open_over(
        crate::support::net::upgrade_with(
            std::net::TcpStream::connect(server.addr()).unwrap(),
            &format!("{}?EIO=4&transport=websocket", server.path()),
            origin,
            b"",
        )
        .switched(),
    );
    let mut member = Sio::connect_after_open(open, &auth);
    member.emit(r#"["update",{"data":{"name":"ann"}}]"#);
    member.join("lobby");
    member.sentinel("lobby", "joined");
    barrier.sync();

    let mut conn = HttpConn::connect(server.addr());
    let good = format!("Authorization: pk_web\r\nSession: {session}\r\n{origin}");
    let (status, json) = members(&mut conn, "locked", &good, r#"{"channel":"lobby"}"#);
    assert_eq!(status, 200, "{json:?}");
    let list = json.as_array().unwrap_or_else(|| panic!("{json:?}"));
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].get("id").and_then(|i| i.as_str()),
        Some(member.id.as_str())
    );
    assert_eq!(
        list[0]
            .get("data")
            .and_then(|d| d.get("name"))
            .and_then(|n| n.as_str()),
        Some("ann")
    );
    // An empty channel is an empty list.
    let (status, json) = members(&mut conn, "locked", &good, r#"{"channel":"nobody"}"#);
    assert_eq!((status, json.as_array().map(|a| a.len())), (200, Some(0)));

    // Refusals, in the connect checks' order and codes.
    let no_key = format!("Session: {session}\r\n{origin}");
    assert_eq!(
        refusal(members(&mut conn, "locked", &no_key, r#"{"channel":"lobby"}"#)),
        (401, "missing_api_key".into())
    );
    let bad_key = format!("Authorization: nope\r\nSession: {session}\r\n{origin}");
    assert_eq!(
        refusal(members(&mut conn, "locked", &bad_key, r#"{"channel":"lobby"}"#)),
        (401, "invalid_api_key".into())
    );
    let off_key = format!("Authorization: pk_off\r\nSession: {session}\r\n{origin}");
    assert_eq!(
        refusal(members(&mut conn, "locked", &off_key, r#"{"channel":"lobby"}"#)),
        (401, "unauthorizez_api_key".into())
    );
    let other_origin =
        format!("Authorization: pk_web\r\nSession: {session}\r\nOrigin: https://evil.example\r\n");
    assert_eq!(
        refusal(members(
            &mut conn,
            "locked",
            &other_origin,
            r#"{"channel":"lobby"}"#
        )),
        (401, "domain_not_authorized".into())
    );
    let no_session = format!("Authorization: pk_web\r\n{origin}");
    assert_eq!(
        refusal(members(
            &mut conn,
            "locked",
            &no_session,
            r#"{"channel":"lobby"}"#
        )),
        (401, "missing_session_token".into())
    );
    let bad_session = format!("Authorization: pk_web\r\nSession: x.y.z\r\n{origin}");
    assert_eq!(
        refusal(members(
            &mut conn,
            "locked",
            &bad_session,
            r#"{"channel":"lobby"}"#
        )),
        (401, "invalid_session_token".into())
    );
    assert_eq!(
        refusal(members(&mut conn, "nowhere", &good, r#"{"channel":"lobby"}"#)),
        (404, "no_environment_found".into())
    );
    assert_eq!(
        refusal(members(&mut conn, "locked", &good, r#"{"chan":1}"#)),
        (400, "invalid_request_body".into())
    );
    // An environment without key or session rules answers anyone.
    let (status, json) = members(&mut conn, "default", "", r#"{"channel":"lobby"}"#);
    assert_eq!(
        (status, json.as_array().map(|a| a.len())),
        (200, Some(0)),
        "{json:?}"
    );
}
