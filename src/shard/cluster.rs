//! The shard's side of the cluster link: connecting and disconnecting
//! members (the environment and user topics they need), frames held until
//! the link confirms a subscription, and the link's answers.
//!
//! A hold keeps frames for one member (its connect ack, or its join echo)
//! until the link confirms that the node is subscribed to what the member
//! needs and its membership is stored, so nothing published after the
//! member saw the frame can miss it. Holds are released at the latest at
//! `gather_timeout_ms` (the link also releases them at once whenever Redis
//! is out of reach).
//!
//! A settings change made through this node is stored in Redis first; the
//! link then waits for every other live node to confirm it applied it (at
//! most `cluster::link::SETTINGS_CONFIRM_TIMEOUT`), and says which did not.

use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

use crate::cluster::link::SETTINGS_CONFIRM_TIMEOUT;
use crate::cluster::{Command, NodeName, Reply, Topic};
use crate::connection::outbox::Outbox;
use crate::protocol::frames;
use crate::realtime::channels::SlabKey;
use crate::realtime::settings::{EnvKey, EnvSettings};
use crate::realtime::state::{NewMember, Realtime, Target};
use crate::shard::gather::LocalReply;
use crate::shard::Shard;
use ringcast_shards::conn_id::ConnIdText;
use ringcast_shards::ShardId;

/// Frames held for a member until the link confirms.
struct Hold {
    key: SlabKey,
    generation: u32,
    frame: Bytes,
    /// Confirmations still to come.
    remaining: u32,
}

/// This shard's holds and requests to the link, by request id.
#[derive(Default)]
pub(crate) struct LinkRequests {
    next: u64,
    holds: AHashMap<u64, Hold>,
    stores: AHashMap<u64, Rc<LocalReply<Result<(), String>>>>,
    /// The web console's questions to the link, and the other nodes'
    /// confirmations of settings changes.
    asks: AHashMap<u64, Rc<LocalReply<Reply>>>,
}

/// A settings change stored in Redis whose confirmations from the other
/// nodes are on their way (see [`Shard::settings_confirmed`]).
pub(crate) struct Confirming {
    request: u64,
    slot: Rc<LocalReply<Reply>>,
}

impl LinkRequests {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl Shard {
    /// Adds a connected client and sends its connect ack; in a cluster the
    /// ack waits until the node receives its environment's broadcasts and
    /// its user's events.
    pub(crate) fn connected(self: &Rc<Self>, new: NewMember<Rc<Outbox>>) -> (SlabKey, ConnIdText) {
        let (env, user) = (new.env, new.credentials.session.user().map(Box::<str>::from));
        let (key, id) = self.realtime.borrow_mut().register(new);
        let ack = frames::connect_ok(id.as_str());
        let rt = self.realtime.borrow();
        let cluster = self.shared.cluster.as_ref();
        let env_id = env.and_then(|e| rt.settings().get(e)).map(|s| s.id.clone());
        let (Some(cluster), Some(env), Some(env_id)) = (cluster, env, env_id) else {
            rt.deliver_to(key, ack);
            return (key, id);
        };
        let mut topics = vec![Topic {
            name: cluster.environment_topic(&env_id),
            env,
            target: Target::Environment,
        }];
        if let Some(user) = user {
            topics.push(Topic {
                name: cluster.user_topic(&env_id, &user),
                env,
                target: Target::User(Arc::from(&*user)),
            });
        }
        let generation = rt.member(key).map_or(0, |m| m.generation);
        let request = self.hold(key, generation, ack, topics.len() as u32);
        for topic in topics {
            cluster.send_control(Command::Watch {
                shard: self.id,
                topic,
                confirm: Some(request),
            });
        }
        (key, id)
    }

    /// Tells the link this shard no longer needs the environment and user
    /// topics of a departed member when it was their last member here.
    pub(crate) fn unwatch_rooms(&self, rt: &Realtime<Rc<Outbox>>, env: EnvKey, user: Option<&str>) {
        let Some(cluster) = &self.shared.cluster else {
            return;
        };
        let Some(env_id) = rt.settings().get(env).map(|s| s.id.clone()) else {
            return;
        };
        if rt.local_count(env, &Target::Environment) == 0 {
            let topic = cluster.environment_topic(&env_id);
            cluster.send_control(Command::Unwatch {
                shard: self.id,
                topic,
            });
        }
        if let Some(user) = user {
            if rt.local_count(env, &Target::User(Arc::from(user))) == 0 {
                let topic = cluster.user_topic(&env_id, user);
                cluster.send_control(Command::Unwatch {
                    shard: self.id,
                    topic,
                });
            }
        }
    }

    /// Holds `frame` for member `key` until `confirmations` confirmations
    /// came in (or the deadline passed); the request id to confirm.
    pub(crate) fn hold(
        self: &Rc<Self>,
        key: SlabKey,
        generation: u32,
        frame: Bytes,
        confirmations: u32,
    ) -> u64 {
        let request = {
            let mut requests = self.link_requests.borrow_mut();
            let request = requests.next();
            requests.holds.insert(
                request,
                Hold {
                    key,
                    generation,
                    frame,
                    remaining: confirmations,
                },
            );
            request
        };
        let shard = self.clone();
        let deadline = self.shared.config.gather_timeout;
        monoio::spawn(async move {
            monoio::time::sleep(deadline).await;
            if shard.link_requests.borrow().holds.contains_key(&request) {
                tracing::warn!("cluster confirmation overdue; releasing the held frame");
                shard.release(request);
            }
        });
        request
    }

