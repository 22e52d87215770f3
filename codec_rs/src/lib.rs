//! RFC 6455 frame reader/writer and OCPP-J envelope peek.
//!
//! `ws` and `ocppj` are plain Rust; with the `python` feature this crate is also the Python
//! extension module `proxy._codec` (see `proxy/_codec.pyi` for its contract).

pub mod engine;
pub mod ocppj;
pub mod ws;

#[cfg(feature = "python")]
mod python {
    use pyo3::exceptions::{PyOSError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::sync::PyOnceLock;
    use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyType};

    use crate::ocppj::{self, JsonStr};
    use crate::ws;

    mod engine;

    /// `ProtocolError` is an ordinary Python exception class (picklable, with `args`), defined
    /// when the module initialises.
    const PROTOCOL_ERROR_SOURCE: &std::ffi::CStr = cr#"
class ProtocolError(Exception):
    """The peer broke RFC 6455; close its connection with `close_code` (1002, 1007 or 1009)."""

    def __init__(self, close_code, reason):
        super().__init__(close_code, reason)
        self.close_code = close_code
        self.reason = reason

    def __str__(self):
        return f"{self.reason} (close code {self.close_code})"
"#;

    static PROTOCOL_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

    fn protocol_error(py: Python<'_>, err: &ws::ProtocolError) -> PyErr {
        let Some(cls) = PROTOCOL_ERROR.get(py) else {
            return PyValueError::new_err(err.to_string());
        };
        match cls.bind(py).call1((err.close_code, err.reason.as_str())) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }

    fn encode_error(err: ws::EncodeError) -> PyErr {
        match err {
            ws::EncodeError::Invalid(reason) => PyValueError::new_err(reason),
            ws::EncodeError::Random(e) => PyOSError::new_err(e.to_string()),
        }
    }

    /// One complete WebSocket message (data messages with their fragments joined).
    #[pyclass(frozen, module = "proxy._codec")]
    pub struct Message {
        #[pyo3(get)]
        opcode: u8,
        #[pyo3(get)]
        data: Py<PyBytes>,
        #[pyo3(get)]
        message_type: u8,
        #[pyo3(get)]
        unique_id: Option<Py<PyString>>,
        #[pyo3(get)]
        action: Option<Py<PyString>>,
        #[pyo3(get)]
        error_code: Option<Py<PyString>>,
        #[pyo3(get)]
        payload_start: usize,
        #[pyo3(get)]
        payload_end: usize,
        #[pyo3(get)]
        close_code: Option<u16>,
        #[pyo3(get)]
        close_reason: Option<Py<PyString>>,
    }

    fn repr_opt(py: Python<'_>, s: &Option<Py<PyString>>) -> PyResult<String> {
        match s {
            Some(s) => Ok(s.bind(py).repr()?.to_string()),
            None => Ok("None".to_owned()),
        }
    }

