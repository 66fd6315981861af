//! A short blocking exchange with one Redis server: connect (TLS if the
//! URL says so), greet it as a link does, send commands and read their
//! replies, all within one deadline. For fetching the slot map (`cluster`)
//! and for the checks at start (`preflight`); links never block.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use thiserror::Error;

use super::endpoint::Endpoint;
use super::resp::{self, Frame, ProtocolError};
use super::settings::LinkConfig;
use super::tls;

/// Why an exchange brought no answer.
#[derive(Debug, Error)]
pub enum ExchangeError {
    #[error("{server}: {source}")]
    Io { server: Endpoint, source: io::Error },
    /// The TLS handshake failed: a certificate that is not trusted, a name
    /// it does not carry, a server that speaks no TLS.
    #[error("{server}: TLS: {reason}")]
    Tls { server: Endpoint, reason: String },
    #[error("{server}: no reply within {timeout:?}")]
    TimedOut { server: Endpoint, timeout: Duration },
    #[error("{server}: closed the connection")]
    Closed { server: Endpoint },
    #[error("{server}: {source}")]
    Protocol { server: Endpoint, source: ProtocolError },
    /// Redis answered with an error (to the greeting, or to a command).
    #[error("{server}: {reply}")]
    Refused { server: Endpoint, reply: String },
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => &tls.sock,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.read(buf),
            Conn::Tls(tls) => tls.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.write_all(buf),
            Conn::Tls(tls) => tls.write_all(buf).and_then(|()| tls.flush()),
        }
    }
}

/// Sends the greeting and `commands` to `server`, then hands each reply
/// after the greeting's to `each`, in order, until it returns a result.
///
/// # Errors
/// The server could not be reached or timed out, the greeting was refused,
/// or `each` failed.
pub fn exchange<T>(
    server: &Endpoint,
    link: &LinkConfig,
    commands: &[u8],
    timeout: Duration,
    mut each: impl FnMut(Frame<'_>) -> Result<Option<T>, ExchangeError>,
) -> Result<T, ExchangeError> {
    let deadline = Instant::now() + timeout;
    let mut conn = connect(server, link, timeout)?;
    let failed = |source: io::Error| classify(server, source, timeout);
    let mut request = link.greeting.clone();
    request.extend_from_slice(commands);
    conn.write_all(&request).map_err(failed)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut greeting_left = link.greeting_replies;
    loop {
        // The whole exchange within `timeout`, however the replies are split.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::TimedOut { server: server.clone(), timeout });
        }
        conn.tcp().set_read_timeout(Some(left)).map_err(failed)?;
        let n = conn.read(&mut chunk).map_err(failed)?;
        if n == 0 {
            return Err(ExchangeError::Closed { server: server.clone() });
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        loop {
            let parsed =
                resp::parse(&buf[at..]).map_err(|source| ExchangeError::Protocol { server: server.clone(), source })?;
            let Some((frame, used)) = parsed else { break };
            at += used;
            if greeting_left > 0 {
                greeting_left -= 1;
                if let Frame::Error(e) = frame {
                    return Err(ExchangeError::Refused {
                        server: server.clone(),
                        reply: String::from_utf8_lossy(e).into(),
                    });
                }
                continue;
            }
            if let Some(done) = each(frame)? {
                return Ok(done);
            }
        }
        buf.drain(..at);
    }
}

fn connect(server: &Endpoint, link: &LinkConfig, timeout: Duration) -> Result<Conn, ExchangeError> {
    let io = |source| ExchangeError::Io { server: server.clone(), source };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut tcp = None;
    for addr in server.resolve_now().map_err(io)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or_else(|| io(last))?;
    let _ = tcp.set_nodelay(true);
    // Bounded from the first byte: the TLS handshake reads and writes inside the first write.
    tcp.set_read_timeout(Some(timeout)).map_err(io)?;
    tcp.set_write_timeout(Some(timeout)).map_err(io)?;
    let Some(config) = &link.tls else {
        return Ok(Conn::Plain(tcp));
    };
    let tls_error = |reason: String| ExchangeError::Tls { server: server.clone(), reason };
    let name = tls::server_name(&server.host).map_err(|e| tls_error(e.to_string()))?;
    let session = ClientConnection::new(Arc::clone(config), name).map_err(|e| tls_error(e.to_string()))?;
    Ok(Conn::Tls(Box::new(StreamOwned::new(session, tcp))))
}

/// An I/O error as what it means: a TLS failure (rustls inside), a timeout,
/// or the socket's own error.
fn classify(server: &Endpoint, source: io::Error, timeout: Duration) -> ExchangeError {
    if let Some(e) = source.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return ExchangeError::Tls { server: server.clone(), reason: e.to_string() };
    }
    if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        return ExchangeError::TimedOut { server: server.clone(), timeout };
    }
    ExchangeError::Io { server: server.clone(), source }
}
