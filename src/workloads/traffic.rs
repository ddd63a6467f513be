//! Key-value traffic as a careful user would write it to test a memcached
//! server: every response is validated against its request (magic, opcode,
//! opaque, key, extras) and every read is checked against a model of the
//! store ([`KvModel`]), flags included.
//!
//! Each client owns its keys (`<client>:k<j>`), so the model is exact
//! without ordering writes across clients. Values mix small and large
//! sizes, and carry their client, key and version, so a value delivered to
//! the wrong request is caught.
//!
//! Oracles: `response-validation` (a response that does not answer its
//! request, or a stream that is not the protocol), `store-model` (a read
//! that disagrees with the writes), `liveness` (an operation not answered
//! within `reply_timeout_ms`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use faultline_harness::oracle;

use super::store_model::KvModel;
use crate::protocol::show;
use faultline_harness::{ParamError, SimStream, with_rng};
use rand::Rng;
use serde::Deserialize;

use crate::protocol::client::{Client, ClientError, Item, Store};
use crate::protocol::model::{Input, Memcached, Op, Output, output_of_response};
use crate::protocol::{Durability, Opcode, Status, vbucket_of};
use faultline_harness::linearizability::{self, CheckOptions, History, Linearizability, Operation};

/// Upper bounds that keep a scenario file from asking for absurd runs.
pub const MAX_CLIENTS: u32 = 256;
pub const MAX_OPS_PER_CLIENT: u32 = 100_000;
pub const MAX_KEYS_PER_CLIENT: u32 = 10_000;
pub const MAX_VALUE_BYTES: u32 = 1024 * 1024;

/// What each client does (`[params]` keys of workloads that use it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficParams {
    #[serde(default = "default_clients")]
    pub clients: u32,
    /// Operations per client.
    #[serde(default = "default_ops")]
    pub ops: u32,
    /// Keys per client.
    #[serde(default = "default_keys")]
    pub keys: u32,
    /// Small values are 1..=this many bytes.
    #[serde(default = "default_small")]
    pub small_value_bytes: u32,
    /// Large values are up to this many bytes.
    #[serde(default = "default_large")]
    pub large_value_bytes: u32,
    /// Share of writes with a large value, in percent.
    #[serde(default = "default_large_percent")]
    pub large_percent: u32,
    /// Share of operations that are reads, in percent (the rest: writes
    /// and a few deletes).
    #[serde(default = "default_read_percent")]
    pub read_percent: u32,
    /// Share of writes that are durable (majority), in percent.
    #[serde(default)]
    pub durable_percent: u32,
    /// A response must arrive within this simulated time.
    #[serde(default = "default_reply_timeout_ms")]
    pub reply_timeout_ms: u64,
    /// Pause between two operations of a client: 0..=this, in µs.
    #[serde(default)]
    pub think_time_us: u64,
    /// 0: each client owns its keys (checked by [`KvModel`]). Otherwise
    /// every client draws from this many shared keys (and a quarter as
    /// many shared counters), with GET, SET, CAS, ADD, DELETE, APPEND and
    /// INCR; every operation goes into one history that must be
    /// linearizable (oracle `linearizability`, when the last client ends).
    #[serde(default)]
    pub shared_keys: u32,
    /// `false`: clients read packets without checking that a response
    /// answers its request (opcode, opaque, key), as many clients do; the
    /// other oracles judge what they then see.
    #[serde(default = "default_true")]
    pub validate_responses: bool,
}

fn default_true() -> bool {
    true
}

/// Upper bound of `shared_keys`.
pub const MAX_SHARED_KEYS: u32 = 10_000;

fn default_clients() -> u32 {
    4
}
fn default_ops() -> u32 {
    100
}
fn default_keys() -> u32 {
    16
}
fn default_small() -> u32 {
    64
}
fn default_large() -> u32 {
    16 * 1024
}
fn default_large_percent() -> u32 {
    20
}
fn default_read_percent() -> u32 {
    50
}
fn default_reply_timeout_ms() -> u64 {
    5_000
}

