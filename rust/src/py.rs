//! Thin PyO3 bindings: convert types, release the GIL, call the pure module,
//! map its error to a Python exception. No logic lives here.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::PyRecordBatch;
use serde_json::{Map, Value as Json};

use crate::prompt::PromptEncoder;
use crate::sft::{self, ChatEncoder, Overlong, PackConfig, Packer, Session};
use crate::template::{ChatTemplate, TemplateError};
use crate::wikidata;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Float32Array, StringArray, UInt32Array};
use arrow_schema::DataType;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyArray;

use crate::{dedupe, filters, normalize, roles};

// The one project error type, shared by data_tools and ditto_jax because both
// import this neutral module. CLIs print its message as a single line.
pyo3::create_exception!(ditto_native, DittoError, pyo3::exceptions::PyValueError);

/// Dedupe key: NFKC, case fold, punctuation/whitespace folding (CJK-aware).
#[pyfunction]
#[pyo3(name = "normalize_text")]
fn py_normalize_text(py: Python<'_>, text: &str) -> String {
    py.detach(|| normalize::normalize(text))
}

fn scan_error(e: wikidata::ScanError) -> PyErr {
    match e {
        wikidata::ScanError::Invalid(m) => DittoError::new_err(m),
        wikidata::ScanError::Io(m) => pyo3::exceptions::PyOSError::new_err(m),
        wikidata::ScanError::Interrupted => pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted"),
    }
}

/// Scans a Wikidata dump; returns (rows as JSON Lines, stats as JSON).
#[pyfunction]
#[pyo3(name = "wikidata_scan", signature = (path, *, languages, classes, properties, keep_top, chunk_bytes, checkpoint=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn py_wikidata_scan<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    languages: Vec<String>,
    classes: Vec<(String, String)>,
    properties: Vec<String>,
    keep_top: Option<usize>,
    chunk_bytes: usize,
    checkpoint: Option<std::path::PathBuf>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, String)> {
    let cfg = wikidata::ScanConfig { languages, classes, properties, keep_top, chunk_bytes };
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        // Runs after every chunk: reports progress and lets Ctrl-C stop the scan.
        let mut on_chunk = |p: &wikidata::Progress| -> Result<(), ()> {
            Python::attach(|py| {
                let r = py.check_signals().and_then(|()| match &progress {
                    Some(cb) => cb.call1(py, (p.bytes_read, p.bytes_total, p.entities, p.rows_held)).map(|_| ()),
                    None => Ok(()),
                });
                r.map_err(|e| raised = Some(e))
            })
        };
        wikidata::scan(&path, &cfg, checkpoint.as_deref(), &mut on_chunk)
            .map(|out| (wikidata::rows_to_ndjson(&out.rows), serde_json::to_string(&out.stats).expect("stats serialize")))
    });
    match result {
        Ok((rows, stats)) => Ok((pyo3::types::PyBytes::new(py, &rows), stats)),
        Err(wikidata::ScanError::Interrupted) if raised.is_some() => Err(raised.expect("checked")),
        Err(e) => Err(scan_error(e)),
    }
}

