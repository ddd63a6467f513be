//! The cluster manager's plain (not DCP) connection to a node: set a
//! vbucket's state, read each vbucket's state and high seqno.

use std::collections::BTreeMap;

use faultline_harness::SimStream;
use tokio::io::AsyncWriteExt;

use crate::protocol::client::{Client, ClientError};
use crate::protocol::{Limits, Opcode, Packet, ReadError, Status, dcp, read_packet};

/// Most `STAT` packets one answer may have.
pub const MAX_STAT_ENTRIES: usize = 8192;

/// A vbucket as a node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VbInfo {
    /// `active`, `replica`, `pending` or `dead`.
    pub state: String,
    pub high_seqno: u64,
}

/// The connection broke (the node may close idle connections): a request
/// that can be repeated is sent again on a new one.
fn broken(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io(_)
            | ClientError::Closed
            | ClientError::Read(ReadError::Io(_) | ReadError::Truncated { .. })
    )
}

pub struct Admin {
    pub host: String,
    port: u16,
    client: Client<SimStream>,
    next_opaque: u32,
}

impl Admin {
    pub async fn connect(host: &str, port: u16) -> Result<Admin, ClientError> {
        let stream = SimStream::connect((host, port))
            .await
            .map_err(ClientError::Io)?;
        Ok(Admin {
            host: host.to_string(),
            port,
            client: Client::new(stream),
            next_opaque: 0x4000_0000,
        })
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        tracing::debug!(target: "faultline::ns", host = self.host.as_str(), "admin connection reconnects");
        let stream = SimStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ClientError::Io)?;
        self.client = Client::new(stream);
        Ok(())
    }

    /// `SET_VBUCKET_STATE` (a state of `dcp::vbucket_state`); setting a
    /// state twice is harmless, so a broken connection is retried once.
    pub async fn set_vbucket_state(&mut self, vb: u16, state: u8) -> Result<(), ClientError> {
        match self.try_set_vbucket_state(vb, state).await {
            Err(e) if broken(&e) => {
                self.reconnect().await?;
                self.try_set_vbucket_state(vb, state).await
            }
            result => result,
        }
    }

    async fn try_set_vbucket_state(&mut self, vb: u16, state: u8) -> Result<(), ClientError> {
        let response = self
            .client
            .call(dcp::node_set_vbucket_state(vb, state))
            .await?;
        match response.header.status() {
            Status::SUCCESS => Ok(()),
            other => Err(ClientError::Status(other)),
        }
    }

    /// `STAT vbucket`: every vbucket's state and high seqno (a read: a
    /// broken connection is retried once).
    pub async fn vbuckets(&mut self) -> Result<BTreeMap<u16, VbInfo>, ClientError> {
        match self.try_vbuckets().await {
            Err(e) if broken(&e) => {
                self.reconnect().await?;
                self.try_vbuckets().await
            }
            result => result,
        }
    }

    async fn try_vbuckets(&mut self) -> Result<BTreeMap<u16, VbInfo>, ClientError> {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        let request = Packet::request(Opcode::STAT)
            .key(b"vbucket".to_vec())
            .opaque(opaque);
        let stream = self.client.stream();
        stream
            .write_all(&request.encode())
            .await
            .map_err(ClientError::Io)?;
        let mut entries = BTreeMap::new();
        for _ in 0..MAX_STAT_ENTRIES {
            let p = match read_packet(stream, &Limits::default()).await {
                Ok(Some(p)) => p,
                Ok(None) => return Err(ClientError::Closed),
                Err(e) => return Err(ClientError::Read(e)),
            };
            if p.header.is_request() || p.header.opcode != Opcode::STAT || p.header.opaque != opaque
            {
                return Err(ClientError::Invalid(format!(
                    "{} opaque {} answers STAT opaque {opaque}",
                    p.header.opcode, p.header.opaque
                )));
            }
            if !p.header.status().is_success() {
                return Err(ClientError::Status(p.header.status()));
            }
            if p.key.is_empty() {
                return parse_vbuckets(&entries);
            }
            entries.insert(
                String::from_utf8_lossy(&p.key).to_string(),
                String::from_utf8_lossy(&p.value).to_string(),
            );
        }
        Err(ClientError::Invalid("STAT answer without an end".into()))
    }
}

/// `vb_N` = state, `vb_N:high_seqno` = seqno.
fn parse_vbuckets(
    entries: &BTreeMap<String, String>,
) -> Result<BTreeMap<u16, VbInfo>, ClientError> {
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let Some(rest) = key.strip_prefix("vb_") else {
            continue;
        };
        if let Some((vb, "high_seqno")) = rest.split_once(':') {
            let vb: u16 = vb.parse().map_err(|_| bad(key))?;
            let seqno: u64 = value.parse().map_err(|_| bad(key))?;
            out.entry(vb)
                .or_insert_with(|| VbInfo {
                    state: String::new(),
                    high_seqno: 0,
                })
                .high_seqno = seqno;
        } else if let Ok(vb) = rest.parse::<u16>() {
            out.entry(vb)
                .or_insert_with(|| VbInfo {
                    state: String::new(),
                    high_seqno: 0,
                })
                .state = value.clone();
        }
    }
    Ok(out)
}

fn bad(key: &str) -> ClientError {
    ClientError::Invalid(format!("STAT entry {key}"))
}
