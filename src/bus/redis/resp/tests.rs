//! The parser on every frame kind, on cuts at every byte, on noise, and
//! side by side with the `redis` crate's.

use super::*;

#[test]
fn commands_are_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    push_command(&mut out, &[b"PUBLISH", b"msg", b""]);
    assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nmsg\r\n$0\r\n\r\n");
    for n in [0, 9, 10, 99, 100, 12345, usize::MAX] {
        let mut out = Vec::new();
        push_header(&mut out, b'$', n);
        assert_eq!(out, format!("${n}\r\n").as_bytes());
        assert_eq!(out.len(), header_len(n));
    }
}

#[test]
fn parses_every_frame_kind() {
    assert_eq!(parse(b"+OK\r\n"), Ok(Some((Frame::Simple(b"OK"), 5))));
    assert_eq!(parse(b"-ERR x\r\n"), Ok(Some((Frame::Error(b"ERR x"), 8))));
    assert_eq!(parse(b":-42\r\n"), Ok(Some((Frame::Integer(-42), 6))));
    assert_eq!(parse(b"$-1\r\n"), Ok(Some((Frame::Bulk(None), 5))));
    assert_eq!(parse(b"$0\r\n\r\n"), Ok(Some((Frame::Bulk(Some(b"")), 6))));
    assert_eq!(parse(b"*-1\r\n"), Ok(Some((Frame::Array(None), 5))));
    let push = b"*3\r\n$7\r\nmessage\r\n$3\r\nmsg\r\n$5\r\nhe\r\no\r\n:1\r\n";
    let (frame, used) = parse(push).unwrap().unwrap();
    assert_eq!(used, push.len() - 4);
    assert_eq!(
        frame,
        Frame::Array(Some(vec![
            Frame::Bulk(Some(b"message")),
            Frame::Bulk(Some(b"msg")),
            Frame::Bulk(Some(b"he\r\no")),
        ]))
    );
}

#[test]
fn a_partial_frame_asks_for_more_at_every_cut() {
    let whole = b"*2\r\n*2\r\n:1\r\n$3\r\nabc\r\n$-1\r\n";
    for cut in 0..whole.len() {
        assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(parse(whole).unwrap().unwrap().1, whole.len());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(parse(b"?x\r\n").is_err());
    assert!(parse(b":12a\r\n").is_err());
    assert!(parse(b"$3\r\nabcd\r\n").is_err());
    assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").is_err());
    assert!(parse(b"$99999999999\r\n").is_err());
}

/// A small deterministic generator (xorshift64*): the noise test is the
/// same on every run, so a failure reproduces.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max: usize, line_safe: bool) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| {
                // Mostly printable, with CR, LF and the frame markers mixed in.
                let b = match self.below(8) {
                    0 => b"\r\n+-:$*>"[self.below(8)],
                    1 => self.next() as u8,
                    _ => b' ' + self.below(95) as u8,
                };
                if line_safe && (b == b'\r' || b == b'\n') {
                    b'.'
                } else {
                    b
                }
            })
            .collect()
    }
}

/// An owned frame, to generate valid input and check what comes back.
#[derive(Debug)]
enum Model {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Model>>),
}

