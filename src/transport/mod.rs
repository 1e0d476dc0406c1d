//! The byte stream under every protocol: a TCP socket, plain or carrying TLS. Both sides
//! of the proxy read and write through [`Stream`], which TLS leaves unchanged for them:
//! a client's answers are still written by whoever delivers them (`try_write`, from any
//! task on the worker), and the client and backend tasks still wait on the socket's
//! readiness. So TLS is rustls's connection state driven over the socket here, by hand,
//! rather than an `AsyncRead` wrapper that one task would own: the handshake is
//! tokio-rustls's (`accept`), and the established connection is taken out of it.
//!
//! [`accept`] also owns what comes before the protocol on an accepted connection (the
//! PROXY protocol header, read without taking a byte past it), and [`connect`] what comes
//! before it on a backend connection.

mod accept;
mod connect;

pub(crate) use accept::{accept, AcceptError, Inbound};
pub(crate) use connect::{connect, Io, Outbound};

use bytes::{BufMut, BytesMut};
use std::cell::RefCell;
use std::io::{self, BufRead, Read, Write};
use std::task::Poll;
use tokio::net::TcpStream;

/// Plaintext rustls takes before it has written its ciphertext out: a bound on what a
/// TLS connection holds beyond the proxy's own buffers.
const TLS_BUFFER: usize = 64 << 10;

/// A connection's byte stream.
#[derive(Debug)]
pub(crate) struct Stream {
    tcp: TcpStream,
    tls: Option<RefCell<rustls::Connection>>,
}

/// `std::io` over the non-blocking socket, for rustls: `WouldBlock` when it would block,
/// which also clears tokio's readiness so that the next wait is real.
struct Tcp<'a>(&'a TcpStream);

impl Read for Tcp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Tcp<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl Stream {
    /// A plain TCP stream.
    pub(crate) fn plain(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// A TLS stream whose handshake is done.
    pub(crate) fn tls(tcp: TcpStream, conn: impl Into<rustls::Connection>) -> Stream {
        let mut conn = conn.into();
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Stream {
            tcp,
            tls: Some(RefCell::new(conn)),
        }
    }

    /// The socket.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Whether the stream carries TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads at most `room` bytes into `buf` if there are any now: `Ok(0)` at the end of
    /// the stream, `WouldBlock` if nothing has come.
    pub(crate) fn try_read(&self, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.tcp.try_read_buf(&mut (&mut *buf).limit(room));
        };
        let mut t = tls.borrow_mut();
        loop {
            match t.reader().fill_buf() {
                Ok(chunk) => {
                    // Empty: the peer's close_notify.
                    let n = chunk.len().min(room);
                    buf.extend_from_slice(&chunk[..n]);
                    t.reader().consume(n);
                    return Ok(n);
                }
                // A TCP close without close_notify ends the stream as a plain close does.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let got = t.read_tls(&mut Tcp(&self.tcp))?;
            if let Err(e) = t.process_new_packets() {
                // Tell the peer why (the alert), as far as the socket takes it now.
                let _ = t.write_tls(&mut Tcp(&self.tcp));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Whatever TLS answers by itself (a key update): written now if it fits.
            while t.wants_write() {
                if t.write_tls(&mut Tcp(&self.tcp)).is_err() {
                    break;
                }
            }
            if got == 0
                && t.process_new_packets()
                    .is_ok_and(|s| s.plaintext_bytes_to_read() == 0)
            {
                return Ok(0);
            }
        }
    }

    /// Waits until [`Stream::try_read`] has something to say, then reads. It tries first
    /// (TLS may hold plaintext that no socket readiness announces), then waits through
    /// `poll_read_ready`: a stream is waited on by one task, whose waker is the one kept,
    /// and this is tokio's own path for `read`, cheaper than a `readable()` future.
    pub(crate) async fn read(&self, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| loop {
            match self.try_read(buf, room) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.tcp.poll_read_ready(cx))?
                }
                r => return Poll::Ready(r),
            }
        })
        .await
    }

    /// Writes what the stream takes of `data` now; `WouldBlock` if it takes nothing. With
    /// TLS, bytes taken may still wait in the TLS buffer: see [`Stream::pending`].
    pub(crate) fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.tcp.try_write(data);
        };
        let mut t = tls.borrow_mut();
        let flushed = Self::push(&mut t, &self.tcp)?;
        let n = t.writer().write(data)?;
        if flushed {
            Self::push(&mut t, &self.tcp)?;
        }
        if n == 0 && !data.is_empty() {
            return Err(would_block());
        }
        Ok(n)
    }

    /// Writes TLS's ciphertext out as far as the socket takes it; whether all is out.
    fn push(t: &mut rustls::Connection, tcp: &TcpStream) -> io::Result<bool> {
        while t.wants_write() {
            match t.write_tls(&mut Tcp(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes out what the TLS buffer holds, as far as the socket takes it now: whether
    /// nothing is left (always, for plain TCP).
    pub(crate) fn try_flush(&self) -> io::Result<bool> {
        match &self.tls {
            None => Ok(true),
            Some(t) => Self::push(&mut t.borrow_mut(), &self.tcp),
        }
    }

    /// Whether written bytes still wait in the TLS buffer for the socket.
    pub(crate) fn pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.borrow().wants_write())
    }

    /// Waits until the socket may take more (one task waits on a stream's writes).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.tcp.poll_write_ready(cx)).await
    }

    /// Writes some of `data` (or, with `data` empty, what the TLS buffer holds), waiting
    /// for the socket if it takes nothing now.
    pub(crate) async fn write(&self, data: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| loop {
            let r = if data.is_empty() {
                self.try_flush()
                    .and_then(|done| if done { Ok(0) } else { Err(would_block()) })
            } else {
                self.try_write(data)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.tcp.poll_write_ready(cx))?
                }
                r => return Poll::Ready(r),
            }
        })
        .await
    }

    /// Writes all of `data` and everything before it.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        while self.pending() {
            self.write(&[]).await?;
        }
        Ok(())
    }

    /// Says goodbye the TLS way (a close_notify, if the socket takes it now).
    pub(crate) fn close_notify(&self) {
        if let Some(t) = &self.tls {
            let mut t = t.borrow_mut();
            t.send_close_notify();
            let _ = Self::push(&mut t, &self.tcp);
        }
    }
}
