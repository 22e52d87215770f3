//! The forwarding engine: a thread with an epoll (mio) loop that forwards the bytes of many links
//! without waking Python per frame.
//!
//! A link is *adopted* after its handshake: the engine gets both sockets' descriptors (which stay
//! owned by the caller), the frame readers of both directions (their state moves in and back out)
//! and any bytes already read behind the handshakes. From then on it moves bytes as received and
//! feeds each chunk to the reader of its direction, which enforces the limits (message size,
//! control frames, masking) and peeks each message's OCPP-J envelope.
//!
//! The engine keeps the steady state only. Anything that ends a link — a close frame or a
//! protocol error in a chunk, end of file, a failed read or write, a release asked for by the
//! caller — *hands the link back*: the engine stops polling its descriptors and reports what the
//! caller needs to go on exactly where the engine stopped (`Handback`: the readers, a chunk read but
//! not forwarded, bytes fed but not yet written, the unanswered CALL ids, the charger's last
//! unanswered CALL). A chunk that holds a close frame or a protocol error is handed back unfed
//! and unforwarded, so the caller handles it as if it had read it itself.
//!
//! The caller hears from the engine in batches (`take`): the messages it asked for (CALLs of the
//! tracked actions and the answers to them; with `copy_charger`, every CALL and SEND of the
//! charger), hand-backs, and counters for metrics; a byte on the
//! notification socket (`notify_fd`) says a batch is waiting, once per batch. The engine paces
//! those signals (`Pacing`): reports wait until `window` has passed since the last `take`, and
//! counters alone until `counts_every` has, so a caller that only waits for the socket wakes at
//! most once per window however many links report, and never when nothing passes.
//!
//! Back-pressure: a chunk that cannot be written whole is kept (one chunk per direction at most)
//! and its source is not read until it is written, so a slow reader pauses its writer.
//! A panic while serving a link hands that link back as `Why::Panicked`; it never unwinds out of
//! the thread, and if the loop itself fails every link is handed back the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::ocppj::{CALL, CALLERROR, CALLRESULT, SEND};
use crate::ws::{self, FrameReader, Message, VecSink};

/// Side indices: the charger (a client of the proxy) and the upstream (its server).
pub const CHARGER: usize = 0;
pub const UPSTREAM: usize = 1;

/// Largest read; the same as the Python transports'.
const READ_SIZE: usize = 65536;
/// Reads of one side per readiness before other links get their turn.
const READS_PER_TURN: usize = 16;
/// Unanswered CALL ids remembered per direction (a peer may never answer).
const MAX_PENDING: usize = 32;
/// Tracked charger CALLs whose answers are still wanted.
const MAX_TRACKED: usize = 64;
/// Distinct actions counted by name per direction; others are counted as "".
const MAX_ACTIONS: usize = 256;
/// A chunk is fed to a copy of its reader's state first (to give it back unfed when it ends the
/// conversation); a message in progress larger than this is not copied per chunk: its link goes
/// back to the caller instead (`Why::Large`), so a message dribbled in tiny chunks costs no more
/// here than anywhere else.
const MAX_COPIED: usize = 16 * 1024;
/// Bytes of tracked messages waiting for the caller beyond which no link is read until it takes
/// them (a caller that falls behind slows the chargers down instead of growing this queue).
const MAX_WAITING: usize = 32 << 20;
const WAKER: Token = Token(usize::MAX);

fn other(side: usize) -> usize {
    1 - side
}

/// What the engine needs to forward a link.
pub struct Adopt {
    pub id: u64,
    /// Descriptors of the charger's and the upstream's sockets, non-blocking; the caller keeps
    /// them open until the link is handed back.
    pub fds: [RawFd; 2],
    /// Readers of what each side sends.
    pub readers: [FrameReader; 2],
    /// Bytes read from each side but not yet fed or forwarded (go first).
    pub trailing: [Vec<u8>; 2],
    /// Ids of each side's CALLs not answered yet.
    pub pending: [Vec<String>; 2],
    /// Actions of the charger's CALLs reported (with their answers) to the caller.
    pub tracked: Arc<HashSet<String>>,
    /// Keep the charger's last unanswered CALL for the hand-back.
    pub keep_last_call: bool,
    /// Report every CALL and SEND the charger sends, whatever its action, without the answers
    /// (the copies a charger's mirrors get).
    pub copy_charger: bool,
    /// Monotonic nanoseconds (see `Engine::now_ns`) when bytes last passed, either way.
    pub activity: Arc<AtomicU64>,
}

