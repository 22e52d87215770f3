//! `proxy._codec.Engine`: the forwarding engine (`crate::engine`) for Python.
//!
//! The frame readers a link is adopted with are emptied while the engine holds their state and
//! filled again when `take` reports the link's hand-back, so Python's objects stay the readers
//! of their directions throughout.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFrozenSet, PyList, PyTuple};

use super::{message_of, FrameReader};
use crate::engine::{self, Adopt, Counters, Pacing, Report, Why};
use crate::ws;

/// A link the engine gave back (see `crate::engine::Handback`); its readers are already restored.
#[pyclass(frozen, module = "proxy._codec")]
pub struct Handback {
    #[pyo3(get)]
    link: u64,
    /// "released", "message", "eof", "read_failed", "write_failed" or "panicked".
    #[pyo3(get)]
    why: &'static str,
    /// The side the reason concerns (0 charger, 1 upstream); None for "released"/"panicked".
    #[pyo3(get)]
    side: Option<usize>,
    #[pyo3(get)]
    errno: i32,
    #[pyo3(get)]
    trailing: (Py<PyBytes>, Py<PyBytes>),
    #[pyo3(get)]
    unsent: (Py<PyBytes>, Py<PyBytes>),
    #[pyo3(get)]
    pending: (Vec<String>, Vec<String>),
    #[pyo3(get)]
    last_call: Option<Py<PyBytes>>,
}

/// The forwarding engine of one worker; see `proxy/_codec.pyi`.
#[pyclass(module = "proxy._codec")]
pub struct Engine {
    engine: Option<engine::Engine>,
    readers: HashMap<u64, [Py<FrameReader>; 2]>,
    activity: HashMap<u64, Arc<AtomicU64>>,
}

fn bytes_pair(py: Python<'_>, [a, b]: [Vec<u8>; 2]) -> (Py<PyBytes>, Py<PyBytes>) {
    (PyBytes::new(py, &a).unbind(), PyBytes::new(py, &b).unbind())
}

impl Engine {
    fn reports<'py>(
        &mut self,
        py: Python<'py>,
        (reports, [charger, upstream]): (Vec<Report>, [Counters; 2]),
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyTuple>)> {
        let out = PyList::empty(py);
        for report in reports {
            match report {
                Report::Passed {
                    id,
                    side,
                    at,
                    messages,
                } => {
                    let messages = messages
                        .into_iter()
                        .map(|m| {
                            let data = PyBytes::new(py, &m.data);
                            message_of(
                                py,
                                ws::Message {
                                    opcode: m.opcode,
                                    data,
                                    envelope: m.envelope,
                                    close_code: m.close_code,
                                },
                            )
                        })
                        .collect::<PyResult<Vec<_>>>()?;
                    out.append((id, side, at, messages))?;
                }
                Report::Ended(h) => out.append(self.handback(py, *h)?)?,
            }
        }
        let counters = (counters_of(py, charger)?, counters_of(py, upstream)?).into_pyobject(py)?;
        Ok((out, counters))
    }

    fn open(&self) -> PyResult<&engine::Engine> {
        self.engine
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the engine is closed"))
    }

    fn handback(&mut self, py: Python<'_>, h: engine::Handback) -> PyResult<Handback> {
        let engine::Handback {
            id,
            why,
            readers,
            trailing,
            unsent,
            pending,
            last_call,
        } = h;
        if let Some(owners) = self.readers.remove(&id) {
            for (owner, state) in owners.iter().zip(readers) {
                owner.borrow_mut(py).inner = state;
            }
        }
        self.activity.remove(&id);
        let (why, side, errno) = match why {
            Why::Released => ("released", None, 0),
            Why::Message(s) => ("message", Some(s), 0),
            Why::Eof(s) => ("eof", Some(s), 0),
            Why::ReadFailed(s, e) => ("read_failed", Some(s), e),
            Why::WriteFailed(s, e) => ("write_failed", Some(s), e),
            Why::Large(s) => ("large", Some(s), 0),
            Why::Panicked => ("panicked", None, 0),
        };
        let [p0, p1] = pending;
        Ok(Handback {
            link: id,
            why,
            side,
            errno,
            trailing: bytes_pair(py, trailing),
            unsent: bytes_pair(py, unsent),
            pending: (p0, p1),
            last_call: last_call.map(|c| PyBytes::new(py, &c).unbind()),
        })
    }
}

fn counters_of<'py>(py: Python<'py>, c: Counters) -> PyResult<Bound<'py, PyTuple>> {
    let frames: Vec<(u8, u8, u64)> = c.frames.into_iter().map(|((o, t), n)| (o, t, n)).collect();
    let calls: Vec<(String, u64)> = c.calls.into_iter().collect();
    (c.bytes, frames, calls, c.buckets, c.seconds).into_pyobject(py)
}

