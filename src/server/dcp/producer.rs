//! The producer side: active streams and the checkpoint processor.
//!
//! A stream request on an active vbucket opens an [`ActiveStream`] whose
//! cursor starts at the requested seqno. Whenever the vbucket's log grows,
//! the stream is put on the checkpoint processor's work queue (once, under
//! the queue's lock) and, unless it was notified already (an atomic flag),
//! the checkpoint-processor task is woken on the executor's aux-io queue,
//! as kv_engine's `ActiveStreamCheckpointProcessorTask` does. The task
//! moves the log's new entries into the stream's ready queue as a snapshot
//! (a marker, then the entries) and wakes the connection, which sends
//! them. Outgoing replication therefore waits for the executor: a wake-up
//! the executor loses delays every replica (MB-35649).
//!
//! A takeover stream, once its cursor reaches the vbucket's high seqno,
//! makes the vbucket dead here (no more writes), sends
//! `DCP_SET_VBUCKET_STATE(active)` and, when the consumer acknowledges it,
//! ends with `DCP_STREAM_END(ok)`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::{Rc, Weak};

use faultline_harness::sync::{Atomic, Mutex};
use tokio::sync::Notify;

use super::conn_map::{Pending, ProducerConn};
use super::durability;
use super::reply::refuse;
use crate::protocol::dcp::{self, end_status};
use crate::protocol::{Opcode, Packet, Status};
use crate::server::executor::{Executor, FOREVER, GlobalTask, Task, TaskFuture, TaskId, TaskType};
use crate::server::node::Node;
use crate::server::store::{Mutation, VbState};

/// Most log entries one snapshot carries.
pub const MAX_ITEMS_PER_SNAPSHOT: usize = 512;

/// Most streams one run of the checkpoint processor handles before it
/// lets other tasks run.
pub const MAX_STREAMS_PER_RUN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sending the vbucket's log as it grows.
    InMemory,
    /// A takeover stream that sent everything and the vbucket's new state;
    /// waits for the consumer to acknowledge it.
    TakeoverWait,
}

struct ActiveStream {
    /// The stream request's opaque: every message of the stream carries it.
    opaque: u32,
    takeover: bool,
    /// The highest seqno moved into the ready queue.
    cursor: u64,
    ready: VecDeque<Packet>,
    phase: Phase,
}

/// One producer connection.
pub struct Producer {
    pub name: String,
    conn: u64,
    node: Weak<Node>,
    /// The streams, by vbucket (`DcpProducer::streams`); the lock also
    /// stands for each stream's own `streamMutex`.
    streams: Mutex<BTreeMap<u16, ActiveStream>>,
    /// Streams with log entries for the checkpoint processor, each once.
    work: Mutex<WorkQueue>,
    /// The processor was woken and has not started on its work yet.
    notified: Atomic<bool>,
    task: Cell<Option<TaskId>>,
    /// Responses and stream ends, in order, before any stream's messages.
    out: RefCell<VecDeque<Packet>>,
    pub(crate) writer: Rc<Notify>,
}

/// The checkpoint processor's work: vbuckets in order, each at most once.
#[derive(Default)]
struct WorkQueue {
    order: VecDeque<u16>,
    queued: BTreeSet<u16>,
}

/// The task that prepares outgoing DCP messages (the engine's
/// `ActiveStreamCheckpointProcessorTask`). Idle until woken.
struct CheckpointProcessor {
    name: String,
    producer: Weak<Producer>,
}

impl Task for CheckpointProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    fn run<'a>(&'a self, me: &'a GlobalTask) -> TaskFuture<'a> {
        Box::pin(async move {
            let Some(producer) = self.producer.upgrade() else {
                return false;
            };
            let Some(node) = producer.node.upgrade() else {
                return false;
            };
            producer.process(&node, me).await;
            true
        })
    }
}

impl Producer {
    /// A producer and its checkpoint processor, scheduled on aux-io.
    pub(crate) async fn start(node: &Rc<Node>, conn: u64, name: String) -> Rc<Producer> {
        let producer = Rc::new(Producer {
            name,
            conn,
            node: Rc::downgrade(node),
            streams: Mutex::new("dcp.producer.streams", BTreeMap::new()),
            work: Mutex::new("dcp.checkpoint_processor.work_queue", WorkQueue::default()),
            notified: Atomic::new("dcp.checkpoint_processor.notified", false),
            task: Cell::new(None),
            out: RefCell::default(),
            writer: Rc::new(Notify::new()),
        });
        let task = node
            .executor
            .schedule(
                Rc::new(CheckpointProcessor {
                    name: format!("checkpoint processor for {}", producer.name),
                    producer: Rc::downgrade(&producer),
                }),
                TaskType::AuxIo,
            )
            .await;
        producer.task.set(Some(task));
        tracing::debug!(target: "faultline::dcp", conn, name = producer.name.as_str(), "producer opened");
        producer
    }

