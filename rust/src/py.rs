//! Thin PyO3 bindings: convert types, release the GIL, call the pure module,
//! map its error to a Python exception. No logic lives here.
use pyo3::prelude::*;
use serde_json::{Map, Value as Json};

use crate::normalize;
use crate::wikidata;
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
#[pyo3(name = "wikidata_decompressed_len")]
fn py_wikidata_decompressed_len(py: Python<'_>, path: std::path::PathBuf) -> PyResult<u64> {
    py.detach(|| wikidata::decompressed_len(&path)).map_err(scan_error)
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

#[pymodule]
fn ditto_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DittoError", m.py().get_type::<DittoError>())?;
    m.add_function(wrap_pyfunction!(py_normalize_text, m)?)?;
    m.add_function(wrap_pyfunction!(py_wikidata_scan, m)?)?;
    m.add_function(wrap_pyfunction!(py_wikidata_decompressed_len, m)?)?;
    m.add_function(wrap_pyfunction!(py_render_chat_template, m)?)?;
    m.add_class::<PyChatTemplate>()?;
    Ok(())
}
