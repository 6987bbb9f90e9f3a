//! The one place a publish is taken everywhere it must go: this shard's
//! members, every other shard (over the mesh) and, in a cluster, every other
//! node (one `SPUBLISH` through the cluster link, whatever the number of
//! nodes and members). The Agnost rules decide *what* goes *where*; this
//! decides *how*. In a cluster it also tells the link about memberships
//! (stored in Redis for member lists, and the channel topics this node must
//! receive), holding a joiner's echo until the link confirms both.
//!
//! **Invariant:** a frame is encoded once by the rules; every other shard
//! gets a refcounted clone of it and every local recipient a clone of this
//! shard's one `Frame` of it, in the order the rules published (per sender and channel, which is what ordering
//! across shards rests on: one sender lives on one shard, and a shard's
//! messages to another shard are delivered in the order sent).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::{Command, Topic};
use crate::connection::outbox::{CloseReason, Outbox};
use crate::metrics::Stats;
use crate::protocol::frames::{self, Frame};
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
    fn push(&self, frame: Frame) {
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

impl Router<'_> {
    /// Delivers `frame` to this shard's members in `target` (except `skip`)
    /// and to the cluster, and hands every other shard the message `other`
    /// makes: the one path of every publish.
    fn spread(
        &self,
        rt: &Realtime<Rc<Outbox>>,
        env: EnvKey,
        target: &Target,
        frame: &Bytes,
        skip: Option<SlabKey>,
        other: impl Fn() -> ShardMessage,
    ) {
        let shard = self.shard;
        Stats::bump(&shard.stats.publishes);
        let delivered = rt.deliver(env, target, frame, skip);
        shard.stats.add_deliveries(delivered);
        if let Some(cluster) = &shard.shared.cluster {
            if let Some(settings) = rt.settings().get(env) {
                cluster.publish(cluster.topic_of(&settings.id, target), frame.clone());
            }
        }
        for id in shard.other_shards() {
            shard.send_to(id, other());
        }
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
        self.spread(rt, env, &target, &frame, skip, || ShardMessage::Publish {
            env,
            target: target.clone(),
            frame: frame.clone(),
        });
    }

    fn publish_presence(
        &mut self,
        rt: &Realtime<Rc<Outbox>>,
        env: EnvKey,
        channel: Arc<str>,
        frame: Bytes,
        skip: Option<SlabKey>,
        seq: u64,
    ) {
        // Every member of this shard joined before the event (its number was
        // taken just now, on this thread), so local delivery needs no filter.
        let target = Target::Channel(channel.clone());
        self.spread(rt, env, &target, &frame, skip, || ShardMessage::Presence {
            env,
            channel: channel.clone(),
            frame: frame.clone(),
            seq,
        });
    }

    fn joined(
        &mut self,
        rt: &Realtime<Rc<Outbox>>,
        env: EnvKey,
        channel: &Arc<str>,
        key: SlabKey,
        first: bool,
        echo: Option<Bytes>,
    ) {
        let shard = self.shard;
        let cluster = shard.shared.cluster.as_ref();
        let env_id = rt.settings().get(env).map(|s| Arc::<str>::from(s.id.as_str()));
        let (Some(cluster), Some(env_id), Some(member)) = (cluster, env_id, rt.member(key)) else {
            if let Some(frame) = echo {
                if rt.deliver_to(key, frame) {
                    shard.stats.add_deliveries(1);
                }
            }
            return;
        };
        let confirm = echo.map(|frame| shard.hold(key, member.generation, frame, 1));
        cluster.send_control(Command::Join {
            shard: shard.id,
            topic: Topic {
                name: cluster.channel_topic(&env_id, channel),
                env,
                target: Target::Channel(channel.clone()),
            },
            watch: first,
            env_id,
            channel: channel.clone(),
            id: Box::from(member.id.as_str()),
            profile: member.profile.clone(),
            confirm,
        });
    }

    fn left(&mut self, rt: &Realtime<Rc<Outbox>>, env: EnvKey, channel: &Arc<str>, id: &str, last: bool) {
        let shard = self.shard;
        let (Some(cluster), Some(settings)) = (&shard.shared.cluster, rt.settings().get(env)) else {
            return;
        };
        cluster.send_control(Command::Leave {
            shard: shard.id,
            topic: cluster.channel_topic(&settings.id, channel),
            unwatch: last,
            env_id: Arc::from(settings.id.as_str()),
            channel: channel.clone(),
            id: Box::from(id),
        });
    }

    fn profile_changed(&mut self, rt: &Realtime<Rc<Outbox>>, env: EnvKey, key: SlabKey) {
        let shard = self.shard;
        let (Some(cluster), Some(settings), Some(member)) =
            (&shard.shared.cluster, rt.settings().get(env), rt.member(key))
        else {
            return;
        };
        let env_id: Arc<str> = Arc::from(settings.id.as_str());
        for channel in member.channels.iter() {
            cluster.send_control(Command::Join {
                shard: shard.id,
                topic: Topic {
                    name: cluster.channel_topic(&env_id, channel),
                    env,
                    target: Target::Channel(channel.clone()),
                },
                watch: false,
                env_id: env_id.clone(),
                channel: channel.clone(),
                id: Box::from(member.id.as_str()),
                profile: member.profile.clone(),
                confirm: None,
            });
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
        env_id: &str,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
    ) -> Verdict {
        let shared = &self.shard.shared;
        let now_s = shared.now_s();
        match &shared.cluster {
            Some(cluster) => cluster.rate_hit(env, env_id, key, limiter, limit, window_s, now_s),
            None => shared.rates.hit(env, key, limiter, limit, window_s, now_s),
        }
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
