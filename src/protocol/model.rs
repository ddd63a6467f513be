//! memcached as a sequential object, for the linearizability checker
//! (`faultline_harness::linearizability`): what one server holding every
//! key would answer to GET, SET, ADD, REPLACE, APPEND, PREPEND, DELETE,
//! INCR and DECR, CAS included, with the binary protocol's answers.
//!
//! CAS values are the server's to choose, so the model learns them: an
//! item's CAS is unknown until an answer names it (a store's, a counter's
//! or a read's), and a compare against an unknown CAS may go either way.
//! Flags are stored and compared as given; APPEND and PREPEND keep the
//! item's flags; a counter created by INCR/DECR has flags 0.
//!
//! Keys commute, so histories are checked one key at a time
//! ([`Model::partition`]).

use std::collections::BTreeMap;

use faultline_harness::linearizability::{HistoryLine, Model};
use serde_json::{Value, json};

use super::client::{ClientError, Store, arith_packet, counter_value};
use super::{Opcode, Packet, Status};

/// One key's item as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Item {
    pub value: Vec<u8>,
    pub flags: u32,
    /// `None` until an answer tells it.
    pub cas: Option<u64>,
}

/// What a client asks, on which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub key: String,
    pub op: Op,
}

/// The operations. `cas` 0 means "no compare", as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Set {
        value: Vec<u8>,
        flags: u32,
        cas: u64,
    },
    Add {
        value: Vec<u8>,
        flags: u32,
    },
    Replace {
        value: Vec<u8>,
        flags: u32,
        cas: u64,
    },
    Append {
        value: Vec<u8>,
    },
    Prepend {
        value: Vec<u8>,
    },
    Delete {
        cas: u64,
    },
    /// `initial`: the value a missing key is created with; `None`: a
    /// missing key answers NOT_FOUND (expiration 0xffffffff on the wire).
    Incr {
        delta: u64,
        initial: Option<u64>,
    },
    Decr {
        delta: u64,
        initial: Option<u64>,
    },
}

impl Op {
    /// APPEND/PREPEND: the value once this one's is joined to `old`.
    fn joined(&self, old: &[u8]) -> Vec<u8> {
        match self {
            Op::Append { value } => [old, value].concat(),
            Op::Prepend { value } => [value, old].concat(),
            other => unreachable!("{other:?} joins nothing"),
        }
    }

    /// INCR/DECR over the stored value (`None`: no such key): the
    /// counter's new value, or the refusal.
    fn counted(&self, stored: Option<&[u8]>) -> Result<u64, Output> {
        let (Op::Incr { delta, initial } | Op::Decr { delta, initial }) = self else {
            unreachable!("{self:?} counts nothing")
        };
        let Some(stored) = stored else {
            return initial.ok_or(Output::NotFound);
        };
        let current = counter_of(stored).ok_or(Output::NonNumeric)?;
        Ok(if matches!(self, Op::Incr { .. }) {
            current.wrapping_add(*delta)
        } else {
            current.saturating_sub(*delta)
        })
    }
}

/// The answers. A `cas` of `None`: the answer's CAS is not known (a client
/// library that does not return it); the model then does not learn it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A read's item.
    Found {
        value: Vec<u8>,
        flags: u32,
        cas: Option<u64>,
    },
    /// A store took effect, with the item's new CAS.
    Stored {
        cas: Option<u64>,
    },
    /// A counter's new value and CAS.
    Counter {
        value: u64,
        cas: Option<u64>,
    },
    Deleted,
    /// KEY_ENOENT.
    NotFound,
    /// KEY_EEXISTS: a CAS mismatch, or ADD of a present key.
    Exists,
    /// NOT_STORED: APPEND/PREPEND of a missing key.
    NotStored,
    /// DELTA_BADVAL: a counter over a value that is not a number.
    NonNumeric,
}

/// The state: every key's item (one key per partition when checked).
pub type State = BTreeMap<String, Item>;

/// memcached's semantics as [`Model`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Memcached;

/// The longest decimal a counter may hold (u64::MAX has 20 digits).
const MAX_COUNTER_DIGITS: usize = 20;

impl Model for Memcached {
    type State = State;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> State {
        State::new()
    }

