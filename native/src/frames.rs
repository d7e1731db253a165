//! The streaming producer's frame loop: reads the replication connection's CopyData frames
//! through libpq itself (waiting on its socket too) and handles, without Python, the ones
//! that make up a busy stream: Begin, Commit, keepalives, and the row messages stream.rs
//! encodes. Python gets back a buffer of
//! encoded Kafka records to produce, and the first frame this loop does not handle (a
//! keepalive, a Relation, a row of a table it has no plan for, a value stream.rs refuses...),
//! which it decodes on its own path as before (producers/postgres/native_loop.py).
//!
//! Per transaction it keeps what ChangeBuilder keeps (xid, commit time, final LSN, events
//! seen, how far events were handed out) in `HwLoopState`, which Python reads and writes
//! around each call, so either side can take the next frame. A Begin of a transaction whose
//! events were handed out before a reconnect is Python's: it skips the repeated ones.

use std::collections::HashMap;
use std::os::raw::{c_char, c_int, c_void};
use std::time::{Duration, Instant};

use crate::stream::{encode_change, Position, StreamPlan};

/// libpq's `PQgetCopyData` and `PQfreemem`, from the library the connection belongs to.
type GetCopyData = unsafe extern "C" fn(*mut c_void, *mut *mut c_char, c_int) -> c_int;
type FreeMem = unsafe extern "C" fn(*mut c_void);
/// libpq's `PQconsumeInput`.
type ConsumeInput = unsafe extern "C" fn(*mut c_void) -> c_int;

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

const POLLIN: i16 = 1; // the same on Linux and the BSDs

extern "C" {
    // POSIX poll(2) (not ppoll, which macOS lacks); `nfds_t` is at least 32 bits everywhere.
    fn poll(fds: *mut PollFd, nfds: std::os::raw::c_ulong, timeout_ms: c_int) -> c_int;
}

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const UNIX_TO_PG_US: i64 = 946_684_800_000_000;
/// XLogData's header: tag, WAL start, WAL end, send time.
const XLOG_HEADER: usize = 25;

/// Why `hw_loop_run` returned.
pub const NEED_INPUT: i32 = 0;
pub const FRAME: i32 = 1;
pub const FULL: i32 = 2;
pub const COMMITTED: i32 = 3;
pub const ENDED: i32 = 4;
pub const BROKEN: i32 = 5;
/// A keepalive asked for a reply.
pub const REPLY: i32 = 6;

/// Shared with Python (ctypes): the open transaction and hand-out position both ways, the
/// rest written by the loop.
#[repr(C)]
pub struct HwLoopState {
    pub in_tx: i32,
    /// In: return after the next commit (Python has work due between transactions).
    pub stop_at_commit: i32,
    pub xid: i64,
    pub final_lsn: i64,
    pub ts_ms: i64,
    pub seen: i64,
    pub handed_lsn: i64,
    /// -1: all of `handed_lsn`'s events.
    pub handed_count: i64,
    /// The highest end LSN of a commit this call handled (0: none).
    pub committed: i64,
    /// The highest WAL start of a frame this call read.
    pub wal_start: i64,
    /// The highest WAL end a keepalive this call read named (0: none).
    pub server_end: i64,
    pub records: i64,
    pub out_ptr: *const u8,
    pub out_len: usize,
    pub frame_ptr: *const u8,
    pub frame_len: usize,
}

impl HwLoopState {
    pub fn new() -> Self {
        HwLoopState {
            in_tx: 0,
            stop_at_commit: 0,
            xid: 0,
            final_lsn: 0,
            ts_ms: 0,
            seen: 0,
            handed_lsn: 0,
            handed_count: 0,
            committed: 0,
            wal_start: 0,
            server_end: 0,
            records: 0,
            out_ptr: std::ptr::null(),
            out_len: 0,
            frame_ptr: std::ptr::null(),
            frame_len: 0,
        }
    }
}

impl Default for HwLoopState {
    fn default() -> Self {
        Self::new()
    }
}

/// What one frame came to.
#[derive(Debug, PartialEq)]
pub enum Step {
    Done,
    Committed,
    /// A keepalive that asks for a reply.
    Reply,
    /// Python takes this frame.
    Python,
}

