//! A gRPC connection whose writes wait one scheduler turn, so that the answers of calls that
//! finish together leave in one system call.
//!
//! The HTTP/2 connection task writes whatever frames are ready each time it runs, and each
//! call that finishes wakes it. Under load the calls of one connection finish in runs (a
//! group commit acknowledges hundreds of appends at once), but tokio runs a task woken by
//! the running task next, so the connection task ran after every single answer and wrote
//! each in a `writev` of its own: ~0.7 system calls per unary call on a shared connection,
//! and each loopback write also runs the receiver's TCP input. Here the first attempt to
//! write re-queues the connection task behind the tasks already runnable (answers still
//! being finished); when it runs again it writes every frame that is ready by then.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection (a `TcpStream` in the server) whose writes yield once before they go out.
///
/// One turn per flush: HTTP/2 writes its buffered frames (in as many writes as the socket
/// takes) and then flushes, so the frames of one flush never wait more than one turn, however
/// many writes they take.
pub struct Coalescing<T> {
    inner: T,
    /// The connection task has yielded once since the last flush.
    yielded: bool,
}

impl<T> Coalescing<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            yielded: false,
        }
    }

    /// Yields once before the first write after a flush: `Ready` when the write may go now.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.turn(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.turn(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            self.yielded = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connected<ConnectInfo = TcpConnectInfo>> Connected for Coalescing<T> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use std::task::{Wake, Waker};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Counts how often the connection task asked to run again.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(
        io: &mut Coalescing<tokio::io::DuplexStream>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<usize> {
        Pin::new(io).poll_write(cx, b).map(|r| r.expect("write"))
    }

    /// A coalescing end of a pipe of `capacity` bytes, its far end, and a waker that counts.
    fn pipe(
        capacity: usize,
    ) -> (
        Coalescing<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Wakes>,
        Waker,
    ) {
        let (near, far) = tokio::io::duplex(capacity);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        (Coalescing::new(near), far, wakes, waker)
    }

    fn flush(io: &mut Coalescing<tokio::io::DuplexStream>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(io).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    #[tokio::test]
    async fn the_writes_of_a_flush_wait_one_turn_then_go_out_in_order() {
        let (mut io, mut far, wakes, waker) = pipe(1024);
        let mut cx = Context::from_waker(&waker);

        assert_eq!(write(&mut io, &mut cx, b"first"), Poll::Pending);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the task re-queues itself"
        );
        assert_eq!(write(&mut io, &mut cx, b"first"), Poll::Ready(5));
        // Further writes before the flush (the rest of a buffer the socket took in part)
        // go at once.
        let slices = [IoSlice::new(b"-sec"), IoSlice::new(b"ond")];
        let vectored = Pin::new(&mut io).poll_write_vectored(&mut cx, &slices);
        assert!(matches!(vectored, Poll::Ready(Ok(7))), "{vectored:?}");
        flush(&mut io, &mut cx);
        // After a flush, the next write waits its own turn.
        assert_eq!(write(&mut io, &mut cx, b"-third"), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(write(&mut io, &mut cx, b"-third"), Poll::Ready(6));
        flush(&mut io, &mut cx);

        drop(io);
        let mut out = String::new();
        far.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "first-second-third");
    }

    #[tokio::test]
    async fn a_write_held_by_the_peer_does_not_wait_a_second_turn() {
        let (mut io, mut far, wakes, waker) = pipe(4);
        let mut cx = Context::from_waker(&waker);

        assert_eq!(write(&mut io, &mut cx, b"abcdefgh"), Poll::Pending);
        // The pipe takes half: the rest goes without another turn, once the peer reads.
        assert_eq!(write(&mut io, &mut cx, b"abcdefgh"), Poll::Ready(4));
        assert_eq!(write(&mut io, &mut cx, b"efgh"), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "no second turn");
        let mut first = [0u8; 4];
        far.read_exact(&mut first).await.expect("read");
        assert_eq!(&first, b"abcd");
        assert_eq!(write(&mut io, &mut cx, b"efgh"), Poll::Ready(4));
        flush(&mut io, &mut cx);
        assert_eq!(write(&mut io, &mut cx, b"ij"), Poll::Pending);
    }
}