    fn step(&self, state: &State, input: &Input, output: Option<&Output>) -> Option<State> {
        let existing = state.get(&input.key);
        let with = |item: Option<Item>| {
            let mut next = state.clone();
            match item {
                Some(item) => next.insert(input.key.clone(), item),
                None => next.remove(&input.key),
            };
            Some(next)
        };
        // A refusal changes nothing; it must be the answer recorded.
        let refused = |expected: Output| match output {
            None => Some(state.clone()),
            Some(o) if *o == expected => Some(state.clone()),
            Some(_) => None,
        };
        // A store that took effect: the answer names the new CAS.
        let stored = |value: Vec<u8>, flags: u32| match output {
            None => with(Some(Item {
                value,
                flags,
                cas: None,
            })),
            Some(Output::Stored { cas }) => with(Some(Item {
                value,
                flags,
                cas: *cas,
            })),
            Some(_) => None,
        };
        // The compare of a CAS store or delete: Some(refusal) when it
        // fails for sure; an unknown CAS may go either way (the answer
        // decides; an unknown answer takes the success).
        let compare = |cas: u64| -> Option<Output> {
            if cas == 0 {
                return None;
            }
            match existing {
                None => Some(Output::NotFound),
                Some(item) => match item.cas {
                    Some(known) if known != cas => Some(Output::Exists),
                    Some(_) => None,
                    None if output == Some(&Output::Exists) => Some(Output::Exists),
                    None => None,
                },
            }
        };
        match &input.op {
            Op::Get => match (existing, output) {
                (_, None) => Some(state.clone()),
                (None, Some(Output::NotFound)) => Some(state.clone()),
                (Some(item), Some(Output::Found { value, flags, cas })) => {
                    if *value != item.value || *flags != item.flags {
                        return None;
                    }
                    match (item.cas, cas) {
                        (Some(known), Some(read)) if known != *read => None,
                        (None, Some(read)) => with(Some(Item {
                            cas: Some(*read),
                            ..item.clone()
                        })),
                        _ => Some(state.clone()),
                    }
                }
                _ => None,
            },
            Op::Set { value, flags, cas } => match compare(*cas) {
                Some(refusal) => refused(refusal),
                None => stored(value.clone(), *flags),
            },
            Op::Add { value, flags } => match existing {
                Some(_) => refused(Output::Exists),
                None => stored(value.clone(), *flags),
            },
            Op::Replace { value, flags, cas } => match (existing, compare(*cas)) {
                (None, _) => refused(Output::NotFound),
                (_, Some(refusal)) => refused(refusal),
                (Some(_), None) => stored(value.clone(), *flags),
            },
            Op::Append { .. } | Op::Prepend { .. } => match existing {
                None => refused(Output::NotStored),
                Some(item) => stored(input.op.joined(&item.value), item.flags),
            },
            Op::Delete { cas } => match (existing, compare(*cas)) {
                (None, _) => refused(Output::NotFound),
                (_, Some(refusal)) => refused(refusal),
                (Some(_), None) => match output {
                    None | Some(Output::Deleted) => with(None),
                    Some(_) => None,
                },
            },
            Op::Incr { .. } | Op::Decr { .. } => {
                let number = match input.op.counted(existing.map(|i| &i.value[..])) {
                    Ok(number) => number,
                    Err(refusal) => return refused(refusal),
                };
                let flags = existing.map_or(0, |i| i.flags);
                let value = number.to_string().into_bytes();
                match output {
                    None => with(Some(Item {
                        value,
                        flags,
                        cas: None,
                    })),
                    Some(Output::Counter { value: got, cas }) if *got == number => {
                        with(Some(Item {
                            value,
                            flags,
                            cas: *cas,
                        }))
                    }
                    Some(_) => None,
                }
            }
        }
    }

    fn partition(&self, input: &Input) -> String {
        input.key.clone()
    }