    fn send(&self, packet: Packet) {
        self.out.borrow_mut().push_back(packet);
        self.writer.notify_one();
    }

    pub(crate) async fn handle(&self, node: &Rc<Node>, packet: Packet) {
        let opcode = packet.header.opcode;
        if !packet.header.is_request() {
            if opcode == Opcode::DCP_SET_VBUCKET_STATE {
                self.takeover_acknowledged(&packet).await;
            } else {
                tracing::debug!(target: "faultline::dcp", conn = self.conn, %opcode, "producer ignores a response");
            }
            return;
        }
        match opcode {
            Opcode::DCP_STREAM_REQ => self.stream_req(node, &packet).await,
            Opcode::DCP_CLOSE_STREAM => self.close_stream(&packet).await,
            Opcode::DCP_SEQNO_ACKNOWLEDGED => match dcp::seqno_acknowledged_seqno(&packet) {
                Ok(seqno) => {
                    durability::seqno_acknowledged(node, packet.header.vbucket(), seqno).await
                }
                Err(e) => {
                    tracing::debug!(target: "faultline::dcp", conn = self.conn, error = %e, "bad seqno ack");
                    self.send(refuse(&packet, Status::EINVAL));
                }
            },
            Opcode::DCP_NOOP => self.send(refuse(&packet, Status::SUCCESS)),
            _ => self.send(refuse(&packet, Status::EINVAL)),
        }
    }