/// Why a link was handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The caller asked (`Engine::release`), or the engine stopped.
    Released,
    /// A chunk from this side holds a close frame or a protocol error (in `trailing`).
    Message(usize),
    /// This side hung up.
    Eof(usize),
    /// Reading this side failed (errno).
    ReadFailed(usize, i32),
    /// Writing this side failed (errno).
    WriteFailed(usize, i32),
    /// A message in progress from this side is larger than `MAX_COPIED` (the chunk is in
    /// `trailing`, unfed): the caller forwards the rest of the link.
    Large(usize),
    /// The engine failed while serving the link.
    Panicked,
}

/// A link given back, with everything needed to go on where the engine stopped.
pub struct Handback {
    pub id: u64,
    pub why: Why,
    pub readers: [FrameReader; 2],
    /// Bytes read from each side and neither fed nor forwarded.
    pub trailing: [Vec<u8>; 2],
    /// Bytes fed from the other side and not yet written to this side.
    pub unsent: [Vec<u8>; 2],
    pub pending: [Vec<String>; 2],
    /// The charger's last CALL (the whole message) while unanswered, when kept.
    pub last_call: Option<Vec<u8>>,
}

/// What the engine reports, in order.
pub enum Report {
    /// Tracked messages `side` sent that were forwarded (at: seconds since the epoch).
    Passed {
        id: u64,
        side: usize,
        at: f64,
        messages: Vec<Message<Vec<u8>>>,
    },
    Ended(Box<Handback>),
}

/// Counts for the metrics of one direction (named by the side that sent), since the last `take`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub bytes: u64,
    /// Messages by (opcode, OCPP message type).
    pub frames: HashMap<(u8, u8), u64>,
    /// CALLs by action ("" for actions beyond `MAX_ACTIONS` distinct ones).
    pub calls: HashMap<String, u64>,
    /// Chunk forwarding time: counts per bucket (upper bounds as given, cumulative not), sum.
    pub buckets: Vec<u64>,
    pub seconds: f64,
}

impl Counters {
    pub fn new(buckets: usize) -> Counters {
        Counters {
            buckets: vec![0; buckets],
            ..Counters::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes == 0 && self.frames.values().all(|&n| n == 0)
    }
}

/// How often the caller is signalled at most (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Least time from one `take` to the signal of the next batch of reports.
    pub window: Duration,
    /// Least time from one `take` to a signal for counters alone.
    pub counts_every: Duration,
}

enum Command {
    Adopt(Box<Adopt>),
    Release(u64),
    Stop,
}

struct Outgoing {
    reports: Vec<Report>,
    counters: [Counters; 2],
    signalled: bool,
    /// Bytes of the tracked messages in `reports`.
    waiting: usize,
    /// When the caller last took (None: never).
    taken_at: Option<Instant>,
}

impl Outgoing {
    /// When the caller should be signalled about what waits here; None: not (again).
    fn signal_due(&self, pacing: Pacing) -> Option<Instant> {
        let after = |pause: Duration| self.taken_at.map_or_else(Instant::now, |t| t + pause);
        if self.signalled {
            None
        } else if self.waiting >= MAX_WAITING {
            Some(Instant::now()) // links stay unread until it takes: no pause
        } else if !self.reports.is_empty() {
            Some(after(pacing.window))
        } else if self.counters.iter().any(|c| !c.is_empty()) {
            Some(after(pacing.counts_every))
        } else {
            None
        }
    }
}

struct Commands {
    queue: Vec<Command>,
    /// The loop has ended: nothing is adopted any more.
    ended: bool,
}