    fn describe(&self, input: &Input, output: Option<&Output>) -> String {
        let v = |b: &[u8]| shorten(&String::from_utf8_lossy(b));
        let key = &input.key;
        let call = match &input.op {
            Op::Get => format!("get {key}"),
            Op::Set { value, cas: 0, .. } => format!("set {key} {}", v(value)),
            Op::Set { value, cas, .. } => format!("cas {key} {} if {cas}", v(value)),
            Op::Add { value, .. } => format!("add {key} {}", v(value)),
            Op::Replace { value, .. } => format!("replace {key} {}", v(value)),
            Op::Append { value } => format!("append {key} {}", v(value)),
            Op::Prepend { value } => format!("prepend {key} {}", v(value)),
            Op::Delete { .. } => format!("delete {key}"),
            Op::Incr { delta, .. } => format!("incr {key} {delta}"),
            Op::Decr { delta, .. } => format!("decr {key} {delta}"),
        };
        let with_cas = |what: String, cas: &Option<u64>| match cas {
            Some(cas) => format!("{what} (cas {cas})"),
            None => what,
        };
        let answer = match output {
            None => "?".to_string(),
            Some(Output::Found { value, cas, .. }) => with_cas(v(value), cas),
            Some(Output::Stored { cas }) => with_cas("stored".into(), cas),
            Some(Output::Counter { value, cas }) => with_cas(value.to_string(), cas),
            Some(Output::Deleted) => "deleted".into(),
            Some(Output::NotFound) => "not_found".into(),
            Some(Output::Exists) => "exists".into(),
            Some(Output::NotStored) => "not_stored".into(),
            Some(Output::NonNumeric) => "non_numeric".into(),
        };
        format!("{call} -> {answer}")
    }
}

/// A stored value read as a counter, as the server reads it.
fn counter_of(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > MAX_COUNTER_DIGITS {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Values in reports: at most 24 characters.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 24;
    if text.chars().count() <= MAX_CHARS {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(MAX_CHARS).collect();
    format!("{head:?}...")
}

// ---------------------------------------------------------------------
// History files: `op` is get, set, cas, add, replace, append, prepend,
// delete, incr or decr; `args` an object (`value`, `flags`, `cas`,
// `delta`, `initial`); `result` `"not_found"`, `"exists"`,
// `"not_stored"`, `"deleted"`, `"non_numeric"`, or an object (`value`,
// `flags`, `cas` for a read; `cas` for a store; `value`, `cas` for a
// counter; `cas` may be left out where the client did not see it).

/// The model's input and answer of one history line; errors name the
/// file, the line and the field.
pub fn from_line(line: &HistoryLine, file: &str) -> Result<(Input, Option<Output>), String> {
    let err = |field: &str, message: String| line.error(file, field, &message);
    let key = line
        .key
        .clone()
        .ok_or_else(|| err("key", "every memcached operation names its key".into()))?;
    let args = match &line.args {
        Value::Null => serde_json::Map::new(),
        Value::Object(map) => map.clone(),
        other => return Err(err("args", format!("expected an object, found {other}"))),
    };
    let known: &[&str] = match line.op.as_str() {
        "get" | "delete" => &["cas"],
        "set" | "cas" | "replace" => &["value", "flags", "cas"],
        "add" => &["value", "flags"],
        "append" | "prepend" => &["value"],
        "incr" | "decr" => &["delta", "initial"],
        other => {
            return Err(err(
                "op",
                format!(
                    "`{other}` is not one of get, set, cas, add, replace, append, prepend, delete, incr, decr"
                ),
            ));
        }
    };
    if let Some(unknown) = args.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(err(
            "args",
            format!("`{unknown}` is not an argument of {}", line.op),
        ));
    }
    let number = |name: &str, required: bool| -> Result<Option<u64>, String> {
        match args.get(name) {
            None if required => Err(err("args", format!("{} needs `{name}`", line.op))),
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                err(
                    "args",
                    format!("`{name}` must be a whole number, found {v}"),
                )
            }),
        }
    };
    let value = || -> Result<Vec<u8>, String> {
        match args.get("value") {
            Some(Value::String(s)) => Ok(s.clone().into_bytes()),
            Some(v) => Err(err("args", format!("`value` must be a string, found {v}"))),
            None => Err(err("args", format!("{} needs `value`", line.op))),
        }
    };
    let flags = || -> Result<u32, String> {
        let flags = number("flags", false)?.unwrap_or(0);
        u32::try_from(flags).map_err(|_| err("args", format!("`flags` {flags} is over 32 bits")))
    };
    let cas = || -> Result<u64, String> { Ok(number("cas", false)?.unwrap_or(0)) };
    let op = match line.op.as_str() {
        "get" => Op::Get,
        "set" => Op::Set {
            value: value()?,
            flags: flags()?,
            cas: cas()?,
        },
        "cas" => {
            let cas = number("cas", true)?.expect("required");
            Op::Set {
                value: value()?,
                flags: flags()?,
                cas,
            }
        }
        "add" => Op::Add {
            value: value()?,
            flags: flags()?,
        },
        "replace" => Op::Replace {
            value: value()?,
            flags: flags()?,
            cas: cas()?,
        },
        "append" => Op::Append { value: value()? },
        "prepend" => Op::Prepend { value: value()? },
        "delete" => Op::Delete { cas: cas()? },
        "incr" => Op::Incr {
            delta: number("delta", true)?.expect("required"),
            initial: number("initial", false)?,
        },
        "decr" => Op::Decr {
            delta: number("delta", true)?.expect("required"),
            initial: number("initial", false)?,
        },
        _ => unreachable!("checked above"),
    };
    let input = Input { key, op };
    if line.complete.is_none() {
        return Ok((input, None));
    }
    let output = output_of(&input.op, &line.result).map_err(|m| err("result", m))?;
    Ok((input, Some(output)))
}