/// Decompresses a dump and returns its length in bytes (the decompression floor).
#[pyfunction]
#[pyo3(name = "wikidata_decompressed_len", signature = (path, *, parallel=true))]
fn py_wikidata_decompressed_len(py: Python<'_>, path: std::path::PathBuf, parallel: bool) -> PyResult<u64> {
    py.detach(|| wikidata::decompressed_len(&path, parallel)).map_err(scan_error)
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

/// Inference prompts with message content kept as text (see `prompt`): the
/// same rendering and tokenization as `ChatEncoder`, without the turn layout.
#[pyclass(name = "PromptEncoder", module = "ditto_native", frozen)]
struct PyPromptEncoder {
    inner: PromptEncoder,
}

/// (role, content) string pairs from a list of dicts.
fn to_pairs(messages: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let values = to_messages(messages)?;
    values
        .iter()
        .enumerate()
        .map(|(i, m)| match (m.get("role").and_then(Json::as_str), m.get("content").and_then(Json::as_str)) {
            (Some(r), Some(c)) => Ok((r.to_owned(), c.to_owned())),
            _ => Err(DittoError::new_err(format!("chat input: messages[{i}] needs string 'role' and 'content'"))),
        })
        .collect()
}

#[pymethods]
impl PyPromptEncoder {
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
            .detach(|| PromptEncoder::new(tokenizer_json, chat_template, bos_token, eos_token, extra))
            .map_err(ditto_err)?;
        Ok(Self { inner })
    }

    #[getter]
    fn system_policy(&self) -> &'static str {
        self.inner.system_policy().as_str()
    }

    /// Token ids of one conversation (list of {role, content} dicts).
    #[pyo3(signature = (messages, add_generation_prompt=true))]
    fn encode(&self, py: Python<'_>, messages: &Bound<'_, PyAny>, add_generation_prompt: bool) -> PyResult<Vec<u32>> {
        let pairs = to_pairs(messages)?;
        py.detach(|| {
            let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
            self.inner.encode_prompt(&borrowed, add_generation_prompt)
        })
        .map_err(ditto_err)
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

/// The role's SFT system message (`You are {label}, {description}`, ...).
#[pyfunction]
#[pyo3(name = "system_message")]
fn py_system_message(label: &str, description: &str, lang: &str) -> String {
    roles::system_message(label, description, lang)
}

// ------------------------------------------------------------ arrow helpers

fn project_err(e: impl std::fmt::Display) -> PyErr {
    DittoError::new_err(e.to_string())
}

fn arrow_chunks(arr: AnyArray, what: &str) -> PyResult<Vec<ArrayRef>> {
    let chunked = arr.into_chunked_array().map_err(|e| DittoError::new_err(format!("{what}: {}", PyErr::from(e))))?;
    Ok(chunked.into_inner().0)
}

/// Borrowed string values of any Arrow string type; null reads as "".
fn str_values<'a>(chunks: &'a [ArrayRef], what: &str) -> PyResult<Vec<&'a str>> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
    for c in chunks {
        match c.data_type() {
            DataType::Utf8 => out.extend(c.as_string::<i32>().iter().map(Option::unwrap_or_default)),
            DataType::LargeUtf8 => out.extend(c.as_string::<i64>().iter().map(Option::unwrap_or_default)),
            DataType::Utf8View => out.extend(c.as_string_view().iter().map(Option::unwrap_or_default)),
            DataType::Null => out.extend(std::iter::repeat_n("", c.len())),
            other => return Err(DittoError::new_err(format!("{what}: expected strings, got Arrow type {other}"))),
        }
    }
    Ok(out)
}

/// Values of any Arrow integer type, as i64.
fn int_values(chunks: &[ArrayRef], what: &str) -> PyResult<Vec<Option<i64>>> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
    for c in chunks {
        if !(c.data_type().is_integer() || c.data_type() == &DataType::Null) {
            return Err(DittoError::new_err(format!("{what}: expected integers, got Arrow type {}", c.data_type())));
        }
        let cast = arrow_cast::cast(c, &DataType::Int64).map_err(|e| DittoError::new_err(format!("{what}: {e}")))?;
        out.extend(cast.as_primitive::<Int64Type>().iter());
    }
    Ok(out)
}

fn groups_of(groups: Option<AnyArray>) -> PyResult<Option<Vec<u64>>> {
    groups
        .map(|g| {
            let chunks = arrow_chunks(g, "groups")?;
            Ok(int_values(&chunks, "groups")?.into_iter().map(|v| v.map_or(u64::MAX, |x| x as u64)).collect())
        })
        .transpose()
}

fn to_pyarrow(py: Python<'_>, array: ArrayRef) -> PyResult<Bound<'_, PyAny>> {
    let exported = PyArray::from_array_ref(array).into_pyobject(py)?;
    py.import("pyarrow")?.getattr("array")?.call1((exported,))
}

// ----------------------------------------------------------------- dedupe

#[pyfunction]
#[pyo3(name = "exact_duplicates", signature = (texts, groups=None, *, num_threads=None))]
fn py_exact_duplicates<'py>(
    py: Python<'py>,
    texts: AnyArray,
    groups: Option<AnyArray>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let chunks = arrow_chunks(texts, "texts")?;
    let texts = str_values(&chunks, "texts")?;
    let groups = groups_of(groups)?;
    let first = py
        .detach(|| dedupe::with_threads(num_threads, || dedupe::exact_duplicates(&texts, groups.as_deref())))
        .and_then(|r| r)
        .map_err(project_err)?;
    to_pyarrow(py, Arc::new(UInt32Array::from(first)))
}

