//! The streaming path: upstream SSE events pass through as they arrive, byte for byte, except
//! a tool call's, which are held until the call is complete and decided, then released as the
//! original bytes or replaced by a well-formed refusal. Output keeps the upstream's order: what
//! follows a held call waits behind it. Terminal events (finish reason, stop reason, the
//! completed response) wait until every call and the response itself are decided, so they can
//! be made consistent with what was released.
//!
//! Each API's events are read by a [`Protocol`]; this module is the part they share: the
//! output queue, the held-bytes bound, the decisions and the faults. A fault (the upstream
//! goes silent or away, sends an event that is not what its API sends) releases nothing of an
//! unfinished call and ends the stream with the API's own error event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use tokio::sync::mpsc;

use super::sse::{Frame, Splitter};
use super::{Exchange, Proposed, Verdict};
use crate::action::{Outcome, Usage};
use crate::gate::Concluded;

/// A tool call being received, held and decided.
#[derive(Debug, Default)]
pub struct Call {
    /// The choice it belongs to (Chat Completions `n`); 0 elsewhere.
    pub group: u64,
    /// The provider's position of the call: Chat `tool_calls[].index`, Anthropic content block
    /// index, Responses `output_index`.
    pub key: u64,
    pub id: String,
    pub name: String,
    /// The arguments as streamed so far.
    pub args: String,
    /// What the provider finally said the call is (Responses `output_item.done`).
    pub item: Option<serde_json::Value>,
    /// The original events of the call, in order.
    pub held: Vec<Bytes>,
    /// Over `llm.max_held_bytes`: its bytes were dropped, and it is denied.
    pub overflow: bool,
    pub done: bool,
    pub verdict: Option<Verdict>,
    /// Chat: a held chunk carried `delta.role`.
    pub role: bool,
    /// Chat: a custom tool call (free-text `input`, not JSON `arguments`).
    pub custom: bool,
}

/// One piece of output, in upstream order.
#[derive(Debug)]
pub enum Seg {
    /// Bytes that go out as they are.
    Emit(Bytes),
    /// Whatever the call's verdict makes of it.
    Call(usize),
    /// A terminal event, rewritten (or dropped) once everything is decided.
    Final(Bytes),
}

/// The output queue and the calls of one stream.
pub struct Queue {
    pub segs: VecDeque<Seg>,
    pub calls: Vec<Call>,
    held: usize,
    max_held: usize,
    /// Bytes of `Emit` and `Final` segments waiting behind an undecided call.
    queued: usize,
    /// Calls completed by the last event, to be decided.
    completed: Vec<usize>,
}

impl Queue {
    pub fn new(max_held: usize) -> Queue {
        Queue {
            segs: VecDeque::new(),
            calls: Vec::new(),
            held: 0,
            max_held,
            queued: 0,
            completed: Vec::new(),
        }
    }

    pub fn emit(&mut self, b: Bytes) {
        self.queued += b.len();
        self.segs.push_back(Seg::Emit(b));
    }

    pub fn fin(&mut self, b: Bytes) {
        self.queued += b.len();
        self.segs.push_back(Seg::Final(b));
    }

    /// A new call, placed in the output at this point.
    pub fn start(&mut self, call: Call) -> usize {
        let i = self.calls.len();
        self.calls.push(call);
        self.segs.push_back(Seg::Call(i));
        i
    }

    /// The open (not yet complete) call with this group and key.
    pub fn open(&self, group: u64, key: u64) -> Option<usize> {
        self.calls
            .iter()
            .rposition(|c| !c.done && c.group == group && c.key == key)
    }

    /// Every open call of `group`.
    pub fn open_in(&self, group: u64) -> Vec<usize> {
        (0..self.calls.len())
            .filter(|&i| !self.calls[i].done && self.calls[i].group == group)
            .collect()
    }