fn output_of(op: &Op, result: &Value) -> Result<Output, String> {
    if let Value::String(word) = result {
        return match word.as_str() {
            "not_found" => Ok(Output::NotFound),
            "exists" => Ok(Output::Exists),
            "not_stored" => Ok(Output::NotStored),
            "deleted" => Ok(Output::Deleted),
            "non_numeric" => Ok(Output::NonNumeric),
            other => Err(format!(
                "`{other}` is not one of not_found, exists, not_stored, deleted, non_numeric"
            )),
        };
    }
    let Value::Object(map) = result else {
        return Err(format!("expected a string or an object, found {result}"));
    };
    let number = |name: &str| -> Result<u64, String> {
        map.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("needs a whole number `{name}`"))
    };
    // Left out (or null): not known.
    let cas = || -> Result<Option<u64>, String> {
        match map.get("cas") {
            None | Some(Value::Null) => Ok(None),
            Some(_) => number("cas").map(Some),
        }
    };
    match op {
        Op::Get => {
            let value = match map.get("value") {
                Some(Value::String(s)) => s.clone().into_bytes(),
                _ => return Err("a read's result needs a string `value`".into()),
            };
            let flags = map.get("flags").and_then(Value::as_u64).unwrap_or(0);
            let flags =
                u32::try_from(flags).map_err(|_| format!("`flags` {flags} is over 32 bits"))?;
            Ok(Output::Found {
                value,
                flags,
                cas: cas()?,
            })
        }
        Op::Incr { .. } | Op::Decr { .. } => Ok(Output::Counter {
            value: number("value")?,
            cas: cas()?,
        }),
        Op::Delete { .. } => Err("a delete's result is a string".into()),
        _ => Ok(Output::Stored { cas: cas()? }),
    }
}

/// One history line for an operation (the inverse of [`from_line`]).
pub fn to_line(
    process: u64,
    input: &Input,
    output: Option<&Output>,
    invoke: u64,
    complete: Option<u64>,
) -> HistoryLine {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (op, args) = match &input.op {
        Op::Get => ("get", json!({})),
        Op::Set {
            value,
            flags,
            cas: 0,
        } => ("set", json!({"value": s(value), "flags": flags})),
        Op::Set { value, flags, cas } => (
            "cas",
            json!({"value": s(value), "flags": flags, "cas": cas}),
        ),
        Op::Add { value, flags } => ("add", json!({"value": s(value), "flags": flags})),
        Op::Replace { value, flags, cas } => (
            "replace",
            json!({"value": s(value), "flags": flags, "cas": cas}),
        ),
        Op::Append { value } => ("append", json!({"value": s(value)})),
        Op::Prepend { value } => ("prepend", json!({"value": s(value)})),
        Op::Delete { cas } => ("delete", json!({"cas": cas})),
        Op::Incr { delta, initial } => ("incr", json!({"delta": delta, "initial": initial})),
        Op::Decr { delta, initial } => ("decr", json!({"delta": delta, "initial": initial})),
    };
    let result = match output {
        None => Value::Null,
        Some(Output::Found { value, flags, cas }) => {
            json!({"value": s(value), "flags": flags, "cas": cas})
        }
        Some(Output::Stored { cas }) => json!({ "cas": cas }),
        Some(Output::Counter { value, cas }) => json!({"value": value, "cas": cas}),
        Some(Output::Deleted) => json!("deleted"),
        Some(Output::NotFound) => json!("not_found"),
        Some(Output::Exists) => json!("exists"),
        Some(Output::NotStored) => json!("not_stored"),
        Some(Output::NonNumeric) => json!("non_numeric"),
    };
    HistoryLine {
        line: 0,
        process,
        key: Some(input.key.clone()),
        op: op.to_string(),
        args,
        result,
        invoke,
        complete,
    }
}