#[pymethods]
impl Engine {
    /// Starts the engine's thread; `bounds`: upper bounds (seconds) of the forwarding-time
    /// histogram's buckets, the last one infinite; `batch_window` and `counts_every`: the
    /// pacing of its signals, in seconds (`crate::engine::Pacing`).
    #[new]
    fn new(bounds: Vec<f64>, batch_window: f64, counts_every: f64) -> PyResult<Self> {
        if bounds.is_empty() || bounds.last().is_some_and(|b| b.is_finite()) {
            return Err(PyValueError::new_err("the last bound must be infinite"));
        }
        let seconds = |s: f64| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| PyValueError::new_err("pacing must be a finite, non-negative time"))
        };
        let pacing = Pacing {
            window: seconds(batch_window)?,
            counts_every: seconds(counts_every)?,
        };
        Ok(Engine {
            engine: Some(engine::Engine::start(bounds, pacing)?),
            readers: HashMap::new(),
            activity: HashMap::new(),
        })
    }

    /// Arguments are taken by `__new__`; this only gives the class a Python-visible `__init__`
    /// with the same signature.
    fn __init__(&self, bounds: Vec<f64>, batch_window: f64, counts_every: f64) {
        let _ = (bounds, batch_window, counts_every);
    }

    /// The descriptor that turns readable when `take` has something.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.open()?.notify_fd())
    }

    /// Hands a link to the engine (see the stub for the arguments).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (link, fds, readers, trailing, pending, tracked, keep_last_call, copy_charger=false))]
    fn adopt(
        &mut self,
        py: Python<'_>,
        link: u64,
        fds: (i32, i32),
        readers: (Py<FrameReader>, Py<FrameReader>),
        trailing: (Vec<u8>, Vec<u8>),
        pending: (Vec<String>, Vec<String>),
        tracked: &Bound<'_, PyFrozenSet>,
        keep_last_call: bool,
        copy_charger: bool,
    ) -> PyResult<()> {
        if self.readers.contains_key(&link) {
            return Err(PyValueError::new_err(format!(
                "link {link} is adopted already"
            )));
        }
        let tracked: HashSet<String> = tracked
            .iter()
            .map(|a| a.extract::<String>())
            .collect::<PyResult<_>>()?;
        let taken = [&readers.0, &readers.1].map(|r| {
            let mut r = r.borrow_mut(py);
            let fresh = ws::FrameReader::new(r.inner.from_client(), r.inner.max_message_size());
            std::mem::replace(&mut r.inner, fresh)
        });
        let activity = Arc::new(AtomicU64::new(self.open()?.now_ns()));
        let adopted = self.open()?.adopt(Adopt {
            id: link,
            fds: [fds.0, fds.1],
            readers: taken,
            trailing: [trailing.0, trailing.1],
            pending: [pending.0, pending.1],
            tracked: Arc::new(tracked),
            keep_last_call,
            copy_charger,
            activity: Arc::clone(&activity),
        });
        if let Err(refused) = adopted {
            for (owner, state) in [&readers.0, &readers.1].into_iter().zip(refused.readers) {
                owner.borrow_mut(py).inner = state;
            }
            return Err(PyRuntimeError::new_err("the forwarding engine has stopped"));
        }
        self.readers.insert(link, [readers.0, readers.1]);
        self.activity.insert(link, activity);
        Ok(())
    }

    /// Asks for a link back; its `Handback` comes with a later `take`.
    fn release(&self, link: u64) -> PyResult<()> {
        self.open()?.release(link);
        Ok(())
    }

    /// Seconds since bytes last passed through an adopted link (None: not adopted).
    fn idle_seconds(&self, link: u64) -> Option<f64> {
        let engine = self.engine.as_ref()?;
        let last = self.activity.get(&link)?.load(Ordering::Relaxed);
        Some(engine.now_ns().saturating_sub(last) as f64 / 1e9)
    }

    /// False once the engine's loop has ended (every link is, or is being, handed back).
    fn running(&self) -> bool {
        self.engine.as_ref().is_some_and(engine::Engine::running)
    }

    /// The reports waiting, in order (`(link, side, at, messages)` for tracked messages that
    /// passed, `Handback` for links given back), and the counters of both directions since the
    /// last call: `(bytes, [(opcode, message_type, n)], [(action, n)], buckets, seconds)`.
    fn take<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyTuple>)> {
        let taken = self.open()?.take();
        self.reports(py, taken)
    }

    /// Stops the thread; what it reported last comes back as from `take`, with every link
    /// still adopted handed back. Later calls return nothing.
    fn close<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyTuple>)> {
        let taken = match self.engine.take() {
            Some(engine) => py.detach(|| engine.stop()),
            None => (Vec::new(), [Counters::new(0), Counters::new(0)]),
        };
        self.reports(py, taken)
    }
}