impl TrafficParams {
    /// Checks the limits of the table at `path` (`traffic` in
    /// `[params.traffic]`); errors name the key.
    pub fn check(&self, path: &str) -> Result<(), ParamError> {
        let within = |key: &str, value: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ParamError::new(
                    &format!("{path}.{key}"),
                    format!("params.{path}.{key} must be within {lo}..={hi}, not {value}"),
                ))
            }
        };
        within("clients", self.clients.into(), 1, MAX_CLIENTS.into())?;
        within("ops", self.ops.into(), 1, MAX_OPS_PER_CLIENT.into())?;
        within("keys", self.keys.into(), 1, MAX_KEYS_PER_CLIENT.into())?;
        within(
            "small_value_bytes",
            self.small_value_bytes.into(),
            1,
            MAX_VALUE_BYTES.into(),
        )?;
        within(
            "large_value_bytes",
            self.large_value_bytes.into(),
            self.small_value_bytes.into(),
            MAX_VALUE_BYTES.into(),
        )?;
        within("large_percent", self.large_percent.into(), 0, 100)?;
        within("read_percent", self.read_percent.into(), 0, 100)?;
        within("durable_percent", self.durable_percent.into(), 0, 100)?;
        within("reply_timeout_ms", self.reply_timeout_ms, 1, 3_600_000)?;
        within("think_time_us", self.think_time_us, 0, 10_000_000)?;
        within(
            "shared_keys",
            self.shared_keys.into(),
            0,
            MAX_SHARED_KEYS.into(),
        )?;
        Ok(())
    }
}

/// Where a client sends its requests.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The bucket's vbucket count (requests carry the key's vbucket).
    pub vbuckets: u16,
}

/// The flags a client stores with a value: derived from the value, so a
/// read can check them without remembering them.
pub fn flags_of(value: &[u8]) -> u32 {
    fnv1a64(value) as u32
}

/// One client's whole run. `index` sets the client's name (`client-N`),
/// its keys, its random stream and where its opaques start.
pub async fn run_client(
    index: u32,
    target: Target,
    p: TrafficParams,
    model: Rc<RefCell<KvModel>>,
    shared: Rc<RefCell<SharedHistory>>,
) {
    let _done = ClientDone::new(&shared);
    let name = format!("client-{index}");
    let stream = match SimStream::connect((target.host.as_str(), target.port)).await {
        Ok(s) => s,
        Err(e) => {
            return oracle::fail(
                "liveness",
                format!("{name} could not connect to {}: {e}", target.host),
            );
        }
    };
    // Opaques of different clients never meet.
    let mut client = Client::with_first_opaque(stream, index.wrapping_mul(1 << 20).wrapping_add(1));
    if !p.validate_responses {
        client = client.trusting();
    }
    let rng_name = format!("traffic/{name}");
    let mut versions = vec![0u32; p.keys as usize];
    for op in 0..p.ops {
        let (roll, key_index, pause_us) = with_rng(&rng_name, |rng| {
            (
                rng.random_range(0..100u32),
                rng.random_range(0..p.keys),
                if p.think_time_us > 0 {
                    rng.random_range(0..=p.think_time_us)
                } else {
                    0
                },
            )
        });
        if pause_us > 0 {
            tokio::time::sleep(Duration::from_micros(pause_us)).await;
        }
        if p.shared_keys > 0 {
            let _deadline = oracle::pending_within(
                format!("{name} op {op}: shared"),
                Duration::from_millis(p.reply_timeout_ms),
            );
            let result = shared_op(&mut client, &rng_name, index, &target, &p, &shared).await;
            if let Err(failure) = result {
                return failure.report(&name, op);
            }
            continue;
        }
        let key = format!("{name}:k{key_index}").into_bytes();
        let vbucket = vbucket_of(&key, target.vbuckets);
        let shown = String::from_utf8_lossy(&key).to_string();
        let result = if roll < p.read_percent {
            let with_key = roll % 2 == 0;
            let _deadline = oracle::pending_within(
                format!("{name} op {op}: get {shown}"),
                Duration::from_millis(p.reply_timeout_ms),
            );
            read(&mut client, &key, vbucket, with_key, &model).await
        } else if roll < p.read_percent + (100 - p.read_percent) / 10 {
            let _deadline = oracle::pending_within(
                format!("{name} op {op}: delete {shown}"),
                Duration::from_millis(p.reply_timeout_ms),
            );
            delete(&mut client, &key, vbucket, &model).await
        } else {
            let version = &mut versions[key_index as usize];
            *version += 1;
            let value = make_value(&rng_name, &key, *version, &p);
            let durable =
                with_rng(&rng_name, |rng| rng.random_range(0..100u32)) < p.durable_percent;
            let _deadline = oracle::pending_within(
                format!("{name} op {op}: set {shown} ({} bytes)", value.len()),
                Duration::from_millis(p.reply_timeout_ms),
            );
            write(&mut client, &key, &value, vbucket, durable, &model).await
        };
        if let Err(failure) = result {
            return failure.report(&name, op);
        }
    }
    tracing::debug!(target: "faultline::traffic", client = name.as_str(), ops = p.ops, "done");
}

