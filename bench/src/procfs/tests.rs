use super::*;

#[test]
fn stat_fields_are_counted_after_the_name() {
    let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 0 0";
    let (cpu_s, threads) = parse_stat(stat).expect("parsable");
    assert!((cpu_s - 300.0 / clock_ticks_per_s()).abs() < 1e-9);
    assert_eq!(threads, 3);
}

#[test]
fn own_process_is_readable() {
    let me = sample(std::process::id()).expect("own /proc entry");
    assert!(me.rss_bytes > 0);
    assert!(me.threads >= 1);
    assert!(self_cpu_s() >= 0.0);
}

#[test]
fn status_kib() {
    assert_eq!(
        parse_status_kib("Name:\tx\nVmRSS:\t   1234 kB\n", "VmRSS:"),
        Some(1234)
    );
}

#[test]
fn own_driver_is_epoll_once_mio_polls() {
    let poll = mio::Poll::new().expect("epoll");
    assert_eq!(io_driver(std::process::id()), Some("epoll"));
    drop(poll);
    assert!(ksoftirqd_cpu_s() >= 0.0);
}
