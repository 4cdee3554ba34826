//! Thin PyO3 bindings: convert types, release the GIL, call the pure module,
//! map its error to a Python exception. No logic lives here.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::PyRecordBatch;
use serde_json::{Map, Value as Json};

use crate::normalize;
use crate::sft::{self, ChatEncoder, Overlong, PackConfig, Packer, Session};
use crate::template::{ChatTemplate, TemplateError};

// The one project error type, shared by data_tools and ditto_jax because both
// import this neutral module. CLIs print its message as a single line.
pyo3::create_exception!(ditto_native, DittoError, pyo3::exceptions::PyValueError);

/// Dedupe key: NFKC, case fold, punctuation/whitespace folding (CJK-aware).
#[pyfunction]
#[pyo3(name = "normalize_text")]
fn py_normalize_text(py: Python<'_>, text: &str) -> String {
    py.detach(|| normalize::normalize(text))
}

fn ditto_err(e: impl std::fmt::Display) -> PyErr {
    DittoError::new_err(e.to_string())
}

fn template_err(e: TemplateError) -> PyErr {
    DittoError::new_err(e.to_string())
}

/// Python lists of dicts / dicts of JSON-like values to serde_json.
fn to_messages(messages: &Bound<'_, PyAny>) -> PyResult<Vec<Json>> {
    pythonize::depythonize(messages).map_err(|e| {
        DittoError::new_err(format!(
            "chat template input: messages must be a list of JSON-like dicts: {e}"
        ))
    })
}

fn to_extra(extra_vars: Option<&Bound<'_, PyAny>>) -> PyResult<Map<String, Json>> {
    match extra_vars {
        None => Ok(Map::new()),
        Some(obj) => pythonize::depythonize(obj).map_err(|e| {
            DittoError::new_err(format!(
                "chat template input: extra_vars must be a dict of JSON-like values: {e}"
            ))
        }),
    }
}

/// A compiled chat template (`ChatTemplate(source, bos_token=None, eos_token=None)`).
#[pyclass(name = "ChatTemplate", module = "ditto_native", frozen)]
struct PyChatTemplate {
    inner: ChatTemplate,
}

#[pymethods]
impl PyChatTemplate {
    #[new]
    #[pyo3(signature = (source, bos_token=None, eos_token=None))]
    fn new(
        py: Python<'_>,
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| ChatTemplate::new(source, bos_token, eos_token))
            .map_err(template_err)?;
        Ok(Self { inner })
    }

    #[pyo3(signature = (messages, add_generation_prompt=false, extra_vars=None))]
    fn render(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
        extra_vars: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let (messages, extra) = (to_messages(messages)?, to_extra(extra_vars)?);
        py.detach(|| self.inner.render(&messages, add_generation_prompt, &extra))
            .map_err(template_err)
    }
}

/// Compile `template` and render `messages` once; see `ChatTemplate` to reuse.
#[pyfunction]
#[pyo3(
    name = "render_chat_template",
    signature = (template, messages, *, add_generation_prompt=false, bos_token=None, eos_token=None, extra_vars=None)
)]
fn py_render_chat_template(
    py: Python<'_>,
    template: &str,
    messages: &Bound<'_, PyAny>,
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
    extra_vars: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let (messages, extra) = (to_messages(messages)?, to_extra(extra_vars)?);
    py.detach(|| {
        ChatTemplate::new(template, bos_token, eos_token)?.render(
            &messages,
            add_generation_prompt,
            &extra,
        )
    })
    .map_err(template_err)
}

/// Render -> tokenize -> assistant-only mask for one tokenizer and template;
/// `pack` adds the over-long policy, the held-out split and packing.
#[pyclass(name = "ChatEncoder", module = "ditto_native", frozen)]
struct PyChatEncoder {
    inner: ChatEncoder,
}

fn read_sessions(sessions: AnyRecordBatch) -> PyResult<Vec<arrow_array::RecordBatch>> {
    let (batches, _) = sessions.into_table()?.into_inner();
    Ok(batches)
}

fn parse_sessions(batches: &[arrow_array::RecordBatch]) -> Result<Vec<Session<'_>>, sft::SftError> {
    let mut all = Vec::new();
    for b in batches {
        all.extend(sft::sessions_from_batch(b)?);
    }
    Ok(all)
}

#[pymethods]
impl PyChatEncoder {
    #[new]
    #[pyo3(signature = (tokenizer_json, chat_template, bos_token=None, eos_token=None, template_vars=None))]
    fn new(
        py: Python<'_>,
        tokenizer_json: &str,
        chat_template: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        template_vars: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let extra = to_extra(template_vars)?;
        let inner = py
            .detach(|| ChatEncoder::new(tokenizer_json, chat_template, bos_token, eos_token, extra))
            .map_err(ditto_err)?;
        Ok(Self { inner })
    }

