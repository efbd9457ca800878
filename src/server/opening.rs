//! A connection's opening bytes must arrive by a deadline.
//!
//! hyper's automatic protocol choice reads the first bytes of a connection to tell
//! HTTP/1.1 from the HTTP/2 preface, and waits for them without a time limit: a client that
//! finished its TLS handshake and then sent nothing, or only part of the preface, held its
//! connection (a socket, a task, TLS buffers) for as long as it liked. hyper's header read
//! timeout only starts once HTTP/1.1 has been chosen. [`Opening`] ends such a connection
//! with a `TimedOut` error once the deadline passes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes of the HTTP/2 client preface: once that many have arrived, hyper has chosen the
/// protocol, and HTTP/1.1's header read timeout or HTTP/2's keep-alive takes over. No
/// request to verdict is shorter (headers included), so no request is ever cut off by it.
const OPENING_BYTES: usize = 24;

/// `S`, read until its opening bytes have arrived or `deadline`, whichever comes first.
pub struct Opening<S> {
    inner: S,
    /// The deadline and the opening bytes still missing; `None` once they have arrived.
    waiting: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<S> Opening<S> {
    pub fn new(inner: S, deadline: Instant) -> Self {
        Self {
            inner,
            waiting: Some((Box::pin(tokio::time::sleep_until(deadline)), OPENING_BYTES)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Opening<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some((deadline, missing)) = &mut self.waiting else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                *missing = missing.saturating_sub(buf.filled().len() - before);
                if *missing == 0 {
                    self.waiting = None;
                }
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no request in time",
                )));
            }
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Opening<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn ends_a_silent_connection_at_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut opening = Opening::new(server, Instant::now() + Duration::from_millis(200));
        let mut byte = [0u8; 1];
        let err = opening.read(&mut byte).await.expect_err("must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test]
    async fn a_partial_opening_does_not_stop_the_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut opening = Opening::new(server, Instant::now() + Duration::from_millis(200));
        client
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(opening.read(&mut buf).await.expect("first bytes"), 16);
        let err = opening.read(&mut buf).await.expect_err("must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn once_opened_the_connection_may_idle() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut opening = Opening::new(server, Instant::now() + Duration::from_millis(200));
        client
            .write_all(b"POST /validate HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(opening.read(&mut buf).await.expect("head"), 34);
        // Long past the deadline, the connection is still served.
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.write_all(b"\r\n").await.expect("write");
        assert_eq!(opening.read(&mut buf).await.expect("rest"), 2);
        opening.write_all(b"ok").await.expect("writes pass through");
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"ok");
    }
}