#[pyfunction]
#[pyo3(
    name = "near_duplicates",
    signature = (texts, groups=None, *, word_ngram, cjk_char_ngram, num_perm, bands, rows, threshold, seed, max_bucket_window, num_threads=None)
)]
#[allow(clippy::too_many_arguments)]
fn py_near_duplicates<'py>(
    py: Python<'py>,
    texts: AnyArray,
    groups: Option<AnyArray>,
    word_ngram: usize,
    cjk_char_ngram: usize,
    num_perm: usize,
    bands: usize,
    rows: usize,
    threshold: f64,
    seed: u64,
    max_bucket_window: usize,
    num_threads: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let cfg = dedupe::LshConfig {
        shingles: dedupe::ShingleConfig { word_ngram, cjk_char_ngram },
        num_perm,
        bands,
        rows,
        threshold,
        seed,
        max_bucket_window,
    };
    let chunks = arrow_chunks(texts, "texts")?;
    let texts = str_values(&chunks, "texts")?;
    let groups = groups_of(groups)?;
    let r = py
        .detach(|| dedupe::with_threads(num_threads, || dedupe::near_duplicates(&texts, groups.as_deref(), &cfg)))
        .and_then(|r| r)
        .map_err(project_err)?;
    let partner: UInt32Array = r.partner.iter().map(|&p| (p != dedupe::NO_PARTNER).then_some(p)).collect();
    Ok((
        to_pyarrow(py, Arc::new(UInt32Array::from(r.representative)))?,
        to_pyarrow(py, Arc::new(partner))?,
        to_pyarrow(py, Arc::new(Float32Array::from(r.jaccard)))?,
    ))
}

fn near_to_pyarrow(py: Python<'_>, r: dedupe::NearDuplicates) -> PyResult<Bound<'_, pyo3::types::PyTuple>> {
    let partner: UInt32Array = r.partner.iter().map(|&p| (p != dedupe::NO_PARTNER).then_some(p)).collect();
    pyo3::types::PyTuple::new(
        py,
        [
            to_pyarrow(py, Arc::new(UInt32Array::from(r.representative)))?,
            to_pyarrow(py, Arc::new(partner))?,
            to_pyarrow(py, Arc::new(Float32Array::from(r.jaccard)))?,
        ],
    )
}

/// Exact, then near-duplicate passes over one column, normalising each text once.
#[pyfunction]
#[pyo3(
    name = "duplicates",
    signature = (texts, groups=None, *, exact, threshold=None, word_ngram, cjk_char_ngram, num_perm, bands, rows, seed, max_bucket_window, num_threads=None)
)]
#[allow(clippy::too_many_arguments)]
fn py_duplicates<'py>(
    py: Python<'py>,
    texts: AnyArray,
    groups: Option<AnyArray>,
    exact: bool,
    threshold: Option<f64>,
    word_ngram: usize,
    cjk_char_ngram: usize,
    num_perm: usize,
    bands: usize,
    rows: usize,
    seed: u64,
    max_bucket_window: usize,
    num_threads: Option<usize>,
) -> PyResult<(Option<Bound<'py, PyAny>>, Option<Bound<'py, pyo3::types::PyTuple>>)> {
    let cfg = threshold.map(|threshold| dedupe::LshConfig {
        shingles: dedupe::ShingleConfig { word_ngram, cjk_char_ngram },
        num_perm,
        bands,
        rows,
        threshold,
        seed,
        max_bucket_window,
    });
    let chunks = arrow_chunks(texts, "texts")?;
    let texts = str_values(&chunks, "texts")?;
    let groups = groups_of(groups)?;
    let (first, near) = py
        .detach(|| {
            dedupe::with_threads(num_threads, || dedupe::duplicates(&texts, groups.as_deref(), exact, cfg.as_ref()))
        })
        .and_then(|r| r)
        .map_err(project_err)?;
    let first = first.map(|f| to_pyarrow(py, Arc::new(UInt32Array::from(f)))).transpose()?;
    let near = near.map(|r| near_to_pyarrow(py, r)).transpose()?;
    Ok((first, near))
}

// ---------------------------------------------------------------- filters