pub struct FrameLoop {
    conn: *mut c_void,
    get: Option<GetCopyData>,
    free: Option<FreeMem>,
    consume: Option<ConsumeInput>,
    socket: c_int,
    /// Relation OID -> its plan (owned by Python's StreamEncoder) and topic number.
    tables: HashMap<u32, (*mut StreamPlan, u32)>,
    /// Records: topic u32 LE, tombstone u8, key length u32 LE, value length u32 LE, key,
    /// value.
    out: Vec<u8>,
    frame: Vec<u8>,
    max_records: i64,
    max_bytes: usize,
}

fn be_u64(data: &[u8], at: usize) -> Option<i64> {
    let b: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_be_bytes(b))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn elapsed_us(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_micros()).unwrap_or(i64::MAX)
}

impl FrameLoop {
    pub fn new(max_records: i64, max_bytes: usize) -> Self {
        FrameLoop {
            conn: std::ptr::null_mut(),
            get: None,
            free: None,
            consume: None,
            socket: -1,
            tables: HashMap::new(),
            out: Vec::with_capacity(max_bytes + 4096),
            frame: Vec::new(),
            max_records,
            max_bytes,
        }
    }

    pub fn register(&mut self, oid: u32, plan: *mut StreamPlan, topic: u32) {
        self.tables.insert(oid, (plan, topic));
    }

    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Start a call: no records, no frame for Python.
    pub fn reset(&mut self, st: &mut HwLoopState) {
        self.out.clear();
        st.records = 0;
        st.committed = 0;
        st.wal_start = 0;
        st.server_end = 0;
        st.frame_len = 0;
    }

    pub fn is_full(&self, st: &HwLoopState) -> bool {
        st.records >= self.max_records || self.out.len() >= self.max_bytes
    }

    /// Handle one CopyData frame, or leave it to Python (which then gets a copy of it).
    pub fn on_frame(&mut self, frame: &[u8], st: &mut HwLoopState) -> Step {
        let step = self.handle(frame, st).unwrap_or(Step::Python);
        if step == Step::Python {
            self.frame.clear();
            self.frame.extend_from_slice(frame);
        }
        step
    }

    fn handle(&mut self, frame: &[u8], st: &mut HwLoopState) -> Option<Step> {
        if frame.first() == Some(&b'k') && frame.len() == 18 {
            st.server_end = st.server_end.max(be_u64(frame, 1)?);
            return Some(if frame[17] != 0 {
                Step::Reply
            } else {
                Step::Done
            });
        }
        if frame.first() != Some(&b'w') {
            return None;
        }
        let wal_start = be_u64(frame, 1)?;
        st.wal_start = st.wal_start.max(wal_start);
        let msg = frame.get(XLOG_HEADER..)?;
        match *msg.first()? {
            b'B' if st.in_tx == 0 && msg.len() == 21 => {
                let final_lsn = be_u64(msg, 1)?;
                if final_lsn <= st.handed_lsn {
                    return None; // sent again after a reconnect: Python skips what it had
                }
                st.in_tx = 1;
                st.final_lsn = final_lsn;
                st.ts_ms = (be_u64(msg, 9)? + UNIX_TO_PG_US).div_euclid(1000);
                st.xid = i64::from(be_u32(msg, 17)?);
                st.seen = 0;
                Some(Step::Done)
            }
            b'C' if st.in_tx != 0 && msg.len() == 26 => {
                if st.final_lsn >= st.handed_lsn {
                    st.handed_lsn = st.final_lsn;
                    st.handed_count = -1;
                }
                st.in_tx = 0;
                st.committed = st.committed.max(be_u64(msg, 10)?);
                Some(if st.stop_at_commit != 0 {
                    Step::Committed
                } else {
                    Step::Done
                })
            }
            b'I' | b'U' | b'D' if st.in_tx != 0 => {
                let &(plan, topic) = self.tables.get(&be_u32(msg, 1)?)?;
                if plan.is_null() {
                    return Some(Step::Done); // a table outside the task: no event
                }
                // SAFETY: Python clears the table map before it frees a plan in it.
                let plan = unsafe { &mut *plan };
                let at = Position {
                    ts_ms: st.ts_ms,
                    xid: st.xid,
                    lsn: wal_start,
                    commit_lsn: st.final_lsn,
                };
                let op = encode_change(plan, msg, &at).ok()?;
                let (key, value) = plan.encoded();
                self.out.extend_from_slice(&topic.to_le_bytes());
                self.out.push(u8::from(op == b'd'));
                self.out
                    .extend_from_slice(&(key.len() as u32).to_le_bytes());
                self.out
                    .extend_from_slice(&(value.len() as u32).to_le_bytes());
                self.out.extend_from_slice(key);
                self.out.extend_from_slice(value);
                st.records += 1;
                st.seen += 1;
                st.handed_lsn = st.final_lsn;
                st.handed_count = st.seen;
                Some(Step::Done)
            }
            _ => None,
        }
    }