/// Why a client stopped.
enum Failure {
    Validation(String),
    Model(String),
}

impl Failure {
    fn report(self, name: &str, op: u32) {
        match self {
            Failure::Validation(why) => {
                oracle::fail("response-validation", format!("{name} op {op}: {why}"))
            }
            Failure::Model(why) => oracle::fail("store-model", format!("{name} op {op}: {why}")),
        }
    }
}

fn validation(e: ClientError) -> Failure {
    Failure::Validation(e.to_string())
}

/// A value that names its client, key and version, then filler.
fn make_value(rng_name: &str, key: &[u8], version: u32, p: &TrafficParams) -> Vec<u8> {
    let mut value = format!("{}#v{version}#", String::from_utf8_lossy(key)).into_bytes();
    let (len, fill) = with_rng(rng_name, |rng| {
        let large = rng.random_range(0..100u32) < p.large_percent;
        let len = if large {
            rng.random_range(p.small_value_bytes..=p.large_value_bytes)
        } else {
            rng.random_range(1..=p.small_value_bytes)
        };
        (len as usize, rng.random::<u8>())
    });
    value.extend((0..len.saturating_sub(value.len())).map(|i| fill.wrapping_add(i as u8)));
    value
}

async fn read(
    client: &mut Client<SimStream>,
    key: &[u8],
    vbucket: u16,
    with_key: bool,
    model: &Rc<RefCell<KvModel>>,
) -> Result<(), Failure> {
    let got: Option<Item> = if with_key {
        let response = client
            .call(
                crate::protocol::Packet::request(Opcode::GETK)
                    .key(key.to_vec())
                    .vbucket(vbucket),
            )
            .await
            .map_err(validation)?;
        match response.status_code() {
            Status::SUCCESS => Some(Item {
                flags: response.extras_u32(0).unwrap_or(0),
                cas: response.header.cas,
                value: response.value,
            }),
            Status::KEY_ENOENT => None,
            other => return Err(Failure::Validation(format!("GETK answered {other}"))),
        }
    } else {
        match client.get(key, vbucket).await {
            Ok(item) => item,
            Err(ClientError::Status(status)) => {
                return Err(Failure::Validation(format!("GET answered {status}")));
            }
            Err(e) => return Err(validation(e)),
        }
    };
    let value = got.as_ref().map(|item| &item.value[..]);
    model
        .borrow()
        .check_read(key, value)
        .map_err(Failure::Model)?;
    if let Some(item) = &got {
        if item.flags != flags_of(&item.value) {
            return Err(Failure::Model(format!(
                "read of {} returned flags {:#010x}, stored {:#010x}",
                show(key),
                item.flags,
                flags_of(&item.value)
            )));
        }
    }
    Ok(())
}

async fn write(
    client: &mut Client<SimStream>,
    key: &[u8],
    value: &[u8],
    vbucket: u16,
    durable: bool,
    model: &Rc<RefCell<KvModel>>,
) -> Result<(), Failure> {
    let mut store = Store::new(Opcode::SET, key, value)
        .flags(flags_of(value))
        .vbucket(vbucket);
    if durable {
        store = store.durability(Durability::Majority);
    }
    match client.store(&store).await {
        Ok(_) => {
            model.borrow_mut().acked(key, Some(value));
            Ok(())
        }
        // A durable write whose outcome the server cannot tell.
        Err(ClientError::Status(Status::SYNC_WRITE_AMBIGUOUS)) => {
            model.borrow_mut().uncertain(key, Some(value));
            Ok(())
        }
        Err(ClientError::Status(Status::DURABILITY_IMPOSSIBLE)) if durable => Ok(()),
        // An earlier durable write of the key is still in flight: refused,
        // nothing stored.
        Err(ClientError::Status(Status::SYNC_WRITE_IN_PROGRESS)) => Ok(()),
        Err(ClientError::Status(status)) => {
            Err(Failure::Validation(format!("SET answered {status}")))
        }
        Err(e) => Err(validation(e)),
    }
}

