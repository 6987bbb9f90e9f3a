//! The one place a publish is taken everywhere it must go: this shard's
//! members, every other shard (over the mesh) and, in a cluster, every other
//! node. The Agnost rules decide *what* goes *where*; this decides *how*.
//!
//! **Invariant:** a frame is encoded once by the rules; every local
//! recipient and every other shard gets a refcounted clone of it, in the
//! order the rules published (per sender and channel, which is what ordering
//! across shards rests on: one sender lives on one shard, and a shard's
//! messages to another shard are delivered in the order sent).

use std::rc::Rc;

use bytes::Bytes;

use crate::connection::outbox::{CloseReason, Outbox};
use crate::metrics::Stats;
use crate::protocol::frames;
use crate::realtime::channels::SlabKey;
use crate::realtime::events::{Effects, Limits};
use crate::realtime::rate_limit::{RateKey, Verdict};
use crate::realtime::settings::EnvKey;
use crate::realtime::state::{Realtime, Sink, Target};
use crate::shard::gather::MembersReply;
use crate::shard::inbox::ShardMessage;
use crate::shard::Shard;

/// A member's frames go to its connection's outbox.
impl Sink for Rc<Outbox> {
    #[inline]
    fn push(&self, frame: Bytes) {
        Outbox::push(self, frame);
    }

    fn kick(&self) {
        Outbox::push(self, frames::disconnect());
        self.close(CloseReason::ServerDisconnect);
    }
}

/// The shard's [`Effects`]: what the rules ask for, done.
pub(crate) struct Router<'a> {
    shard: &'a Rc<Shard>,
}

impl<'a> Router<'a> {
    pub(crate) fn new(shard: &'a Rc<Shard>) -> Self {
        Self { shard }
    }
}

impl Effects<Rc<Outbox>> for Router<'_> {
    fn publish(
        &mut self,
        rt: &Realtime<Rc<Outbox>>,
        env: EnvKey,
        target: Target,
        frame: Bytes,
        skip: Option<SlabKey>,
    ) {
        let shard = self.shard;
        Stats::bump(&shard.stats.publishes);
        let delivered = rt.deliver(env, &target, &frame, skip);
        shard.stats.add_deliveries(delivered);
        for other in shard.other_shards() {
            let message = ShardMessage::Publish {
                env,
                target: target.clone(),
                frame: frame.clone(),
            };
            shard.send_to(other, message);
        }
    }

    fn ack_members(
        &mut self,
        rt: &Realtime<Rc<Outbox>>,
        to: SlabKey,
        ack_id: u64,
        env: EnvKey,
        channel: &str,
    ) {
        let Some(member) = rt.member(to) else {
            return;
        };
        let reply = MembersReply::Ack {
            to,
            generation: member.generation,
            ack_id,
        };
        self.shard.gather_members(rt, reply, env, channel);
    }

    fn rate_hit(
        &mut self,
        env: EnvKey,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
    ) -> Verdict {
        let shared = &self.shard.shared;
        shared
            .rates
            .hit(env, key, limiter, limit, window_s, shared.now_s())
    }

    fn now_s(&self) -> u64 {
        self.shard.shared.now_s()
    }

    fn stats(&self) -> &Stats {
        &self.shard.stats
    }

    fn limits(&self) -> &Limits {
        &self.shard.limits
    }
}