    /// Read and handle frames until one is Python's, the output is full, a keepalive asks
    /// for a reply, or a commit ends a transaction while `stop_at_commit`. When none is
    /// buffered it waits on the socket up to `timeout_us` while it has no record; once it has
    /// one, it sleeps once until `gather_us` after the first and takes what came meanwhile
    /// (Python produces once per call, so a burst of small transactions costs one round
    /// through Python and one read, not one per transaction).
    unsafe fn run(&mut self, st: &mut HwLoopState, timeout_us: i64, gather_us: i64) -> i32 {
        let (Some(get), Some(free), Some(consume)) = (self.get, self.free, self.consume) else {
            return BROKEN;
        };
        self.reset(st);
        let started = Instant::now();
        let mut first_record: Option<Instant> = None;
        let mut gathered = false;
        let status = loop {
            if self.is_full(st) {
                break FULL;
            }
            let mut buf: *mut c_char = std::ptr::null_mut();
            let n = get(self.conn, &mut buf, 1);
            if n == 0 {
                match first_record {
                    // Sleep rather than wake per frame: what arrives meanwhile is read in
                    // one go (one recv, one produce burst).
                    Some(first) if !gathered => {
                        gathered = true;
                        let left = gather_us - elapsed_us(first);
                        if left > 0 {
                            std::thread::sleep(Duration::from_micros(left as u64));
                        }
                    }
                    Some(_) => break NEED_INPUT,
                    None => {
                        let left = timeout_us - elapsed_us(started);
                        if left <= 0 || !self.wait(left) {
                            break NEED_INPUT;
                        }
                    }
                }
                if consume(self.conn) == 0 {
                    break BROKEN;
                }
                continue;
            }
            if n < 0 {
                break if n == -1 { ENDED } else { BROKEN };
            }
            let frame = std::slice::from_raw_parts(buf as *const u8, n as usize);
            let step = self.on_frame(frame, st);
            free(buf as *mut c_void);
            if first_record.is_none() && st.records > 0 {
                first_record = Some(Instant::now());
            }
            match step {
                Step::Done => {}
                Step::Committed => break COMMITTED,
                Step::Reply => break REPLY,
                Step::Python => break FRAME,
            }
        };
        self.publish(st, status == FRAME);
        status
    }

    /// Whether the socket became readable within `us` microseconds (false on a signal too:
    /// the caller returns to Python, which looks at what it has to).
    fn wait(&self, us: i64) -> bool {
        let mut fd = PollFd {
            fd: self.socket,
            events: POLLIN,
            revents: 0,
        };
        // Rounded up: the idle wait is a fraction of a second, a millisecond more is nothing.
        let ms = c_int::try_from((us + 999) / 1000).unwrap_or(c_int::MAX);
        // SAFETY: one valid pollfd.
        unsafe { poll(&mut fd, 1, ms) > 0 }
    }

    /// Point the state at this call's records (and the frame for Python).
    pub fn publish(&self, st: &mut HwLoopState, frame: bool) {
        st.out_ptr = self.out.as_ptr();
        st.out_len = self.out.len();
        st.frame_ptr = self.frame.as_ptr();
        st.frame_len = if frame { self.frame.len() } else { 0 };
    }
}

/// A frame loop over one libpq connection (`conn` a `PGconn *`, `socket` its socket; `get`,
/// `free`, `consume` that libpq's `PQgetCopyData`, `PQfreemem` and `PQconsumeInput`); null
/// if a pointer is null.
///
/// # Safety
/// The pointers must be what they say and outlive the loop.
#[no_mangle]
pub unsafe extern "C" fn hw_loop_new(
    conn: *mut c_void,
    get: Option<GetCopyData>,
    free: Option<FreeMem>,
    consume: Option<ConsumeInput>,
    socket: c_int,
    max_records: i64,
    max_bytes: usize,
) -> *mut FrameLoop {
    if conn.is_null() || get.is_none() || free.is_none() || consume.is_none() || socket < 0 {
        return std::ptr::null_mut();
    }
    let mut lp = FrameLoop::new(max_records.max(1), max_bytes.max(1));
    lp.conn = conn;
    lp.socket = socket;
    lp.get = get;
    lp.free = free;
    lp.consume = consume;
    Box::into_raw(Box::new(lp))
}