#[pyfunction]
#[pyo3(
    name = "check_turns",
    signature = (*, session_index, questions, answers, rejection_labels, finish_reasons, langs, systems, simulators, config_json, num_threads=None)
)]
#[allow(clippy::too_many_arguments)]
fn py_check_turns<'py>(
    py: Python<'py>,
    session_index: AnyArray,
    questions: AnyArray,
    answers: AnyArray,
    rejection_labels: AnyArray,
    finish_reasons: AnyArray,
    langs: AnyArray,
    systems: AnyArray,
    simulators: AnyArray,
    config_json: &str,
    num_threads: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let cfg = filters::FilterConfig::from_json(config_json).map_err(project_err)?;
    let turn_cols = [
        arrow_chunks(session_index, "session_index")?,
        arrow_chunks(questions, "questions")?,
        arrow_chunks(answers, "answers")?,
        arrow_chunks(rejection_labels, "rejection_labels")?,
        arrow_chunks(finish_reasons, "finish_reasons")?,
    ];
    let session_cols =
        [arrow_chunks(langs, "langs")?, arrow_chunks(systems, "systems")?, arrow_chunks(simulators, "simulators")?];
    let index = int_values(&turn_cols[0], "session_index")?;
    let (q, a) = (str_values(&turn_cols[1], "questions")?, str_values(&turn_cols[2], "answers")?);
    let labels = int_values(&turn_cols[3], "rejection_labels")?;
    let finish: Vec<Option<&str>> = {
        let values = str_values(&turn_cols[4], "finish_reasons")?;
        values.into_iter().map(|s| (!s.is_empty()).then_some(s)).collect()
    };
    let (langs, systems, sims) = (
        str_values(&session_cols[0], "langs")?,
        str_values(&session_cols[1], "systems")?,
        str_values(&session_cols[2], "simulators")?,
    );
    let n = index.len();
    if [q.len(), a.len(), labels.len(), finish.len()].iter().any(|&l| l != n) {
        return Err(DittoError::new_err("check_turns: per-turn arrays differ in length"));
    }
    if systems.len() != langs.len() || sims.len() != langs.len() {
        return Err(DittoError::new_err("check_turns: per-session arrays differ in length"));
    }
    let sessions: Vec<filters::SessionInfo> = (0..langs.len())
        .map(|i| filters::SessionInfo { lang: langs[i], system: systems[i], simulator: sims[i] })
        .collect();
    let turns: Vec<filters::Turn> = (0..n)
        .map(|i| filters::Turn {
            session: index[i].map_or(usize::MAX, |s| usize::try_from(s).unwrap_or(usize::MAX)),
            question: q[i],
            answer: a[i],
            rejection_label: labels[i].and_then(|l| i8::try_from(l).ok()),
            finish_reason: finish[i],
        })
        .collect();
    let results = py
        .detach(|| dedupe::with_threads(num_threads, || filters::check_turns(&turns, &sessions, &cfg)))
        .map_err(project_err)?
        .map_err(project_err)?;
    let reasons: StringArray = results.iter().map(|r| r.as_ref().map(|f| f.reason.code())).collect();
    let details: StringArray = results.iter().map(|r| r.as_ref().map(|f| f.detail.as_str())).collect();
    Ok((to_pyarrow(py, Arc::new(reasons))?, to_pyarrow(py, Arc::new(details))?))
}

#[pymodule]
fn ditto_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DittoError", m.py().get_type::<DittoError>())?;
    m.add_function(wrap_pyfunction!(py_normalize_text, m)?)?;
    m.add_function(wrap_pyfunction!(py_wikidata_scan, m)?)?;
    m.add_function(wrap_pyfunction!(py_wikidata_decompressed_len, m)?)?;
    m.add_function(wrap_pyfunction!(py_render_chat_template, m)?)?;
    m.add_class::<PyChatTemplate>()?;
    m.add_class::<PyChatEncoder>()?;
    m.add_class::<PyPromptEncoder>()?;
    m.add_class::<PySftPacker>()?;
    m.add_function(wrap_pyfunction!(py_is_heldout, m)?)?;
    m.add_function(wrap_pyfunction!(py_system_message, m)?)?;
    let codes = pyo3::types::PyTuple::new(m.py(), filters::Reason::ALL.iter().map(|r| r.code()))?;
    m.add("REASON_CODES", codes)?;
    m.add_function(wrap_pyfunction!(py_exact_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(py_near_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(py_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(py_check_turns, m)?)?;
    Ok(())
}