    /// Keep `bytes` (and `args`, the argument text they carry) with call `i`, within the
    /// stream's held-bytes bound; past it the call's bytes are dropped and it will be denied.
    pub fn hold(&mut self, i: usize, bytes: Bytes, args: &str) {
        let c = &mut self.calls[i];
        if c.overflow {
            return;
        }
        let add = bytes.len() + args.len();
        if self.held + add > self.max_held {
            c.overflow = true;
            let freed: usize = c.held.iter().map(Bytes::len).sum::<usize>() + c.args.len();
            self.held -= freed;
            c.held = Vec::new();
            c.args = String::new();
            return;
        }
        self.held += add;
        c.held.push(bytes);
        c.args.push_str(args);
    }

    /// Call `i` is complete: decide it.
    pub fn complete(&mut self, i: usize) {
        if !self.calls[i].done {
            self.calls[i].done = true;
            self.completed.push(i);
        }
    }

    /// The calls of `group` released as calls.
    pub fn allowed_in(calls: &[Call], group: u64) -> usize {
        calls
            .iter()
            .filter(|c| c.group == group && matches!(c.verdict, Some(Verdict::Allow)))
            .count()
    }

    fn free(&mut self, i: usize) {
        let c = &mut self.calls[i];
        let n: usize = c.held.iter().map(Bytes::len).sum::<usize>() + c.args.len();
        self.held = self.held.saturating_sub(n);
        c.held = Vec::new();
        c.args = String::new();
    }
}

/// What an event means for the stream as a whole.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The upstream's own error event went out: nothing more will come.
    Failed,
}

/// One API's streaming events.
pub trait Protocol: Send + Unpin + 'static {
    /// Read one upstream event into the queue. `Err` is a fault: not what this API sends.
    fn event(&mut self, f: Frame, q: &mut Queue) -> Result<Flow, String>;
    /// What a complete call proposes, for the Gate.
    fn proposed(&self, c: &Call) -> Proposed;
    /// The bytes a decided call becomes (its own, possibly renumbered, or a refusal).
    fn release(&mut self, calls: &[Call], i: usize) -> Vec<Bytes>;
    /// A terminal event made consistent with what was released; `None` drops it.
    fn finish(&mut self, raw: Bytes, calls: &[Call]) -> Option<Bytes>;
    /// The API's own error event.
    fn error(&mut self, code: &str, message: &str) -> Bytes;
    /// Token usage reported so far.
    fn usage(&self) -> Usage;
    /// The assistant text streamed so far (scanned when the response is decided).
    fn text(&self) -> &str;
}

/// Limits of one stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event: usize,
    pub max_held: usize,
    pub idle: Duration,
}

/// The synchronous part of one stream: events in, bytes out, calls to decide. The async
/// [`run`] drives it; tests drive it directly.
pub struct Relay<P: Protocol> {
    pub proto: P,
    split: Splitter,
    pub q: Queue,
    /// Why the stream ends early, if it does: (code, message) for the error event.
    fault: Option<(&'static str, String)>,
    /// The upstream's own error event went out.
    upstream_failed: bool,
}

impl<P: Protocol> Relay<P> {
    pub fn new(proto: P, limits: Limits) -> Relay<P> {
        Relay {
            proto,
            split: Splitter::new(limits.max_event),
            q: Queue::new(limits.max_held),
            fault: None,
            upstream_failed: false,
        }
    }

    /// Feed upstream bytes. `false`: the stream is over (a fault, or the upstream's error).
    pub fn feed(&mut self, data: &[u8]) -> bool {
        self.split.push(data);
        match read(&mut self.proto, &mut self.split, &mut self.q) {
            Ok(Flow::Continue) => true,
            Ok(Flow::Failed) => {
                self.upstream_failed = true;
                false
            }
            Err(f) => {
                self.fault = Some(f);
                false
            }
        }
    }

    /// The upstream broke off (`code`, `message` for the error event).
    pub fn fail(&mut self, code: &'static str, message: String) {
        self.fault.get_or_insert((code, message));
    }

