//! `ditto_native`: the Rust core of the Ditto toolkit.
//!
//! Each concern lives in its own pure-Rust module with `cargo test`s. Only the
//! `py` module (compiled with the `python` feature) touches PyO3.
pub mod dedupe;
pub mod filters;
pub mod masks;
pub mod normalize;
pub mod pack;
pub mod prompt;
pub mod roles;
pub mod sft;
pub mod template;
pub mod tokenize;
pub mod wikidata;

#[cfg(feature = "python")]
mod py;
