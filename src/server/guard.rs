//! Time limits on a connection that hyper does not set.
//!
//! - **The opening.** hyper's automatic protocol choice reads a connection's first bytes
//!   to tell HTTP/1.1 from the HTTP/2 preface, and waits for them without a time limit;
//!   its header read timeout starts only once HTTP/1.1 has been chosen. A client that
//!   finished its TLS handshake and then sent nothing, or only part of the preface, held
//!   its connection (a socket, a task, TLS buffers) for as long as it liked.
//! - **A stall.** hyper writes without a time limit. A client that sends requests and
//!   never reads the answers (or an HTTP/2 client that never opens its flow-control
//!   window) stops the connection once the socket buffers are full, and held it for good.
//! - **An answer never taken.** An HTTP/2 client that keeps its flow-control window at 0
//!   but answers the keep-alive pings keeps bytes moving while an answer waits forever.
//!   Every answer is [`Tracked`] while it waits to be taken.
//!
//! [`Guarded`] ends such a connection with a `TimedOut` error.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes of the HTTP/2 client preface: once that many have arrived, hyper has chosen the
/// protocol, and HTTP/1.1's header read timeout or HTTP/2's keep-alive takes over. No
/// request to verdict is shorter (headers included), so no request is ever cut off by it.
const OPENING_BYTES: usize = 24;

/// `S`, ended with `TimedOut` if its opening bytes have not arrived by a deadline, or if no
/// byte has moved either way for a whole `stall` period after that.
///
/// `stall` must be longer than any request takes to answer (the API server waits at most
/// 30 s) and than HTTP/2's keep-alive interval, whose pings keep an idle HTTP/2 connection
/// moving. An idle HTTP/1.1 connection is closed sooner by hyper's header read timeout.
pub struct Guarded<S> {
    inner: S,
    /// The connection's answers not yet taken by the client.
    answers: Arc<Answers>,
    /// Opening bytes still missing; 0 once they have arrived.
    missing: usize,
    /// The opening's deadline; after it, the end of the current stall period.
    deadline: Pin<Box<Sleep>>,
    stall: Duration,
    /// Whether a byte has moved in the current stall period.
    moved: bool,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, opening_by: Instant, stall: Duration, answers: Arc<Answers>) -> Self {
        Self {
            inner,
            answers,
            missing: OPENING_BYTES,
            deadline: Box::pin(tokio::time::sleep_until(opening_by)),
            stall,
            moved: false,
        }
    }

    /// Called whenever `inner` cannot go on: an error once a limit has passed. Otherwise the
    /// task is woken at the deadline to look again.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.deadline.as_mut().poll(cx).is_ready() {
            if self.missing > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no request in time",
                ));
            }
            if !self.moved {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing moved on the connection for {:?}", self.stall),
                ));
            }
            if self
                .answers
                .waiting_since()
                .is_some_and(|since| since.elapsed() >= self.stall)
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "an answer waited {:?} for the client to take it",
                        self.stall
                    ),
                ));
            }
            self.next_period();
        }
        Ok(())
    }

    /// Starts a stall period in which nothing has moved yet.
    fn next_period(&mut self) {
        self.moved = false;
        let end = Instant::now() + self.stall;
        self.deadline.as_mut().reset(end);
    }

    /// Counts `n` bytes moved; the opening's arrival starts the first stall period.
    fn count(&mut self, n: usize, read: bool) {
        if n == 0 {
            return;
        }
        if read && self.missing > 0 {
            self.missing = self.missing.saturating_sub(n);
            if self.missing == 0 {
                self.next_period();
            }
        } else {
            self.moved = true;
        }
    }

    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        moved: impl FnOnce(&T) -> usize,
        read: bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Ok(value)) => {
                self.count(moved(&value), read);
                Poll::Ready(Ok(value))
            }
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.guard(cx, polled, |_| read, true)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, polled, |n| *n, false)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, polled, |n| *n, false)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled, |_| 0, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, polled, |_| 0, false)
    }
}

/// The answers of one connection that the client has not taken yet, each with the time it
/// last made progress.
#[derive(Debug, Default)]
pub struct Answers {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Instant>>,
}