    /// Calls completed since the last look: (call, what it proposes, over the held bound).
    pub fn completed(&mut self) -> Vec<(usize, Proposed, bool)> {
        std::mem::take(&mut self.q.completed)
            .into_iter()
            .map(|i| {
                let c = &self.q.calls[i];
                (i, self.proto.proposed(c), c.overflow)
            })
            .collect()
    }

    pub fn set(&mut self, i: usize, v: Verdict) {
        self.q.calls[i].verdict = Some(v);
    }

    /// The upstream is over: every call still open was cut off. They are returned to be
    /// recorded as refused; none of their bytes is released.
    pub fn end(&mut self) -> Vec<(usize, Proposed)> {
        if self.fault.is_none() && !self.upstream_failed && !self.split.rest().is_empty() {
            self.fault = Some((
                "upstream_incomplete",
                "the model provider's stream ended in the middle of an event".into(),
            ));
        }
        let cut: Vec<usize> = (0..self.q.calls.len())
            .filter(|&i| !self.q.calls[i].done)
            .collect();
        if !cut.is_empty() && self.fault.is_none() && !self.upstream_failed {
            self.fault = Some((
                "upstream_incomplete",
                "the model provider's stream ended before a tool call was complete; it was not released".into(),
            ));
        }
        cut.into_iter()
            .map(|i| {
                self.q.calls[i].done = true;
                (i, self.proto.proposed(&self.q.calls[i]))
            })
            .collect()
    }

    /// Output is piling up behind an undecided call (an ask waiting for its human): stop
    /// reading the upstream until it moves, so memory stays bounded (the provider is slowed by
    /// TCP flow control, not cut off).
    /// Only a complete call can be waited for: its verdict is on its way.
    pub fn backlogged(&self) -> bool {
        self.q.queued > self.q.max_held
            && self.q.calls.iter().any(|c| c.done && c.verdict.is_none())
    }

    /// Deny every call still without a verdict (its decision can no longer arrive).
    pub fn deny_undecided(&mut self) -> bool {
        let mut any = false;
        for c in &mut self.q.calls {
            if c.verdict.is_none() {
                c.verdict = Some(Verdict::Deny(
                    "\n[portcullis could not decide this tool call. The call was not made.]\n"
                        .into(),
                ));
                any = true;
            }
        }
        any
    }

    /// Some call still waits for its verdict.
    pub fn undecided(&self) -> bool {
        self.q.calls.iter().any(|c| c.verdict.is_none())
    }

    /// What can go out now. `finals`: `None` while the response is undecided, `Some(allowed)`
    /// after.
    pub fn ready(&mut self, finals: Option<bool>) -> Vec<Bytes> {
        let q = &mut self.q;
        let mut out = Vec::new();
        while let Some(seg) = q.segs.front() {
            match seg {
                Seg::Emit(_) => {
                    if let Some(Seg::Emit(b)) = q.segs.pop_front() {
                        q.queued -= b.len();
                        out.push(b);
                    }
                }
                Seg::Call(i) => {
                    let i = *i;
                    if q.calls[i].verdict.is_none() {
                        break;
                    }
                    q.segs.pop_front();
                    out.extend(self.proto.release(&q.calls, i));
                    q.free(i);
                }
                Seg::Final(_) => {
                    let Some(allowed) = finals else { break };
                    if q.calls.iter().any(|c| c.verdict.is_none()) {
                        break;
                    }
                    // A denied response ends with the error event instead.
                    if let Some(Seg::Final(b)) = q.segs.pop_front() {
                        q.queued -= b.len();
                        if allowed {
                            out.extend(self.proto.finish(b, &q.calls));
                        }
                    }
                }
            }
        }
        out
    }

