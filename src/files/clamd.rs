//! ClamAV's clamd, spoken over its socket protocol: `zINSTREAM\0`, then
//! chunks of `<u32 big-endian length><bytes>`, a zero-length chunk to end,
//! and one NUL-terminated reply: `stream: OK`, `stream: <Signature> FOUND`,
//! or `… ERROR` (including the stream size limit). Only `OK` is clean; an
//! error is a failed scan to retry, never a verdict.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where clamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl ClamdAddr {
    /// `tcp://host:port`, or a unix socket as an absolute path (or `unix:///path`).
    pub fn parse(addr: &str) -> Option<Self> {
        let addr = addr.trim();
        if let Some(host_port) = addr.strip_prefix("tcp://") {
            let (host, port) = host_port.rsplit_once(':')?;
            return (!host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0))
                .then(|| Self::Tcp(host_port.to_owned()));
        }
        let path = addr.strip_prefix("unix://").unwrap_or(addr);
        path.starts_with('/')
            .then(|| Self::Unix(PathBuf::from(path)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature clamd named.
    Infected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("clamd unreachable: {0}")]
    Io(#[from] std::io::Error),
    #[error("clamd did not answer in time")]
    Timeout,
    /// clamd could not scan it (an ERROR reply, e.g. the stream size limit).
    #[error("clamd refused the scan: {0}")]
    Refused(String),
    #[error("clamd's reply is not understood: {0}")]
    Malformed(String),
    #[error("the file could not be read for scanning: {0}")]
    Source(String),
}

/// clamd's reply, without its NUL (or newline) terminator.
pub fn parse_reply(reply: &[u8]) -> Result<Verdict, ScanError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(signature) = body.strip_suffix(" FOUND") {
        let signature = signature.trim();
        if !signature.is_empty() {
            return Ok(Verdict::Infected(signature.to_owned()));
        }
    }
    if body.ends_with("ERROR") {
        return Err(ScanError::Refused(body.to_owned()));
    }
    Err(ScanError::Malformed(body.chars().take(200).collect()))
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Largest reply read (a signature name is short).
const MAX_REPLY: usize = 4096;
/// Chunks sent to clamd are cut to this (its default StreamMaxLength is far larger).
const MAX_CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Clamd {
    addr: ClamdAddr,
    timeout: Duration,
}

impl Clamd {
    pub fn new(addr: ClamdAddr, timeout: Duration) -> Self {
        Self { addr, timeout }
    }

    /// Streams `content` to clamd and returns its verdict; the whole
    /// exchange must finish within the timeout.
    pub async fn scan<E: std::fmt::Display>(
        &self,
        content: impl Stream<Item = Result<Bytes, E>> + Send,
    ) -> Result<Verdict, ScanError> {
        tokio::time::timeout(self.timeout, self.exchange(content))
            .await
            .map_err(|_| ScanError::Timeout)?
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, std::io::Error> {
        Ok(match &self.addr {
            ClamdAddr::Tcp(host_port) => Box::new(tokio::net::TcpStream::connect(host_port).await?),
            ClamdAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        })
    }

    async fn exchange<E: std::fmt::Display>(
        &self,
        content: impl Stream<Item = Result<Bytes, E>> + Send,
    ) -> Result<Verdict, ScanError> {
        let mut connection = self.connect().await?;
        connection.write_all(b"zINSTREAM\0").await?;
        let mut content = std::pin::pin!(content);
        let mut sent = Ok(());
        while let Some(chunk) = content.next().await {
            let chunk = chunk.map_err(|error| ScanError::Source(error.to_string()))?;
            for piece in chunk.chunks(MAX_CHUNK) {
                let mut frame = Vec::with_capacity(4 + piece.len());
                frame.extend_from_slice(&(piece.len() as u32).to_be_bytes());
                frame.extend_from_slice(piece);
                // clamd closes the stream early past its size limit: its
                // reply says why, so read it rather than report a broken pipe.
                sent = connection.write_all(&frame).await;
                if sent.is_err() {
                    break;
                }
            }
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = connection.write_all(&0u32.to_be_bytes()).await;
        }
        if sent.is_ok() {
            sent = connection.flush().await;
        }
        let mut reply = Vec::new();
        let mut buffer = [0u8; 512];
        loop {
            let read = match connection.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) if reply.is_empty() => return Err(sent.err().unwrap_or(error).into()),
                Err(_) => break,
            };
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..read]);
            if reply.contains(&0) || reply.len() >= MAX_REPLY {
                break;
            }
        }
        if reply.is_empty() {
            return Err(match sent {
                Err(error) => error.into(),
                Ok(()) => ScanError::Malformed("no reply".into()),
            });
        }
        let end = reply.iter().position(|b| *b == 0).unwrap_or(reply.len());
        parse_reply(&reply[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_clean_infected_or_failures_to_retry() {
        assert_eq!(parse_reply(b"stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(parse_reply(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply(b"stream: Eicar-Signature FOUND").unwrap(),
            Verdict::Infected("Eicar-Signature".into())
        );
        assert_eq!(
            parse_reply(b"stream: Agentry.Test.EICAR.UNOFFICIAL FOUND\0").unwrap(),
            Verdict::Infected("Agentry.Test.EICAR.UNOFFICIAL".into())
        );
        for failure in [
            &b"INSTREAM size limit exceeded. ERROR"[..],
            b"stream: Can't allocate memory ERROR",
        ] {
            assert!(matches!(parse_reply(failure), Err(ScanError::Refused(_))));
        }
        for odd in [
            &b""[..],
            b"stream:",
            b"stream:  FOUND",
            b"PONG",
            b"UNKNOWN COMMAND",
        ] {
            assert!(
                matches!(parse_reply(odd), Err(ScanError::Malformed(_))),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn addresses_are_tcp_host_port_or_an_absolute_socket_path() {
        assert_eq!(
            ClamdAddr::parse("tcp://127.0.0.1:3310"),
            Some(ClamdAddr::Tcp("127.0.0.1:3310".into()))
        );
        assert_eq!(
            ClamdAddr::parse("/run/clamav/clamd.ctl"),
            Some(ClamdAddr::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(
            ClamdAddr::parse("unix:///run/clamav/clamd.ctl"),
            Some(ClamdAddr::Unix("/run/clamav/clamd.ctl".into()))
        );
        for bad in [
            "tcp://127.0.0.1",
            "tcp://:3310",
            "tcp://h:0",
            "clamd.ctl",
            "http://x:1",
        ] {
            assert_eq!(ClamdAddr::parse(bad), None, "{bad}");
        }
    }

    /// A fake clamd that records the framed stream and answers `reply`.
    async fn fake_clamd(reply: &'static [u8]) -> (ClamdAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = ClamdAddr::Tcp(listener.local_addr().unwrap().to_string());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut command = [0u8; 10];
            socket.read_exact(&mut command).await.unwrap();
            assert_eq!(&command, b"zINSTREAM\0");
            let mut received = Vec::new();
            loop {
                let length = socket.read_u32().await.unwrap() as usize;
                if length == 0 {
                    break;
                }
                let mut chunk = vec![0u8; length];
                socket.read_exact(&mut chunk).await.unwrap();
                received.extend(chunk);
            }
            socket.write_all(reply).await.unwrap();
            received
        });
        (addr, served)
    }

    #[tokio::test]
    async fn the_content_is_framed_in_length_prefixed_chunks_ending_with_an_empty_one() {
        let (addr, served) = fake_clamd(b"stream: OK\0").await;
        let content: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = content
            .chunks(70_000)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        let verdict = Clamd::new(addr, Duration::from_secs(5))
            .scan(futures_util::stream::iter(chunks))
            .await
            .unwrap();
        assert_eq!(verdict, Verdict::Clean);
        assert_eq!(served.await.unwrap(), content);
    }

    #[tokio::test]
    async fn an_unreachable_clamd_is_a_failed_scan_not_a_verdict() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let empty = futures_util::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
        let failed = Clamd::new(ClamdAddr::Tcp(addr), Duration::from_secs(5))
            .scan(empty)
            .await;
        assert!(matches!(failed, Err(ScanError::Io(_))), "{failed:?}");
    }
}