async fn delete(
    client: &mut Client<SimStream>,
    key: &[u8],
    vbucket: u16,
    model: &Rc<RefCell<KvModel>>,
) -> Result<(), Failure> {
    match client.delete(key, vbucket).await {
        Ok(()) => {
            model.borrow_mut().acked(key, None);
            Ok(())
        }
        // Nothing to delete: the model must agree that nothing is there.
        Err(ClientError::Status(Status::KEY_ENOENT)) => {
            model
                .borrow()
                .check_read(key, None)
                .map_err(Failure::Model)?;
            model.borrow_mut().acked(key, None);
            Ok(())
        }
        // A durable write of the key is still in flight: refused, nothing
        // deleted.
        Err(ClientError::Status(Status::SYNC_WRITE_IN_PROGRESS)) => Ok(()),
        Err(ClientError::Status(status)) => {
            Err(Failure::Validation(format!("DELETE answered {status}")))
        }
        Err(e) => Err(validation(e)),
    }
}

// ---------------------------------------------------------------------
// Shared keys: one history for every client, checked for linearizability.

/// The operations of every client on shared keys, and how many clients
/// still run: the last one to end checks the history.
#[derive(Default)]
pub struct SharedHistory {
    history: History<Input, Output>,
    clients_left: u32,
    /// Per (client, key): the CAS of the client's last read.
    seen_cas: std::collections::BTreeMap<(u32, String), u64>,
}

impl SharedHistory {
    pub fn new(clients: u32) -> Rc<RefCell<SharedHistory>> {
        Rc::new(RefCell::new(SharedHistory {
            clients_left: clients,
            ..SharedHistory::default()
        }))
    }

    /// Checks the history (when it has any operation), failing oracle
    /// `linearizability` with the key and the operations that cannot be
    /// ordered, or when the search cannot decide.
    fn check(&self) {
        if self.history.is_empty() || oracle::failed() {
            return;
        }
        let outcome = linearizability::check(&Memcached, &self.history, &CheckOptions::default());
        match &outcome.verdict {
            Linearizability::Linearizable => {
                tracing::debug!(target: "faultline::traffic", "{}", outcome.summary());
            }
            Linearizability::NotLinearizable(v) => oracle::fail(
                "linearizability",
                format!("{}\n{}", outcome.summary(), v.timeline()),
            ),
            Linearizability::Unknown { .. } => oracle::fail("linearizability", outcome.summary()),
        }
    }
}

/// Counts a client out when it ends, however it ends; the last one checks.
pub struct ClientDone(Rc<RefCell<SharedHistory>>);

impl ClientDone {
    /// The guard of one of the clients [`SharedHistory::new`] counted.
    pub fn new(shared: &Rc<RefCell<SharedHistory>>) -> ClientDone {
        ClientDone(shared.clone())
    }
}

impl Drop for ClientDone {
    fn drop(&mut self) {
        let mut shared = self.0.borrow_mut();
        assert!(shared.clients_left > 0, "more clients ended than started");
        shared.clients_left -= 1;
        if shared.clients_left == 0 {
            shared.check();
        }
    }
}

/// Simulated time in µs, the history's unit.
pub fn now_us() -> u64 {
    faultline_harness::now().as_micros() as u64
}

/// What operations on shared keys a client draws.
#[derive(Clone, Copy, Debug)]
pub struct SharedMix {
    /// Keys `shared:k0..`; a quarter as many counters `shared:n0..`.
    pub keys: u32,
    pub read_percent: u32,
    /// Share of SETs that are durable, in percent.
    pub durable_percent: u32,
}

impl SharedHistory {
    /// The next operation of client `process` (its random stream
    /// `rng_name`), and whether it is a durable write: GET, SET, CAS from
    /// the client's last read of the key, ADD, DELETE, APPEND, INCR.
    pub fn draw(&self, rng_name: &str, process: u32, mix: &SharedMix) -> (Input, bool) {
        assert!(mix.keys > 0, "shared-key traffic needs keys");
        let counters = (mix.keys / 4).max(1);
        let (roll, kind, key_index, counter_index, tag, durable) = with_rng(rng_name, |rng| {
            (
                rng.random_range(0..100u32),
                rng.random_range(0..100u32),
                rng.random_range(0..mix.keys),
                rng.random_range(0..counters),
                rng.random_range(0..1_000_000u32),
                rng.random_range(0..100u32) < mix.durable_percent,
            )
        });
        let value = format!("c{process}-{tag}").into_bytes();
        let key = format!("shared:k{key_index}");
        let seen = self
            .seen_cas
            .get(&(process, key.clone()))
            .copied()
            .unwrap_or(1);
        let op = if roll < mix.read_percent {
            Op::Get
        } else {
            match kind {
                0..35 => Op::Set {
                    value,
                    flags: tag % 4,
                    cas: 0,
                },
                35..55 => Op::Set {
                    value,
                    flags: 0,
                    cas: seen,
                },
                55..65 => Op::Add { value, flags: 1 },
                65..75 => Op::Delete { cas: 0 },
                75..85 => Op::Append { value },
                _ => {
                    let input = Input {
                        key: format!("shared:n{counter_index}"),
                        op: Op::Incr {
                            delta: 1,
                            initial: Some(0),
                        },
                    };
                    return (input, false);
                }
            }
        };
        let durable = durable && matches!(op, Op::Set { .. });
        (Input { key, op }, durable)
    }