    /// The last bytes, once the response itself is decided: the terminal events, or an error
    /// event when something failed or the response is denied (`why` says why).
    pub fn close(&mut self, allowed: bool, why: impl FnOnce() -> String) -> Vec<Bytes> {
        let clean = allowed && self.fault.is_none();
        let mut out = self.ready(Some(clean));
        // Clean, or the upstream's own error event already went out.
        if clean {
            return out;
        }
        let (code, message) = self
            .fault
            .take()
            .unwrap_or_else(|| ("response_denied", why()));
        tracing::warn!(llm.fault = code, %message, "stream ended with an error event");
        out.push(self.proto.error(code, &message));
        out
    }
}

/// Where a [`RelayBody`] is.
enum Phase {
    /// Reading the upstream.
    Reading,
    /// The upstream is over: cut calls are being refused, the rest decided.
    Draining,
    /// Every call decided; the response's own decision is on its way.
    Concluding(tokio::task::JoinHandle<Concluded>),
    Done,
}

/// The agent's response body: polled by the agent's connection, it reads the upstream body,
/// runs the [`Relay`] and yields what may go out. No task of its own sits between the two
/// connections, so a chunk costs no extra wake-up on its way through. Decisions run in tasks
/// of their own (never cancelled with the connection) and come back on a channel.
pub struct RelayBody<P: Protocol> {
    relay: Relay<P>,
    ex: Arc<Exchange>,
    upstream: Option<Incoming>,
    idle: Duration,
    /// Fires when the upstream has been silent for `idle` while being read.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer is not running (reading paused behind a pending decision).
    paused: bool,
    out: VecDeque<Bytes>,
    vtx: Option<mpsc::UnboundedSender<(usize, Verdict)>>,
    vrx: mpsc::UnboundedReceiver<(usize, Verdict)>,
    phase: Phase,
}

impl<P: Protocol> RelayBody<P> {
    pub fn new(proto: P, ex: Arc<Exchange>, upstream: Incoming, limits: Limits) -> RelayBody<P> {
        let (vtx, vrx) = mpsc::unbounded_channel();
        RelayBody {
            relay: Relay::new(proto, limits),
            ex,
            upstream: Some(upstream),
            idle: limits.idle,
            timer: Box::pin(tokio::time::sleep(limits.idle)),
            paused: false,
            out: VecDeque::new(),
            vtx: Some(vtx),
            vrx,
            phase: Phase::Reading,
        }
    }

    /// Start a decision for every newly completed call.
    fn decide(&mut self) {
        let Some(vtx) = &self.vtx else { return };
        for (i, p, overflow) in self.relay.completed() {
            let ex = self.ex.clone();
            let vtx = vtx.clone();
            tokio::spawn(async move {
                let v = if overflow {
                    ex.refuse(
                        &p,
                        "llm_held_bytes",
                        "the tool call is over llm.max_held_bytes and was not released",
                    )
                    .await
                } else {
                    ex.decide_call(&p).await
                };
                let _ = vtx.send((i, v));
            });
        }
    }

    /// The upstream is over: refuse (and record) what it cut off, decide the rest.
    fn end(&mut self) {
        self.upstream = None;
        let Some(vtx) = &self.vtx else { return };
        for (i, p) in self.relay.end() {
            let ex = self.ex.clone();
            let vtx = vtx.clone();
            tokio::spawn(async move {
                ex.refuse(
                    &p,
                    "llm_incomplete_tool_call",
                    "the model provider's stream ended before this tool call was complete",
                )
                .await;
                let _ = vtx.send((i, Verdict::Incomplete));
            });
        }
        self.decide();
        self.vtx = None;
        self.phase = Phase::Draining;
    }

    /// Read what the upstream has; `Ready` when something changed.
    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.relay.backlogged() {
            self.paused = true;
            return Poll::Pending;
        }
        if self.paused {
            self.paused = false;
            let deadline = tokio::time::Instant::now() + self.idle;
            self.timer.as_mut().reset(deadline);
        }
        let Some(body) = self.upstream.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                if let Ok(data) = frame.into_data()
                    && !self.relay.feed(&data)
                {
                    self.end();
                    return Poll::Ready(());
                }
                self.decide();
                Poll::Ready(())
            }
            Poll::Ready(None) => {
                self.end();
                Poll::Ready(())
            }
            Poll::Ready(Some(Err(e))) => {
                self.relay.fail(
                    "upstream_error",
                    format!("the model provider's stream broke: {e}"),
                );
                self.end();
                Poll::Ready(())
            }
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.relay.fail(
                        "upstream_timeout",
                        format!(
                            "the model provider sent nothing for {} ms",
                            self.idle.as_millis()
                        ),
                    );
                    self.end();
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }
}