impl Model {
    fn random(noise: &mut Noise, depth: usize) -> Model {
        match noise.below(if depth < 4 { 6 } else { 4 }) {
            0 => Model::Simple(noise.bytes(12, true)),
            1 => Model::Error(noise.bytes(12, true)),
            2 => Model::Integer(noise.next() as i64 >> noise.below(64)),
            3 => Model::Bulk((noise.below(8) > 0).then(|| noise.bytes(40, false))),
            _ => Model::Array(
                (noise.below(8) > 0).then(|| (0..noise.below(5)).map(|_| Model::random(noise, depth + 1)).collect()),
            ),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, kind: u8, body: &[u8]| {
            out.push(kind);
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Model::Simple(s) => line(out, b'+', s),
            Model::Error(s) => line(out, b'-', s),
            Model::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Model::Bulk(None) => line(out, b'$', b"-1"),
            Model::Bulk(Some(b)) => push_bulk(out, b),
            Model::Array(None) => line(out, b'*', b"-1"),
            Model::Array(Some(items)) => {
                push_header(out, b'*', items.len());
                items.iter().for_each(|item| item.encode(out));
            }
        }
    }

    fn matches(&self, frame: &Frame<'_>) -> bool {
        match (self, frame) {
            (Model::Simple(a), Frame::Simple(b)) | (Model::Error(a), Frame::Error(b)) => a == b,
            (Model::Integer(a), Frame::Integer(b)) => a == b,
            (Model::Bulk(a), Frame::Bulk(b)) => a.as_deref() == *b,
            (Model::Array(None), Frame::Array(None)) => true,
            (Model::Array(Some(a)), Frame::Array(Some(b))) => {
                a.len() == b.len() && a.iter().zip(b).all(|(m, f)| m.matches(f))
            }
            _ => false,
        }
    }
}

/// Parses `input` however it is formed; what it says must be consistent.
fn parse_noise(input: &[u8]) {
    if let Ok(Some((_, used))) = parse(input) {
        assert!(used > 0 && used <= input.len(), "took {used} of {} bytes", input.len());
    }
}

#[test]
fn noise_never_panics_and_split_frames_parse_whole() {
    let mut noise = Noise(0x5EED_CAFE_F00D_1234);
    let mut inputs = 0usize;
    let mut valid = Vec::new();
    while inputs < 50_000 {
        let model = Model::random(&mut noise, 0);
        let mut whole = Vec::new();
        model.encode(&mut whole);
        let (frame, used) = parse(&whole).expect("a valid frame").expect("a whole frame");
        assert_eq!(used, whole.len(), "{model:?}");
        assert!(model.matches(&frame), "{model:?} parsed as {frame:?}");
        // Every truncation asks for more; the rest arriving completes the same frame.
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "{model:?} cut at {cut}");
            inputs += 1;
        }
        // A frame followed by the start of the next one.
        let mut two = whole.clone();
        two.extend_from_slice(&valid.last().map_or(&b"*2\r\n"[..], Vec::as_slice)[..1]);
        assert_eq!(parse(&two).unwrap().unwrap().1, whole.len());
        // Mutations: flip, insert, delete bytes; splice two frames.
        for _ in 0..8 {
            let mut mutated = whole.clone();
            for _ in 0..1 + noise.below(3) {
                let at = noise.below(mutated.len() + 1);
                match noise.below(4) {
                    0 if at < mutated.len() => mutated[at] = noise.next() as u8,
                    1 => mutated.insert(at, b"\r\n+-:$*>0123456789"[noise.below(18)]),
                    2 if at < mutated.len() => {
                        mutated.remove(at);
                    }
                    _ => {
                        let other: &[u8] = valid.get(noise.below(valid.len() + 1)).map_or(b"", Vec::as_slice);
                        mutated.splice(at..at, other.iter().copied().take(noise.below(other.len() + 1)));
                    }
                }
            }
            parse_noise(&mutated);
            inputs += 1;
        }
        // Plain garbage.
        parse_noise(&noise.bytes(64, false));
        inputs += 1;
        valid.push(whole);
    }
    // Lengths past every bound, and nesting past the limit.
    for bad in [
        &b"$536870913\r\n"[..],
        b"*9223372036854775807\r\n",
        b"$-9223372036854775808\r\n",
        b":99999999999999999999\r\n",
    ] {
        parse_noise(bad);
    }
    parse_noise(&b"*1\r\n".repeat(64));
}

/// The hand-written parser against the `redis` crate's, on one buffer of
/// pub/sub pushes as the subscriber reads them:
///
///     cargo test --release --lib resp::tests::parsers_side_by_side -- --ignored --nocapture
#[test]
#[ignore = "a measurement: run it in release, on a quiet machine"]
fn parsers_side_by_side() {
    const MESSAGES: usize = 100_000;
    const RUNS: usize = 7;
    let payload = br#"{"MessageType":"chatmsg","Data":"hello there, how are you?","Reciever":"bob","Sender":"alice"}"#;
    let mut input = Vec::new();
    for i in 0..MESSAGES {
        let channel = format!("sb:u:{{user{}}}", i % 1000);
        push_command(&mut input, &[b"message", channel.as_bytes(), payload]);
    }
    let best = |run: &dyn Fn() -> usize| {
        (0..RUNS)
            .map(|_| {
                let started = std::time::Instant::now();
                assert_eq!(std::hint::black_box(run()), MESSAGES * payload.len());
                started.elapsed()
            })
            .min()
            .expect("runs")
    };
    let ours = best(&|| {
        let (mut at, mut bytes) = (0, 0);
        while let Ok(Some((frame, used))) = parse(&input[at..]) {
            at += used;
            bytes += frame.items().and_then(|items| items.get(2)).and_then(Frame::bytes).map_or(0, <[u8]>::len);
        }
        bytes
    });
    let theirs = best(&|| {
        let mut parser = redis::Parser::new();
        let mut reader = &input[..];
        let mut bytes = 0;
        for _ in 0..MESSAGES {
            if let Ok(redis::Value::Array(items)) = parser.parse_value(&mut reader) {
                if let Some(redis::Value::BulkString(data)) = items.get(2) {
                    bytes += data.len();
                }
            }
        }
        bytes
    });
    let per = |d: std::time::Duration| d.as_nanos() as f64 / MESSAGES as f64;
    println!(
        "{{\"messages\":{MESSAGES},\"payload_bytes\":{},\"input_bytes\":{},\"ours_ns_per_message\":{:.1},\"redis_crate_ns_per_message\":{:.1}}}",
        payload.len(),
        input.len(),
        per(ours),
        per(theirs)
    );
    println!(
        "{MESSAGES} pushes of a {}-byte payload: hand-written {:.1} ns/message, redis::Parser {:.1} ns/message ({:.1}x), best of {RUNS}",
        payload.len(),
        per(ours),
        per(theirs),
        per(theirs) / per(ours)
    );
}