struct Shared {
    commands: Mutex<Commands>,
    outgoing: Mutex<Outgoing>,
    notify: UnixStream,
    epoch: Instant,
    bounds: Vec<f64>,
    pacing: Pacing,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic never happens while these are held; recover the data anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle of an engine thread; dropping it stops the thread (links are handed back).
pub struct Engine {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    notified: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the thread. `bounds`: upper bounds (seconds) of the forwarding-time buckets.
    pub fn start(bounds: Vec<f64>, pacing: Pacing) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (notified, notify) = UnixStream::pair()?;
        notified.set_nonblocking(true)?;
        notify.set_nonblocking(true)?;
        let empty = Counters::new(bounds.len());
        let shared = Arc::new(Shared {
            commands: Mutex::new(Commands {
                queue: Vec::new(),
                ended: false,
            }),
            outgoing: Mutex::new(Outgoing {
                reports: Vec::new(),
                counters: [empty.clone(), empty],
                signalled: false,
                waiting: 0,
                taken_at: None,
            }),
            notify,
            epoch: Instant::now(),
            bounds,
            pacing,
        });
        let loop_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("forwarding".into())
            .spawn(move || run(poll, loop_shared))?;
        Ok(Engine {
            shared,
            waker,
            notified,
            thread: Some(thread),
        })
    }

    /// Queues a command for the loop; gives it back when the loop has ended.
    fn command(&self, command: Command) -> Result<(), Command> {
        let mut commands = lock(&self.shared.commands);
        if commands.ended {
            return Err(command);
        }
        commands.queue.push(command);
        drop(commands);
        // A failed wake can only mean the loop is ending; it drains the queue as it ends.
        let _ = self.waker.wake();
        Ok(())
    }

    /// Starts forwarding a link; see `Adopt`. Gives it back when the loop has ended (it would
    /// never be served).
    pub fn adopt(&self, adopt: Adopt) -> Result<(), Box<Adopt>> {
        match self.command(Command::Adopt(Box::new(adopt))) {
            Err(Command::Adopt(a)) => Err(a),
            _ => Ok(()),
        }
    }

    /// False once the loop has ended (its links are, or are being, handed back).
    pub fn running(&self) -> bool {
        !lock(&self.shared.commands).ended
    }

    /// Asks for a link back (`Why::Released`); nothing happens if it was handed back already.
    pub fn release(&self, id: u64) {
        // Once the loop has ended every link is handed back anyway.
        let _ = self.command(Command::Release(id));
    }

    /// Readable when a batch is waiting.
    pub fn notify_fd(&self) -> RawFd {
        self.notified.as_raw_fd()
    }

    /// The engine's monotonic clock (for `Adopt::activity`).
    pub fn now_ns(&self) -> u64 {
        now_ns(self.shared.epoch)
    }

    /// The waiting reports, in order, and the counters since the last call.
    pub fn take(&self) -> (Vec<Report>, [Counters; 2]) {
        let mut out = lock(&self.shared.outgoing);
        let mut byte = [0u8; 64];
        while matches!((&self.notified).read(&mut byte), Ok(n) if n > 0) {}
        out.signalled = false;
        out.taken_at = Some(Instant::now());
        if std::mem::take(&mut out.waiting) >= MAX_WAITING {
            let _ = self.waker.wake(); // links were left unread meanwhile: read them again
        }
        let fresh = Counters::new(self.shared.bounds.len());
        let counters = std::mem::replace(&mut out.counters, [fresh.clone(), fresh]);
        (std::mem::take(&mut out.reports), counters)
    }
}

