#!/usr/bin/env python3
"""Regenerates the seed corpus in fuzz/seeds/<target>/ (committed; run from anywhere).

Seeds are real-looking inputs, one file each: what browsers and socket.io-client send, the
example config, and a few near misses, so the fuzzer starts from the interesting shapes.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MASKS = [b"\x37\xfa\x21\x3d", b"\x00\x00\x00\x00", b"\xde\xad\xbe\xef"]


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(opcode, payload, fin=True, mask=MASKS[0], rsv=0):
    """A client frame: masked as RFC 6455 requires."""
    if isinstance(payload, str):
        payload = payload.encode()
    out = bytearray([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    if n < 126:
        out.append(0x80 | n)
    elif n <= 0xFFFF:
        out.append(0x80 | 126)
        out += struct.pack(">H", n)
    else:
        out.append(0x80 | 127)
        out += struct.pack(">Q", n)
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def websocket_frames():
    t = "websocket_frame"
    write(t, "text_connect", frame(1, "40"))
    write(t, "text_connect_auth", frame(1, '40{"envId":"default","apiKey":"pk_live_example"}', mask=MASKS[2]))
    write(t, "text_join", frame(1, '42["join",{"channel":"room-1","data":{"name":"ann"}}]'))
    write(t, "text_pong", frame(1, "3"))
    write(t, "text_probe", frame(1, "2probe", mask=MASKS[1]))
    write(t, "text_unicode", frame(1, '42["message",{"channel":"r","message":"héllo ✓ 😀"}]'))
    write(t, "text_126", frame(1, '42["message",{"channel":"r","message":"' + "x" * 200 + '"}]'))
    # 64-bit length form without its 64 KiB payload (the fuzz harness's limit is 64 KiB).
    write(t, "text_len64_truncated", b"\x81\xff" + struct.pack(">Q", 65536) + MASKS[0] + b"42")
    write(t, "binary_event_and_attachment",
          frame(1, '451-["message",{"channel":"r","message":{"_placeholder":true,"num":0}}]')
          + frame(2, bytes(range(32))))
    write(t, "binary_empty", frame(2, b""))
    write(t, "ping", frame(9, b"hi"))
    write(t, "pong", frame(10, b""))
    write(t, "close_empty", frame(8, b""))
    write(t, "close_1000", frame(8, struct.pack(">H", 1000) + b"bye"))
    write(t, "close_1001", frame(8, struct.pack(">H", 1001)))
    write(t, "close_4000_reason", frame(8, struct.pack(">H", 4000) + "going ✓".encode()))
    write(t, "close_bad_code", frame(8, struct.pack(">H", 1005)))
    write(t, "close_one_byte", frame(8, b"\x03"))
    write(t, "fragmented_text",
          frame(1, '42["join",', fin=False) + frame(0, '{"channel":', fin=False) + frame(0, '"a"}]'))
    write(t, "fragmented_with_ping",
          frame(1, "42[\"m\",", fin=False) + frame(9, b"p") + frame(0, '"x"]'))
    write(t, "fragmented_utf8_split",
          frame(1, "42[\"m\",\"\xc3".encode("latin-1"), fin=False) + frame(0, b"\xa9\"]"))
    write(t, "fragmented_binary", frame(2, b"\x00\x01", fin=False) + frame(0, b"\x02\x03"))
    write(t, "continuation_without_start", frame(0, "x"))
    write(t, "invalid_utf8", frame(1, b"\xff\xfe"))
    write(t, "unmasked", b"\x81\x02" + b"40")
    write(t, "reserved_bits", frame(1, "40", rsv=0x40))
    write(t, "unknown_opcode", frame(3, "x"))
    write(t, "control_fragmented", frame(9, "p", fin=False))
    write(t, "control_too_long", frame(9, b"p" * 126))
    write(t, "huge_length", b"\x82\xff" + struct.pack(">Q", 1 << 62) + MASKS[0])
    write(t, "truncated", frame(1, '42["join",{"channel":"a"}]')[:9])
    write(t, "session",
          frame(1, "40") + frame(1, "3") + frame(1, '42["join",{"channel":"lobby"}]')
          + frame(1, '421["get_members",{"channel":"lobby"}]') + frame(8, struct.pack(">H", 1000)))


def engineio_packets():
    t = "engineio_packet"
    cases = {
        "open": "0", "open_json": '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
        "close": "1", "ping": "2", "ping_probe": "2probe", "pong": "3", "pong_probe": "3probe",
        "message_connect": "40", "message_connect_auth": '40{"envId":"default","session":"a.b.c"}',
        "message_event": '42["join",{"channel":"room"}]', "message_text": "4hello",
        "message_unicode": '42["m","日本語 ✓"]', "upgrade": "5", "noop": "6",
        "empty": "", "bad_type": "7", "bad_type_letter": "x", "multibyte_first": "é4",
        "binary_event": '451-["message",{"_placeholder":true,"num":0}]',
    }
    for name, text in cases.items():
        write(t, name, text)


SOCKETIO = {
    "connect": "0",
    "connect_auth": '0{"envId":"default","apiKey":"pk_live_example","echoMessages":true}',
    "connect_master": '0{"accessToken":"change-me"}',
    "connect_nsp": "0/admin,",
    "connect_nsp_auth": '0/admin,{"token":"x"}',
    "disconnect": "1",
    "disconnect_nsp": "1/admin,",
    "event_join": '2["join",{"channel":"room-1","data":{"name":"ann","age":3}}]',
    "event_leave": '2["leave",{"channel":"room-1"}]',
    "event_update": '2["update",{"channel":"room-1","data":{"status":"away"}}]',
    "event_message": '2["message",{"channel":"room-1","eventName":"chat","message":{"text":"hi"}}]',
    "event_message_env": '2["message",{"eventName":"news","message":[1,2.5,-3e2,true,false,null]}]',
    "event_ack": '212["get_members",{"channel":"room-1"}]',
    "event_ack_big": '218446744073709551615["x"]',
    "event_ack_overflow": '218446744073709551616["x"]',
    "event_nsp_ack": '2/chat,7["msg","hi"]',
    "event_escaped_name": '2["jo\\u0069n",{"channel":"a\\"b"}]',
    "event_unicode": '2["message",{"channel":"😀","message":"héllo\\ud83d\\ude00"}]',
    "event_lone_surrogate": '2["m","\\ud800"]',
    "event_whitespace": ' 2[ "join" , { "channel" : "x" } ] ',
    "event_ws_inside": '2 [\n"join",\t{"channel":"x"}\r\n]',
    "event_send_message": '2["send_message",{"envId":"default","channelName":"r","eventName":"e","message":{"a":1}}]',
    "event_broadcast": '2["broadcast_message",{"envId":"default","eventName":"e","message":"x"}]',
    "event_user_event": '2["user_event",{"envId":"default","userId":"u1","eventName":"e","session":{},"user":{"id":"u1"}}]',
    "event_not_array": '2{"channel":"x"}',
    "event_number_name": '2[1,2]',
    "event_empty_array": "2[]",
    "event_trailing": '2["a"]x',
    "event_deep": "2" + "[" * 40 + "]" * 40,
    "event_bad_json": '2["join",{"channel":}]',
    "ack": '312[{"id":"abc","data":null}]',
    "ack_empty": "35[]",
    "connect_error": '4{"message":"unauthorized","data":{"code":"invalid_api_key"}}',
    "binary_event": '51-["message",{"channel":"r","message":{"_placeholder":true,"num":0}}]',
    "binary_event_two": '52-["m",{"_placeholder":true,"num":1},[{"_placeholder":true,"num":0}]]',
    "binary_event_ack_nsp": '51-/chat,9["m",{"_placeholder":true,"num":0}]',
    "binary_event_missing_ref": '52-["m",{"_placeholder":true,"num":0}]',
    "binary_event_bad_num": '51-["m",{"_placeholder":true,"num":5}]',
    "binary_event_no_dash": '51["m"]',
    "binary_event_too_many": '51001-["m"]',
    "binary_ack": '61-15[{"_placeholder":true,"num":0}]',
    "unknown_type": "9",
    "bad_nsp": '0/ad"min,{}',
}


def socketio_packets():
    for name, text in SOCKETIO.items():
        write("socketio_packet", name, text)


def upgrade_requests():
    t = "upgrade_request"
    crlf = lambda lines: "\r\n".join(lines) + "\r\n\r\n"
    write(t, "browser_upgrade", crlf([
        "GET /realtime/?EIO=4&transport=websocket HTTP/1.1",
        "Host: localhost:4000", "Connection: Upgrade", "Pragma: no-cache", "Cache-Control: no-cache",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", "Upgrade: websocket",
        "Origin: https://app.example.com", "Sec-WebSocket-Version: 13",
        "Accept-Encoding: gzip, deflate, br", "Accept-Language: en-US,en;q=0.9",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]))
    write(t, "node_client_upgrade", crlf([
        "GET /realtime/?EIO=4&transport=websocket&sid=abc HTTP/1.1",
        "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
        "Connection: keep-alive, Upgrade", "Upgrade: WebSocket", "Host: 127.0.0.1:4000"]))
    write(t, "lowercase_headers", crlf([
        "GET /realtime/?EIO=4&transport=websocket HTTP/1.1", "host: a", "upgrade: websocket",
        "connection: upgrade", "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==", "sec-websocket-version: 13",
        "x-forwarded-for: 203.0.113.9, 10.0.0.1"]))
    write(t, "health", crlf(["GET /health HTTP/1.1", "Host: localhost"]))
    write(t, "metrics", crlf(["GET /metrics HTTP/1.0"]))
    write(t, "polling", crlf(["GET /realtime/?EIO=4&transport=polling&t=Nx1 HTTP/1.1", "Host: x"]))
    write(t, "eio3", crlf(["GET /realtime/?EIO=3&transport=websocket HTTP/1.1", "Host: x"]))
    write(t, "api_post", crlf([
        "POST /api/v1/environments/default/messages HTTP/1.1", "Host: x",
        "Authorization: Bearer change-me", "Content-Type: application/json", "Content-Length: 27"])
        + '{"channel":"r","message":1}')
    write(t, "duplicate_content_length", crlf([
        "POST /api HTTP/1.1", "Content-Length: 5", "Content-Length: 6"]))
    write(t, "transfer_encoding", crlf(["POST /api HTTP/1.1", "Transfer-Encoding: chunked"]))
    write(t, "bad_content_length", crlf(["POST /api HTTP/1.1", "Content-Length: -1"]))
    write(t, "partial", "GET /realtime/?EIO=4&transport=websocket HTTP/1.1\r\nHost: loc")
    write(t, "bare_lf", "GET / HTTP/1.1\nHost: x\n\n")
    write(t, "non_utf8_value", b"GET / HTTP/1.1\r\nOrigin: \xff\xfe\r\nX-Other: \xc3\x28\r\n\r\n")
    write(t, "many_headers", crlf(["GET / HTTP/1.1"] + [f"X-H{i}: {i}" for i in range(70)]))
    write(t, "garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    write(t, "query_edge", crlf(["GET /realtime/?EIO&EIO=4&&=x&transport= HTTP/1.1", "Host: x"]))


def config_files():
    t = "config_file"
    with open(os.path.join(ROOT, "ringcast.example.toml"), "rb") as f:
        write(t, "example", f.read())
    write(t, "empty", "")
    write(t, "server_only", '[server]\nlisten = "127.0.0.1:4000"\nshards = 2\npath = "/realtime/"\n'
          'master_token = "secret"\nping_interval_ms = 25000\nping_timeout_ms = 20000\n'
          'max_payload_bytes = 1000000\nbacklog = 1024\n')
    write(t, "environment_session", '[[environments]]\nid = "default"\nenabled = true\n'
          'echo_messages = false\nsession_secret = "hs256-secret"\n')
    write(t, "two_envs", '[server]\nshards = 1\n\n[[environments]]\nid = "a"\n\n[[environments]]\n'
          'id = "b"\nsuspended = true\nrate_limits = [{ limit = 5, window_s = 1 }]\n')
    write(t, "api_keys", '[[environments]]\nid = "p"\napi_key_required = true\n'
          '[[environments.api_keys]]\nkey = "k1"\nexpires_at = 1893456000\norigins = "all"\n'
          'ips = ["::1", "192.168.0.0/16"]\n[[environments.api_keys]]\nkey = "k2"\n'
          'expires_at = "2030-01-01T00:00:00.123+02:00"\nallow_realtime = false\n')
    write(t, "limits", '[server]\nring_entries = 4096\nmesh_queue_messages_max = 1024\n'
          'channel_name_bytes_max = 64\ntrusted_proxies = ["10.0.0.0/8", "fe80::1"]\n'
          'rate_limit_slots = 1000\nhttp_head_bytes_max = 8192\nhttp_head_timeout_ms = 5000\n'
          'connect_timeout_ms = 3000\nsend_queue_bytes_max = 65536\nconnections_max = 100000\n'
          'connections_per_ip_max = 50\ndrain_window_ms = 1000\nshutdown_deadline_ms = 2000\n')
    write(t, "bad_unknown_field", "[server]\nlisten_port = 4000\n")
    write(t, "bad_duplicate_env", '[[environments]]\nid = "a"\n[[environments]]\nid = "a"\n')
    write(t, "bad_shards_zero", "[server]\nshards = 0\n")
    write(t, "bad_path", '[server]\npath = "realtime?x"\n')
    write(t, "bad_syntax", '[server\nlisten = "x\n')
    write(t, "bad_rate_limit", '[[environments]]\nid = "a"\nrate_limits = [{ limit = 70000, window_s = 0 }]\n')
    write(t, "bad_expiry", '[[environments]]\nid = "a"\n[[environments.api_keys]]\nkey = "k"\n'
          'expires_at = "1969-12-31T23:59:59Z"\n')
    write(t, "unicode", '[server]\nmaster_token = "tökén ✓"\n[[environments]]\nid = "日本"\n')


if __name__ == "__main__":
    websocket_frames()
    engineio_packets()
    socketio_packets()
    upgrade_requests()
    config_files()
