//! A blocking client (the CNI plugin is synchronous; `sluicectl` too).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use crate::types::{ApiError, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is absent or refuses connections: the daemon is not running.
    #[error("sluiced is not reachable at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke mid-request (the daemon died or timed out).
    #[error("connection to sluiced at {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sluiced sent a reply that does not parse: {0}")]
    Protocol(String),
    #[error("sluiced: {} ({:?})", .0.message, .0.kind)]
    Daemon(ApiError),
}

impl ClientError {
    /// The daemon was not there (as opposed to there and refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Io { .. })
    }
}

pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connect, with `timeout` for every read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Unreachable {
            path: path.to_owned(),
            source,
        })?;
        let io = |source| ClientError::Io {
            path: path.to_owned(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Send one request and read its reply.
    pub fn call<T: DeserializeOwned>(&mut self, req: &Request) -> Result<T, ClientError> {
        let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.read_reply()
    }

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut buf = String::new();
        let n = self
            .reader
            .read_line(&mut buf)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "sluiced closed the connection",
                ),
            });
        }
        Ok(buf)
    }

    fn read_reply<T: DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        let line = self.read_line()?;
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol(format!("{e}: {line}")))?;
        match reply {
            Reply::Ok(v) => serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string())),
            Reply::Error(e) => Err(ClientError::Daemon(e)),
        }
    }

    /// For streaming requests (`monitor`): the next line, parsed. No read timeout applies once
    /// streaming started if the caller cleared it with `set_stream_timeout(None)`.
    pub fn next_event<T: DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        let line = self.read_line()?;
        serde_json::from_str(&line).map_err(|e| ClientError::Protocol(format!("{e}: {line}")))
    }

    pub fn set_stream_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })
    }
}