// ---------------------------------------------------------------------
// On the wire: the request that asks an input, and the answer a response
// gives, so every client that records a history speaks one way.

impl Input {
    /// The request packet (vbucket 0, opaque 0: the sender sets them).
    pub fn request(&self) -> Packet {
        let key = self.key.as_bytes();
        let store = |opcode: Opcode, value: &[u8], flags: u32, cas: u64| {
            Store::new(opcode, key, value)
                .flags(flags)
                .cas(cas)
                .packet()
        };
        match &self.op {
            Op::Get => Packet::request(Opcode::GET).key(key.to_vec()),
            Op::Set { value, flags, cas } => store(Opcode::SET, value, *flags, *cas),
            Op::Add { value, flags } => store(Opcode::ADD, value, *flags, 0),
            Op::Replace { value, flags, cas } => store(Opcode::REPLACE, value, *flags, *cas),
            Op::Append { value } => store(Opcode::APPEND, value, 0, 0),
            Op::Prepend { value } => store(Opcode::PREPEND, value, 0, 0),
            Op::Delete { cas } => Packet::request(Opcode::DELETE).key(key.to_vec()).cas(*cas),
            Op::Incr { delta, initial } => arith_packet(Opcode::INCREMENT, key, *delta, *initial),
            Op::Decr { delta, initial } => arith_packet(Opcode::DECREMENT, key, *delta, *initial),
        }
    }
}

/// The model's answer in `response` to `input`'s request. A status the
/// model has no answer for (a refusal before anything happened, or an
/// error) is `ClientError::Status`; a response that cannot be such an
/// answer is `ClientError::Invalid`.
pub fn output_of_response(input: &Input, response: &Packet) -> Result<Output, ClientError> {
    let cas = Some(response.header.cas);
    match response.status_code() {
        Status::SUCCESS => {}
        Status::KEY_ENOENT => return Ok(Output::NotFound),
        Status::KEY_EEXISTS => return Ok(Output::Exists),
        Status::NOT_STORED => return Ok(Output::NotStored),
        Status::DELTA_BADVAL => return Ok(Output::NonNumeric),
        other => return Err(ClientError::Status(other)),
    }
    Ok(match &input.op {
        Op::Get => Output::Found {
            flags: response.extras_u32(0).ok_or_else(|| {
                ClientError::Invalid(format!(
                    "GET hit with {} bytes of extras",
                    response.extras.len()
                ))
            })?,
            value: response.value.to_vec(),
            cas,
        },
        Op::Delete { .. } => Output::Deleted,
        Op::Incr { .. } | Op::Decr { .. } => Output::Counter {
            value: counter_value(response.opcode(), response)?,
            cas,
        },
        _ => Output::Stored { cas },
    })
}

// ---------------------------------------------------------------------
// Histories of a real sequential execution, for benchmarks and tests.

/// A server with exact CAS values: answers `input` and applies it.
fn execute(
    items: &mut BTreeMap<String, (Vec<u8>, u32, u64)>,
    input: &Input,
    next_cas: &mut u64,
) -> Output {
    let key = &input.key;
    let existing = items.get(key).cloned();
    let mut put = |value: Vec<u8>, flags: u32| {
        *next_cas += 1;
        items.insert(key.clone(), (value, flags, *next_cas));
        *next_cas
    };
    let mismatch = |cas: u64| cas != 0 && existing.as_ref().is_some_and(|e| e.2 != cas);
    match &input.op {
        Op::Get => match existing {
            Some((value, flags, cas)) => Output::Found {
                value,
                flags,
                cas: Some(cas),
            },
            None => Output::NotFound,
        },
        Op::Set { value, flags, cas } => {
            if *cas != 0 && existing.is_none() {
                Output::NotFound
            } else if mismatch(*cas) {
                Output::Exists
            } else {
                Output::Stored {
                    cas: Some(put(value.clone(), *flags)),
                }
            }
        }
        Op::Add { value, flags } => match existing {
            Some(_) => Output::Exists,
            None => Output::Stored {
                cas: Some(put(value.clone(), *flags)),
            },
        },
        Op::Replace { value, flags, cas } => match existing {
            None => Output::NotFound,
            Some(_) if mismatch(*cas) => Output::Exists,
            Some(_) => Output::Stored {
                cas: Some(put(value.clone(), *flags)),
            },
        },
        Op::Append { .. } | Op::Prepend { .. } => match existing {
            None => Output::NotStored,
            Some((old, flags, _)) => Output::Stored {
                cas: Some(put(input.op.joined(&old), flags)),
            },
        },
        Op::Delete { cas } => match existing {
            None => Output::NotFound,
            Some(_) if mismatch(*cas) => Output::Exists,
            Some(_) => {
                items.remove(key);
                Output::Deleted
            }
        },
        Op::Incr { .. } | Op::Decr { .. } => {
            let number = match input.op.counted(existing.as_ref().map(|e| &e.0[..])) {
                Ok(number) => number,
                Err(refusal) => return refusal,
            };
            let flags = existing.map_or(0, |e| e.1);
            let cas = put(number.to_string().into_bytes(), flags);
            Output::Counter {
                value: number,
                cas: Some(cas),
            }
        }
    }
}

