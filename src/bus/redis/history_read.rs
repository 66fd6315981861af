//! Reads a channel's history straight from Redis, for the server API's
//! `GET /api/history`: the stream `sb:h:{KEY}` of a user or `sb:hr:{KEY}`
//! of a room, and its epoch `sb:he:{KEY}` / `sb:hre:{KEY}` (the history
//! contract). One short blocking exchange per request on a connection of
//! its own ([`exchange`]), never on the bus threads' links; in Redis
//! Cluster a `MOVED` reply is followed once to the master it names.

use std::time::Duration;

use super::endpoint::Endpoint;
use super::exchange::{exchange, ExchangeError};
use super::resp::{self, Frame};
use super::settings::Settings;
use crate::config::Config;

/// One stored message: its offset (the stream ID) and the frame payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub offset: String,
    pub payload: String,
}

/// What a channel's history holds after an offset.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct History {
    /// `None` when the channel has no history (never written, or expired).
    pub epoch: Option<String>,
    pub entries: Vec<Entry>,
}

/// The stream and epoch keys of a user's inbox (`room` false) or a room.
pub fn keys(room: bool, key: &str) -> (String, String) {
    if room {
        (format!("sb:hr:{{{key}}}"), format!("sb:hre:{{{key}}}"))
    } else {
        (format!("sb:h:{{{key}}}"), format!("sb:he:{{{key}}}"))
    }
}

/// Up to `limit` entries after offset `since` (from the oldest without one).
///
/// # Errors
/// What went wrong, in words: the settings, the connection, a refusal.
pub fn read(config: &Config, room: bool, key: &str, since: Option<&str>, limit: usize) -> Result<History, String> {
    let settings = Settings::from_config(config).map_err(|e| e.to_string())?;
    let (stream, epoch) = keys(room, key);
    let start = since.map_or_else(|| "-".to_string(), |offset| format!("({offset}"));
    let count = limit.to_string();
    let mut commands = Vec::new();
    resp::push_command(&mut commands, &[b"GET", epoch.as_bytes()]);
    resp::push_command(
        &mut commands,
        &[b"XRANGE", stream.as_bytes(), start.as_bytes(), b"+", b"COUNT", count.as_bytes()],
    );
    let timeout = settings.link.reply_timeout;
    let mut server = settings.seeds.first().cloned().ok_or("no Redis server")?;
    for _ in 0..2 {
        match ask(&server, &settings, &commands, timeout) {
            Ok(Asked::Done(history)) => return Ok(history),
            Ok(Asked::Moved(to)) => server = to,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("the key's slot kept moving (last asked {server})"))
}

enum Asked {
    Done(History),
    Moved(Endpoint),
}

fn ask(server: &Endpoint, settings: &Settings, commands: &[u8], timeout: Duration) -> Result<Asked, ExchangeError> {
    let mut history = History::default();
    let mut replies = 0;
    exchange(server, &settings.link, commands, timeout, |frame| {
        replies += 1;
        if let Frame::Error(e) = frame {
            let text = String::from_utf8_lossy(e);
            if let Some(to) = moved_to(&text) {
                return Ok(Some(Asked::Moved(to)));
            }
            return Err(ExchangeError::Refused { server: server.clone(), reply: text.into_owned() });
        }
        if replies == 1 {
            history.epoch = frame.bytes().map(|b| String::from_utf8_lossy(b).into_owned());
            return Ok(None);
        }
        history.entries = entries(frame);
        Ok(Some(Asked::Done(std::mem::take(&mut history))))
    })
}

/// The master a `MOVED SLOT HOST:PORT` names.
fn moved_to(error: &str) -> Option<Endpoint> {
    let target = error.strip_prefix("MOVED ")?.split(' ').nth(1)?;
    let (host, port) = target.rsplit_once(':')?;
    Some(Endpoint::new(host, port.parse().ok()?))
}

/// The entries of an XRANGE reply: `[[id, [field, value, ...]], ...]`,
/// each with its `p` field (the payload).
fn entries(frame: Frame<'_>) -> Vec<Entry> {
    let Frame::Array(Some(items)) = frame else {
        return Vec::new();
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Frame::Array(Some(parts)) = item else { continue };
        let (Some(id), Some(Frame::Array(Some(fields)))) = (parts.first().and_then(Frame::bytes), parts.get(1)) else {
            continue;
        };
        let payload = fields.chunks(2).find(|pair| pair[0].bytes() == Some(b"p")).and_then(|pair| pair.get(1)?.bytes());
        entries.push(Entry {
            offset: String::from_utf8_lossy(id).into_owned(),
            payload: String::from_utf8_lossy(payload.unwrap_or_default()).into_owned(),
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xrange_reply_reads_as_entries() {
        let reply =
            b"*2\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nn\r\n$1\r\nx\r\n$1\r\np\r\n$2\r\nhi\r\n*2\r\n$3\r\n2-0\r\n*0\r\n";
        let (frame, _) = resp::parse(reply).unwrap().unwrap();
        let read = entries(frame);
        assert_eq!(read[0], Entry { offset: "1-0".into(), payload: "hi".into() });
        assert_eq!(read[1], Entry { offset: "2-0".into(), payload: String::new() });
        assert_eq!(keys(true, "lobby").0, "sb:hr:{lobby}");
        assert_eq!(moved_to("MOVED 3999 127.0.0.1:7002"), Some(Endpoint::new("127.0.0.1", 7002)));
        assert_eq!(moved_to("ERR nope"), None);
    }
}
