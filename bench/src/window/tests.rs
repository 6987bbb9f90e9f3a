use super::*;

fn completed(book: &WindowBook, worker: usize) -> Vec<u32> {
    let mut out = Vec::new();
    book.take_completed(worker, |p| out.push(p));
    out
}

#[test]
fn a_message_completes_when_every_recipient_counted_it() {
    // Publishers: src 10 on worker 0, src 3 on worker 1.
    let book = WindowBook::new(3, &[(10, 0), (3, 1)], 2);
    assert_eq!(book.window(), 3);
    assert_eq!(book.publisher(10), Some(0));
    assert_eq!(book.publisher(3), Some(1));
    assert_eq!(book.publisher(4), None);
    assert_eq!(book.publisher(99), None);

    book.arm(0, 0, 3);
    book.arm(0, 1, 1);
    let mut tally = WindowTally::new(Some(&book));
    tally.add(&book, 0, 0);
    tally.add(&book, 0, 0);
    tally.flush(&book, 1);
    assert!(!book.is_done(0, 0));
    assert!(completed(&book, 0).is_empty());

    tally.add(&book, 0, 0);
    tally.add(&book, 0, 1);
    tally.flush(&book, 1);
    assert!(book.is_done(0, 0));
    assert!(book.is_done(0, 1));
    assert_eq!(completed(&book, 0), vec![0]);
    assert!(completed(&book, 0).is_empty(), "taken once");
    assert!(completed(&book, 1).is_empty(), "other worker untouched");
    assert_eq!(tally.stray, 0);
    assert_eq!((book.armed(), book.done()), (2, 2));
}

#[test]
fn the_book_counts_messages_put_in_flight_and_done() {
    let book = WindowBook::new(4, &[(0, 0)], 1);
    book.arm(0, 0, 2);
    book.arm(0, 1, 0);
    // A message nobody receives is done at once.
    assert_eq!((book.armed(), book.done()), (2, 1));
    let mut tally = WindowTally::new(Some(&book));
    tally.add(&book, 0, 0);
    tally.flush(&book, 0);
    assert_eq!(book.done(), 1);
    tally.add(&book, 0, 0);
    // A duplicate in the same turn is stray and completes nothing twice.
    tally.add(&book, 0, 0);
    tally.flush(&book, 0);
    assert_eq!((book.armed(), book.done()), (2, 2));
    assert_eq!(tally.stray, 1);
}

#[test]
fn deliveries_of_messages_not_in_flight_are_stray() {
    let book = WindowBook::new(2, &[(0, 0)], 1);
    book.arm(0, 0, 1);
    let mut tally = WindowTally::new(Some(&book));
    tally.add(&book, 0, 0);
    tally.flush(&book, 0);
    assert!(book.is_done(0, 0));
    // A duplicate after completion.
    tally.add(&book, 0, 0);
    tally.flush(&book, 0);
    assert_eq!(tally.stray, 1);
    // The slot is reused by seq 2; a late copy of seq 0 does not count for it.
    book.arm(0, 2, 1);
    tally.add(&book, 0, 0);
    tally.flush(&book, 0);
    assert_eq!(tally.stray, 2);
    assert!(!book.is_done(0, 2));
    // Two messages of one slot in one turn: the second is stray.
    tally.add(&book, 0, 2);
    tally.add(&book, 0, 4);
    tally.flush(&book, 0);
    assert_eq!(tally.stray, 3);
    assert!(book.is_done(0, 2));
}

#[test]
fn windows_round_up_to_a_power_of_two_ring() {
    let book = WindowBook::new(5, &[(0, 0), (1, 0)], 1);
    assert_eq!(book.ring, 8);
    // Eight messages of publisher 1 in flight at once use distinct slots.
    for seq in 0..8 {
        book.arm(1, seq, 1);
    }
    let mut tally = WindowTally::new(Some(&book));
    for seq in 0..8 {
        tally.add(&book, 1, seq);
    }
    tally.flush(&book, 0);
    assert!((0..8).all(|seq| book.is_done(1, seq)));
    assert_eq!(tally.stray, 0);
    assert_eq!(completed(&book, 0), vec![1]);
}

#[test]
fn completions_counted_on_several_threads_reach_the_owner_exactly() {
    // 70 publishers (two bitmap words) owned by worker 0; four counting
    // threads each see one delivery of every message.
    const PUBLISHERS: u32 = 70;
    const MESSAGES: u64 = 200;
    const COUNTERS: usize = 4;
    let publishers: Vec<(u32, u32)> = (0..PUBLISHERS).map(|p| (p, 0)).collect();
    let book = WindowBook::new(1, &publishers, COUNTERS + 1);
    let mut done = vec![0u64; PUBLISHERS as usize];
    for seq in 0..MESSAGES {
        for p in 0..PUBLISHERS {
            book.arm(p, seq, COUNTERS as u32);
        }
        std::thread::scope(|scope| {
            for worker in 1..=COUNTERS {
                let book = &book;
                scope.spawn(move || {
                    let mut tally = WindowTally::new(Some(book));
                    for p in 0..PUBLISHERS {
                        tally.add(book, p, seq);
                    }
                    tally.flush(book, worker);
                    assert_eq!(tally.stray, 0);
                });
            }
        });
        book.take_completed(0, |p| done[p as usize] += 1);
        assert!((0..PUBLISHERS).all(|p| book.is_done(p, seq)));
    }
    assert!(done.iter().all(|n| *n == MESSAGES), "{done:?}");
}