impl Engine {
    /// Stops the thread and returns what it reported last (every link handed back).
    pub fn stop(mut self) -> (Vec<Report>, [Counters; 2]) {
        self.join();
        self.take()
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.command(Command::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.join();
    }
}

fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A descriptor used as a file without owning it.
fn borrowed(fd: RawFd) -> ManuallyDrop<File> {
    // SAFETY: the caller keeps `fd` open while the link is adopted (the `Adopt` contract), and
    // `ManuallyDrop` never closes it; reads and writes on a socket descriptor are sound.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// A chunk fed and bound for a side, not yet written whole.
struct Unsent {
    data: Vec<u8>,
    written: usize,
    since: Instant,
}

struct Link {
    id: u64,
    fds: [RawFd; 2],
    readers: [FrameReader; 2],
    trailing: [Vec<u8>; 2],
    unsent: [Option<Unsent>; 2],
    pending: [VecDeque<String>; 2],
    tracked: Arc<HashSet<String>>,
    tracked_calls: VecDeque<String>,
    keep_last_call: bool,
    copy_charger: bool,
    last_call: Option<(String, Vec<u8>)>,
    activity: Arc<AtomicU64>,
    /// The peer hung up or failed (epoll said so): each read of it goes on to the end.
    hung_up: [bool; 2],
}

impl Link {
    fn new(a: Adopt) -> Link {
        let Adopt {
            id,
            fds,
            readers,
            trailing,
            pending,
            tracked,
            keep_last_call,
            copy_charger,
            activity,
        } = a;
        let [p0, p1] = pending;
        Link {
            id,
            fds,
            readers,
            trailing,
            unsent: [None, None],
            pending: [p0.into(), p1.into()],
            tracked,
            tracked_calls: VecDeque::new(),
            keep_last_call,
            copy_charger,
            last_call: None,
            activity,
            hung_up: [false, false],
        }
    }

    fn handback(self, why: Why) -> Handback {
        let [u0, u1] = self.unsent;
        let rest = |u: Option<Unsent>| u.map_or_else(Vec::new, |u| u.data[u.written..].to_vec());
        let [p0, p1] = self.pending;
        Handback {
            id: self.id,
            why,
            readers: self.readers,
            trailing: self.trailing,
            unsent: [rest(u0), rest(u1)],
            pending: [p0.into(), p1.into()],
            last_call: self.last_call.map(|(_, data)| data),
        }
    }
}

/// The loop's state: links by slot (token = slot * 2 + side).
struct State {
    poll: Poll,
    shared: Arc<Shared>,
    links: Vec<Option<Link>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    /// Sides that used up their reads for a turn and may have more.
    ready: Vec<(usize, usize)>,
    /// Sides not read while the caller has `MAX_WAITING` bytes to take (read after its `take`).
    unread: Vec<(usize, usize)>,
    /// Bytes of tracked messages handed over and not yet taken (as last seen), and this turn's.
    waiting: usize,
    turn_bytes: usize,
    reports: Vec<Report>,
    counters: [Counters; 2],
    buf: Vec<u8>,
    stopping: bool,
    /// A signal held back by the pacing is due then (the poll wakes for it).
    signal_at: Option<Instant>,
}

fn run(poll: Poll, shared: Arc<Shared>) {
    let counters = Counters::new(shared.bounds.len());
    let mut state = State {
        poll,
        shared,
        links: Vec::new(),
        free: Vec::new(),
        by_id: HashMap::new(),
        ready: Vec::new(),
        unread: Vec::new(),
        waiting: 0,
        turn_bytes: 0,
        reports: Vec::new(),
        counters: [counters.clone(), counters],
        buf: vec![0; READ_SIZE],
        stopping: false,
        signal_at: None,
    };
    let mut events = Events::with_capacity(1024);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        while !state.stopping {
            state.turn(&mut events);
        }
    }));
    let why = if outcome.is_ok() {
        Why::Released
    } else {
        Why::Panicked
    };
    // Whatever ended the loop, every link goes back to its owner.
    for slot in 0..state.links.len() {
        state.end(slot, why);
    }
    // Links adopted meanwhile are given back unserved, and no more are taken.
    let queued = {
        let mut commands = lock(&state.shared.commands);
        commands.ended = true;
        std::mem::take(&mut commands.queue)
    };
    for command in queued {
        if let Command::Adopt(a) = command {
            state
                .reports
                .push(Report::Ended(Box::new(Link::new(*a).handback(why))));
        }
    }
    state.signal_at = Some(Instant::now()); // the caller hears of the hand-backs at once
    state.publish();
}