    async fn stream_req(&self, node: &Rc<Node>, packet: &Packet) {
        let vb = packet.header.vbucket();
        let opaque = packet.header.opaque;
        let req = match dcp::StreamReq::parse(packet) {
            Ok(req) => req,
            Err(_) => return self.send(refuse(packet, Status::EINVAL)),
        };
        let Some(v) = node.store.vbucket(vb) else {
            return self.send(refuse(packet, Status::NOT_MY_VBUCKET));
        };
        // The vbucket's state lock, shared, while the stream is set up.
        let state = v.state_read().await;
        if state.state != VbState::Active {
            return self.send(refuse(packet, Status::NOT_MY_VBUCKET));
        }
        let (uuid, high_seqno) = (state.uuid, v.high_seqno().await);
        let mut streams = self.streams.lock().await;
        if streams.contains_key(&vb) {
            return self.send(refuse(packet, Status::KEY_EEXISTS));
        }
        if req.end_seqno < req.start_seqno {
            return self.send(refuse(packet, Status::ERANGE));
        }
        // A consumer that follows another history, or is ahead of ours,
        // must roll back before it can stream.
        let rollback_to = if req.start_seqno > high_seqno {
            Some(high_seqno)
        } else if req.start_seqno > 0 && req.vbucket_uuid != uuid {
            Some(0)
        } else {
            None
        };
        if let Some(seqno) = rollback_to {
            return self
                .send(refuse(packet, Status::ROLLBACK).extras(seqno.to_be_bytes().to_vec()));
        }
        let takeover = req.flags & dcp::STREAM_REQ_TAKEOVER != 0;
        self.send(
            Packet::response(&packet.header, Status::SUCCESS)
                .value(dcp::failover_log(&[(uuid, 0)])),
        );
        tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, opaque, start = req.start_seqno, takeover, "stream accepted");
        if faultline_harness::switch("kv.end_stream_after_accept") {
            // The kv error path the plan switches on: the stream is closed
            // by force right after it was accepted.
            tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, opaque, "stream ended by force after accept");
            self.send(dcp::stream_end(vb, end_status::CLOSED).opaque(opaque));
            return;
        }
        streams.insert(
            vb,
            ActiveStream {
                opaque,
                takeover,
                cursor: req.start_seqno,
                ready: VecDeque::new(),
                phase: Phase::InMemory,
            },
        );
        drop(streams);
        drop(state);
        // The backfill (or, for a takeover with nothing to send, the hand
        // over) starts on the checkpoint processor.
        self.queue(&node.executor, vb).await;
    }

    async fn close_stream(&self, packet: &Packet) {
        let vb = packet.header.vbucket();
        let removed = self.streams.lock().await.remove(&vb);
        match removed {
            Some(stream) => {
                self.send(refuse(packet, Status::SUCCESS));
                tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, "stream closed");
                self.send(dcp::stream_end(vb, end_status::CLOSED).opaque(stream.opaque));
            }
            None => self.send(refuse(packet, Status::KEY_ENOENT)),
        }
    }

    /// The consumer took the vbucket over: the stream is done.
    async fn takeover_acknowledged(&self, packet: &Packet) {
        let opaque = packet.header.opaque;
        let mut streams = self.streams.lock().await;
        let Some((&vb, _)) = streams
            .iter()
            .find(|(_, s)| s.opaque == opaque && s.phase == Phase::TakeoverWait)
        else {
            tracing::debug!(target: "faultline::dcp", conn = self.conn, opaque, "set-vbucket-state response for no takeover");
            return;
        };
        streams.remove(&vb);
        drop(streams);
        let status = if packet.header.status().is_success() {
            end_status::OK
        } else {
            end_status::STATE_CHANGED
        };
        tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, status = %packet.header.status(), "takeover acknowledged");
        self.send(dcp::stream_end(vb, status).opaque(opaque));
    }

    /// Puts a stream on the work queue (once) and wakes the processor,
    /// unless it was notified already (the engine's `schedule`).
    async fn queue(&self, executor: &Executor, vb: u16) {
        self.push_unique(vb).await;
        if self.notified.compare_exchange(false, true).await.is_ok() {
            if let Some(task) = self.task.get() {
                executor.wake(task).await;
            }
        }
    }

    /// Puts a stream on the work queue unless it is there.
    async fn push_unique(&self, vb: u16) {
        let mut work = self.work.lock().await;
        if work.queued.insert(vb) {
            work.order.push_back(vb);
        }
    }

    /// One run of the checkpoint processor (the engine's `run`): it sleeps
    /// forever once done, unless it was notified meanwhile or work is left.
    /// The snooze comes first, as the engine's: a wake-up during the run
    /// then sets the task's wake time after it and is kept.
    async fn process(&self, node: &Rc<Node>, me: &GlobalTask) {
        me.snooze(FOREVER).await;
        self.notified.store(false).await;
        let mut handed_over = Vec::new();
        let mut moved = false;
        for _ in 0..MAX_STREAMS_PER_RUN {
            let next = {
                let mut work = self.work.lock().await;
                let vb = work.order.pop_front();
                if let Some(vb) = vb {
                    work.queued.remove(&vb);
                }
                vb
            };
            let Some(vb) = next else {
                break;
            };
            let (queued, more) = self.process_stream(node, vb, &mut handed_over).await;
            moved |= queued;
            if more {
                // More than one snapshot's worth: come back for the rest.
                self.push_unique(vb).await;
            }
        }
        for vb in handed_over {
            // No write reaches the vbucket here any more.
            node.set_vbucket_state(vb, VbState::Dead).await;
        }
        if moved {
            self.writer.notify_one();
        }
        let notified = self.notified.compare_exchange(true, false).await.is_ok();
        let left = !self.work.lock().await.order.is_empty();
        if notified || left {
            // Run again at once, letting the other tasks have a go first.
            me.wake_up().await;
        }
    }

    /// Moves one stream's new log entries into its ready queue. Answers
    /// whether anything was queued for the connection, and whether the
    /// stream has more to move.
    async fn process_stream(
        &self,
        node: &Node,
        vb: u16,
        handed_over: &mut Vec<u16>,
    ) -> (bool, bool) {
        let Some(v) = node.store.vbucket(vb) else {
            return (false, false);
        };
        // Lock order: vbucket state, producer streams, checkpoint queue.
        let _state = v.state_read().await;
        let mut streams = self.streams.lock().await;
        let Some(stream) = streams.get_mut(&vb) else {
            return (false, false); // Closed meanwhile.
        };
        if stream.phase != Phase::InMemory {
            return (false, false);
        }
        let (entries, high_seqno) = {
            let cm = v.checkpoints().await;
            (
                cm.mutations_after(stream.cursor, MAX_ITEMS_PER_SNAPSHOT),
                cm.high_seqno,
            )
        };
        let Some(entries) = entries else {
            // The log no longer reaches the cursor: this stream cannot
            // catch up (there is no disk backfill).
            let stream = streams.remove(&vb).expect("found above");
            tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, "stream too slow for the log");
            self.out
                .borrow_mut()
                .push_back(dcp::stream_end(vb, end_status::TOO_SLOW).opaque(stream.opaque));
            return (true, false);
        };
        let mut moved = false;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let marker = dcp::SnapshotMarker {
                start: first.seqno(),
                end: last.seqno(),
                flags: dcp::SnapshotMarker::MEMORY,
            };
            stream
                .ready
                .push_back(marker.packet(vb).opaque(stream.opaque));
            for entry in &entries {
                stream
                    .ready
                    .push_back(message(vb, entry).opaque(stream.opaque));
            }
            stream.cursor = last.seqno();
            moved = true;
        }
        if stream.cursor < high_seqno {
            return (moved, true);
        }
        if stream.takeover {
            stream.ready.push_back(
                dcp::set_vbucket_state(vb, dcp::vbucket_state::ACTIVE).opaque(stream.opaque),
            );
            stream.phase = Phase::TakeoverWait;
            handed_over.push(vb);
            tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, seqno = stream.cursor, "takeover: vbucket handed over");
            moved = true;
        }
        (moved, false)
    }

    /// Hands up to `max` messages to `send`: responses and stream ends
    /// first, then the streams' ready queues in vbucket order.
    pub(crate) async fn step(&self, max: usize, send: &mut dyn FnMut(Packet)) -> bool {
        let mut sent = 0;
        {
            let mut out = self.out.borrow_mut();
            while sent < max {
                let Some(p) = out.pop_front() else { break };
                send(p);
                sent += 1;
            }
            if !out.is_empty() {
                return true;
            }
        }
        let mut streams = self.streams.lock().await;
        for stream in streams.values_mut() {
            while sent < max {
                let Some(p) = stream.ready.pop_front() else {
                    break;
                };
                send(p);
                sent += 1;
            }
        }
        streams.values().any(|s| !s.ready.is_empty())
    }

    pub(crate) async fn close(&self, node: &Node) {
        if let Some(task) = self.task.take() {
            node.executor.cancel(task).await;
        }
        let streams = std::mem::take(&mut *self.streams.lock().await);
        tracing::debug!(target: "faultline::dcp", conn = self.conn, streams = streams.len(), "producer closed");
    }
}

