use super::*;
use crate::floor::FloorPoint;
use crate::report::ServerInfo;
use crate::scrape::ServerCounters;

fn options(args: &[&str]) -> SuiteOptions {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: SuiteOptions,
    }
    let mut argv = vec!["suite"];
    argv.extend_from_slice(args);
    Cli::parse_from(argv).options
}

#[test]
fn the_default_sweep_doubles_up_to_the_core_count() {
    assert_eq!(default_sweep(1), vec![1]);
    assert_eq!(default_sweep(2), vec![1, 2]);
    assert_eq!(default_sweep(6), vec![1, 2, 4, 6]);
    assert_eq!(default_sweep(16), vec![1, 2, 4, 8, 16]);
}

#[test]
fn every_ringcast_shard_count_runs_with_both_drivers() {
    let list = servers(
        &options(&["--shards", "1,4", "--peers", "socketioxide"]),
        2,
        Path::new("floor"),
    );
    let labels: Vec<&str> = list.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "ringcast-s1",
            "ringcast-s1-epoll",
            "ringcast-s4",
            "ringcast-s4-epoll",
            "socketioxide-t1",
            "socketioxide-t4",
            "floor-handshake"
        ]
    );
    assert!(list[1].command.contains(&"--epoll".to_owned()));
    assert!(!list[0].command.contains(&"--epoll".to_owned()));
    assert_eq!(list[1].driver, "epoll");
    let epoll_only = servers(
        &options(&["--smoke", "--drivers", "epoll", "--skip-floor"]),
        2,
        Path::new("floor"),
    );
    assert_eq!(epoll_only.len(), 1);
    assert_eq!(epoll_only[0].label, "ringcast-s1-epoll");
}

#[test]
fn the_connect_floor_serves_the_plain_connect_scenario_only() {
    let opts = options(&["--peers", "none"]);
    let list = servers(&opts, 2, Path::new("/x/floor"));
    let floor = list
        .iter()
        .find(|s| s.kind == FLOOR_KIND)
        .expect("the connect floor is measured unless --skip-floor");
    assert_eq!(floor.command, ["/x/floor", "--serve-handshakes", "127.0.0.1:0"]);
    let runs = scenario_runs(&opts);
    let served: Vec<&str> = runs
        .iter()
        .filter(|r| r.applies_to(floor))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(served, ["connect"]);
}