/// The history of `ops` operations by `clients` clients on `keys` keys,
/// executed one at a time by an exact server, each taking effect inside
/// an interval that overlaps others (times in µs): linearizable by
/// construction. A mix of every operation; CAS uses the value the client
/// last read of the key.
pub fn sequential_history(
    seed: u64,
    clients: u64,
    keys: u64,
    ops: u64,
) -> faultline_harness::linearizability::History<Input, Output> {
    use rand::{Rng, SeedableRng};
    assert!(clients > 0 && keys > 0, "a history needs clients and keys");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // (client, input, invoke, effect, complete)
    let mut planned = Vec::new();
    let mut cursor = vec![0u64; clients as usize];
    for _ in 0..ops {
        let client = rng.random_range(0..clients);
        let key = format!("k{}", rng.random_range(0..keys));
        let value = format!("c{client}-{}", rng.random_range(0..1000u32)).into_bytes();
        let op = match rng.random_range(0..100u32) {
            0..40 => Op::Get,
            40..60 => Op::Set {
                value,
                flags: rng.random_range(0..4),
                cas: 0,
            },
            60..70 => Op::Set {
                value,
                flags: 0,
                cas: u64::MAX,
            },
            70..75 => Op::Add { value, flags: 1 },
            75..80 => Op::Delete { cas: 0 },
            80..90 => Op::Incr {
                delta: rng.random_range(1..5),
                initial: Some(0),
            },
            90..95 => Op::Append { value },
            _ => Op::Replace {
                value,
                flags: 2,
                cas: 0,
            },
        };
        let invoke = cursor[client as usize] + rng.random_range(0..50);
        let effect = invoke + rng.random_range(0..100);
        let complete = effect + rng.random_range(0..100);
        cursor[client as usize] = complete + 1;
        planned.push((client, Input { key, op }, invoke, effect, complete));
    }
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].3, i));
    let mut items = BTreeMap::new();
    let mut next_cas = 0;
    let mut outputs = vec![None; planned.len()];
    // What each client last read of each key: its CAS for the next CAS op.
    let mut seen: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for i in order {
        let (client, input, ..) = &mut planned[i];
        if let Op::Set { cas, .. } = &mut input.op {
            if *cas == u64::MAX {
                *cas = seen
                    .get(&(*client, input.key.clone()))
                    .copied()
                    .unwrap_or(1);
            }
        }
        let output = execute(&mut items, input, &mut next_cas);
        if let Output::Found { cas: Some(cas), .. } = &output {
            seen.insert((*client, input.key.clone()), *cas);
        }
        outputs[i] = Some(output);
    }
    let mut history = faultline_harness::linearizability::History::new();
    for ((client, input, invoke, _, complete), output) in planned.into_iter().zip(outputs) {
        let output = output.expect("every operation executed");
        history
            .push(faultline_harness::linearizability::Operation::completed(
                client, input, invoke, output, complete,
            ))
            .expect("complete after invoke");
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_harness::linearizability::{CheckOptions, History, Operation, check};

    fn set(key: &str, value: &str) -> Input {
        Input {
            key: key.into(),
            op: Op::Set {
                value: value.into(),
                flags: 0,
                cas: 0,
            },
        }
    }

    fn get(key: &str) -> Input {
        Input {
            key: key.into(),
            op: Op::Get,
        }
    }

    fn found(value: &str, cas: u64) -> Output {
        found_maybe(value, Some(cas))
    }

    fn found_maybe(value: &str, cas: Option<u64>) -> Output {
        Output::Found {
            value: value.into(),
            flags: 0,
            cas,
        }
    }

    fn linearizable(ops: Vec<Operation<Input, Output>>) -> bool {
        let h = History::from_operations(ops).expect("valid");
        check(&Memcached, &h, &CheckOptions::default()).is_linearizable()
    }

    #[test]
    fn histories_of_sequential_executions_are_linearizable() {
        for seed in 0..20 {
            let h = sequential_history(seed, 4, 3, 200);
            let outcome = check(&Memcached, &h, &CheckOptions::default());
            assert!(
                outcome.is_linearizable(),
                "seed {seed}: {}",
                outcome.summary()
            );
        }
    }

    #[test]
    fn answers_follow_the_binary_protocol() {
        let m = Memcached;
        let s0 = m.init();
        let add = Input {
            key: "k".into(),
            op: Op::Add {
                value: "a".into(),
                flags: 7,
            },
        };
        let s1 = m
            .step(&s0, &add, Some(&Output::Stored { cas: Some(5) }))
            .expect("add of a missing key stores");
        assert!(m.step(&s1, &add, Some(&Output::Exists)).is_some());
        assert!(
            m.step(&s1, &add, Some(&Output::Stored { cas: Some(6) }))
                .is_none()
        );
        let append = Input {
            key: "k".into(),
            op: Op::Append { value: "b".into() },
        };
        assert!(m.step(&s0, &append, Some(&Output::NotStored)).is_some());
        let s2 = m
            .step(&s1, &append, Some(&Output::Stored { cas: Some(6) }))
            .expect("append");
        assert_eq!(s2["k"].value, b"ab");
        assert_eq!(s2["k"].flags, 7, "append keeps the flags");
        let incr = Input {
            key: "k".into(),
            op: Op::Incr {
                delta: 1,
                initial: Some(0),
            },
        };
        assert!(m.step(&s2, &incr, Some(&Output::NonNumeric)).is_some());
        let c1 = m
            .step(
                &s0,
                &incr,
                Some(&Output::Counter {
                    value: 0,
                    cas: Some(1),
                }),
            )
            .expect("a missing counter is created with its initial value");
        let decr = Input {
            key: "k".into(),
            op: Op::Decr {
                delta: 5,
                initial: None,
            },
        };
        assert!(
            m.step(
                &c1,
                &decr,
                Some(&Output::Counter {
                    value: 0,
                    cas: Some(2),
                })
            )
            .is_some(),
            "decr stops at 0"
        );
        assert!(m.step(&s0, &decr, Some(&Output::NotFound)).is_some());
    }

    #[test]
    fn cas_values_are_learned_then_compared() {
        let m = Memcached;
        let s1 = m
            .step(&m.init(), &set("k", "a"), None)
            .expect("an unknown answer is accepted");
        assert_eq!(s1["k"].cas, None);
        // The first read names the CAS; later reads must agree.
        let s2 = m.step(&s1, &get("k"), Some(&found("a", 9))).expect("read");
        assert!(m.step(&s2, &get("k"), Some(&found("a", 8))).is_none());
        let cas = |c: u64| Input {
            key: "k".into(),
            op: Op::Set {
                value: "b".into(),
                flags: 0,
                cas: c,
            },
        };
        assert!(m.step(&s2, &cas(8), Some(&Output::Exists)).is_some());
        assert!(
            m.step(&s2, &cas(8), Some(&Output::Stored { cas: Some(10) }))
                .is_none()
        );
        assert!(
            m.step(&s2, &cas(9), Some(&Output::Stored { cas: Some(10) }))
                .is_some()
        );
        // Against an unknown CAS either answer is possible.
        assert!(m.step(&s1, &cas(3), Some(&Output::Exists)).is_some());
        assert!(
            m.step(&s1, &cas(3), Some(&Output::Stored { cas: Some(4) }))
                .is_some()
        );
    }

    #[test]
    fn two_cas_from_one_read_cannot_both_succeed() {
        let cas = |v: &str| Input {
            key: "k".into(),
            op: Op::Set {
                value: v.into(),
                flags: 0,
                cas: 3,
            },
        };
        let base = || {
            vec![
                Operation::completed(0, set("k", "a"), 0, Output::Stored { cas: Some(3) }, 10),
                Operation::completed(1, get("k"), 20, found("a", 3), 30),
            ]
        };
        let mut twice = base();
        twice.push(Operation::completed(
            1,
            cas("b"),
            40,
            Output::Stored { cas: Some(4) },
            50,
        ));
        twice.push(Operation::completed(
            2,
            cas("c"),
            41,
            Output::Stored { cas: Some(5) },
            51,
        ));
        assert!(!linearizable(twice));
        let mut once = base();
        once.push(Operation::completed(
            1,
            cas("b"),
            40,
            Output::Stored { cas: Some(4) },
            50,
        ));
        once.push(Operation::completed(2, cas("c"), 41, Output::Exists, 51));
        assert!(linearizable(once));
    }

    #[test]
    fn history_lines_round_trip_and_name_bad_fields() {
        let input = Input {
            key: "k".into(),
            op: Op::Incr {
                delta: 2,
                initial: Some(1),
            },
        };
        let output = Output::Counter {
            value: 1,
            cas: Some(8),
        };
        let line = to_line(3, &input, Some(&output), 10, Some(20));
        let text = serde_json::to_string(&line).expect("json");
        let parsed = faultline_harness::linearizability::parse_history_lines(&text, "h.jsonl")
            .expect("valid");
        assert_eq!(
            from_line(&parsed[0], "h.jsonl").expect("valid"),
            (input, Some(output))
        );
        let bad = r#"{"process": 1, "key": "k", "op": "set", "args": {"value": 5}, "result": {"cas": 1}, "invoke": 1, "complete": 2}"#;
        let lines =
            faultline_harness::linearizability::parse_history_lines(bad, "h.jsonl").expect("json");
        assert_eq!(
            from_line(&lines[0], "h.jsonl").expect_err("bad value"),
            "h.jsonl:1: field `args`: `value` must be a string, found 5"
        );
    }

    #[test]
    fn answers_without_a_cas_still_have_their_values_checked() {
        // A client library that returns no CAS for stores.
        let stored = Output::Stored { cas: None };
        let run = |answers: Vec<(Input, Output)>| {
            let ops = answers
                .into_iter()
                .enumerate()
                .map(|(i, (input, output))| {
                    let t = 10 * i as u64;
                    Operation::completed(1, input, t, output, t + 5)
                })
                .collect();
            linearizable(ops)
        };
        assert!(run(vec![
            (set("k", "a"), stored.clone()),
            (get("k"), found("a", 7)),
            (get("k"), found_maybe("a", None)),
        ]));
        assert!(!run(vec![
            (set("k", "a"), stored.clone()),
            (get("k"), found_maybe("b", None)),
        ]));
        // A CAS learned from one read holds for the next.
        assert!(!run(vec![
            (set("k", "a"), stored),
            (get("k"), found("a", 7)),
            (get("k"), found("a", 8)),
        ]));
    }

    #[test]
    fn a_request_and_its_answer_round_trip_through_the_wire_shapes() {
        let input = Input {
            key: "n".into(),
            op: Op::Incr {
                delta: 2,
                initial: None,
            },
        };
        let request = input.request();
        assert_eq!(request.opcode(), Opcode::INCREMENT);
        assert_eq!(request.extras_u32(16), Some(0xffff_ffff), "no create");
        let answer = Packet::response(&request.header, Status::SUCCESS)
            .cas(9)
            .value(5u64.to_be_bytes().to_vec());
        assert_eq!(
            output_of_response(&input, &answer).unwrap(),
            Output::Counter {
                value: 5,
                cas: Some(9)
            }
        );
        let refused = Packet::response(&request.header, Status::KEY_ENOENT);
        assert_eq!(
            output_of_response(&input, &refused).unwrap(),
            Output::NotFound
        );
        let short = Packet::response(&request.header, Status::SUCCESS).value(vec![1]);
        assert!(output_of_response(&input, &short).unwrap_err().is_invalid());
        let busy = Packet::response(&request.header, Status::ETMPFAIL);
        assert!(matches!(
            output_of_response(&input, &busy),
            Err(ClientError::Status(Status::ETMPFAIL))
        ));
    }
}
