//! RFC 6455 frames: an incremental reader for one direction of a connection and a frame writer.
//!
//! The reader only observes a byte stream that is forwarded elsewhere unchanged: `feed` borrows
//! each chunk, reports the messages it completes and keeps nothing but the unconsumed tail of a
//! partial frame header (in a fixed 14-byte array) and the payload of a message in progress.
//! An idle reader owns no heap memory.

use std::fmt;

use crate::ocppj::{self, Envelope};

pub const CONTINUATION: u8 = 0;
pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;
pub const CLOSE: u8 = 8;
pub const PING: u8 = 9;
pub const PONG: u8 = 10;

/// Default limit for one data message (all fragments together).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 20;
/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header: 2 bytes, 8-byte extended length, 4-byte masking key.
const MAX_HEADER: usize = 14;

/// Close codes used for protocol errors.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// A violation of RFC 6455 by the peer; the connection must be closed with `close_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub close_code: u16,
    pub reason: String,
}

impl ProtocolError {
    fn new(close_code: u16, reason: impl Into<String>) -> Self {
        ProtocolError {
            close_code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close code {})", self.reason, self.close_code)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::new(CLOSE_PROTOCOL_ERROR, reason)
}

/// True for the close codes a peer may send (RFC 6455 section 7.4).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

fn is_known_opcode(opcode: u8) -> bool {
    matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG)
}

/// One complete message. `data` is the unmasked payload (fragments joined), held in the
/// buffer type of the `Sink` that received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<B> {
    pub opcode: u8,
    pub data: B,
    /// OCPP-J envelope of a TEXT message; `NOT_OCPP` for everything else.
    pub envelope: Envelope,
    /// Status code of a CLOSE message with a payload.
    pub close_code: Option<u16>,
}

impl<B> Message<B> {
    /// The reason of a CLOSE message (`""` when the payload is empty); `None` for other opcodes.
    /// `data` must be this message's payload bytes.
    pub fn close_reason<'d>(&self, data: &'d [u8]) -> Option<&'d str> {
        if self.opcode != CLOSE {
            return None;
        }
        // The reader validated the reason before reporting the message.
        Some(
            data.get(2..)
                .map_or("", |r| std::str::from_utf8(r).unwrap_or("")),
        )
    }
}

/// Receives completed messages and decides how their payload is stored, so that a binding can
/// unmask a payload straight into its own buffer type (e.g. a Python `bytes`).
pub trait Sink {
    type Buf;
    /// A buffer of exactly `len` bytes whose contents `fill` writes.
    fn buffer(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Self::Buf;
    /// A buffer holding the bytes of `data` (the reader's assembled message).
    fn adopt(&mut self, data: Vec<u8>) -> Self::Buf;
    /// The bytes of a buffer made by this sink.
    fn bytes<'b>(&self, buf: &'b Self::Buf) -> &'b [u8];
    /// Takes one completed message.
    fn emit(&mut self, message: Message<Self::Buf>);
}

/// A sink that keeps payloads in `Vec<u8>` and collects messages in order.
#[derive(Debug, Default)]
pub struct VecSink {
    pub messages: Vec<Message<Vec<u8>>>,
}

impl Sink for VecSink {
    type Buf = Vec<u8>;

    fn buffer(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut v = vec![0u8; len];
        fill(&mut v);
        v
    }

    fn adopt(&mut self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    fn bytes<'b>(&self, buf: &'b Vec<u8>) -> &'b [u8] {
        buf
    }

    fn emit(&mut self, message: Message<Vec<u8>>) {
        self.messages.push(message);
    }
}

/// Rotates `key` so that index 0 is the key byte for payload offset `phase`.
fn rotated(key: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase % 4;
    [key[p], key[(p + 1) % 4], key[(p + 2) % 4], key[(p + 3) % 4]]
}