impl State {
    fn turn(&mut self, events: &mut Events) {
        let timeout = if !self.ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            self.signal_at
                .map(|at| at.saturating_duration_since(Instant::now()))
        };
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                panic!("poll failed: {e}");
            }
        }
        for event in events.iter() {
            let token = event.token();
            if token == WAKER {
                self.commands();
                continue;
            }
            let (slot, side) = (token.0 / 2, token.0 % 2);
            if event.is_read_closed() || event.is_error() {
                if let Some(Some(link)) = self.links.get_mut(slot) {
                    link.hung_up[side] = true; // read on to the end, whenever it is read next
                }
            }
            if event.is_writable() || event.is_error() || event.is_write_closed() {
                self.guarded(slot, |s| s.flush(slot, side));
            }
            if event.is_readable() || event.is_error() || event.is_read_closed() {
                self.guarded(slot, |s| s.pump(slot, side));
            }
        }
        for (slot, side) in std::mem::take(&mut self.ready) {
            self.guarded(slot, |s| s.pump(slot, side));
        }
        self.publish();
    }

    /// Runs `work` for a link; a panic hands the link back as `Why::Panicked`.
    fn guarded(&mut self, slot: usize, work: impl FnOnce(&mut State) -> Result<(), Why>) {
        if self.links.get(slot).is_none_or(|l| l.is_none()) {
            return; // handed back earlier in this turn
        }
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => self.end(slot, why),
            Err(_) => self.end(slot, Why::Panicked),
        }
    }

    fn commands(&mut self) {
        // A wake-up may also mean the caller took a backlog: read what was left unread.
        self.waiting = lock(&self.shared.outgoing).waiting;
        self.ready.append(&mut self.unread);
        let commands = std::mem::take(&mut lock(&self.shared.commands).queue);
        for command in commands {
            match command {
                Command::Adopt(a) => self.adopt(*a),
                Command::Release(id) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.end(slot, Why::Released);
                    }
                }
                Command::Stop => self.stopping = true,
            }
        }
    }

    fn adopt(&mut self, a: Adopt) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.links.push(None);
            self.links.len() - 1
        });
        let link = Link::new(a);
        let registry = self.poll.registry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let mut registered = 0;
        for side in [CHARGER, UPSTREAM] {
            let token = Token(slot * 2 + side);
            if registry
                .register(&mut SourceFd(&link.fds[side]), token, interest)
                .is_err()
            {
                break;
            }
            registered += 1;
        }
        self.by_id.insert(link.id, slot);
        self.links[slot] = Some(link);
        if registered < 2 {
            self.end(slot, Why::Released);
            return;
        }
        // Bytes read behind the handshakes go first; then whatever is already waiting.
        for side in [CHARGER, UPSTREAM] {
            self.guarded(slot, |s| {
                let link = s.links[slot].as_mut().expect("adopted");
                let chunk = std::mem::take(&mut link.trailing[side]);
                if chunk.is_empty() {
                    Ok(())
                } else {
                    s.forward(slot, side, &chunk, Instant::now())
                }
            });
        }
        for side in [CHARGER, UPSTREAM] {
            self.guarded(slot, |s| s.pump(slot, side));
        }
    }

    /// Stops serving a link and reports its hand-back.
    fn end(&mut self, slot: usize, why: Why) {
        let Some(link) = self.links.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let registry = self.poll.registry();
        for fd in link.fds {
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
        self.by_id.remove(&link.id);
        self.free.push(slot);
        self.reports
            .push(Report::Ended(Box::new(link.handback(why))));
    }

    /// Reads `side` and forwards until it would block, its output is held up, or its turn ends.
    fn pump(&mut self, slot: usize, side: usize) -> Result<(), Why> {
        let fd = self.links[slot].as_ref().expect("adopted").fds[side];
        let mut file = borrowed(fd);
        let mut buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            buf = vec![0; READ_SIZE]; // lost to a panic while it was lent out
        }
        if self.waiting + self.turn_bytes >= MAX_WAITING {
            self.unread.push((slot, side));
            self.buf = buf;
            return Ok(());
        }
        let result = (|| {
            for _ in 0..READS_PER_TURN {
                if self.links[slot].as_ref().expect("adopted").unsent[other(side)].is_some() {
                    return Ok(()); // resumed when that chunk is written (`flush`)
                }
                match file.read(&mut buf) {
                    Ok(0) => return Err(Why::Eof(side)),
                    Ok(n) => {
                        self.forward(slot, side, &buf[..n], Instant::now())?;
                        let link = self.links[slot].as_ref().expect("adopted");
                        if n < buf.len() && !link.hung_up[side] {
                            // A short read emptied the socket: its next bytes raise a new edge.
                            // (Not after a hang-up was signalled: its end of file raises none.)
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(Why::ReadFailed(side, e.raw_os_error().unwrap_or(0))),
                }
            }
            self.ready.push((slot, side));
            Ok(())
        })();
        self.buf = buf;
        result
    }

    /// Feeds a chunk `side` sent to its reader and writes it to the other side.
    fn forward(
        &mut self,
        slot: usize,
        side: usize,
        chunk: &[u8],
        started: Instant,
    ) -> Result<(), Why> {
        #[cfg(test)]
        if chunk == tests::PANIC {
            panic!("a failure while serving a link (tests only)");
        }
        let dst = other(side);
        let link = self.links[slot].as_mut().expect("adopted");
        if link.readers[side].buffered() > MAX_COPIED {
            link.trailing[side] = chunk.to_vec();
            return Err(Why::Large(side));
        }
        let before = link.readers[side].clone();
        let mut sink = VecSink::default();
        let fed = link.readers[side].feed(chunk, &mut sink);
        if fed.is_err() || sink.messages.iter().any(|m| m.opcode == ws::CLOSE) {
            // The caller handles the end of the conversation itself, from this chunk on.
            link.readers[side] = before;
            link.trailing[side] = chunk.to_vec();
            return Err(Why::Message(side));
        }
        let mut out = borrowed(link.fds[dst]);
        let written = match write_some(&mut out, chunk) {
            Ok(n) => n,
            Err(e) => {
                link.readers[side] = before;
                link.trailing[side] = chunk.to_vec();
                return Err(Why::WriteFailed(dst, e.raw_os_error().unwrap_or(0)));
            }
        };
        let len = chunk.len();
        if written < len {
            link.unsent[dst] = Some(Unsent {
                data: chunk[written..].to_vec(),
                written: 0,
                since: started,
            });
        } else {
            observe(&mut self.counters[side], &self.shared.bounds, started);
        }
        link.activity
            .store(now_ns(self.shared.epoch), Ordering::Relaxed);
        self.passed(slot, side, len, sink.messages);
        Ok(())
    }

    /// Writes what is held for `side`; then reads on from the other side.
    fn flush(&mut self, slot: usize, side: usize) -> Result<(), Why> {
        let link = self.links[slot].as_mut().expect("adopted");
        let Some(unsent) = link.unsent[side].as_mut() else {
            return Ok(());
        };
        let mut out = borrowed(link.fds[side]);
        match write_some(&mut out, &unsent.data[unsent.written..]) {
            Ok(n) => unsent.written += n,
            Err(e) => return Err(Why::WriteFailed(side, e.raw_os_error().unwrap_or(0))),
        }
        if unsent.written < unsent.data.len() {
            return Ok(());
        }
        let since = unsent.since;
        link.unsent[side] = None;
        link.activity
            .store(now_ns(self.shared.epoch), Ordering::Relaxed);
        observe(&mut self.counters[other(side)], &self.shared.bounds, since);
        self.pump(slot, other(side))
    }

    /// Accounts for the messages of a forwarded chunk: counters, pending CALLs, tracked messages.
    fn passed(&mut self, slot: usize, side: usize, len: usize, messages: Vec<Message<Vec<u8>>>) {
        let counters = &mut self.counters[side];
        counters.bytes += len as u64;
        let link = self.links[slot].as_mut().expect("adopted");
        let mut tracked = Vec::new();
        for message in messages {
            let env = &message.envelope;
            *counters
                .frames
                .entry((message.opcode, env.message_type))
                .or_insert(0) += 1;
            let text = std::str::from_utf8(&message.data).unwrap_or("");
            let uid = env.unique_id.as_ref().map_or("", |s| s.as_str(text));
            let report = match env.message_type {
                CALL => {
                    let action = env.action.as_ref().map_or("", |s| s.as_str(text));
                    count_call(&mut counters.calls, action);
                    remember(&mut link.pending[side], uid, MAX_PENDING);
                    if side == CHARGER {
                        link.tracked_calls.retain(|id| id != uid);
                        if link.keep_last_call {
                            link.last_call = Some((uid.to_owned(), message.data.clone()));
                        }
                        let wanted = link.tracked.contains(action);
                        if wanted {
                            remember(&mut link.tracked_calls, uid, MAX_TRACKED);
                        }
                        wanted || link.copy_charger
                    } else {
                        false
                    }
                }
                CALLRESULT | CALLERROR => {
                    link.pending[other(side)].retain(|id| id != uid);
                    if side == UPSTREAM {
                        if link.last_call.as_ref().is_some_and(|(id, _)| id == uid) {
                            link.last_call = None;
                        }
                        let before = link.tracked_calls.len();
                        link.tracked_calls.retain(|id| id != uid);
                        link.tracked_calls.len() != before
                    } else {
                        false
                    }
                }
                SEND => side == CHARGER && link.copy_charger,
                _ => false,
            };
            if report {
                tracked.push(message);
            }
        }
        if !tracked.is_empty() {
            self.turn_bytes += tracked.iter().map(|m| m.data.len()).sum::<usize>();
            self.reports.push(Report::Passed {
                id: link.id,
                side,
                at: wall_clock(),
                messages: tracked,
            });
        }
    }

    /// Hands the reports and counters of this turn over and signals the caller once per batch,
    /// when the pacing lets it (`signal_at` holds a signal back until then; a `signal_at` already
    /// due signals whatever waits).
    fn publish(&mut self) {
        let counters_waiting = self.counters.iter().any(|c| !c.is_empty());
        if self.reports.is_empty() && !counters_waiting && self.signal_at.is_none() {
            return;
        }
        let forced = self.signal_at.is_some_and(|at| at <= Instant::now());
        let mut out = lock(&self.shared.outgoing);
        out.reports.append(&mut self.reports);
        out.waiting += std::mem::take(&mut self.turn_bytes);
        self.waiting = out.waiting;
        for (total, these) in out.counters.iter_mut().zip(self.counters.iter_mut()) {
            merge(total, these);
        }
        let due = out.signal_due(self.shared.pacing);
        self.signal_at = due.filter(|&at| !forced && at > Instant::now());
        if due.is_some() && self.signal_at.is_none() {
            out.signalled = true;
            // Full means a signal is already waiting; anything else means nobody listens.
            let _ = (&self.shared.notify).write(&[1]);
        }
    }
}

fn write_some(out: &mut File, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match out.write(&data[written..]) {
            Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // What went out stays out; the error comes back at the next write.
            Err(_) if written > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

fn remember(ids: &mut VecDeque<String>, id: &str, bound: usize) {
    ids.retain(|known| known != id);
    if ids.len() >= bound {
        ids.pop_front();
    }
    ids.push_back(id.to_owned());
}

fn count_call(calls: &mut HashMap<String, u64>, action: &str) {
    if let Some(n) = calls.get_mut(action) {
        *n += 1;
    } else if calls.len() < MAX_ACTIONS {
        calls.insert(action.to_owned(), 1);
    } else {
        *calls.entry(String::new()).or_insert(0) += 1;
    }
}

fn observe(counters: &mut Counters, bounds: &[f64], since: Instant) {
    let seconds = since.elapsed().as_secs_f64();
    counters.seconds += seconds;
    let bucket = bounds
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(bounds.len().saturating_sub(1));
    if let Some(n) = counters.buckets.get_mut(bucket) {
        *n += 1;
    }
}

/// Adds `these` to `total` and zeroes them, keeping their keys (no allocation per turn).
fn merge(total: &mut Counters, these: &mut Counters) {
    total.bytes += std::mem::take(&mut these.bytes);
    for (key, n) in these.frames.iter_mut().filter(|(_, n)| **n > 0) {
        *total.frames.entry(*key).or_insert(0) += std::mem::take(n);
    }
    for (action, n) in these.calls.iter_mut().filter(|(_, n)| **n > 0) {
        let n = std::mem::take(n);
        match total.calls.get_mut(action.as_str()) {
            Some(t) => *t += n,
            // `these` holds at most MAX_ACTIONS names, so `total` does too
            None => {
                total.calls.insert(action.clone(), n);
            }
        }
    }
    for (t, n) in total.buckets.iter_mut().zip(these.buckets.iter_mut()) {
        *t += std::mem::take(n);
    }
    total.seconds += std::mem::take(&mut these.seconds);
}

#[cfg(test)]
mod tests;
