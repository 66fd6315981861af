//! The registry as a table: each row drives it through claims, releases,
//! Redis replies and link changes, and lists what it must do in order: the
//! commands it sends, the logins it decides, the channels it gives up.

use std::collections::VecDeque;
use std::sync::Arc;

use mio::{Poll, Token};

use super::*;
use crate::bus::redis::shared::{Shared, SubJob};
use crate::config::Routing;

#[derive(Clone, Copy, Debug)]
enum Step {
    /// A user logs in under a name on a connection (a token).
    Claim(&'static str, usize),
    /// The user on that connection gives the name up.
    Release(&'static str, usize),
    /// Redis answers the oldest command in flight (a claim script of one name included).
    Reply(Answer),
    /// Redis answers the oldest command in flight, a claim script of
    /// several names, name by name.
    Replies(&'static [Answer]),
    /// Several steps within one turn of the publisher (its commands go out together).
    Burst(&'static [Step]),
    /// The link drops: every command in flight is lost.
    Down,
    /// The link is back: the registry re-asserts what it holds.
    Up,
    /// The master that holds this node's lease key is down; the rest is up.
    LeaseDown(&'static str),
    /// The lease is due: renewed, with the next slice of held names' keys.
    Tick,
}
use Step::*;

#[derive(Clone, Copy, Debug)]
enum Answer {
    /// To a claim: the name is ours now.
    Ours,
    /// To a claim: this node holds the name.
    HeldBy(&'static str),
    /// To EXISTS on a holder's lease: 1 alive, 0 expired; to PEXPIRE: 1
    /// renewed, 0 the key is gone.
    Lease(i64),
    /// To a release or the lease's SET.
    Done,
    /// Redis refused the command.
    Error,
}
use Answer::*;

struct Row {
    what: &'static str,
    steps: &'static [Step],
    /// What the registry did, in order: `claim NAME [over NODE]`, `alive? NODE`,
    /// `release NAME` (commands), `accept N` / `refuse N` (LoginDecided to
    /// connection N), `unsubscribe NAME N`.
    then: &'static [&'static str],
}

const fn row(what: &'static str, steps: &'static [Step], then: &'static [&'static str]) -> Row {
    Row { what, steps, then }
}

const ROWS: &[Row] = &[
    row(
        "a held name's key is renewed with the lease",
        &[Claim("alice", 1), Reply(Ours), Tick, Reply(Done), Reply(Lease(1))],
        &["claim alice", "accept 1", "lease", "renew alice"],
    ),
    row(
        "a name is renewed once per cycle, not at every tick",
        &[Claim("alice", 1), Reply(Ours), Tick, Tick],
        &["claim alice", "accept 1", "lease", "renew alice", "lease"],
    ),
    row(
        "a renewal that finds the key gone claims the name again",
        &[Claim("alice", 1), Reply(Ours), Tick, Reply(Done), Reply(Lease(0)), Reply(Ours)],
        &["claim alice", "accept 1", "lease", "renew alice", "claim alice"],
    ),
    row(
        "a name given up is not renewed",
        &[Claim("alice", 1), Reply(Ours), Release("alice", 1), Tick],
        &["claim alice", "accept 1", "release alice", "lease"],
    ),
    row("a free name is granted", &[Claim("alice", 1), Reply(Ours)], &["claim alice", "accept 1"]),
    row(
        "a name held by a live node is refused",
        &[Claim("alice", 1), Reply(HeldBy("b")), Reply(Lease(1))],
        &["claim alice", "alive? b", "refuse 1", "unsubscribe alice 1"],
    ),
    row(
        "a dead node's name is taken over",
        &[Claim("alice", 1), Reply(HeldBy("b")), Reply(Lease(0)), Reply(Ours)],
        &["claim alice", "alive? b", "claim alice over b", "accept 1"],
    ),
    row(
        "takeovers give up after three races",
        &[
            Claim("alice", 1),
            Reply(HeldBy("b")),
            Reply(Lease(0)),
            Reply(HeldBy("c")),
            Reply(Lease(0)),
            Reply(HeldBy("d")),
            Reply(Lease(0)),
            Reply(HeldBy("e")),
            Reply(Lease(0)),
        ],
        &[
            "claim alice",
            "alive? b",
            "claim alice over b",
            "alive? c",
            "claim alice over c",
            "alive? d",
            "claim alice over d",
            "alive? e",
            "refuse 1",
            "unsubscribe alice 1",
        ],
    ),
    row(
        "a holder whose lease is out of reach refuses the login",
        &[LeaseDown("b"), Claim("alice", 1), Reply(HeldBy("b"))],
        &["claim alice", "refuse 1", "unsubscribe alice 1"],
    ),
    row("an error reply grants locally", &[Claim("alice", 1), Reply(Error)], &["claim alice", "accept 1"]),
    row(
        "a claim while Redis is down is granted locally and re-asserted",
        &[Down, Claim("alice", 1), Up, Reply(Ours)],
        &["accept 1", "claim alice"],
    ),
    row(
        "a claim lost with its link is granted locally",
        &[Claim("alice", 1), Down, Up, Reply(Ours)],
        &["claim alice", "accept 1", "claim alice"],
    ),
    row(
        "a name taken meanwhile is revoked after the reconnect",
        &[Down, Claim("alice", 1), Up, Reply(HeldBy("b")), Reply(Lease(1))],
        &["accept 1", "claim alice", "alive? b", "refuse 1", "unsubscribe alice 1"],
    ),
    row(
        "a re-assertion lost again is retried at the next reconnect",
        &[Down, Claim("alice", 1), Up, Down, Up, Reply(Ours)],
        &["accept 1", "claim alice", "claim alice"],
    ),
    row(
        "a re-assertion that cannot reach the holder's lease keeps the name",
        &[Down, Claim("alice", 1), LeaseDown("b"), Up, Reply(HeldBy("b")), Down, Up],
        &["accept 1", "claim alice", "claim alice"],
    ),
    row(
        "a release is sent",
        &[Claim("alice", 1), Reply(Ours), Release("alice", 1)],
        &["claim alice", "accept 1", "release alice"],
    ),
    row(
        "a release while down waits for the reconnect",
        &[Claim("alice", 1), Reply(Ours), Down, Release("alice", 1), Up],
        &["claim alice", "accept 1", "release alice"],
    ),
    row(
        "a release lost with its link is sent again",
        &[Claim("alice", 1), Reply(Ours), Release("alice", 1), Down, Up, Reply(Done)],
        &["claim alice", "accept 1", "release alice", "release alice"],
    ),
    row(
        "another connection's release is ignored",
        &[Claim("alice", 1), Reply(Ours), Release("alice", 2), Down, Up],
        &["claim alice", "accept 1", "claim alice"],
    ),
    row(
        "a release that overtakes its claim gives the name back after it",
        &[Claim("alice", 1), Release("alice", 1), Reply(Ours)],
        &["claim alice", "release alice"],
    ),
    row(
        "a release that overtakes a refused claim sends nothing",
        &[Claim("alice", 1), Release("alice", 1), Reply(HeldBy("b")), Reply(Lease(1))],
        &["claim alice", "alive? b"],
    ),
    row(
        "a release that overtakes a lost claim waits for the reconnect",
        &[Claim("alice", 1), Release("alice", 1), Down, Up],
        &["claim alice", "release alice"],
    ),
    row(
        "a second login waits for the first claim",
        &[Claim("alice", 1), Release("alice", 1), Claim("alice", 2), Reply(Ours), Reply(Done), Reply(Ours)],
        &["claim alice", "release alice", "claim alice", "accept 2"],
    ),
    row(
        "a second login that left before its turn is not claimed",
        &[Claim("alice", 1), Release("alice", 1), Claim("alice", 2), Release("alice", 2), Reply(Ours)],
        &["claim alice", "release alice"],
    ),
    row(
        "a release during a re-assertion gives the name back after it",
        &[Down, Claim("alice", 1), Up, Release("alice", 1), Reply(Ours)],
        &["accept 1", "claim alice", "release alice"],
    ),
    row(
        "a release during a lost re-assertion waits for the reconnect",
        &[Down, Claim("alice", 1), Up, Release("alice", 1), Down, Up],
        &["accept 1", "claim alice", "release alice"],
    ),
    row(
        "a release lost while the next login's claim is in flight",
        &[Claim("alice", 1), Reply(Ours), Release("alice", 1), Claim("alice", 2), Down, Up],
        &["claim alice", "accept 1", "release alice", "claim alice", "accept 2", "claim alice"],
    ),
    row(
        "a burst of logins is one claim, answered name by name",
        &[
            Burst(&[Claim("alice", 1), Claim("bob", 2), Claim("carol", 3)]),
            Replies(&[Ours, HeldBy("b"), Ours]),
            Reply(Lease(1)),
        ],
        &["claim alice bob carol", "alive? b", "accept 1", "accept 3", "refuse 2", "unsubscribe bob 2"],
    ),
    row(
        "a burst lost with its link is granted locally, every name",
        &[Burst(&[Claim("alice", 1), Claim("bob", 2)]), Down, Up, Replies(&[Ours, Ours])],
        &["claim alice bob", "accept 1", "accept 2", "claim alice bob"],
    ),
    row(
        "a burst refused by Redis is granted locally",
        &[Burst(&[Claim("alice", 1), Claim("bob", 2)]), Reply(Error)],
        &["claim alice bob", "accept 1", "accept 2"],
    ),
    row(
        "a reply of the wrong shape to a burst grants locally",
        &[Burst(&[Claim("alice", 1), Claim("bob", 2)]), Replies(&[Ours])],
        &["claim alice bob", "accept 1", "accept 2"],
    ),
    row(
        "a release and the next claim of a name keep their order",
        &[
            Claim("alice", 1),
            Reply(Ours),
            Burst(&[Claim("bob", 2), Release("alice", 1), Claim("carol", 4), Claim("alice", 3), Release("dan", 5)]),
        ],
        &["claim alice", "accept 1", "claim bob", "release alice", "claim alice carol"],
    ),
    row(
        "names are independent",
        &[Claim("alice", 1), Claim("bob", 2), Reply(HeldBy("b")), Reply(Ours), Reply(Lease(1))],
        &["claim alice", "claim bob", "alive? b", "accept 2", "refuse 1", "unsubscribe alice 1"],
    ),
];

/// The registry wired to a pretend Redis: commands go in flight while the
/// link is up and are lost (`on_lost`) while it is down, as in the publisher.
struct Wire {
    shared: Arc<Shared>,
    _polls: [Poll; 3],
    registry: Registry,
    in_flight: VecDeque<Outgoing>,
    up: bool,
    down_slots: Vec<u16>,
    ticks: u32,
    seen: Vec<String>,
}

impl Wire {
    fn new() -> Wire {
        let (shared, poll) = Shared::for_tests(Routing::Targeted);
        let registry = Registry::new("me".into(), Duration::from_secs(15), false);
        Wire {
            shared,
            _polls: poll,
            registry,
            in_flight: VecDeque::new(),
            up: true,
            down_slots: Vec::new(),
            ticks: 0,
            seen: Vec::new(),
        }
    }

    fn step(&mut self, step: Step) {
        self.apply(step);
        self.settle();
    }

    /// One step, its commands left unsent.
    fn apply(&mut self, step: Step) {
        if let Burst(steps) = step {
            return steps.iter().for_each(|&step| self.apply(step));
        }
        let Wire { shared, registry, in_flight, up, down_slots, ticks, .. } = self;
        let link_up = *up;
        let is_up = |slot: u16| link_up && !down_slots.contains(&slot);
        match step {
            Claim(name, n) => {
                shared.logins.begin(name, at(n), false);
                registry.claim(shared, name.into(), at(n), is_up(Registry::slot_of_name(name)));
            }
            Release(name, n) => {
                shared.logins.cancel(name, at(n));
                registry.release(name.into(), at(n), is_up(Registry::slot_of_name(name)));
            }
            Reply(answer) => {
                let sent = in_flight.pop_front().expect("a reply to no command");
                // A claim script answers with one item per name.
                let frame = match (&sent.awaiting, answer) {
                    (_, Error) => frame_of(Error),
                    (Awaiting::Claims { .. }, answer) => Frame::Array(Some(vec![frame_of(answer)])),
                    (_, answer) => frame_of(answer),
                };
                registry.on_reply(shared, sent.awaiting, &frame, &is_up);
            }
            Replies(answers) => {
                let sent = in_flight.pop_front().expect("a reply to no command");
                let frame = Frame::Array(Some(answers.iter().map(|&a| frame_of(a)).collect()));
                registry.on_reply(shared, sent.awaiting, &frame, &is_up);
            }
            Burst(_) => unreachable!("taken apart above"),
            Down => {
                *up = false;
                let is_up = |_: u16| false;
                for sent in std::mem::take(in_flight) {
                    registry.on_lost(shared, sent.awaiting, &is_up);
                }
            }
            Up => {
                *up = true;
                let is_up = |slot: u16| !down_slots.contains(&slot);
                registry.on_link_up(&|_| true);
                registry.pump_reassert(usize::MAX, &is_up);
            }
            LeaseDown(node) => down_slots.push(cluster::slot(&Registry::node_key(node))),
            Tick => {
                *ticks += 1;
                registry.renew_lease(Instant::now() + Duration::from_secs(15) * *ticks, link_up);
            }
        }
    }

    /// Sends the registry's commands, then records them and what reached
    /// reactors and the subscriber.
    fn settle(&mut self) {
        // The publisher pumps re-assertions every turn.
        let (up, down) = (self.up, self.down_slots.clone());
        self.registry.pump_reassert(usize::MAX, &|s| up && !down.contains(&s));
        loop {
            self.registry.flush();
            if self.registry.out.is_empty() {
                break;
            }
            for sent in std::mem::take(&mut self.registry.out) {
                self.seen.push(describe(&sent.command));
                let link_up = self.up && !self.down_slots.contains(&sent.slot);
                if link_up {
                    self.in_flight.push_back(sent);
                } else {
                    let (up, down) = (self.up, &self.down_slots);
                    self.registry.on_lost(&self.shared, sent.awaiting, &|s| up && !down.contains(&s));
                }
            }
        }
        for (token, accepted) in self.shared.decisions() {
            self.seen.push(format!("{} {token}", if accepted { "accept" } else { "refuse" }));
        }
        while let Some(job) = self.shared.sub_jobs.pop() {
            if let SubJob::Unsubscribe { name, at } = job {
                self.seen.push(format!("unsubscribe {name} {}", at.token.0));
            }
        }
    }
}

fn at(token: usize) -> ConnRef {
    ConnRef { reactor: 0, token: Token(token) }
}

fn frame_of(answer: Answer) -> Frame<'static> {
    match answer {
        Ours => Frame::Bulk(Some(b"")),
        HeldBy(node) => Frame::Bulk(Some(node.as_bytes())),
        Lease(n) => Frame::Integer(n),
        Done => Frame::Integer(1),
        Error => Frame::Error(b"ERR refused"),
    }
}

/// A registry command in the table's words.
fn describe(command: &[u8]) -> String {
    let (frame, _) = resp::parse(command).expect("valid RESP").expect("a whole command");
    let args: Vec<String> = frame
        .items()
        .expect("an array")
        .iter()
        .map(|a| String::from_utf8_lossy(a.bytes().expect("bulk")).into())
        .collect();
    let braced = |key: &str| key[key.find('{').map_or(0, |i| i + 1)..].trim_end_matches('}').to_string();
    let keys = |args: &[String]| {
        let n: usize = args[2].parse().expect("a key count");
        // Sorted: a re-assertion gathers names in no particular order.
        let mut names: Vec<String> = args[3..3 + n].iter().map(|k| braced(k)).collect();
        names.sort();
        names.join(" ")
    };
    match args[0].as_str() {
        "EVAL" if args[1].as_bytes() == batch::CLAIMS_SCRIPT => match args.last().map(String::as_str) {
            Some("") => format!("claim {}", keys(&args)),
            Some(dead) => format!("claim {} over {dead}", keys(&args)),
            None => unreachable!("a claim has arguments"),
        },
        "EVAL" if args[1].as_bytes() == batch::RELEASES_SCRIPT => format!("release {}", keys(&args)),
        "EXISTS" => format!("alive? {}", braced(&args[1])),
        "SET" => "lease".into(),
        "DEL" => "drop lease".into(),
        "PEXPIRE" => format!("renew {}", braced(&args[1])),
        other => panic!("unexpected command {other}"),
    }
}

#[test]
fn the_registry_follows_its_table() {
    for row in ROWS {
        let mut wire = Wire::new();
        for &step in row.steps {
            wire.step(step);
        }
        assert_eq!(wire.seen, row.then, "{}", row.what);
    }
}

#[test]
fn the_lease_is_renewed_a_third_of_the_lease_apart_and_dropped_at_shutdown() {
    let mut wire = Wire::new();
    let start = Instant::now();
    let next = wire.registry.renew_lease(start, true);
    assert_eq!(next, start + Duration::from_secs(5));
    wire.registry.renew_lease(start + Duration::from_secs(1), true);
    wire.registry.renew_lease(next, false);
    wire.registry.drop_lease();
    wire.settle();
    assert_eq!(wire.seen, ["lease", "drop lease"]);
}

#[test]
fn a_held_name_costs_no_more_than_its_connection_and_a_flag() {
    assert!(std::mem::size_of::<Name>() <= std::mem::size_of::<ConnRef>() + std::mem::size_of::<usize>());
}
