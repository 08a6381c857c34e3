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
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::sse::{Frame, Splitter};
use super::{Exchange, Proposed, Verdict};
use crate::action::{Outcome, Usage};

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
            completed: Vec::new(),
        }
    }

    pub fn emit(&mut self, b: Bytes) {
        self.segs.push_back(Seg::Emit(b));
    }

    pub fn fin(&mut self, b: Bytes) {
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
pub trait Protocol: Send + 'static {
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

/// Relay `body` to `tx` through `proto`, deciding every call on the way.
pub async fn run<P: Protocol>(
    mut proto: P,
    ex: Arc<Exchange>,
    mut body: Incoming,
    limits: Limits,
    tx: mpsc::Sender<Bytes>,
) {
    let mut split = Splitter::new(limits.max_event);
    let mut q = Queue::new(limits.max_held);
    let (vtx, mut vrx) = mpsc::unbounded_channel::<(usize, Verdict)>();
    // Why the stream ends early, if it does: (code, message) for the error event.
    let mut fault: Option<(&'static str, String)> = None;
    let mut upstream_failed = false;
    let mut open = true;
    while open {
        tokio::select! {
            biased;
            Some((i, v)) = vrx.recv() => q.calls[i].verdict = Some(v),
            next = tokio::time::timeout(limits.idle, body.frame()) => match next {
                Err(_) => {
                    fault = Some(("upstream_timeout", format!(
                        "the model provider sent nothing for {} ms", limits.idle.as_millis())));
                    open = false;
                }
                Ok(None) => open = false,
                Ok(Some(Err(e))) => {
                    fault = Some(("upstream_error", format!("the model provider's stream broke: {e}")));
                    open = false;
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        split.push(&data);
                        match read(&mut proto, &mut split, &mut q) {
                            Ok(Flow::Continue) => {}
                            Ok(Flow::Failed) => { upstream_failed = true; open = false; }
                            Err(f) => { fault = Some(f); open = false; }
                        }
                    }
                }
            }
        }
        decide(&proto, &ex, &mut q, &vtx);
        if flush(&mut proto, &mut q, &tx, None).await.is_err() {
            // The agent went away; decisions already started finish in their own tasks.
            return;
        }
    }
    if fault.is_none() && !upstream_failed && !split.rest().is_empty() {
        fault = Some((
            "upstream_incomplete",
            "the model provider's stream ended in the middle of an event".into(),
        ));
    }
    // Whatever call is still open was cut off: none of it is released, and it is recorded.
    let cut: Vec<usize> = (0..q.calls.len()).filter(|&i| !q.calls[i].done).collect();
    for &i in &cut {
        q.calls[i].done = true;
        let p = proto.proposed(&q.calls[i]);
        let ex = ex.clone();
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
    if !cut.is_empty() && fault.is_none() && !upstream_failed {
        fault = Some((
            "upstream_incomplete",
            "the model provider's stream ended before a tool call was complete; it was not released".into(),
        ));
    }
    decide(&proto, &ex, &mut q, &vtx);
    drop(vtx);
    while q.calls.iter().any(|c| c.verdict.is_none()) {
        match vrx.recv().await {
            Some((i, v)) => q.calls[i].verdict = Some(v),
            None => break,
        }
        if flush(&mut proto, &mut q, &tx, None).await.is_err() {
            return;
        }
    }
    // The response itself: usage feeds the budgets; a deny (or an unwritable record) turns
    // the clean end into an error.
    let concluded = ex.decide_response(proto.usage(), proto.text()).await;
    let ok = concluded.decision.outcome == Outcome::Allow;
    if ok && fault.is_none() {
        let _ = flush(&mut proto, &mut q, &tx, Some(true)).await;
        return;
    }
    let _ = flush(&mut proto, &mut q, &tx, Some(false)).await;
    if upstream_failed && ok {
        return;
    }
    let (code, message) = fault.unwrap_or_else(|| {
        (
            "response_denied",
            super::refusal_reasons("the model's response", &concluded),
        )
    });
    tracing::warn!(llm.fault = code, %message, "stream ended with an error event");
    let _ = tx.send(proto.error(code, &message)).await;
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

/// Start a decision for every newly completed call.
fn decide<P: Protocol>(
    proto: &P,
    ex: &Arc<Exchange>,
    q: &mut Queue,
    vtx: &mpsc::UnboundedSender<(usize, Verdict)>,
) {
    for i in std::mem::take(&mut q.completed) {
        let c = &q.calls[i];
        let p = proto.proposed(c);
        let overflow = c.overflow;
        let ex = ex.clone();
        let vtx = vtx.clone();
        // Its own task: the record settles even if the agent goes away meanwhile.
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

/// Send what is ready. `finals`: `None` while the response is undecided, `Some(allowed)` after.
async fn flush<P: Protocol>(
    proto: &mut P,
    q: &mut Queue,
    tx: &mpsc::Sender<Bytes>,
    finals: Option<bool>,
) -> Result<(), ()> {
    while let Some(seg) = q.segs.front() {
        let out = match seg {
            Seg::Emit(_) => match q.segs.pop_front() {
                Some(Seg::Emit(b)) => vec![b],
                _ => Vec::new(),
            },
            Seg::Call(i) => {
                let i = *i;
                if q.calls[i].verdict.is_none() {
                    break;
                }
                q.segs.pop_front();
                let out = proto.release(&q.calls, i);
                q.free(i);
                out
            }
            Seg::Final(_) => {
                let Some(allowed) = finals else { break };
                if q.calls.iter().any(|c| c.verdict.is_none()) {
                    break;
                }
                match q.segs.pop_front() {
                    Some(Seg::Final(b)) if allowed => {
                        proto.finish(b, &q.calls).into_iter().collect()
                    }
                    // A denied response ends with the error event instead.
                    _ => Vec::new(),
                }
            }
        };
        for b in out {
            tx.send(b).await.map_err(|_| ())?;
        }
    }
    Ok(())
}