/// XORs `buf` in place with `key`, where `buf[0]` sits at payload offset `phase`.
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let k = rotated(key, phase);
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8-byte chunk")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // Whole 8-byte chunks keep the key phase, so the tail starts at k[0].
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// Copies `src` into `dst` (same length), unmasking with `key` when present.
fn copy_payload(dst: &mut [u8], src: &[u8], key: Option<[u8; 4]>, phase: usize) {
    dst.copy_from_slice(src);
    if let Some(key) = key {
        unmask(dst, key, phase);
    }
}

/// Appends `src` to `buf`, unmasking with `key` when present.
fn append_payload(buf: &mut Vec<u8>, src: &[u8], key: Option<[u8; 4]>, phase: usize) {
    let start = buf.len();
    buf.extend_from_slice(src);
    if let Some(key) = key {
        unmask(&mut buf[start..], key, phase);
    }
}

/// Bytes of extended length that follow the 2-byte header.
fn extended_length_size(b1: u8) -> usize {
    match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    }
}

/// The frame whose header has been read and whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    key: Option<[u8; 4]>,
    len: u64,
    /// Payload bytes consumed so far.
    done: u64,
}

/// Incremental frame reader for one direction of one connection.
#[derive(Debug, Clone)]
pub struct FrameReader {
    max_message_size: u64,
    from_client: bool,
    closed: bool,
    /// Opcode (TEXT/BINARY) of the fragmented data message in progress; 0 when none.
    msg_opcode: u8,
    head_len: u8,
    head: [u8; MAX_HEADER],
    frame: Option<Frame>,
    /// Payload of the data message in progress (previous fragments and this frame so far).
    msg: Vec<u8>,
    /// Payload of a control frame split across `feed` calls.
    ctrl: Vec<u8>,
    failed: Option<Box<ProtocolError>>,
}

impl FrameReader {
    /// `from_client`: the stream comes from a client, so every frame must be masked; otherwise
    /// no frame may be masked.
    pub fn new(from_client: bool, max_message_size: u64) -> Self {
        FrameReader {
            max_message_size,
            from_client,
            closed: false,
            msg_opcode: 0,
            head_len: 0,
            head: [0; MAX_HEADER],
            frame: None,
            msg: Vec::new(),
            ctrl: Vec::new(),
            failed: None,
        }
    }

    pub fn from_client(&self) -> bool {
        self.from_client
    }

    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// True when everything fed so far forms whole frames; false once the reader has failed.
    pub fn at_frame_boundary(&self) -> bool {
        self.failed.is_none() && self.head_len == 0 && self.frame.is_none()
    }

    /// True at a frame boundary with no fragmented data message open: everything fed so far
    /// forms whole messages.
    pub fn at_message_boundary(&self) -> bool {
        self.at_frame_boundary() && self.msg_opcode == 0
    }

    /// Bytes of a message in progress held (its payload so far, a split control frame's).
    pub fn buffered(&self) -> usize {
        self.msg.len() + self.ctrl.len()
    }

