//! Reference peer for the ringcast benchmark: Agnost Realtime's client events
//! (join / leave / update / message, leave notifications on disconnect) on
//! socketioxide + tokio, with the same payload shapes as ringcast.
//!
//! Made as fast as it honestly can be: release build with fat LTO, mimalloc,
//! websocket transport only, a multi-threaded tokio runtime with one worker per
//! core, hyper http1 connections, and a listen backlog of 1024 like ringcast.
//!
//! socketioxide sends the connect ack (`40{"sid"}`) *before* it spawns the
//! (async) connect handler, so handlers registered there can miss an event the
//! client sends right after the ack. Everything is therefore registered in a
//! connect *middleware*, which socketioxide awaits before sending the ack.
//!
//! Usage: `peer-socketioxide [--listen 127.0.0.1:0] [--path /realtime/] [--threads N]`.
//! Prints `socketioxide listening on http://IP:PORT/PATH` once listening.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use socketioxide::extract::{Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LISTEN_BACKLOG: i32 = 1024;
/// Packets socketioxide queues per socket before `emit` fails with
/// `InternalChannelFull` and drops the packet. The default (128) drops
/// messages under fan-out bursts; ringcast queues far more per connection
/// before it disconnects a slow consumer, so this peer gets a deep queue too.
const SOCKET_BUFFER_PACKETS: usize = 16_384;
/// Failed broadcasts are counted, and only the first few are printed, so a
/// burst of them does not turn into a stderr benchmark.
static BROADCAST_FAILURES: AtomicU64 = AtomicU64::new(0);
const BROADCAST_FAILURES_PRINTED: u64 = 3;

struct Options {
    listen: SocketAddr,
    path: String,
    threads: usize,
}

impl Options {
    fn parse() -> Self {
        let mut options = Self {
            listen: "127.0.0.1:4000".parse().expect("literal address"),
            path: "/realtime/".to_owned(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => options.listen = value.parse().expect("--listen IP:PORT"),
                "--path" => options.path = value,
                "--threads" => options.threads = value.parse().expect("--threads N"),
                _ => panic!("unknown flag {flag}"),
            }
        }
        options
    }
}

/// The handshake `auth` fields this peer understands.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Auth {
    env_id: Option<String>,
    echo_messages: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ChannelPayload {
    channel: String,
    echo: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct UpdatePayload {
    #[serde(default)]
    data: Value,
    echo: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessagePayload {
    channel: Option<String>,
    event_name: String,
    #[serde(default)]
    message: Value,
    echo: Option<bool>,
}

/// Per-socket state, shared by that socket's handlers.
struct Member {
    env_room: String,
    echo_default: bool,
    profile: Mutex<Value>,
}

impl Member {
    fn echo(&self, echo: Option<bool>) -> bool {
        echo.unwrap_or(self.echo_default)
    }

    fn body(&self, s: &SocketRef, channel: &str) -> Value {
        let data = self.profile.lock().expect("profile lock").clone();
        json!({ "channel": channel, "message": { "id": s.id.as_str(), "data": data } })
    }
}

fn channel_room(channel: &str) -> String {
    format!("ch:{channel}")
}

/// Emits to a room, including the sender only when `echo` is set.
async fn emit_to(s: &SocketRef, room: String, echo: bool, event: &str, body: &Value) {
    let result = if echo {
        s.within(room).emit(event, body).await
    } else {
        s.to(room).emit(event, body).await
    };
    if let Err(error) = result {
        let failures = BROADCAST_FAILURES.fetch_add(1, Ordering::Relaxed);
        if failures < BROADCAST_FAILURES_PRINTED {
            let text = error.to_string();
            eprintln!(
                "broadcast failed (#{}): {}",
                failures + 1,
                text.chars().take(200).collect::<String>()
            );
        }
    }
}

fn register(s: &SocketRef, member: Arc<Member>) {
    let m = member.clone();
    s.on(
        "join",
        async move |s: SocketRef, Data(p): Data<ChannelPayload>| {
            let room = channel_room(&p.channel);
            if s.rooms().iter().any(|r| *r == room) {
                return;
            }
            s.join(room.clone());
            let body = m.body(&s, &p.channel);
            emit_to(&s, room, m.echo(p.echo), "channel:join", &body).await;
        },
    );

    let m = member.clone();
    s.on(
        "leave",
        async move |s: SocketRef, Data(p): Data<ChannelPayload>| {
            let room = channel_room(&p.channel);
            if !s.rooms().iter().any(|r| *r == room) {
                return;
            }
            let body = m.body(&s, &p.channel);
            if m.echo(p.echo) {
                let _ = s.emit("channel:leave", &body);
            }
            s.leave(room.clone());
            emit_to(&s, room, false, "channel:leave", &body).await;
        },
    );

    let m = member.clone();
    s.on(
        "update",
        async move |s: SocketRef, Data(p): Data<UpdatePayload>| {
            *m.profile.lock().expect("profile lock") = p.data;
            let echo = m.echo(p.echo);
            for room in s.rooms() {
                let Some(channel) = room.strip_prefix("ch:") else {
                    continue;
                };
                let body = m.body(&s, channel);
                emit_to(&s, room.to_string(), echo, "channel:update", &body).await;
            }
        },
    );

    let m = member.clone();
    s.on(
        "message",
        async move |s: SocketRef, Data(p): Data<MessagePayload>| {
            let room = match &p.channel {
                Some(channel) => channel_room(channel),
                None => m.env_room.clone(),
            };
            let body = json!({ "channel": p.channel, "message": p.message });
            emit_to(&s, room, m.echo(p.echo), &p.event_name, &body).await;
        },
    );

    let m = member;
    s.on_disconnect(async move |s: SocketRef| {
        for room in s.rooms() {
            let Some(channel) = room.strip_prefix("ch:") else {
                continue;
            };
            let body = m.body(&s, channel);
            emit_to(&s, room.to_string(), false, "channel:leave", &body).await;
        }
    });
}

/// Runs before the connect ack is sent, so the handlers exist before the
/// client can send its first event.
async fn on_connecting(s: SocketRef, TryData(auth): TryData<Auth>) -> Result<(), std::convert::Infallible> {
    let auth = auth.unwrap_or_default();
    let env_room = format!("env:{}", auth.env_id.as_deref().unwrap_or("default"));
    s.join(env_room.clone());
    let member = Member {
        env_room,
        echo_default: auth.echo_messages.unwrap_or(false),
        profile: Mutex::new(Value::Null),
    };
    register(&s, Arc::new(member));
    Ok(())
}

async fn on_connected() {}

async fn serve(options: Options) -> std::io::Result<()> {
    let (svc, io) = SocketIo::builder()
        .req_path(options.path.clone())
        .transports([TransportType::Websocket])
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .build_svc();
    io.ns("/", on_connected.with(on_connecting));

    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(options.listen)?;
    let listener = socket.listen(LISTEN_BACKLOG as u32)?;
    let local = listener.local_addr()?;
    println!("socketioxide listening on http://{local}{}", options.path);

    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = serve(options) => result,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