impl<P: Protocol> hyper::body::Body for RelayBody<P> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
            }
            let mut progressed = false;
            loop {
                match this.vrx.poll_recv(cx) {
                    Poll::Ready(Some((i, v))) => this.relay.set(i, v),
                    // Every decision task is gone: one that died without a verdict denies.
                    Poll::Ready(None) => {
                        if this.relay.deny_undecided() {
                            progressed = true;
                        }
                        break;
                    }
                    Poll::Pending => break,
                }
                progressed = true;
            }
            match &mut this.phase {
                Phase::Reading => {
                    if this.poll_upstream(cx).is_ready() {
                        progressed = true;
                    }
                    this.out.extend(this.relay.ready(None));
                }
                Phase::Draining => {
                    this.out.extend(this.relay.ready(None));
                    if !this.relay.undecided() {
                        // The response itself: usage feeds the budgets; a deny (or an
                        // unwritable record) turns the clean end into an error.
                        let ex = this.ex.clone();
                        let usage = this.relay.proto.usage();
                        let text = this.relay.proto.text().to_string();
                        this.phase = Phase::Concluding(tokio::spawn(async move {
                            ex.decide_response(usage, &text).await
                        }));
                        progressed = true;
                    }
                }
                Phase::Concluding(handle) => {
                    let Poll::Ready(joined) = Pin::new(handle).poll(cx) else {
                        return Poll::Pending;
                    };
                    let (allowed, why) = match &joined {
                        Ok(c) => (
                            c.decision.outcome == Outcome::Allow,
                            super::refusal_reasons("the model's response", c),
                        ),
                        Err(e) => (false, format!("the response could not be decided: {e}")),
                    };
                    this.out.extend(this.relay.close(allowed, || why));
                    this.phase = Phase::Done;
                    continue;
                }
                Phase::Done => return Poll::Ready(None),
            }
            if this.out.is_empty() && !progressed {
                return Poll::Pending;
            }
        }
    }
}

impl<P: Protocol> Drop for RelayBody<P> {
    /// The agent went away early: decisions already started finish in their own tasks, and
    /// what was spent so far is still charged.
    fn drop(&mut self) {
        if matches!(self.phase, Phase::Reading | Phase::Draining)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let ex = self.ex.clone();
            let usage = self.relay.proto.usage();
            let text = self.relay.proto.text().to_string();
            rt.spawn(async move {
                ex.decide_response(usage, &text).await;
            });
        }
    }
}

/// Feed every whole event to the protocol.
fn read<P: Protocol>(
    proto: &mut P,
    split: &mut Splitter,
    q: &mut Queue,
) -> Result<Flow, (&'static str, String)> {
    loop {
        match split.next_frame() {
            Ok(None) => return Ok(Flow::Continue),
            Ok(Some(f)) => match proto.event(f, q) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Failed) => return Ok(Flow::Failed),
                Err(e) => {
                    return Err((
                        "upstream_malformed",
                        format!("the model provider sent a malformed event: {e}"),
                    ));
                }
            },
            Err(e) => {
                return Err((
                    "upstream_malformed",
                    format!("the model provider's stream: {e}"),
                ));
            }
        }
    }
}

/// Most streamed text kept for the response decision's scan (the scanners read at most the
/// first 1 MiB of a string too), so a long answer does not grow a stream's memory without end.
const MAX_TEXT: usize = 1 << 20;

/// Append `t` to the text kept for scanning, up to [`MAX_TEXT`] bytes (on a char boundary).
pub fn keep_text(text: &mut String, t: &str) {
    let room = MAX_TEXT.saturating_sub(text.len());
    if t.len() <= room {
        text.push_str(t);
    } else {
        let mut end = room;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(&t[..end]);
    }
}
