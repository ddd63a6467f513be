//! The names of coverage keys, all in one place.
//!
//! A run's coverage (`Outcome::coverage`) counts, per key, how often the
//! run reached something: a fault applied, a preemption point hit, a probe
//! of the code under test. Sweeps add the runs up, print them, and list
//! the faults of a space no run applied; exploration and PCT read counts
//! back. Every key is spelled here, so the module that counts one and the
//! module that reads it cannot drift apart, and a reader finds every kind
//! of key in one list.
//!
//! Keys are `kind:name`; their text is part of JSON sweep results and of
//! what scenario tests assert, so a key never changes its spelling.

/// A send found the send buffer full and waited.
pub(crate) const SEND_BUFFER_FULL: &str = "send_buffer:full";
/// A send was cut short by the send buffer's free space.
pub(crate) const SEND_BUFFER_SHORT_WRITE: &str = "send_buffer:short_write";
/// A write was delivered in more than one segment.
pub(crate) const SEGMENTATION_SPLIT: &str = "segmentation:split";
/// A socket was closed with bytes its application had not read.
pub(crate) const NET_CLOSED_WITH_UNREAD: &str = "net:closed-with-unread-bytes";
/// A frame was held until its event.
pub(crate) const FRAME_DELAY_HELD: &str = "frame_delay:held";
/// A frame was delayed.
pub(crate) const FRAME_DELAY_DELAYED: &str = "frame_delay:delayed";
/// `recv` on a socket whose connect is in progress.
pub(crate) const SYS_RECV_DURING_CONNECT: &str = "sys:recv-during-connect";
/// `send` on a socket whose connect is in progress.
pub(crate) const SYS_SEND_DURING_CONNECT: &str = "sys:send-during-connect";
/// That `recv` answered ENOTCONN (a personality's answer).
pub(crate) const ERRNO_ENOTCONN_RECV: &str = "errno:ENOTCONN:recv";
/// That `send` answered ENOTCONN (a personality's answer).
pub(crate) const ERRNO_ENOTCONN_SEND: &str = "errno:ENOTCONN:send";
/// `splice` answered EBADF (the `linux-2.6.35` personality).
pub(crate) const ERRNO_EBADF_SPLICE: &str = "errno:EBADF:splice";
/// A `splice` into a pipe found it full.
pub(crate) const PIPE_FULL: &str = "pipe:full";
/// A peer's shutdown arrived behind data not read yet (`EPOLLRDHUP` with
/// `EPOLLIN`).
pub(crate) const SYS_RDHUP_BEHIND_DATA: &str = "sys:rdhup-behind-data";

/// Prefix of a preemption point's hits.
pub(crate) const RACE_HITS: &str = "race:";
/// Prefix of the times tasks gave way at a point.
pub(crate) const RACE_YIELDS: &str = "race-yield:";

/// The code under test reached the probe `name`.
pub(crate) fn probe(name: &str) -> String {
    format!("probe:{name}")
}

/// The event `name` happened (what frame holds wait for).
pub(crate) fn event(name: &str) -> String {
    format!("event:{name}")
}

/// The code under test asked for the switch `name`.
pub(crate) fn switch_asked(name: &str) -> String {
    format!("switch:{name}")
}

/// The plan's switch `name` was on when asked.
pub(crate) fn switch_applied(name: &str) -> String {
    format!("applied:switch:{name}")
}

/// A frame-delay rule from `from` to `to` on frames labelled `frame`
/// acted on a frame.
pub(crate) fn frame_delay_applied(from: &str, to: &str, frame: &str) -> String {
    format!("applied:frame_delay:{from}->{to}:{frame}")
}

/// A race rule whose glob is `point` acted on a hit.
pub(crate) fn race_applied(point: &str) -> String {
    format!("applied:race:{point}")
}

/// The steps counted by the race rule whose glob is `point`.
pub(crate) fn race_steps(point: &str) -> String {
    format!("race-steps:{point}")
}

/// The hits of the preemption point `name`.
pub(crate) fn race_hits(name: &str) -> String {
    format!("{RACE_HITS}{name}")
}

/// The times tasks gave way at the preemption point `name`.
pub(crate) fn race_yields(name: &str) -> String {
    format!("{RACE_YIELDS}{name}")
}

/// The waits for priority cut short at the preemption point `name`.
pub(crate) fn race_starved(name: &str) -> String {
    format!("race-starved:{name}")
}
