//! Gathers whose other shards never answer: shard 0 of a two-shard mesh
//! runs alone here, so whatever it asks of shard 1 sits in an inbox no one
//! drains, and every answer must come from the deadline.

use std::time::Duration;

use super::*;
use crate::config::{Cli, Config};
use crate::connection::test_support::on_each_driver;
use crate::shard::Shared;

fn lonely_shard() -> Rc<Shard> {
    let cli = Cli {
        shards: Some(2),
        ..Cli::default()
    };
    let mut config = Config::load(&cli).expect("config");
    config.gather_timeout = Duration::from_millis(50);
    let mesh = ringcast_shards::Mesh::new(config.shard_count, config.mesh_queue_messages_max);
    let environments = config.environments.clone();
    Rc::new(Shard::new(
        0,
        Arc::new(Shared::new(config, mesh, None, environments)),
    ))
}

#[test]
fn a_member_list_is_answered_at_its_deadline_with_what_arrived() {
    on_each_driver(|| async {
        let shard = lonely_shard();
        let gathered = shard.members_json(0, "room").await;
        assert_eq!(gathered.missing, 1);
        assert_eq!(gathered.value, b"[]");
        assert_eq!(shard.stats.gather_timeouts.get(), 1);
        assert!(shard.gathers.borrow().members.is_empty(), "the gather is gone");
    });
}

#[test]
fn a_scrape_is_answered_at_its_deadline_with_this_shards_snapshot() {
    on_each_driver(|| async {
        let shard = lonely_shard();
        let gathered = shard.gather_stats().await;
        assert_eq!(gathered.missing, 1);
        assert_eq!(gathered.value.len(), 1);
        assert_eq!(gathered.value[0].shard, 0);
    });
}

#[test]
fn a_settings_change_reports_the_shards_that_did_not_confirm() {
    on_each_driver(|| async {
        let shard = lonely_shard();
        // This shard's own confirmation goes through its inbox too, which
        // nobody drains here: both are missing.
        let gathered = shard.apply_everywhere(shard.settings()).await;
        assert_eq!(gathered.missing, 2);
        assert_eq!(shard.stats.gather_timeouts.get(), 1);
    });
}

#[test]
fn the_consoles_questions_to_a_silent_shard_are_answered_at_their_deadline() {
    use crate::shard::console::Disconnect;
    use ringcast_shards::ConnId;
    on_each_driver(|| async {
        let shard = lonely_shard();
        let list = shard.channel_list(0, None, None).await;
        assert!(!list.complete, "shard 1 did not answer");
        assert!(list.channels.is_empty());
        let record = shard.take_sample().await;
        assert_eq!(record.missing_shards, 1);
        assert_eq!(record.shards.iter().map(|s| s.shard).collect::<Vec<_>>(), [0]);
        assert!(
            Arc::ptr_eq(&shard.shared.console.latest().unwrap(), &record),
            "kept as the latest"
        );
        // A socket of shard 1 (this process): asked there, never answered.
        let elsewhere = ConnId::new(1, 0, 0).encode();
        assert_eq!(
            shard.disconnect_socket(elsewhere.as_str()).await,
            Disconnect::Unconfirmed
        );
        // Shard 0's own: answered at once, and there is no such member.
        let here = ConnId::new(0, 5, 0).encode();
        assert_eq!(shard.disconnect_socket(here.as_str()).await, Disconnect::NotFound);
        assert_eq!(
            shard.disconnect_socket("not a socket id").await,
            Disconnect::NotAnId
        );
        assert_eq!(shard.stats.gather_timeouts.get(), 3);
        assert!(shard.gathers.borrow().console.is_empty(), "every gather is gone");
    });
}
