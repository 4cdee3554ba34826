//! Thin PyO3 bindings: convert types, release the GIL, call the pure module,
//! map its error to a Python exception. No logic lives here.
use pyo3::prelude::*;
use serde_json::{Map, Value as Json};

use crate::normalize;
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
    m.add_function(wrap_pyfunction!(py_render_chat_template, m)?)?;
    m.add_class::<PyChatTemplate>()?;
    Ok(())
}