impl Answers {
    /// When the answer that has waited longest without progress last made some.
    fn waiting_since(&self) -> Option<Instant> {
        self.lock().values().min().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A response body, counted among its connection's waiting [`Answers`] from its creation
/// until it has been read to its end (or dropped); each piece read is progress. hyper reads
/// an HTTP/2 body only as the client's flow-control window lets it send.
pub struct Tracked<B> {
    inner: B,
    answers: Arc<Answers>,
    id: u64,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, answers: Arc<Answers>) -> Self {
        let id = answers.next.fetch_add(1, Ordering::Relaxed);
        answers.lock().insert(id, Instant::now());
        Self { inner, answers, id }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.answers.lock().insert(self.id, Instant::now());
            }
            Poll::Ready(_) => {
                self.answers.lock().remove(&self.id);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.answers.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(200);

    fn guarded(server: tokio::io::DuplexStream) -> Guarded<tokio::io::DuplexStream> {
        Guarded::new(
            server,
            Instant::now() + LIMIT,
            LIMIT * 2,
            Arc::new(Answers::default()),
        )
    }

    fn timed_out<T: std::fmt::Debug>(result: io::Result<T>) -> bool {
        result.is_err_and(|e| e.kind() == io::ErrorKind::TimedOut)
    }

    #[tokio::test]
    async fn ends_a_silent_connection_at_the_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let mut guarded = guarded(server);
        let started = Instant::now();
        assert!(timed_out(guarded.read(&mut [0u8; 1]).await));
        assert!(started.elapsed() >= LIMIT);
    }

    #[tokio::test]
    async fn a_partial_opening_does_not_stop_the_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = guarded(server);
        client
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(guarded.read(&mut buf).await.expect("first bytes"), 16);
        assert!(timed_out(guarded.read(&mut buf).await));
    }

    #[tokio::test]
    async fn a_connection_that_moves_within_each_period_is_served_past_every_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = guarded(server);
        let head = b"POST /validate HTTP/1.1\r\nhost: x\r\n";
        let peer = tokio::spawn(async move {
            client.write_all(head).await.expect("write");
            // Each pause is past the opening's deadline and 3/4 of a stall period.
            for _ in 0..4 {
                tokio::time::sleep(LIMIT * 3 / 2).await;
                client.write_all(b"\r\n").await.expect("write");
                let mut answer = [0u8; 2];
                client.read_exact(&mut answer).await.expect("read");
                assert_eq!(&answer, b"ok");
            }
        });
        let mut buf = [0u8; 64];
        assert_eq!(guarded.read(&mut buf).await.expect("head"), head.len());
        for _ in 0..4 {
            // Waits (pending, with the deadline armed) until the peer writes again.
            assert_eq!(guarded.read(&mut buf).await.expect("more"), 2);
            guarded.write_all(b"ok").await.expect("write");
        }
        peer.await.expect("the peer saw every answer");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off_after_a_stall_period() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = guarded(server);
        let head = b"POST /validate HTTP/1.1\r\nhost: x\r\n";
        client.write_all(head).await.expect("write");
        guarded.read_exact(&mut [0u8; 34]).await.expect("head");
        // The answer fills the 64-byte pipe, which the client never reads.
        let started = Instant::now();
        assert!(timed_out(guarded.write_all(&[b'x'; 1024]).await));
        assert!(started.elapsed() >= LIMIT * 2);
        drop(client);
    }

    #[tokio::test]
    async fn an_idle_connection_is_cut_off_after_a_stall_period() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = guarded(server);
        client.write_all(&[b'x'; 30]).await.expect("write");
        guarded.read_exact(&mut [0u8; 30]).await.expect("opening");
        let started = Instant::now();
        assert!(timed_out(guarded.read(&mut [0u8; 64]).await));
        // One stall period after the opening arrived.
        assert!(started.elapsed() >= LIMIT * 2);
        assert!(started.elapsed() < LIMIT * 4);
    }

    /// Bytes moving (pings) do not keep a connection whose answer nobody takes.
    #[tokio::test]
    async fn an_answer_never_taken_ends_the_connection_however_much_else_moves() {
        let (mut client, server) = tokio::io::duplex(64);
        let answers = Arc::new(Answers::default());
        let mut guarded = Guarded::new(server, Instant::now() + LIMIT, LIMIT * 2, answers.clone());
        client.write_all(&[b'x'; 30]).await.expect("write");
        guarded.read_exact(&mut [0u8; 30]).await.expect("opening");
        let waiting = Tracked::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
            answers.clone(),
        );
        let pinger = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LIMIT / 2).await;
                if client.write_all(b"p").await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let ended = loop {
            match guarded.read(&mut [0u8; 8]).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(ended.kind(), io::ErrorKind::TimedOut, "{ended}");
        assert!(ended.to_string().contains("answer"), "{ended}");
        assert!(started.elapsed() >= LIMIT * 2);
        drop(waiting);
        assert_eq!(answers.waiting_since(), None);
        pinger.abort();
    }
}
