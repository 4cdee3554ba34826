//! Thin PyO3 bindings: convert types, release the GIL, call the pure module,
//! map its error to a Python exception. No logic lives here.
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Float32Array, StringArray, UInt32Array};
use arrow_schema::DataType;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyArray;

use crate::{dedupe, filters, normalize};

// The one project error type, shared by data_tools and ditto_jax because both
// import this neutral module. CLIs print its message as a single line.
pyo3::create_exception!(ditto_native, DittoError, pyo3::exceptions::PyValueError);

#[pyfunction]
#[pyo3(name = "normalize_text")]
fn py_normalize_text(py: Python<'_>, text: &str) -> String {
    py.detach(|| normalize::normalize(text))
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
    let codes = pyo3::types::PyTuple::new(m.py(), filters::Reason::ALL.iter().map(|r| r.code()))?;
    m.add("REASON_CODES", codes)?;
    m.add_function(wrap_pyfunction!(py_exact_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(py_near_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(py_check_turns, m)?)?;
    Ok(())
}