    /// One confirmation of hold `request` came in.
    pub(crate) fn release_hold(&self, request: u64) {
        {
            let mut requests = self.link_requests.borrow_mut();
            let Some(hold) = requests.holds.get_mut(&request) else {
                return;
            };
            hold.remaining = hold.remaining.saturating_sub(1);
            if hold.remaining > 0 {
                return;
            }
        }
        self.release(request);
    }

    fn release(&self, request: u64) {
        let Some(hold) = self.link_requests.borrow_mut().holds.remove(&request) else {
            return;
        };
        let rt = self.realtime.borrow();
        if rt
            .member(hold.key)
            .is_some_and(|m| m.generation == hold.generation)
            && rt.deliver_to(hold.key, hold.frame)
        {
            self.stats.add_deliveries(1);
        }
    }

    /// An answer from the link.
    pub(crate) fn cluster_reply(&self, request: u64, reply: Reply) {
        match reply {
            Reply::Members(members) => self.cluster_members(request, members),
            Reply::Stored(result) => {
                if let Some(slot) = self.link_requests.borrow_mut().stores.remove(&request) {
                    slot.set(result);
                }
            }
            reply @ (Reply::NodeStats(_) | Reply::Channels(_) | Reply::SettingsConfirmed(_)) => {
                if let Some(slot) = self.link_requests.borrow_mut().asks.remove(&request) {
                    slot.set(reply);
                }
            }
        }
    }

    /// Asks the link `make(request)` and waits for its answer, at most
    /// `gather_timeout_ms`; `None` alone, when the link's queue is full,
    /// or when it did not answer in time.
    pub(crate) async fn ask_link(&self, make: impl FnOnce(ShardId, u64) -> Command) -> Option<Reply> {
        let cluster = self.shared.cluster.as_ref()?;
        let slot = Rc::new(LocalReply::default());
        let request = {
            let mut requests = self.link_requests.borrow_mut();
            let request = requests.next();
            requests.asks.insert(request, slot.clone());
            request
        };
        if !cluster.send_request(make(self.id, request)) {
            self.link_requests.borrow_mut().asks.remove(&request);
            return None;
        }
        match monoio::time::timeout(self.shared.config.gather_timeout, slot.take()).await {
            Ok(reply) => Some(reply),
            Err(_) => {
                self.link_requests.borrow_mut().asks.remove(&request);
                None
            }
        }
    }

    /// Stores one environment's settings in the cluster (a no-op alone:
    /// `None`); resolves once Redis has it, or with why not. The other
    /// nodes' confirmations are then awaited with
    /// [`Self::settings_confirmed`].
    pub(crate) async fn store_settings(&self, env: EnvSettings) -> Result<Option<Confirming>, String> {
        let Some(cluster) = &self.shared.cluster else {
            return Ok(None);
        };
        let slot = Rc::new(LocalReply::default());
        let confirmed_slot = Rc::new(LocalReply::default());
        let (request, confirmed) = {
            let mut requests = self.link_requests.borrow_mut();
            let request = requests.next();
            requests.stores.insert(request, slot.clone());
            let confirmed = requests.next();
            requests.asks.insert(confirmed, confirmed_slot.clone());
            (request, confirmed)
        };
        let command = Command::PutSettings {
            shard: self.id,
            request,
            confirmed,
            env: Box::new(env),
        };
        let forget = |requests: &mut LinkRequests| {
            requests.stores.remove(&request);
            requests.asks.remove(&confirmed);
        };
        if !cluster.send_request(command) {
            forget(&mut self.link_requests.borrow_mut());
            return Err("the cluster link is saturated".into());
        }
        match monoio::time::timeout(self.shared.config.gather_timeout, slot.take()).await {
            Ok(Ok(())) => Ok(Some(Confirming {
                request: confirmed,
                slot: confirmed_slot,
            })),
            Ok(Err(why)) => {
                forget(&mut self.link_requests.borrow_mut());
                Err(why)
            }
            Err(_) => {
                forget(&mut self.link_requests.borrow_mut());
                Err("Redis did not answer in time".into())
            }
        }
    }

    /// Resolves once every other node alive when the change was made
    /// confirmed that all its shards applied it, or at the link's deadline:
    /// the nodes that did not confirm (empty: every one did); `None` when
    /// the link did not answer at all (which nodes applied it is unknown).
    pub(crate) async fn settings_confirmed(&self, confirming: Confirming) -> Option<Vec<NodeName>> {
        // The link answers at its deadline; this one only guards against a
        // link that stopped answering.
        let patience = SETTINGS_CONFIRM_TIMEOUT + self.shared.config.gather_timeout;
        match monoio::time::timeout(patience, confirming.slot.take()).await {
            Ok(Reply::SettingsConfirmed(unconfirmed)) => Some(unconfirmed),
            Ok(_) | Err(_) => {
                self.link_requests.borrow_mut().asks.remove(&confirming.request);
                None
            }
        }
    }
}