    /// True once a CLOSE frame has been read.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The error that failed this reader, if any.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.failed.as_deref()
    }

    /// Consumes `data` and hands every message it completes to `sink`, in order. On a
    /// violation the reader fails for good: this and every later call return the same error.
    pub fn feed<S: Sink>(&mut self, data: &[u8], sink: &mut S) -> Result<(), ProtocolError> {
        if let Some(err) = &self.failed {
            return Err((**err).clone());
        }
        let result = self.consume(data, sink);
        if let Err(err) = &result {
            self.failed = Some(Box::new(err.clone()));
            // Drop buffers early: a failed reader never completes anything again.
            self.msg = Vec::new();
            self.ctrl = Vec::new();
        }
        result
    }

    /// `feed` collecting the messages into a vector.
    pub fn feed_vec(&mut self, data: &[u8]) -> Result<Vec<Message<Vec<u8>>>, ProtocolError> {
        let mut sink = VecSink::default();
        self.feed(data, &mut sink)?;
        Ok(sink.messages)
    }

    fn consume<S: Sink>(&mut self, data: &[u8], sink: &mut S) -> Result<(), ProtocolError> {
        let mut pos = 0;
        loop {
            let mut frame = match self.frame {
                Some(frame) => frame,
                None => {
                    if pos == data.len() {
                        return Ok(());
                    }
                    pos += self.read_header(&data[pos..])?;
                    match self.frame {
                        Some(frame) => frame,
                        None => return Ok(()),
                    }
                }
            };
            let rest = &data[pos..];
            let want = frame.len - frame.done;
            if (rest.len() as u64) < want {
                // The frame continues in a later chunk: keep what arrived.
                let buf = if is_control(frame.opcode) {
                    &mut self.ctrl
                } else {
                    &mut self.msg
                };
                append_payload(buf, rest, frame.key, frame.done as usize);
                frame.done += rest.len() as u64;
                self.frame = Some(frame);
                return Ok(());
            }
            let payload = &rest[..want as usize];
            pos += payload.len();
            self.frame = None;
            if is_control(frame.opcode) {
                let buf = if frame.done == 0 {
                    sink.buffer(payload.len(), |dst| {
                        copy_payload(dst, payload, frame.key, 0)
                    })
                } else {
                    append_payload(&mut self.ctrl, payload, frame.key, frame.done as usize);
                    sink.adopt(std::mem::take(&mut self.ctrl))
                };
                self.finish_control(frame.opcode, buf, sink)?;
            } else if frame.fin && frame.opcode != CONTINUATION && frame.done == 0 {
                // Fast path: a whole unfragmented message inside this chunk.
                self.msg_opcode = 0;
                let buf = sink.buffer(payload.len(), |dst| {
                    copy_payload(dst, payload, frame.key, 0)
                });
                self.finish_data(frame.opcode, buf, sink)?;
            } else {
                append_payload(&mut self.msg, payload, frame.key, frame.done as usize);
                if frame.fin {
                    let opcode = std::mem::replace(&mut self.msg_opcode, 0);
                    let buf = sink.adopt(std::mem::take(&mut self.msg));
                    self.finish_data(opcode, buf, sink)?;
                }
            }
        }
    }

    /// Reads header bytes from the start of `rest`; returns how many it consumed. Sets
    /// `self.frame` once the header is complete.
    fn read_header(&mut self, rest: &[u8]) -> Result<usize, ProtocolError> {
        let had = self.head_len as usize;
        if had == 0 {
            // Parse straight from the chunk; buffer only an incomplete header.
            if let Some(size) = self.check_header(rest, 0)? {
                self.start_frame(&rest[..size]);
                return Ok(size);
            }
            self.head[..rest.len()].copy_from_slice(rest);
            self.head_len = rest.len() as u8;
            return Ok(rest.len());
        }
        let n = (MAX_HEADER - had).min(rest.len());
        self.head[had..had + n].copy_from_slice(&rest[..n]);
        let head = self.head;
        match self.check_header(&head[..had + n], had)? {
            Some(size) => {
                self.head_len = 0;
                self.start_frame(&head[..size]);
                Ok(size - had)
            }
            None => {
                self.head_len = (had + n) as u8;
                Ok(n)
            }
        }
    }

    /// Runs the header checks whose bytes became available: `h` starts at the frame's first
    /// byte, `seen` bytes of it were already checked. Returns the header size once complete.
    fn check_header(&self, h: &[u8], seen: usize) -> Result<Option<usize>, ProtocolError> {
        if h.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (h[0], h[1]);
        if seen < 2 {
            self.check_first_bytes(b0, b1)?;
        }
        let ext = extended_length_size(b1);
        if h.len() < 2 + ext {
            return Ok(None);
        }
        let len = match ext {
            0 => u64::from(b1 & 0x7F),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
        };
        if seen < 2 + ext {
            self.check_length(b0 & 0x0F, ext, len)?;
        }
        let size = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
        Ok(if h.len() >= size { Some(size) } else { None })
    }

    /// Checks that need only the 2-byte header, in the documented order.
    fn check_first_bytes(&self, b0: u8, b1: u8) -> Result<(), ProtocolError> {
        if b0 & 0x70 != 0 {
            return Err(protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        if !is_known_opcode(opcode) {
            return Err(protocol(format!("reserved opcode {opcode}")));
        }
        let masked = b1 & 0x80 != 0;
        if self.from_client && !masked {
            return Err(protocol("client frame not masked"));
        }
        if !self.from_client && masked {
            return Err(protocol("server frame masked"));
        }
        let fin = b0 & 0x80 != 0;
        if is_control(opcode) {
            if !fin {
                return Err(protocol("fragmented control frame"));
            }
        } else if opcode == CONTINUATION {
            if self.msg_opcode == 0 {
                return Err(protocol("continuation frame with no message in progress"));
            }
        } else if self.msg_opcode != 0 {
            return Err(protocol(
                "new data message while a fragmented one is in progress",
            ));
        }
        Ok(())
    }

    /// Checks that need the payload length, in the documented order.
    fn check_length(&self, opcode: u8, ext: usize, len: u64) -> Result<(), ProtocolError> {
        if is_control(opcode) && len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(protocol("control frame payload longer than 125 bytes"));
        }
        if ext == 8 && len >> 63 != 0 {
            return Err(protocol("64-bit payload length with the top bit set"));
        }
        if !is_control(opcode)
            && (self.msg.len() as u64).saturating_add(len) > self.max_message_size
        {
            return Err(ProtocolError::new(CLOSE_TOO_BIG, "message too big"));
        }
        if self.closed {
            return Err(protocol("frame after close frame"));
        }
        Ok(())
    }

    /// Records a complete, checked header.
    fn start_frame(&mut self, h: &[u8]) {
        let (b0, b1) = (h[0], h[1]);
        let ext = extended_length_size(b1);
        let len = match ext {
            0 => u64::from(b1 & 0x7F),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
        };
        let key = if b1 & 0x80 != 0 {
            Some(h[2 + ext..6 + ext].try_into().expect("4 bytes"))
        } else {
            None
        };
        let opcode = b0 & 0x0F;
        if opcode == TEXT || opcode == BINARY {
            self.msg_opcode = opcode;
        }
        self.frame = Some(Frame {
            opcode,
            fin: b0 & 0x80 != 0,
            key,
            len,
            done: 0,
        });
    }

    fn finish_control<S: Sink>(
        &mut self,
        opcode: u8,
        buf: S::Buf,
        sink: &mut S,
    ) -> Result<(), ProtocolError> {
        let mut close_code = None;
        if opcode == CLOSE {
            let payload = sink.bytes(&buf);
            match payload.len() {
                0 => {}
                1 => return Err(protocol("close payload of one byte")),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if !is_valid_close_code(code) {
                        return Err(protocol(format!("invalid close code {code}")));
                    }
                    if std::str::from_utf8(&payload[2..]).is_err() {
                        return Err(ProtocolError::new(
                            CLOSE_INVALID_DATA,
                            "close reason is not valid UTF-8",
                        ));
                    }
                    close_code = Some(code);
                }
            }
            self.closed = true;
        }
        sink.emit(Message {
            opcode,
            data: buf,
            envelope: Envelope::default(),
            close_code,
        });
        Ok(())
    }

    fn finish_data<S: Sink>(
        &mut self,
        opcode: u8,
        buf: S::Buf,
        sink: &mut S,
    ) -> Result<(), ProtocolError> {
        let envelope = if opcode == TEXT {
            match std::str::from_utf8(sink.bytes(&buf)) {
                Ok(text) => ocppj::peek(text),
                Err(_) => {
                    return Err(ProtocolError::new(
                        CLOSE_INVALID_DATA,
                        "text message is not valid UTF-8",
                    ))
                }
            }
        } else {
            Envelope::default()
        };
        sink.emit(Message {
            opcode,
            data: buf,
            envelope,
            close_code: None,
        });
        Ok(())
    }
}

