//! The DCP proxy (the cluster manager's `dcp_proxy`): two connections, one
//! to the consumer node and one to the producer node, opened with
//! `DCP_OPEN` under one replication name. Every packet from one node is
//! relayed to the other unless the consumer connection's state machine
//! keeps it; calls (set up streams, take over a vbucket, shut) come from
//! the replicator through a [`ProxyHandle`].
//!
//! One task owns both connections and handles one thing at a time: a
//! call, or whatever one read brought from one node (every whole packet of
//! it, in order, then the relayed packets go out in one write). That is
//! the cluster manager's "one message at a time" of its processes.
//!
//! When the state machine says the connection is wrong ([`Fatal`]), the
//! proxy fails loudly: it logs why, answers the call in progress with the
//! error and drops both connections; the nodes close their streams. The
//! replicator builds a new proxy for its next call.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;

use bytes::BytesMut;
use faultline_harness::SimStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::consumer::{CallResult, ConsumerConn, Disposition, Fatal, Owner, Sends, SetupError};
use super::producer::producer_packet;
use super::watch::Watch;
use crate::bugs::Bugs;
use crate::protocol::{Limits, Packet, Status, dcp, read_packet};

/// Bytes taken from a connection per read.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A call to the consumer connection.
pub enum Call {
    SetupStreams(BTreeSet<u16>, Owner),
    MaybeCloseStream(u16, Owner),
    Takeover(u16, Owner),
    Shut(Owner),
    Partitions(oneshot::Sender<BTreeSet<u16>>),
}

/// Where a proxy connects.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The replication's name, e.g. `replication:kv-1->kv-2:default`.
    pub name: String,
    pub consumer_host: String,
    pub producer_host: String,
    pub port: u16,
    pub bugs: Bugs,
}

/// The replicator's side of a running proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    calls: mpsc::UnboundedSender<Call>,
    /// What passed, for the stream-safety check.
    pub watch: Rc<RefCell<Watch>>,
    failure: Rc<RefCell<Option<String>>>,
}

impl ProxyHandle {
    /// Whether the proxy still runs.
    pub fn is_alive(&self) -> bool {
        !self.calls.is_closed()
    }

    /// Why the proxy failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    fn gone(&self) -> SetupError {
        SetupError::ConnectionFailed(
            self.failure()
                .unwrap_or_else(|| "the connection is gone".to_string()),
        )
    }

    /// Makes a call and waits for its answer.
    pub async fn call(&self, make: impl FnOnce(Owner) -> Call) -> CallResult {
        let (tx, rx) = oneshot::channel();
        if self.calls.send(make(tx)).is_err() {
            return Err(self.gone());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.gone()),
        }
    }

    /// The vbuckets with an open stream.
    pub async fn partitions(&self) -> Result<BTreeSet<u16>, SetupError> {
        let (tx, rx) = oneshot::channel();
        if self.calls.send(Call::Partitions(tx)).is_err() {
            return Err(self.gone());
        }
        rx.await.map_err(|_| self.gone())
    }
}

/// Opens a DCP connection: `DCP_OPEN` must succeed.
async fn open(host: &str, port: u16, name: &str, producer: bool) -> io::Result<SimStream> {
    let mut stream = SimStream::connect((host, port)).await?;
    let request = dcp::open(name, producer).opaque(1);
    stream.write_all(&request.encode()).await?;
    let response = read_packet(&mut stream, &Limits::default())
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed during DCP_OPEN"))?;
    let h = &response.header;
    if h.is_request() || h.opaque != 1 || h.status() != Status::SUCCESS {
        return Err(io::Error::other(format!(
            "{host} answered DCP_OPEN with {}",
            h.status()
        )));
    }
    Ok(stream)
}

/// Connects both sides and starts the proxy (a local task).
pub async fn start(config: ProxyConfig) -> io::Result<ProxyHandle> {
    let consumer = open(&config.consumer_host, config.port, &config.name, false).await?;
    let producer = open(&config.producer_host, config.port, &config.name, true).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = ProxyHandle {
        calls: tx,
        watch: Rc::default(),
        failure: Rc::default(),
    };
    tracing::debug!(target: "faultline::ns", conn = config.name.as_str(), "proxy connected");
    let proxy = Proxy {
        conn: ConsumerConn::new(config.name.clone(), config.bugs.clone()),
        consumer,
        producer,
        calls: rx,
        watch: handle.watch.clone(),
        failure: handle.failure.clone(),
        config,
    };
    faultline_harness::spawn(proxy.run());
    Ok(handle)
}

