//! Thin PyO3 bindings: convert types, release the GIL, call the pure module,
//! map its error to a Python exception. No logic lives here.
use pyo3::prelude::*;

use crate::normalize;

// The one project error type, shared by data_tools and ditto_jax because both
// import this neutral module. CLIs print its message as a single line.
pyo3::create_exception!(ditto_native, DittoError, pyo3::exceptions::PyValueError);

#[pyfunction]
#[pyo3(name = "normalize_text")]
fn py_normalize_text(py: Python<'_>, text: &str) -> String {
    py.detach(|| normalize::normalize(text))
}

#[pymodule]
fn ditto_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DittoError", m.py().get_type::<DittoError>())?;
    m.add_function(wrap_pyfunction!(py_normalize_text, m)?)?;
    Ok(())
}
