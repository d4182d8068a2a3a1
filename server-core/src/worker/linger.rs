//! Lingering close (nginx's `lingering_close`): a connection closed while the client's
//! bytes sit unread in the kernel is reset, not closed (RFC 1122: a close with pending
//! data sends RST), and the reset can destroy what was sent just before it, such as a
//! WebSocket close frame or a final error response. So a connection that still has
//! unread bytes when it is dropped is shut down for writing first (FIN), and its input is
//! read and thrown away until the client closes, for at most [`LINGER_LIMIT`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Longest time a closed connection is read from before it is dropped anyway.
pub(crate) const LINGER_LIMIT: Duration = Duration::from_millis(500);

/// A connection that can be closed gracefully when it still holds unread input.
pub(crate) trait Linger: Sized {
    /// Closes the connection: at once when nothing is unread, else after a lingering close
    /// in a task (counted by `token`, so a draining worker waits for it, briefly).
    fn close(self, token: TaskTrackerToken);
}

macro_rules! linger_for {
    ($stream:ty) => {
        impl Linger for $stream {
            fn close(self, token: TaskTrackerToken) {
                let mut probe = [0u8; 1];
                // Nothing unread (or the client already closed): a plain close is a FIN.
                if !matches!(self.try_read(&mut probe), Ok(n) if n > 0) {
                    return;
                }
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                runtime.spawn(linger(self, token));
            }
        }
    };
}

linger_for!(TcpStream);
linger_for!(UnixStream);

async fn linger<S>(mut stream: S, token: TaskTrackerToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER_LIMIT, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    drop(token);
}
