//! Telling HTTP/2 with prior knowledge from HTTP/1.1 on one port: the
//! first bytes of a connection, read and then put back.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads from `io` until its first bytes are HTTP/2's connection preface
/// (`true`) or cannot be (`false`: HTTP/1.1, or the connection ended);
/// the bytes read are put back in front of the stream. Most HTTP/1.1
/// requests are told apart by their first two bytes. The caller bounds
/// the wait (a client that sends nothing).
pub(super) async fn sniff<I>(mut io: I) -> io::Result<(Prefixed<I>, bool)>
where
    I: AsyncRead + Unpin,
{
    let mut prefix = [0; PREFACE.len()];
    let mut len = 0;
    let h2 = loop {
        let n = io.read(&mut prefix[len..]).await?;
        len += n;
        if n == 0 || prefix[..len] != PREFACE[..len] {
            break false;
        }
        if len == PREFACE.len() {
            break true;
        }
    };
    let io = Prefixed {
        prefix,
        start: 0,
        end: len,
        io,
    };
    Ok((io, h2))
}

/// A stream with the bytes already read from it put back in front.
pub(super) struct Prefixed<I> {
    prefix: [u8; PREFACE.len()],
    start: usize,
    end: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.start < self.end {
            let n = (self.end - self.start).min(buf.remaining());
            buf.put_slice(&self.prefix[self.start..self.start + n]);
            self.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

// Writes go straight through, vectored ones included: the pool writes a
// batch of frames in one vectored write (`connection::socket`).
impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed(input: &[u8]) -> (bool, Vec<u8>) {
        let (mut io, h2) = sniff(input).await.unwrap();
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        (h2, all)
    }

    /// The preface is HTTP/2; anything else (a request, a prefix of the
    /// preface cut short, nothing) is not; every byte read is put back.
    #[tokio::test]
    async fn tells_the_preface_and_puts_every_byte_back() {
        let h2 = [&PREFACE[..], b"\x00\x00\x00\x04"].concat();
        assert_eq!(sniffed(&h2).await, (true, h2.clone()));
        for input in [
            &b"GET /ws HTTP/1.1\r\n\r\n"[..],
            b"POST /ws HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"",
        ] {
            assert_eq!(sniffed(input).await, (false, input.to_vec()));
        }
    }
}