/// # Safety
/// `lp` from `hw_loop_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hw_loop_free(lp: *mut FrameLoop) {
    crate::free_boxed(lp)
}

/// Encode the rows of relation `oid` with `plan` into records for topic number `topic`; a
/// null `plan`: pass over its rows (a table outside the task, whose rows make no event).
///
/// # Safety
/// `lp` from `hw_loop_new`; `plan` null or from `hw_stream_plan_new`, alive until
/// `hw_loop_clear`.
#[no_mangle]
pub unsafe extern "C" fn hw_loop_register(
    lp: *mut FrameLoop,
    oid: u32,
    plan: *mut StreamPlan,
    topic: u32,
) {
    if !lp.is_null() {
        (*lp).register(oid, plan, topic);
    }
}

/// Forget every registered plan.
///
/// # Safety
/// `lp` from `hw_loop_new`.
#[no_mangle]
pub unsafe extern "C" fn hw_loop_clear(lp: *mut FrameLoop) {
    if !lp.is_null() {
        (*lp).clear();
    }
}

/// Run the loop (see `FrameLoop::run`); returns one of NEED_INPUT (nothing more within the
/// wait), FRAME, FULL, COMMITTED, ENDED (PQgetCopyData said -1), BROKEN (-2, or
/// PQconsumeInput failed), REPLY. `st`'s records and frame stay valid until the next call.
///
/// # Safety
/// `lp` from `hw_loop_new`, one thread at a time; `st` valid.
#[no_mangle]
pub unsafe extern "C" fn hw_loop_run(
    lp: *mut FrameLoop,
    st: *mut HwLoopState,
    timeout_us: i64,
    gather_us: i64,
) -> i32 {
    if lp.is_null() || st.is_null() {
        return BROKEN;
    }
    (*lp).run(&mut *st, timeout_us, gather_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::parse_stream_spec;

    fn plan() -> Box<StreamPlan> {
        let segs = "seg 0000000000\nseg 0000000001\nseg 02aa\nseg 02\nseg 02\nseg 0000\nseg 02\nseg 02\nseg 00\n";
        Box::new(parse_stream_spec(&format!("cols l s\nkey 0\n{segs}")).unwrap())
    }

    fn xlog(wal_start: i64, msg: &[u8]) -> Vec<u8> {
        let mut f = vec![b'w'];
        f.extend_from_slice(&wal_start.to_be_bytes());
        f.extend_from_slice(&wal_start.to_be_bytes());
        f.extend_from_slice(&0i64.to_be_bytes());
        f.extend_from_slice(msg);
        f
    }

    fn begin(final_lsn: i64, pg_us: i64, xid: u32) -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend_from_slice(&final_lsn.to_be_bytes());
        m.extend_from_slice(&pg_us.to_be_bytes());
        m.extend_from_slice(&xid.to_be_bytes());
        m
    }

    fn commit(end_lsn: i64) -> Vec<u8> {
        let mut m = vec![b'C', 0];
        m.extend_from_slice(&(end_lsn - 8).to_be_bytes());
        m.extend_from_slice(&end_lsn.to_be_bytes());
        m.extend_from_slice(&0i64.to_be_bytes());
        m
    }

    fn insert(oid: u32, id: &[u8]) -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend_from_slice(&oid.to_be_bytes());
        m.extend_from_slice(&[b'N', 0, 2, b't', 0, 0, 0, id.len() as u8]);
        m.extend_from_slice(id);
        m.push(b'n');
        m
    }

    #[test]
    fn a_transaction_in_records() {
        let mut p = plan();
        let mut lp = FrameLoop::new(100, 1 << 20);
        lp.register(7, &mut *p, 3);
        let mut st = HwLoopState::new();
        lp.reset(&mut st);
        // One millisecond and a half before PostgreSQL's epoch: floor, as Python's //.
        let steps = [
            lp.on_frame(&xlog(100, &begin(300, -1500, 42)), &mut st),
            lp.on_frame(&xlog(110, &insert(7, b"5")), &mut st),
            lp.on_frame(&xlog(120, &insert(7, b"6")), &mut st),
        ];
        assert!(steps.iter().all(|s| *s == Step::Done));
        assert_eq!((st.in_tx, st.xid, st.final_lsn), (1, 42, 300));
        assert_eq!(st.ts_ms, UNIX_TO_PG_US / 1000 - 2);
        assert_eq!(
            (st.records, st.seen, st.handed_lsn, st.handed_count),
            (2, 2, 300, 2)
        );
        assert_eq!(lp.on_frame(&xlog(0, &commit(308)), &mut st), Step::Done);
        assert_eq!((st.in_tx, st.committed, st.handed_count), (0, 308, -1));
        assert_eq!(st.wal_start, 120);
        // The first record: topic 3, no tombstone, key [0,0,0,0,0,10], the value after.
        assert_eq!(&lp.out[..5], &[3, 0, 0, 0, 0]);
        assert_eq!(&lp.out[5..9], &6u32.to_le_bytes());
        assert_eq!(&lp.out[13..19], &[0, 0, 0, 0, 0, 10]);
    }

    #[test]
    fn python_takes_what_the_loop_does_not_know() {
        let mut p = plan();
        let mut lp = FrameLoop::new(100, 1 << 20);
        lp.register(7, &mut *p, 0);
        let mut st = HwLoopState::new();
        lp.reset(&mut st);
        let mut keepalive = [b'k', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(lp.on_frame(&keepalive, &mut st), Step::Reply);
        keepalive[8] = 5;
        keepalive[17] = 0;
        assert_eq!(lp.on_frame(&keepalive, &mut st), Step::Done);
        assert_eq!(st.server_end, 9);
        assert_eq!(lp.on_frame(&keepalive[..17], &mut st), Step::Python);
        assert_eq!(lp.frame, &keepalive[..17]);
        // A row outside a transaction, then one of an unknown table inside one.
        assert_eq!(
            lp.on_frame(&xlog(1, &insert(7, b"5")), &mut st),
            Step::Python
        );
        assert_eq!(lp.on_frame(&xlog(2, &begin(50, 0, 1)), &mut st), Step::Done);
        assert_eq!(
            lp.on_frame(&xlog(3, &insert(8, b"5")), &mut st),
            Step::Python
        );
        let relation = xlog(4, b"R\0\0\0\x07");
        assert_eq!(lp.on_frame(&relation, &mut st), Step::Python);
        assert_eq!(st.records, 0);
        // A table registered as outside the task: its rows pass, counted nowhere.
        lp.register(8, std::ptr::null_mut(), 0);
        assert_eq!(lp.on_frame(&xlog(3, &insert(8, b"5")), &mut st), Step::Done);
        assert_eq!((st.records, st.seen), (0, 0));
        // A transaction handed out before: Python skips its repeated events.
        st.in_tx = 0;
        st.handed_lsn = 60;
        st.handed_count = 1;
        assert_eq!(
            lp.on_frame(&xlog(5, &begin(60, 0, 2)), &mut st),
            Step::Python
        );
        assert_eq!(st.in_tx, 0);
        // Stopping at a commit when asked.
        st.stop_at_commit = 1;
        assert_eq!(lp.on_frame(&xlog(6, &begin(70, 0, 3)), &mut st), Step::Done);
        assert_eq!(lp.on_frame(&xlog(0, &commit(78)), &mut st), Step::Committed);
        assert_eq!((st.handed_lsn, st.handed_count), (70, -1));
    }

    #[test]
    fn full_after_the_record_limit() {
        let mut p = plan();
        let mut lp = FrameLoop::new(2, 1 << 20);
        lp.register(7, &mut *p, 0);
        let mut st = HwLoopState::new();
        lp.reset(&mut st);
        lp.on_frame(&xlog(1, &begin(50, 0, 1)), &mut st);
        lp.on_frame(&xlog(2, &insert(7, b"1")), &mut st);
        assert!(!lp.is_full(&st));
        lp.on_frame(&xlog(3, &insert(7, b"2")), &mut st);
        assert!(lp.is_full(&st));
    }
}