    #[pymethods]
    impl Message {
        fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
            const PREVIEW: usize = 60;
            let bytes = self.data.bind(py).as_bytes();
            let data = if bytes.len() <= PREVIEW {
                self.data.bind(py).repr()?.to_string()
            } else {
                let head = PyBytes::new(py, &bytes[..PREVIEW]).repr()?;
                format!("{head}... ({} bytes)", bytes.len())
            };
            let mut out = format!("Message(opcode={}, data={data}", self.opcode);
            if self.message_type != ocppj::NOT_OCPP {
                out += &format!(
                    ", message_type={}, unique_id={}, action={}, error_code={}, \
                     payload_start={}, payload_end={}",
                    self.message_type,
                    repr_opt(py, &self.unique_id)?,
                    repr_opt(py, &self.action)?,
                    repr_opt(py, &self.error_code)?,
                    self.payload_start,
                    self.payload_end,
                );
            }
            if self.opcode == ws::CLOSE {
                let code = self.close_code.map_or("None".to_owned(), |c| c.to_string());
                out += &format!(
                    ", close_code={code}, close_reason={}",
                    repr_opt(py, &self.close_reason)?
                );
            }
            out.push(')');
            Ok(out)
        }
    }

    /// Builds Python messages, unmasking payloads straight into `bytes` objects.
    struct PySink<'py> {
        py: Python<'py>,
        messages: Vec<Bound<'py, Message>>,
        error: Option<PyErr>,
    }

    impl<'py> ws::Sink for PySink<'py> {
        type Buf = Bound<'py, PyBytes>;

        fn buffer(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Self::Buf {
            let made = PyBytes::new_with(self.py, len, |dst| {
                fill(dst);
                Ok(())
            });
            made.unwrap_or_else(|e| {
                self.error.get_or_insert(e);
                PyBytes::new(self.py, b"")
            })
        }

        fn adopt(&mut self, data: Vec<u8>) -> Self::Buf {
            PyBytes::new(self.py, &data)
        }

        fn bytes<'b>(&self, buf: &'b Self::Buf) -> &'b [u8] {
            buf.as_bytes()
        }

        fn emit(&mut self, m: ws::Message<Self::Buf>) {
            if self.error.is_some() {
                return;
            }
            match message_of(self.py, m) {
                Ok(obj) => self.messages.push(obj),
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// The Python `Message` of a message read into a `bytes` object.
    fn message_of<'py>(
        py: Python<'py>,
        m: ws::Message<Bound<'py, PyBytes>>,
    ) -> PyResult<Bound<'py, Message>> {
        let bytes = m.data.as_bytes();
        // TEXT messages were validated as UTF-8 before they were reported.
        let text = std::str::from_utf8(bytes).unwrap_or("");
        let env = &m.envelope;
        let string = |s: &Option<JsonStr>| {
            s.as_ref()
                .map(|s| PyString::new(py, s.as_str(text)).unbind())
        };
        let close_reason = m.close_reason(bytes).map(|r| PyString::new(py, r).unbind());
        let message = Message {
            opcode: m.opcode,
            message_type: env.message_type,
            unique_id: string(&env.unique_id),
            action: string(&env.action),
            error_code: string(&env.error_code),
            payload_start: env.payload_start,
            payload_end: env.payload_end,
            close_code: m.close_code,
            close_reason,
            data: m.data.unbind(),
        };
        Bound::new(py, message)
    }

    /// Incremental reader for one direction of one connection.
    ///
    /// `from_client=True` reads what a client sends (every frame must be masked);
    /// `from_client=False` reads what a server sends (no frame may be masked).
    #[pyclass(module = "proxy._codec")]
    pub struct FrameReader {
        inner: ws::FrameReader,
    }

    #[pymethods]
    impl FrameReader {
        #[new]
        #[pyo3(signature = (*, from_client, max_message_size = 1048576))]
        fn new(from_client: bool, max_message_size: i64) -> PyResult<Self> {
            let max = u64::try_from(max_message_size)
                .map_err(|_| PyValueError::new_err("max_message_size must be >= 0"))?;
            Ok(FrameReader {
                inner: ws::FrameReader::new(from_client, max),
            })
        }

        /// Arguments are taken by `__new__`; this only gives the class a Python-visible
        /// `__init__` with the same signature.
        #[pyo3(signature = (*, from_client, max_message_size = 1048576))]
        fn __init__(&self, from_client: bool, max_message_size: i64) {
            let _ = (from_client, max_message_size);
        }

        /// Consume `data` (split anywhere); return the messages it completed, in order.
        ///
        /// Raises ProtocolError on the first violation; the reader then stays failed and
        /// raises the same error on every later call.
        fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
            let mut sink = PySink {
                py,
                messages: Vec::new(),
                error: None,
            };
            let result = self.inner.feed(data, &mut sink);
            if let Err(err) = result {
                return Err(protocol_error(py, &err));
            }
            if let Some(err) = sink.error {
                return Err(err);
            }
            PyList::new(py, sink.messages)
        }

        /// True when everything fed so far forms whole frames (nothing half-read).
        #[getter]
        fn at_frame_boundary(&self) -> bool {
            self.inner.at_frame_boundary()
        }

        /// True at a frame boundary with no fragmented message open (whole messages only).
        #[getter]
        fn at_message_boundary(&self) -> bool {
            self.inner.at_message_boundary()
        }

        /// True once a close frame has been read.
        #[getter]
        fn closed(&self) -> bool {
            self.inner.closed()
        }
    }

    /// A TEXT `Message` of `text` as a reader would report it: its OCPP-J envelope peeked (text
    /// that is not UTF-8 or not OCPP-J gives NOT_OCPP). For frames the proxy writes itself.
    #[pyfunction]
    fn text_message<'py>(
        py: Python<'py>,
        text: Bound<'py, PyBytes>,
    ) -> PyResult<Bound<'py, Message>> {
        let envelope = match std::str::from_utf8(text.as_bytes()) {
            Ok(source) => ocppj::peek(source),
            Err(_) => ocppj::Envelope::default(),
        };
        message_of(
            py,
            ws::Message {
                opcode: ws::TEXT,
                data: text,
                envelope,
                close_code: None,
            },
        )
    }

    fn key_for(mask: bool) -> PyResult<Option<[u8; 4]>> {
        if mask {
            Ok(Some(ws::random_key().map_err(encode_error)?))
        } else {
            Ok(None)
        }
    }

    /// One frame; `mask=True` (client side) masks with a key from OS randomness.
    #[pyfunction]
    #[pyo3(signature = (opcode, payload, *, mask, fin = true))]
    fn encode_frame<'py>(
        py: Python<'py>,
        opcode: &Bound<'py, PyInt>,
        payload: &[u8],
        mask: bool,
        fin: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let opcode: u8 = opcode
            .extract()
            .map_err(|_| PyValueError::new_err(format!("invalid opcode {opcode}")))?;
        ws::check_frame(opcode, payload.len(), fin).map_err(encode_error)?;
        let key = key_for(mask)?;
        PyBytes::new_with(py, ws::frame_size(payload.len(), mask), |dst| {
            ws::write_frame(dst, opcode, fin, key, &[payload]);
            Ok(())
        })
    }

    /// A close frame; `code=None` gives an empty close payload (then `reason` must be empty).
    #[pyfunction]
    #[pyo3(signature = (code = None, reason = "", *, mask))]
    fn encode_close<'py>(
        py: Python<'py>,
        code: Option<&Bound<'py, PyInt>>,
        reason: &str,
        mask: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let code: Option<u16> = match code {
            None => None,
            Some(c) => Some(
                c.extract()
                    .map_err(|_| PyValueError::new_err(format!("invalid close code {c}")))?,
            ),
        };
        let prefix = ws::close_prefix(code, reason).map_err(encode_error)?;
        let parts: [&[u8]; 2] = match &prefix {
            Some(p) => [p, reason.as_bytes()],
            None => [&[], &[]],
        };
        let key = key_for(mask)?;
        let len = parts[0].len() + parts[1].len();
        PyBytes::new_with(py, ws::frame_size(len, mask), |dst| {
            ws::write_frame(dst, ws::CLOSE, true, key, &parts);
            Ok(())
        })
    }

    /// Native RFC 6455 frame reader/writer and OCPP-J envelope peek.
    #[pymodule]
    fn _codec(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("TEXT", ws::TEXT)?;
        m.add("BINARY", ws::BINARY)?;
        m.add("CLOSE", ws::CLOSE)?;
        m.add("PING", ws::PING)?;
        m.add("PONG", ws::PONG)?;
        m.add("NOT_OCPP", ocppj::NOT_OCPP)?;
        m.add("CALL", ocppj::CALL)?;
        m.add("CALLRESULT", ocppj::CALLRESULT)?;
        m.add("CALLERROR", ocppj::CALLERROR)?;
        m.add("CALLRESULTERROR", ocppj::CALLRESULTERROR)?;
        m.add("SEND", ocppj::SEND)?;
        // Benchmarks refuse a debug build (several times slower).
        m.add("OPTIMIZED", !cfg!(debug_assertions))?;

        let namespace = PyDict::new(py);
        namespace.set_item("__name__", "proxy._codec")?;
        py.run(PROTOCOL_ERROR_SOURCE, Some(&namespace), None)?;
        let cls = namespace
            .get_item("ProtocolError")?
            .ok_or_else(|| PyValueError::new_err("ProtocolError was not defined"))?
            .cast_into::<PyType>()?;
        m.add("ProtocolError", &cls)?;
        let _ = PROTOCOL_ERROR.set(py, cls.unbind());

        m.add_class::<Message>()?;
        m.add_class::<FrameReader>()?;
        m.add_class::<engine::Engine>()?;
        m.add_class::<engine::Handback>()?;
        m.add_function(wrap_pyfunction!(encode_frame, m)?)?;
        m.add_function(wrap_pyfunction!(encode_close, m)?)?;
        m.add_function(wrap_pyfunction!(text_message, m)?)?;
        // `add` keeps an `__all__` list as a side effect; the stub declares none.
        m.delattr("__all__")?;
        Ok(())
    }
}