struct Proxy {
    config: ProxyConfig,
    conn: ConsumerConn,
    consumer: SimStream,
    producer: SimStream,
    calls: mpsc::UnboundedReceiver<Call>,
    watch: Rc<RefCell<Watch>>,
    failure: Rc<RefCell<Option<String>>>,
}

/// Whole packets from the front of `buf`.
fn take_packets(buf: &mut BytesMut) -> Result<Vec<Packet>, Fatal> {
    let limits = Limits::default();
    let mut packets = Vec::new();
    while let Some((packet, used)) =
        Packet::try_parse(buf, &limits).map_err(|e| Fatal::Malformed(e.to_string()))?
    {
        let _ = buf.split_to(used);
        packets.push(packet);
    }
    Ok(packets)
}

impl Proxy {
    async fn run(mut self) {
        let mut from_consumer = BytesMut::new();
        let mut from_producer = BytesMut::new();
        let mut cbuf = vec![0u8; READ_CHUNK_BYTES];
        let mut pbuf = vec![0u8; READ_CHUNK_BYTES];
        let fatal = loop {
            let mut sends = Sends::default();
            tokio::select! {
                call = self.calls.recv() => match call {
                    // The replicator let go: shut down quietly.
                    None => break None,
                    Some(call) => sends = self.dispatch(call),
                },
                n = self.consumer.read(&mut cbuf) => match n {
                    Ok(n @ 1..) => from_consumer.extend_from_slice(&cbuf[..n]),
                    _ => break Some(Fatal::Closed(self.config.consumer_host.clone())),
                },
                n = self.producer.read(&mut pbuf) => match n {
                    Ok(n @ 1..) => from_producer.extend_from_slice(&pbuf[..n]),
                    _ => break Some(Fatal::Closed(self.config.producer_host.clone())),
                },
            }
            match self
                .relay(&mut from_consumer, &mut from_producer, sends)
                .await
            {
                Ok(()) => {}
                Err(fatal) => break Some(fatal),
            }
        };
        match fatal {
            Some(fatal) => {
                tracing::warn!(target: "faultline::ns", conn = self.config.name.as_str(), error = %fatal, "consumer connection failed: dropping it");
                self.conn.fail(&fatal);
                *self.failure.borrow_mut() = Some(fatal.to_string());
            }
            None => {
                tracing::debug!(target: "faultline::ns", conn = self.config.name.as_str(), "proxy shut down")
            }
        }
        // Dropping the streams closes both connections.
    }

    fn dispatch(&mut self, call: Call) -> Sends {
        match call {
            Call::SetupStreams(vbs, owner) => self.conn.setup_streams(&vbs, owner),
            Call::MaybeCloseStream(vb, owner) => self.conn.maybe_close_stream(vb, owner),
            Call::Takeover(vb, owner) => self.conn.takeover(vb, owner),
            Call::Shut(owner) => self.conn.shut(owner),
            Call::Partitions(reply) => {
                let _ = reply.send(self.conn.partitions().clone());
                Sends::default()
            }
        }
    }

    /// Handles every whole packet read, then sends what is to be sent.
    async fn relay(
        &mut self,
        from_consumer: &mut BytesMut,
        from_producer: &mut BytesMut,
        sends: Sends,
    ) -> Result<(), Fatal> {
        let mut to_producer = Vec::new();
        let mut to_consumer = Vec::new();
        for packet in take_packets(from_consumer)? {
            self.watch.borrow_mut().from_consumer(&packet);
            if self.conn.consumer_packet(&packet)? == Disposition::Proxy {
                packet.encode_into(&mut to_producer);
            }
        }
        for packet in take_packets(from_producer)? {
            self.watch.borrow_mut().from_producer(&packet);
            if producer_packet(&mut self.conn, &packet)? == Disposition::Proxy {
                packet.encode_into(&mut to_consumer);
            }
        }
        for packet in sends.to_consumer {
            self.watch.borrow_mut().to_consumer(&packet);
            packet.encode_into(&mut to_consumer);
        }
        for packet in sends.to_producer {
            packet.encode_into(&mut to_producer);
        }
        let closed = |host: &str| Fatal::Closed(host.to_string());
        if !to_producer.is_empty() {
            self.producer
                .write_all(&to_producer)
                .await
                .map_err(|_| closed(&self.config.producer_host))?;
        }
        if !to_consumer.is_empty() {
            self.consumer
                .write_all(&to_consumer)
                .await
                .map_err(|_| closed(&self.config.consumer_host))?;
        }
        Ok(())
    }
}
