//! The join/message check a server must pass before it is measured: three
//! blocking clients, a channel join (acknowledged by echo), a channel message
//! from a non-member, and an environment-wide message.
//!
//! It proves the server implements the events the scenarios rely on with the
//! payload shapes of DESIGN.md, so a peer that silently drops events cannot
//! post a flattering number.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::engine::Target;
use crate::wire::{self, MaskRng, Packet, UpgradeResponse};

const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking socket.io client, for checks only.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    rng: MaskRng,
    sid: String,
}

impl Client {
    fn connect(target: &Target, auth: &str, seed: u64) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&target.addr, CHECK_TIMEOUT).context("tcp connect")?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.set_nodelay(true)?;
        let mut client = Self {
            stream,
            buffer: Vec::new(),
            rng: MaskRng::new(seed),
            sid: String::new(),
        };
        let key = wire::websocket_key(seed);
        client
            .stream
            .write_all(&wire::upgrade_request(&target.host, &target.path, &key))?;
        let deadline = Instant::now() + CHECK_TIMEOUT;
        loop {
            match wire::parse_upgrade_response(&client.buffer, &key) {
                UpgradeResponse::Incomplete => client.fill(deadline)?,
                UpgradeResponse::Refused { status_line } => bail!("upgrade refused: {status_line}"),
                UpgradeResponse::Switched { head_len } => {
                    client.buffer.drain(..head_len);
                    break;
                }
            }
        }
        let open = client.next_text(deadline)?;
        if Packet::classify(&open) != Packet::Open {
            bail!("expected engine.io open, got {}", String::from_utf8_lossy(&open));
        }
        client.send(&format!("40{auth}"))?;
        loop {
            let text = client.next_text(deadline)?;
            match Packet::classify(&text) {
                Packet::Connected { sid } => {
                    client.sid = String::from_utf8_lossy(sid).into_owned();
                    break;
                }
                Packet::ConnectError => bail!("connect_error: {}", String::from_utf8_lossy(&text)),
                _ => {}
            }
        }
        Ok(client)
    }

    fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let mut frame = Vec::new();
        wire::encode_frame(
            &mut frame,
            wire::OPCODE_TEXT,
            text.as_bytes(),
            self.rng.next_mask(),
        );
        self.stream.write_all(&frame)?;
        Ok(())
    }

    fn fill(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            if Instant::now() > deadline {
                bail!("timed out");
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("server closed the connection"),
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next text frame's payload, answering pings on the way.
    fn next_text(&mut self, deadline: Instant) -> anyhow::Result<Vec<u8>> {
        loop {
            if let Some(head) = wire::decode_frame(&self.buffer) {
                let payload = self.buffer[head.payload_offset..head.frame_len()].to_vec();
                self.buffer.drain(..head.frame_len());
                match head.opcode {
                    wire::OPCODE_TEXT if payload == b"2" => self.send("3")?,
                    wire::OPCODE_TEXT => return Ok(payload),
                    wire::OPCODE_CLOSE => bail!("server sent close"),
                    _ => {}
                }
                continue;
            }
            self.fill(deadline)?;
        }
    }

    /// Waits for event `name` and returns the raw packet text.
    fn expect_event(&mut self, name: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        loop {
            let text = self
                .next_text(deadline)
                .with_context(|| format!("waiting for event {name:?}"))?;
            if let Packet::Event { name: got, .. } = Packet::classify(&text) {
                if got == name.as_bytes() {
                    return Ok(String::from_utf8_lossy(&text).into_owned());
                }
            }
        }
    }

    /// Fails if any event `name` arrives within `quiet`.
    fn expect_no_event(&mut self, name: &str, quiet: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + quiet;
        while let Ok(text) = self.next_text(deadline) {
            if let Packet::Event { name: got, .. } = Packet::classify(&text) {
                if got == name.as_bytes() {
                    bail!("unexpected {name}: {}", String::from_utf8_lossy(&text));
                }
            }
        }
        Ok(())
    }
}

fn require(packet: &str, needle: &str, what: &str) -> anyhow::Result<()> {
    if packet.contains(needle) {
        Ok(())
    } else {
        bail!("{what}: expected {needle} in {packet}")
    }
}

/// Runs the check; `Ok` means the server implements join and message.
pub fn run(target: &Target, auth: &str) -> anyhow::Result<()> {
    let mut a = Client::connect(target, auth, 1).context("client a")?;
    let mut b = Client::connect(target, auth, 2).context("client b")?;
    let mut c = Client::connect(target, auth, 3).context("client c")?;
    // socket.io ids are url-safe base64 (20 chars for ringcast and node,
    // 16 for socketioxide); they must differ per connection.
    let id_ok = |sid: &str| {
        !sid.is_empty()
            && sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !id_ok(&a.sid) || !id_ok(&b.sid) || a.sid == b.sid {
        bail!(
            "socket ids must be distinct url-safe strings, got {:?} and {:?}",
            a.sid,
            b.sid
        );
    }

    a.send(r#"42["join",{"channel":"check","echo":true}]"#)?;
    let own = a.expect_event("channel:join").context("a's echoed join")?;
    require(&own, &format!(r#""id":"{}""#, a.sid), "a's echoed join")?;
    b.send(r#"42["join",{"channel":"check","echo":true}]"#)?;
    b.expect_event("channel:join").context("b's echoed join")?;
    let seen = a.expect_event("channel:join").context("a sees b join")?;
    require(&seen, &format!(r#""id":"{}""#, b.sid), "a sees b join")?;
    require(&seen, r#""channel":"check""#, "a sees b join")?;

    c.send(r#"42["message",{"channel":"check","eventName":"m","message":{"src":1,"seq":0,"ts":0}}]"#)?;
    for (who, client) in [("a", &mut a), ("b", &mut b)] {
        let got = client
            .expect_event("m")
            .with_context(|| format!("{who} gets the channel message"))?;
        require(&got, r#""channel":"check""#, "channel message")?;
        require(&got, r#""seq":0"#, "channel message")?;
    }

    a.send(r#"42["message",{"eventName":"e","message":{"hello":"env"}}]"#)?;
    for (who, client) in [("b", &mut b), ("c", &mut c)] {
        let got = client
            .expect_event("e")
            .with_context(|| format!("{who} gets the environment message"))?;
        require(&got, r#""channel":null"#, "environment message")?;
        require(&got, r#""hello":"env""#, "environment message")?;
    }
    a.expect_no_event("e", Duration::from_millis(200))
        .context("the sender must not get its own message")?;
    Ok(())
}