    #[getter]
    fn system_policy(&self) -> &'static str {
        self.inner.system_policy().as_str()
    }

    /// Text that precedes every assistant turn; the mask starts after it.
    #[getter]
    fn anchor(&self) -> String {
        self.inner.layout().anchor.clone()
    }

    /// Text that ends an assistant turn; the mask ends with it.
    #[getter]
    fn end_of_turn(&self) -> String {
        self.inner.layout().end_of_turn.clone()
    }

    /// Per-session `input_ids`, `loss_mask`, `drop_reason` as a pyarrow RecordBatch.
    fn encode<'py>(&self, py: Python<'py>, sessions: AnyRecordBatch) -> PyResult<Bound<'py, PyAny>> {
        let batches = read_sessions(sessions)?;
        let batch = py
            .detach(|| {
                let sessions = parse_sessions(&batches)?;
                sft::chats_to_batch(&self.inner.encode_all(&sessions))
            })
            .map_err(ditto_err)?;
        PyRecordBatch::new(batch).into_pyarrow(py)
    }
}

/// Encodes sessions chunk by chunk with a `ChatEncoder`, then packs the
/// train and held-out splits.
#[pyclass(name = "SftPacker", module = "ditto_native")]
struct PySftPacker {
    encoder: Py<PyChatEncoder>,
    inner: Option<Packer>,
}

#[pymethods]
impl PySftPacker {
    #[new]
    #[pyo3(signature = (encoder, *, seq_len, overlong="truncate", heldout_fraction=0.02, pad_id=0))]
    fn new(encoder: Py<PyChatEncoder>, seq_len: usize, overlong: &str, heldout_fraction: f64, pad_id: u32) -> PyResult<Self> {
        let overlong = match overlong {
            "truncate" => Overlong::Truncate,
            "drop" => Overlong::Drop,
            other => return Err(PyValueError::new_err(format!("overlong must be 'truncate' or 'drop', not {other:?}"))),
        };
        if seq_len == 0 || !(0.0..=1.0).contains(&heldout_fraction) {
            return Err(PyValueError::new_err("seq_len must be positive and heldout_fraction in [0, 1]"));
        }
        let cfg = PackConfig { seq_len, overlong, heldout_fraction, pad_id };
        Ok(Self { encoder, inner: Some(Packer::new(cfg)) })
    }

    /// Encode one chunk of sessions (any Arrow table or batch); returns its row count.
    fn add(&mut self, py: Python<'_>, sessions: AnyRecordBatch) -> PyResult<usize> {
        let batches = read_sessions(sessions)?;
        let encoder = &self.encoder.get().inner;
        let packer = self.inner.as_mut().ok_or_else(|| PyValueError::new_err("SftPacker already finished"))?;
        py.detach(|| {
            let sessions = parse_sessions(&batches)?;
            packer.add(encoder, &sessions);
            Ok::<_, sft::SftError>(sessions.len())
        })
        .map_err(ditto_err)
    }

    /// Pack: (train RecordBatch, heldout RecordBatch, stats dict).
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let packer = self.inner.take().ok_or_else(|| PyValueError::new_err("SftPacker already finished"))?;
        let (out, train, heldout) = py
            .detach(|| {
                let out = packer.finish();
                let train = sft::rows_to_batch(&out.train.rows)?;
                let heldout = sft::rows_to_batch(&out.heldout.rows)?;
                Ok::<_, sft::SftError>((out, train, heldout))
            })
            .map_err(ditto_err)?;
        let stats = PyDict::new(py);
        stats.set_item("sessions_in", out.sessions_in)?;
        stats.set_item("truncated", out.truncated)?;
        stats.set_item("dropped", out.dropped.into_iter().collect::<Vec<_>>())?;
        for (name, split) in [("train", &out.train), ("heldout", &out.heldout)] {
            let d = PyDict::new(py);
            d.set_item("num_sessions", split.num_sessions)?;
            d.set_item("real_tokens", split.real_tokens)?;
            d.set_item("loss_tokens", split.loss_tokens)?;
            d.set_item("num_rows", split.rows.num_rows())?;
            stats.set_item(name, d)?;
        }
        Ok((PyRecordBatch::new(train).into_pyarrow(py)?, PyRecordBatch::new(heldout).into_pyarrow(py)?, stats))
    }
}

/// Whether a session goes to the held-out split (SHA-256 of its id).
#[pyfunction]
#[pyo3(name = "is_heldout")]
fn py_is_heldout(session_id: &str, fraction: f64) -> bool {
    sft::is_heldout(session_id, fraction)
}

#[pymodule]
fn ditto_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DittoError", m.py().get_type::<DittoError>())?;
    m.add_function(wrap_pyfunction!(py_normalize_text, m)?)?;
    m.add_function(wrap_pyfunction!(py_render_chat_template, m)?)?;
    m.add_class::<PyChatTemplate>()?;
    m.add_class::<PyChatEncoder>()?;
    m.add_class::<PySftPacker>()?;
    m.add_function(wrap_pyfunction!(py_is_heldout, m)?)?;
    Ok(())
}