/// What the node's conn map asks of a producer (see `conn_map.rs`).
impl ProducerConn for Producer {
    fn notify<'a>(&'a self, executor: &'a Executor, vb: u16, high_seqno: u64) -> Pending<'a, ()> {
        Box::pin(async move {
            let behind = self
                .streams
                .lock()
                .await
                .get(&vb)
                .is_some_and(|s| s.phase == Phase::InMemory && s.cursor < high_seqno);
            if behind {
                self.queue(executor, vb).await;
            }
        })
    }

    fn has_replica_stream(&self, vb: u16) -> Pending<'_, bool> {
        Box::pin(async move {
            self.streams
                .lock()
                .await
                .get(&vb)
                .is_some_and(|s| !s.takeover)
        })
    }

    fn vbucket_left_active(&self, vb: u16) -> Pending<'_, ()> {
        Box::pin(async move {
            let ended = {
                let mut streams = self.streams.lock().await;
                match streams.get(&vb) {
                    Some(s) if s.phase == Phase::InMemory => streams.remove(&vb),
                    _ => None,
                }
            };
            if let Some(stream) = ended {
                tracing::debug!(target: "faultline::dcp", conn = self.conn, vb, "stream ends: the vbucket is no longer active");
                self.send(dcp::stream_end(vb, end_status::STATE_CHANGED).opaque(stream.opaque));
            }
        })
    }
}

/// The DCP message of a log entry.
fn message(vb: u16, entry: &Mutation) -> Packet {
    match entry {
        Mutation::Set {
            key,
            value,
            flags,
            expiration_s,
            seqno,
            cas,
        } => dcp::Mutation {
            by_seqno: *seqno,
            rev_seqno: 1,
            flags: *flags,
            expiration: *expiration_s,
            key: key.clone(),
            value: value.clone(),
        }
        .packet(vb)
        .cas(*cas),
        Mutation::Delete { key, seqno } => dcp::deletion(vb, *seqno, 1, key.clone()),
        Mutation::Prepare {
            key,
            value,
            flags,
            seqno,
            cas,
        } => dcp::Mutation {
            by_seqno: *seqno,
            rev_seqno: 1,
            flags: *flags,
            expiration: 0,
            key: key.clone(),
            value: value.clone(),
        }
        .prepare_packet(vb)
        .cas(*cas),
        Mutation::Commit {
            key,
            prepared_seqno,
            seqno,
        } => dcp::commit(vb, *prepared_seqno, *seqno, key.clone()),
    }
}