    /// Records an operation by what its request got back: an answer; a
    /// refusal before anything happened (NOT_MY_VBUCKET, ETMPFAIL,
    /// SYNC_WRITE_IN_PROGRESS, DURABILITY_IMPOSSIBLE: left out); an
    /// outcome the server cannot tell (SYNC_WRITE_AMBIGUOUS) or a request
    /// lost with its connection or its framing (possibly applied). Other
    /// statuses, and every error, are returned for the caller's oracle.
    pub fn answered(
        &mut self,
        process: u32,
        input: Input,
        invoked_at: u64,
        answer: Result<Output, ClientError>,
        completed_at: u64,
    ) -> Result<(), ClientError> {
        let output = match answer {
            Ok(output) => Some(output),
            Err(ClientError::Status(
                Status::NOT_MY_VBUCKET
                | Status::ETMPFAIL
                | Status::SYNC_WRITE_IN_PROGRESS
                | Status::DURABILITY_IMPOSSIBLE,
            )) => return Ok(()),
            Err(ClientError::Status(Status::SYNC_WRITE_AMBIGUOUS)) => None,
            Err(e @ ClientError::Status(_)) => return Err(e),
            Err(e) => {
                self.record(process, input, invoked_at, None, completed_at);
                return Err(e);
            }
        };
        self.record(process, input, invoked_at, output, completed_at);
        Ok(())
    }

    /// Records one operation: answered (`output`, at `completed_at`), or
    /// possibly applied (`None`: its outcome is unknown). Learns the CAS a
    /// read returns, for the client's next CAS.
    pub fn record(
        &mut self,
        process: u32,
        input: Input,
        invoked_at: u64,
        output: Option<Output>,
        completed_at: u64,
    ) {
        tracing::debug!(
            target: "faultline::history",
            process,
            invoked_us = invoked_at,
            "{}",
            linearizability::Model::describe(&Memcached, &input, output.as_ref())
        );
        if let Some(Output::Found { cas: Some(cas), .. }) = &output {
            self.seen_cas.insert((process, input.key.clone()), *cas);
        }
        let op = match output {
            Some(output) => {
                Operation::completed(process.into(), input, invoked_at, output, completed_at)
            }
            None => Operation::ambiguous(process.into(), input, invoked_at),
        };
        self.history.push(op).expect("completion after invocation");
    }
}

/// One operation on a shared key: drawn, sent, and recorded with its
/// answer (or as possibly applied when its outcome is unknown).
async fn shared_op(
    client: &mut Client<SimStream>,
    rng_name: &str,
    index: u32,
    target: &Target,
    p: &TrafficParams,
    shared: &Rc<RefCell<SharedHistory>>,
) -> Result<(), Failure> {
    let mix = SharedMix {
        keys: p.shared_keys,
        read_percent: p.read_percent,
        durable_percent: p.durable_percent,
    };
    let (input, durable) = shared.borrow().draw(rng_name, index, &mix);
    let mut request = input
        .request()
        .vbucket(vbucket_of(input.key.as_bytes(), target.vbuckets));
    if durable {
        request = request.durability(Durability::Majority);
    }
    let what = format!("{:?} on {}", input.op, input.key);
    let invoked_at = now_us();
    let answer = match client.call(request).await {
        Ok(response) => output_of_response(&input, &response),
        Err(e) => Err(e),
    };
    let recorded = shared
        .borrow_mut()
        .answered(index, input, invoked_at, answer, now_us());
    recorded.map_err(|e| match e {
        ClientError::Status(other) => Failure::Validation(format!("{what} answered {other}")),
        e => validation(e),
    })
}

/// FNV-1a, 64 bits: a value's checksum that a client can recompute from
/// the bytes it reads back.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
