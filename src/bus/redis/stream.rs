//! A link's socket: plain TCP, or TLS over it (`rediss://`), both
//! non-blocking and read and written the same way by [`super::link`].
//!
//! TLS is rustls driven by hand: records are read from the socket until a
//! plaintext read can be answered, and what rustls has to send (handshake
//! messages, encrypted commands) is pushed out after every read and write.
//! Plaintext written before the handshake is over (the greeting) waits in
//! rustls and goes out when it is.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    tcp: TcpStream,
    tls: ClientConnection,
}

impl Stream {
    /// Wraps a connected socket; with `tls`, starts the handshake with
    /// `server_name` (verified against the configured roots).
    ///
    /// # Errors
    /// rustls refused to start a session (a config without protocols).
    pub fn new(tcp: TcpStream, tls: Option<(&Arc<ClientConfig>, ServerName<'static>)>) -> io::Result<Stream> {
        let Some((config, name)) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        let mut stream = TlsStream { tcp, tls };
        stream.push_records()?;
        Ok(Stream::Tls(Box::new(stream)))
    }

    /// The socket, to register with a poll.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &mut tls.tcp,
        }
    }

    /// Reads plaintext: `Ok(0)` when the peer closed, `WouldBlock` when
    /// nothing more is there now.
    ///
    /// # Errors
    /// What the socket or TLS said (a failed handshake or certificate check included).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }

    /// Writes plaintext; `WouldBlock` when nothing more fits now.
    ///
    /// # Errors
    /// What the socket or TLS said.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    /// Pushes out what TLS still holds (records the socket could not take).
    ///
    /// # Errors
    /// The socket failed.
    pub fn push_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tls) => tls.push_records(),
        }
    }

    /// Whether TLS holds records the socket has not taken yet.
    pub fn has_pending(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.tls.wants_write(),
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.tls.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            let processed = self.tls.process_new_packets();
            // An alert explaining a failure goes out before the error is returned.
            let _ = self.push_records();
            processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push_records()?;
        let n = self.tls.writer().write(buf)?;
        self.push_records()?;
        if n == 0 && !buf.is_empty() {
            // rustls's buffer is full until the socket takes some of it.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn push_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