#[test]
fn the_suite_has_the_saturated_and_fixed_rate_scenarios() {
    let runs = scenario_runs(&options(&[]));
    let ids: Vec<&str> = runs.iter().map(|s| s.id.as_str()).collect();
    for id in [
        "fanout-s100-w16",
        "fanout-s100-w64",
        "fanout-s1000-w16",
        "fanout-s1000-w64",
        "fanout-s5000-w16",
        "fanout-s5000-w64",
        "broadcast-n1000-w16",
        "rooms-w1",
        "fanout-s1000-r50",
        "connect",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
    for run in &runs {
        let windowed = run.args.iter().any(|a| a == "--window");
        assert_eq!(windowed, run.mode == Mode::Saturated, "{}", run.id);
    }
}

#[test]
fn the_smoke_run_has_one_window_scenario_with_both_drivers() {
    let runs = scenario_runs(&options(&["--smoke"]));
    let list: Vec<ServerSpec> = servers(&options(&["--smoke"]), 2, Path::new("floor"))
        .into_iter()
        .filter(|s| s.kind == "ringcast")
        .collect();
    let saturated: Vec<&ScenarioRun> = runs
        .iter()
        .filter(|s| s.mode == Mode::Saturated && !s.tls)
        .collect();
    assert_eq!(saturated.len(), 1);
    assert!(list.iter().all(|server| saturated[0].applies_to(server)));
    // Its TLS twin runs on ringcast's default driver only.
    let tls: Vec<&ScenarioRun> = runs
        .iter()
        .filter(|s| s.mode == Mode::Saturated && s.tls)
        .collect();
    assert_eq!(tls.len(), 1);
    assert_eq!(list.iter().filter(|server| tls[0].applies_to(server)).count(), 1);
    let epoll = list
        .iter()
        .find(|s| s.driver == "epoll")
        .expect("an epoll server");
    assert_eq!(runs.iter().filter(|s| s.applies_to(epoll)).count(), 1);
}

fn report(scenario: &str, label: &str, kind: &str, driver: &str, us_per_delivery: f64) -> RunReport {
    RunReport {
        scenario: scenario.to_owned(),
        server: Some(ServerInfo {
            label: label.to_owned(),
            kind: kind.to_owned(),
            shards: 1,
            pid: Some(1),
            url: String::new(),
            driver: driver.to_owned(),
            driver_detected: driver.to_owned(),
        }),
        connections: 1001,
        window_s: 1.0,
        delivered: 1000,
        deliveries_per_s: 1000.0 / us_per_delivery,
        server_cpu_us_per_delivery: us_per_delivery,
        deliveries_per_server_cpu_s: 1e6 / us_per_delivery,
        ..RunReport::default()
    }
}

/// A floor measured at 1,000 connections: `points` as (frames per write,
/// sender µs per frame, receiver µs per frame).
fn floor_of(points: &[(u32, f64, f64)]) -> FloorReport {
    let point = |&(frames_per_write, sender, receiver): &(u32, f64, f64)| FloorPoint {
        connections: 1000,
        frames_per_write,
        writes: 1,
        sender_cpu_us_per_write: sender * f64::from(frames_per_write),
        sender_cpu_us_per_frame: sender,
        receiver_cpu_us_per_frame: receiver,
        ..FloorPoint::default()
    };
    FloorReport {
        points: points.iter().map(point).collect(),
        ..FloorReport::default()
    }
}

/// The report of `results` in a full suite, with `floor` as the suite's
/// floor and `after` as the floors after each scenario.
fn markdown(
    results: &[RunReport],
    floor: &FloorReport,
    after: &BTreeMap<String, FloorReport>,
    command: &str,
) -> String {
    let opts = options(&[]);
    let scenarios = scenario_runs(&opts);
    let record = RunRecord {
        command: command.to_owned(),
        problems: Vec::new(),
    };
    summary::markdown(&Outcome {
        results,
        scenarios: &scenarios,
        floor: Some(floor),
        scenario_floors: after,
        rounds: &[],
        machine: &Machine::default(),
        options: &opts,
        record: &record,
    })
}

/// A fixed-rate fanout row to 1,000 (990 recipients at the 99th
/// percentile) on 2 cores, at p99 13.365 ms.
fn fixed_rate_report() -> RunReport {
    let mut fixed = report("fanout-s1000-r50", "ringcast-s1", "ringcast", "io_uring", 10.0);
    fixed.sent = 250;
    fixed.expected = 250_000;
    fixed.machine.cores = 2;
    fixed.latency_us.p99 = 13_365.0;
    fixed
}

#[test]
fn saturated_rows_carry_multiples_of_the_floor_and_ratios() {
    let mut uring = report("fanout-s1000-w16", "ringcast-s1", "ringcast", "io_uring", 4.0);
    uring.frames_per_write = 1.0;
    uring.server_writes_per_s = 250_000.0;
    uring.server_counters = Some(ServerCounters::default());
    let mut epoll = report("fanout-s1000-w16", "ringcast-s1-epoll", "ringcast", "epoll", 0.5);
    epoll.frames_per_write = 16.0;
    let node = report("fanout-s1000-w16", "node-socket.io", "node-socket.io", "", 10.0);
    let results = vec![uring, epoll, node];
    // 4 µs per write at 1 and at 16 frames per write.
    let floor = floor_of(&[(1, 4.0, 0.0), (16, 0.25, 0.0)]);
    let text = markdown(&results, &floor, &BTreeMap::new(), "bench/run.sh --shards 1");
    assert!(text.contains("Reproduce: `bench/run.sh --shards 1`"), "{text}");
    // io_uring: 4 µs per delivery at 1 frame/write is 1× the floor there,
    // and 16× the floor at 16 frames/write (0.25 µs per frame).
    assert!(
        text.contains("| ringcast-s1 | io_uring | 250 | 4.000 | 1.0× | 16.0× | 1.00 | 250.0k |"),
        "{text}"
    );
    assert!(
        text.contains("| ringcast-s1-epoll | epoll | 2.0k | 0.500 | 2.0× | 2.0× | 16.00 |"),
        "{text}"
    );
    // Ratios: epoll is 8× io_uring; io_uring is 2.5× node.
    assert!(
        text.contains("| fanout-s1000-w16 | deliveries per server CPU-s | 250.0k (1) | 2.0M (1) | 100.0k (1) | — | **0.1×** | **2.5×** | **20.0×** | — | — |"),
        "{text}"
    );
}

/// A saturated scenario's multiples divide by the floor measured right
/// after its runs, not by the suite's first floor.
#[test]
fn a_scenario_floor_replaces_the_suite_floor_in_its_table() {
    let mut uring = report("fanout-s1000-w16", "ringcast-s1", "ringcast", "io_uring", 1.0);
    uring.frames_per_write = 16.0;
    let results = vec![uring];
    let floor_at = |us_per_write: f64| floor_of(&[(16, us_per_write / 16.0, 0.0)]);
    // The suite's first floor: 0.25 µs per frame at 16 frames per write;
    // the one after the scenario: 0.5.
    let first = floor_at(4.0);
    let mut after = BTreeMap::new();
    after.insert("fanout-s1000-w16".to_owned(), floor_at(8.0));
    let text = markdown(&results, &first, &after, "");
    assert!(
        text.contains("| ringcast-s1 | io_uring | 1.0k | 1.000 | 2.0× | 2.0× | 16.00 |"),
        "{text}"
    );
    assert!(
        text.contains("measured right after these runs, at 1000 connections: 0.500 µs at 16 frames/write."),
        "{text}"
    );
}

/// A fixed-rate row carries its p99 beside the latency floor: the kernel's
/// one-frame work for 99% of a message's recipients over the cores.
#[test]
fn fixed_rate_rows_carry_their_p99_against_the_latency_floor() {
    let results = vec![fixed_rate_report()];
    let floor = floor_of(&[(1, 10.0, 8.0)]);
    let text = markdown(&results, &floor, &BTreeMap::new(), "");
    // 990 recipients × (10 + 8) µs over 2 cores: 8.91 ms; 13.365 ms is 1.5×.
    assert!(text.contains("| 0.00 / 13.37 / 0.00 | 8.91 | 1.5× |"), "{text}");
}

#[test]
fn a_run_from_before_run_json_keeps_its_command_and_problems() {
    let old = "# ringcast benchmark results\n\nReproduce: `bench/run.sh --out /tmp/b`\n\n## Ratios\n\n\
               ## Problems\n\n- socketioxide-t1 / rooms: timed out\n- floor after rooms: exited\n\n\
               Charts: `efficiency.svg`\n";
    let record = RunRecord::from_markdown(old);
    assert_eq!(record.command, "bench/run.sh --out /tmp/b");
    assert_eq!(
        record.problems,
        ["socketioxide-t1 / rooms: timed out", "floor after rooms: exited"]
    );
    assert_eq!(RunRecord::from_markdown("no such lines"), RunRecord::default());
}

/// `--render` writes an earlier run's report again from its JSON alone:
/// a fixed-rate row gains the latency floor of the floor stored beside it,
/// a saturated row keeps the floor measured after its scenario, and the
/// command and problems come from the old report.
#[test]
fn render_writes_an_earlier_runs_report_again_from_its_json() {
    let folder = std::env::temp_dir().join(format!("ringcast-render-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(folder.join("runs")).expect("folder");
    let fixed = fixed_rate_report();
    let mut saturated = report("fanout-s1000-w16", "ringcast-s1", "ringcast", "io_uring", 1.0);
    saturated.frames_per_write = 16.0;
    let epoll = report("fanout-s1000-w16", "ringcast-s1-epoll", "ringcast", "epoll", 2.0);
    let results = vec![saturated, epoll, fixed];
    let floor = floor_of(&[(1, 10.0, 8.0), (16, 0.25, 0.2)]);
    let after = floor_of(&[(16, 0.5, 0.4)]);
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(folder.join(name), bytes).expect("write");
    write("results.json", serde_json::to_vec(&results).expect("json"));
    write("floor.json", serde_json::to_vec(&floor).expect("json"));
    write(
        "runs/fanout-s1000-w16--floor.json",
        serde_json::to_vec(&after).expect("json"),
    );
    write(
        "results.md",
        b"Reproduce: `bench/run.sh --out /tmp/b`\n\n## Problems\n\n- node-socket.io / rooms: timed out\n"
            .to_vec(),
    );
    // Two more rounds (`--rounds 3`): ringcast-s1 at 1.2 µs against a floor
    // of 0.4 µs (3.0×), then at 0.9 µs against 0.6 µs (1.5×).
    // The epoll server beside it at 2.5 µs in rounds 2 and 3 (and 2.0 in
    // round 1, of the results above): a median of 2.5.
    let round = |round: u32, us: f64, floor: f64| {
        let mut r = report("fanout-s1000-w16", "ringcast-s1", "ringcast", "io_uring", us);
        r.frames_per_write = 16.0;
        let epoll = report("fanout-s1000-w16", "ringcast-s1-epoll", "ringcast", "epoll", 2.5);
        Round {
            scenario: "fanout-s1000-w16".to_owned(),
            round,
            reports: vec![r, epoll],
            floor: Some(floor_of(&[(16, floor, 0.4)])),
        }
    };
    let rounds = vec![round(2, 1.2, 0.4), round(3, 0.9, 0.6)];
    write("rounds.json", serde_json::to_vec(&rounds).expect("json"));

    let opts = options(&["--render", folder.to_str().expect("utf-8")]);
    assert_eq!(run(&opts).expect("rendered"), folder);
    let text = std::fs::read_to_string(folder.join("results.md")).expect("results.md");
    assert!(text.contains("Reproduce: `bench/run.sh --out /tmp/b`"), "{text}");
    assert!(text.contains("- node-socket.io / rooms: timed out"), "{text}");
    // 990 recipients × (10 + 8) µs over 2 cores: 8.91 ms; 13.365 ms is 1.5×.
    assert!(text.contains("| 8.91 | 1.5× |"), "{text}");
    // The saturated row divides by the floor after its scenario (0.5 µs).
    assert!(
        text.contains("| ringcast-s1 | io_uring | 1.0k | 1.000 | 2.0× | 2.0× | 16.00 |"),
        "{text}"
    );
    // Round by round: 2.0×, 3.0×, 1.5×; medians of each column.
    assert!(
        text.contains(
            "| ringcast-s1 | io_uring | 3 | 1.000 (0.900–1.200) | 16.0 | 0.500 (0.400–0.600) | 2.00× (1.50–3.00) | 2.00, 3.00, 1.50 |"
        ),
        "{text}"
    );
    // 1.0 µs against epoll's 2.5 (medians).
    assert!(
        text.contains("io_uring ÷ epoll, median CPU per delivery over the rounds: 0.40 at 1 shard."),
        "{text}"
    );
    assert!(folder.join("efficiency.svg").exists());
    std::fs::remove_dir_all(&folder).expect("clean up");
}

#[test]
fn a_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
    use super::summary::median;
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
}
