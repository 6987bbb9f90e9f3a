//! Records built from hand-made shard samples: exact channel counts across
//! shards, rates between records, the cluster's totals without stale nodes.

use super::*;
use crate::metrics::Gauges;

fn sample(
    shard: u8,
    events_in: u64,
    deliveries: u64,
    env: &str,
    clients: u64,
    channels: &[&str],
) -> ShardSample {
    let mut snapshot = Snapshot {
        shard,
        events_in,
        deliveries,
        gauges: Gauges {
            sockets: clients + 1,
            clients: vec![(env.to_owned(), clients)],
            channels: vec![(env.to_owned(), channels.len() as u64)],
            ..Gauges::default()
        },
        ..Snapshot::default()
    };
    snapshot.disconnects[CloseReason::PingTimeout.index()] = u64::from(shard) + 1;
    ShardSample {
        snapshot,
        channel_digests: vec![(
            env.to_owned(),
            channels.iter().map(|c| channel_digest(c)).collect(),
        )],
    }
}

#[test]
fn a_channel_on_two_shards_counts_once_for_the_node() {
    let samples = [
        sample(1, 10, 100, "default", 3, &["a", "b"]),
        sample(0, 5, 50, "default", 2, &["b", "c"]),
    ];
    let stats = NodeStats::build("n", 1_000, &samples, 0, None);
    assert_eq!(stats.connections, 5);
    assert_eq!(stats.sockets, 7);
    assert_eq!(stats.messages_in, 15);
    assert_eq!(stats.deliveries_out, 150);
    assert_eq!(
        stats.environments["default"],
        EnvCounts {
            connections: 5,
            channels: 3
        }
    );
    assert_eq!(stats.shards.iter().map(|s| s.shard).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(stats.shards[1].channels, 2);
    assert_eq!(stats.disconnects["ping_timeout"], 3);
    assert_eq!(stats.disconnects["slow_consumer"], 0, "every reason is listed");
    assert_eq!(stats.messages_in_per_s, None, "no rate without a previous record");
}

#[test]
fn rates_are_per_second_against_a_recent_previous_record() {
    let before = NodeStats::build("n", 10_000, &[sample(0, 100, 1_000, "e", 1, &[])], 0, None);
    let after = NodeStats::build(
        "n",
        12_000,
        &[sample(0, 110, 1_500, "e", 1, &[])],
        0,
        Some(&before),
    );
    assert_eq!(after.messages_in_per_s, Some(5.0));
    assert_eq!(after.deliveries_out_per_s, Some(250.0));
    assert_eq!(after.shards[0].deliveries_out_per_s, Some(250.0));
    let much_later = NodeStats::build(
        "n",
        60_000,
        &[sample(0, 200, 2_000, "e", 1, &[])],
        0,
        Some(&after),
    );
    assert_eq!(
        much_later.messages_in_per_s, None,
        "a minute-old record gives no rate"
    );
}

#[test]
fn records_survive_json_and_the_cluster_adds_up_the_fresh_ones() {
    let own = NodeStats::build("a", 10_000, &[sample(0, 1, 2, "default", 4, &["x"])], 0, None);
    let mut b = NodeStats::build("b", 9_500, &[sample(0, 3, 4, "default", 6, &["x", "y"])], 0, None);
    b.messages_in_per_s = Some(2.5);
    let json = sonic_rs::to_string(&b).unwrap();
    let b: NodeStats = sonic_rs::from_str(&json).unwrap();
    let stale = NodeStats::build("c", 1_000, &[sample(0, 7, 7, "default", 9, &[])], 0, None);
    let cluster = ClusterInfo {
        enabled: true,
        up: true,
        nodes: 3,
    };
    let view = ClusterView::merge(own, Some(vec![stale, b]), cluster, 10_000);
    assert_eq!(view.connections, 10, "the stale node is not counted");
    assert_eq!(view.messages_in, 4);
    assert_eq!(view.messages_in_per_s, Some(2.5));
    assert_eq!(
        view.environments["default"],
        EnvCounts {
            connections: 10,
            channels: 3
        }
    );
    let names: Vec<_> = view
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.this_node, n.stale))
        .collect();
    assert_eq!(
        names,
        [("a", true, false), ("b", false, false), ("c", false, true)]
    );
    assert_eq!(view.nodes[1].age_ms, 500);
    assert!(view.incomplete, "a stale node makes the view incomplete");
    let alone = ClusterView::merge(
        NodeStats::build("a", 1, &[], 0, None),
        None,
        ClusterInfo::default(),
        1,
    );
    assert!(!alone.incomplete);
    assert_eq!(alone.nodes.len(), 1);
}