/// Why a frame cannot be written.
#[derive(Debug)]
pub enum EncodeError {
    /// The arguments describe no valid frame.
    Invalid(String),
    /// The OS gave no randomness for the masking key.
    Random(getrandom::Error),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Invalid(reason) => f.write_str(reason),
            EncodeError::Random(err) => write!(f, "no randomness for the masking key: {err}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Checks that `opcode`, `len` and `fin` describe a frame the RFC allows.
pub fn check_frame(opcode: u8, len: usize, fin: bool) -> Result<(), EncodeError> {
    if !is_known_opcode(opcode) {
        return Err(EncodeError::Invalid(format!("invalid opcode {opcode}")));
    }
    if is_control(opcode) {
        if !fin {
            return Err(EncodeError::Invalid(
                "control frames cannot be fragmented".into(),
            ));
        }
        if len > MAX_CONTROL_PAYLOAD {
            return Err(EncodeError::Invalid(
                "control frame payload longer than 125 bytes".into(),
            ));
        }
    }
    Ok(())
}

/// A fresh masking key from OS randomness.
pub fn random_key() -> Result<[u8; 4], EncodeError> {
    let mut key = [0u8; 4];
    getrandom::fill(&mut key).map_err(EncodeError::Random)?;
    Ok(key)
}

/// Size of a frame with a `len`-byte payload (minimal length encoding).
pub fn frame_size(len: usize, masked: bool) -> usize {
    let ext = if len <= 125 {
        0
    } else if len <= 0xFFFF {
        2
    } else {
        8
    };
    2 + ext + if masked { 4 } else { 0 } + len
}

/// Writes one frame into `dst`, which must be exactly `frame_size(payload.len(), key.is_some())`
/// bytes long. Parts are supplied as a list so a close payload need not be assembled first.
pub fn write_frame(dst: &mut [u8], opcode: u8, fin: bool, key: Option<[u8; 4]>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert_eq!(dst.len(), frame_size(len, key.is_some()));
    dst[0] = if fin { 0x80 } else { 0 } | (opcode & 0x0F);
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    let mut at = 2;
    if len <= 125 {
        dst[1] = mask_bit | len as u8;
    } else if len <= 0xFFFF {
        dst[1] = mask_bit | 126;
        dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        at = 4;
    } else {
        dst[1] = mask_bit | 127;
        dst[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        at = 10;
    }
    if let Some(key) = key {
        dst[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    let start = at;
    for part in parts {
        dst[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    if let Some(key) = key {
        unmask(&mut dst[start..], key, 0);
    }
}

/// One frame with the minimal length encoding; `mask` uses a fresh random key (client side).
pub fn encode_frame(
    opcode: u8,
    payload: &[u8],
    mask: bool,
    fin: bool,
) -> Result<Vec<u8>, EncodeError> {
    check_frame(opcode, payload.len(), fin)?;
    let key = if mask { Some(random_key()?) } else { None };
    let mut out = vec![0u8; frame_size(payload.len(), mask)];
    write_frame(&mut out, opcode, fin, key, &[payload]);
    Ok(out)
}

/// Checks close arguments and returns the 2-byte code prefix of the payload (empty for none).
pub fn close_prefix(code: Option<u16>, reason: &str) -> Result<Option<[u8; 2]>, EncodeError> {
    match code {
        None if reason.is_empty() => Ok(None),
        None => Err(EncodeError::Invalid(
            "a close reason needs a close code".into(),
        )),
        Some(code) if !is_valid_close_code(code) => {
            Err(EncodeError::Invalid(format!("invalid close code {code}")))
        }
        Some(_) if 2 + reason.len() > MAX_CONTROL_PAYLOAD => Err(EncodeError::Invalid(
            "close payload longer than 125 bytes".into(),
        )),
        Some(code) => Ok(Some(code.to_be_bytes())),
    }
}

/// A close frame: no payload when `code` is `None`, else the code and the UTF-8 `reason`.
pub fn encode_close(code: Option<u16>, reason: &str, mask: bool) -> Result<Vec<u8>, EncodeError> {
    let prefix = close_prefix(code, reason)?;
    let parts: [&[u8]; 2] = match &prefix {
        Some(p) => [p, reason.as_bytes()],
        None => [&[], &[]],
    };
    let key = if mask { Some(random_key()?) } else { None };
    let len = parts[0].len() + parts[1].len();
    let mut out = vec![0u8; frame_size(len, mask)];
    write_frame(&mut out, CLOSE, true, key, &parts);
    Ok(out)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
