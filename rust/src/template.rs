//! Chat-template rendering with Hugging Face `apply_chat_template` semantics.
//!
//! Model repositories ship their chat format as a Jinja template. transformers
//! renders it with Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls, no
//! trailing newline kept) plus a few globals; this module does the same with
//! minijinja so that training, inference and cleaning share one renderer.
//!
//! Sandbox: minijinja is sandboxed by construction. A template only sees the
//! plain values put into its context (JSON data converted to minijinja values)
//! and the functions registered here; it cannot reach Python objects, files or
//! the process, so templates from model repositories are safe to render.
//!
//! What matches transformers (checked against it in tests/test_chat_template.py):
//! - `raise_exception(msg)` fails the render with `msg`;
//! - `tojson` is Python's `json.dumps(x, ensure_ascii=False)` with the same
//!   optional `ensure_ascii`, `indent`, `separators` and `sort_keys`;
//! - `strftime_now(fmt)` formats the local time (chrono's strftime, which
//!   agrees with C's for the common specifiers; `%Z` gives an offset);
//! - Python string and dict methods (`strip`, `split`, `startswith`, `items`,
//!   `get` ...) through minijinja-contrib's pycompat;
//! - `tools` and `documents` default to none, and message keys whose value is
//!   null are dropped, as transformers does before rendering.
//!
//! Not replicated: the `{% generation %}` tag (assistant masks come from the
//! tokenizer stage instead) and transformers 5's copying of `reasoning` or
//! `thinking` into `reasoning_content`. minijinja 3 already prints values the
//! Python way (`True`, `None`, `['a']`).
use std::fmt::{self, Write as _};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Rest, Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value as Json};

const TEMPLATE_NAME: &str = "chat_template";

/// Why a chat template failed. Every message is a single line that names the
/// failing construct, minijinja's error kind and the template line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The source does not compile (syntax error, unknown tag ...).
    Compile(String),
    /// Rendering failed (`raise_exception`, a type error, an unknown method ...).
    Render(String),
    /// The inputs are not what a chat template receives.
    Input(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Compile(m) => write!(f, "chat template does not compile: {m}"),
            Self::Render(m) => write!(f, "chat template render failed: {m}"),
            Self::Input(m) => write!(f, "chat template input: {m}"),
        }
    }
}

impl std::error::Error for TemplateError {}

/// minijinja's `kind: detail (in chat_template:LINE)`, on one line.
fn one_line(err: &Error) -> String {
    let mut msg = err.to_string();
    if let Some(src) = std::error::Error::source(err) {
        let _ = write!(msg, ": {src}");
    }
    msg.replace("\r\n", " ").replace(['\n', '\r'], " ")
}

/// A compiled chat template, reusable from many threads.
///
/// ```
/// use ditto_native::template::ChatTemplate;
/// let t = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}",
///     None,
///     None,
/// )
/// .unwrap();
/// let msgs = [serde_json::json!({"role": "user", "content": "Hi"})];
/// assert_eq!(t.render(&msgs, false, &Default::default()).unwrap(), "<|user|>Hi");
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

// A rayon pipeline shares one compiled template across its workers.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
};

impl ChatTemplate {
    /// Compile `source` once. `bos_token`/`eos_token` are the special-token
    /// strings transformers passes in; `None` leaves the variable undefined,
    /// as it is for a tokenizer without that token.
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| TemplateError::Compile(one_line(&e)))?;
        env.set_syntax(syntax);
        // Jinja2's default `Undefined`: prints empty, iterates empty, is false.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| TemplateError::Compile(one_line(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.map(str::to_owned),
            eos_token: eos_token.map(str::to_owned),
        })
    }

    /// Render one conversation.
    ///
    /// `messages` are JSON objects (`role`, `content`, and whatever else the
    /// template reads, such as `tool_calls`). `extra` holds further template
    /// variables (`tools`, `date_string`, `enable_thinking` ...); like
    /// transformers' keyword arguments they override `bos_token`/`eos_token`
    /// and may not be named `messages` or `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Json],
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, TemplateError> {
        for reserved in ["messages", "add_generation_prompt"] {
            if extra.contains_key(reserved) {
                return Err(TemplateError::Input(format!(
                    "extra variable {reserved:?} is reserved"
                )));
            }
        }
        let mut msgs = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let Json::Object(obj) = m else {
                return Err(TemplateError::Input(format!(
                    "message {i} is not an object"
                )));
            };
            // transformers drops null-valued keys: APIs send `content: null`
            // beside `tool_calls`, and templates test for presence.
            msgs.push(Value::from_pairs(
                obj.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.as_str(), Value::from(Serde(v)))),
            ));
        }

        let mut ctx: Vec<(&str, Value)> =
            vec![("tools", Value::from(())), ("documents", Value::from(()))];
        if let Some(t) = &self.bos_token {
            ctx.push(("bos_token", Value::from(t.as_str())));
        }
        if let Some(t) = &self.eos_token {
            ctx.push(("eos_token", Value::from(t.as_str())));
        }
        ctx.extend(
            extra
                .iter()
                .map(|(k, v)| (k.as_str(), Value::from(Serde(v)))),
        );
        ctx.push(("messages", Value::from(msgs)));
        ctx.push(("add_generation_prompt", Value::from(add_generation_prompt)));
        // Later pairs win, so `extra` overrides the defaults above.
        let ctx = Value::from_pairs(ctx);

        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(one_line(&e)))?;
        tmpl.render(ctx)
            .map_err(|e| TemplateError::Render(one_line(&e)))
    }
}

/// transformers' global: abort the render with the template's own message.
fn raise_exception(message: Value) -> Result<Value, Error> {
    let text = message
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| message.to_string());
    Err(Error::new(ErrorKind::InvalidOperation, text))
}

/// transformers' global: `datetime.now().strftime(fmt)` on local time.
fn strftime_now(format: &str) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format {format:?}"),
        )
    })?;
    Ok(out)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, arguments positional or by keyword.
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    if args.len() > 4 {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 positional arguments",
        ));
    }
    let mut positional = args.0.into_iter();
    let (ensure_ascii, indent, separators, sort_keys) = (
        positional.next(),
        positional.next(),
        positional.next(),
        positional.next(),
    );
    let arg = |pos: Option<Value>, name: &str| -> Result<Option<Value>, Error> {
        let kw: Option<Value> = kwargs.get(name)?;
        if pos.is_some() && kw.is_some() {
            return Err(Error::new(
                ErrorKind::TooManyArguments,
                format!("tojson got multiple values for {name:?}"),
            ));
        }
        Ok(pos.or(kw).filter(|v| !v.is_none()))
    };
    let ensure_ascii = arg(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let sort_keys = arg(sort_keys, "sort_keys")?.is_some_and(|v| v.is_true());
    let indent = match arg(indent, "indent")? {
        None => None,
        Some(v) if v.as_str().is_some() => Some(v.as_str().unwrap_or_default().to_owned()),
        // Python repeats " " `indent` times; a negative count gives "".
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson indent must be an int or str, not {}", v.kind()),
                ))
            }
        },
    };
    let (item_sep, key_sep) = match arg(separators, "separators")? {
        // Python's defaults: no space before a newline when indenting.
        None => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
        Some(v) => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .filter(|p: &Vec<String>| p.len() == 2)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be two strings",
                    )
                })?;
            let [item, key]: [String; 2] = parts.try_into().unwrap_or_default();
            (item, key)
        }
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "tojson of an undefined value",
        ));
    }
    let json = serde_json::to_value(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson cannot serialize this value: {e}"),
        )
    })?;
    let dumper = PyJson {
        item_sep,
        key_sep,
        indent,
        ensure_ascii,
        sort_keys,
    };
    let mut out = String::new();
    dumper.write(&mut out, &json, 0);
    Ok(out)
}

/// A writer that reproduces Python's `json.dumps` byte for byte.
struct PyJson {
    item_sep: String,
    key_sep: String,
    indent: Option<String>,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl PyJson {
    fn write(&self, out: &mut String, v: &Json, level: usize) {
        match v {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
                Some(f) => out.push_str(&py_float_repr(f)),
                None => out.push_str(&n.to_string()),
            },
            Json::String(s) => self.write_str(out, s),
            Json::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    self.separate(out, i, level + 1);
                    self.write(out, item, level + 1);
                }
                self.close(out, level);
                out.push(']');
            }
            Json::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    self.separate(out, i, level + 1);
                    self.write_str(out, k);
                    out.push_str(&self.key_sep);
                    self.write(out, item, level + 1);
                }
                self.close(out, level);
                out.push('}');
            }
        }
    }

    /// Before the `i`th element: the item separator (after the first) and, when
    /// indenting, a newline plus the indent of `level`.
    fn separate(&self, out: &mut String, i: usize, level: usize) {
        if i > 0 {
            out.push_str(&self.item_sep);
        }
        if let Some(ind) = &self.indent {
            out.push('\n');
            out.push_str(&ind.repeat(level));
        }
    }

    fn close(&self, out: &mut String, level: usize) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            out.push_str(&ind.repeat(level));
        }
    }

    fn write_str(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0C}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                // ensure_ascii escapes everything outside printable ASCII,
                // astral characters as UTF-16 surrogate pairs.
                c if self.ensure_ascii && !(' '..='~').contains(&c) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{u:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `float.__repr__`: Rust's shortest round-trip digits switch to an
/// exponent at the same thresholds; Python signs it and pads it to two digits.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(('+', exp), |d| ('-', d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, messages: Json, agp: bool, extra: Json) -> Result<String, TemplateError> {
        let t = ChatTemplate::new(src, Some("<s>"), Some("</s>"))?;
        let Json::Array(msgs) = messages else {
            panic!("messages must be a list")
        };
        let Json::Object(extra) = extra else {
            panic!("extra must be an object")
        };
        t.render(&msgs, agp, &extra)
    }

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_and_without_generation_prompt() {
        let msgs = json!([{"role": "system", "content": "You are Alice."}, {"role": "user", "content": "Hi"}]);
        let base = "<|im_start|>system\nYou are Alice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n";
        assert_eq!(
            render(CHATML, msgs.clone(), false, json!({})).unwrap(),
            base
        );
        assert_eq!(
            render(CHATML, msgs, true, json!({})).unwrap(),
            format!("{base}<|im_start|>assistant\n")
        );
    }

    #[test]
    fn content_that_looks_like_jinja_is_verbatim() {
        let msgs = json!([{"role": "user", "content": "{{ x }} {% if y %}z{% endif %} {# c #}"}]);
        let out = render(CHATML, msgs, false, json!({})).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\n{{ x }} {% if y %}z{% endif %} {# c #}<|im_end|>\n"
        );
    }

    #[test]
    fn special_tokens_and_extra_variables() {
        let src = "{{ bos_token }}{% if enable_thinking is defined and not enable_thinking %}nothink{% endif %}|{{ date_string }}|{{ eos_token }}";
        let out = render(
            src,
            json!([]),
            false,
            json!({"enable_thinking": false, "date_string": "26 Jul 2024"}),
        )
        .unwrap();
        assert_eq!(out, "<s>nothink|26 Jul 2024|</s>");
        // extra overrides a special token, as transformers' kwargs do.
        assert_eq!(
            render(
                "{{ eos_token }}",
                json!([]),
                false,
                json!({"eos_token": "<e>"})
            )
            .unwrap(),
            "<e>"
        );
        // Without the token the variable is undefined, not none.
        let t = ChatTemplate::new("{{ bos_token is defined }}", None, None).unwrap();
        assert_eq!(t.render(&[], false, &Map::new()).unwrap(), "False");
    }

    #[test]
    fn tools_default_to_none_and_null_keys_are_dropped() {
        let src = "{{ tools is none }}{% for m in messages %}|{{ 'content' in m }}{% endfor %}";
        let msgs = json!([{"role": "assistant", "content": null, "tool_calls": []}, {"role": "user", "content": "x"}]);
        assert_eq!(
            render(src, msgs, false, json!({})).unwrap(),
            "True|False|True"
        );
    }

    #[test]
    fn raise_exception_carries_the_message() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}";
        let err = render(
            src,
            json!([{"role": "assistant", "content": "x"}]),
            false,
            json!({}),
        )
        .unwrap_err();
        let TemplateError::Render(msg) = &err else {
            panic!("wrong kind: {err:?}")
        };
        assert!(
            msg.contains("Conversation roles must alternate user/assistant/user/assistant/..."),
            "{msg}"
        );
        assert!(msg.contains("chat_template:1"), "{msg}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn strftime_now_formats_local_time() {
        let out = render(
            "{{ strftime_now('%Y-%m-%d') }}",
            json!([]),
            false,
            json!({}),
        )
        .unwrap();
        assert_eq!(out, chrono::Local::now().format("%Y-%m-%d").to_string());
        let out = render(
            "{{ strftime_now('%d %b %Y') }}",
            json!([]),
            false,
            json!({}),
        )
        .unwrap();
        assert_eq!(out, chrono::Local::now().format("%d %b %Y").to_string());
        let err = render("{{ strftime_now('%Q') }}", json!([]), false, json!({})).unwrap_err();
        assert!(err.to_string().contains("strftime_now"), "{err}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let extra = json!({"x": {"name": "get_weather", "args": {"city": "北京", "q": "a\"b\\c\n\u{1}"}, "n": [1, 2.0, 1e20, -0.5, true, null], "e": [], "o": {}}});
        let out = render("{{ x | tojson }}", json!([]), false, extra.clone()).unwrap();
        // Expected strings are Python's json.dumps output for the same value.
        assert_eq!(
            out,
            r#"{"name": "get_weather", "args": {"city": "北京", "q": "a\"b\\c\n\u0001"}, "n": [1, 2.0, 1e+20, -0.5, true, null], "e": [], "o": {}}"#
        );
        let out = render(
            "{{ x.args | tojson(indent=2) }}",
            json!([]),
            false,
            extra.clone(),
        )
        .unwrap();
        assert_eq!(
            out,
            "{\n  \"city\": \"北京\",\n  \"q\": \"a\\\"b\\\\c\\n\\u0001\"\n}"
        );
        let out = render(
            "{{ x.n | tojson(indent=2) }}",
            json!([]),
            false,
            extra.clone(),
        )
        .unwrap();
        assert_eq!(
            out,
            "[\n  1,\n  2.0,\n  1e+20,\n  -0.5,\n  true,\n  null\n]"
        );
        let out = render(
            "{{ x.args | tojson(separators=(',', ':'), sort_keys=true, ensure_ascii=true) }}",
            json!([]),
            false,
            extra.clone(),
        )
        .unwrap();
        assert_eq!(out, r#"{"city":"\u5317\u4eac","q":"a\"b\\c\n\u0001"}"#);
        let out = render("{{ '😀' | tojson(true) }}", json!([]), false, json!({})).unwrap();
        assert_eq!(out, r#""\ud83d\ude00""#);
        // Insertion order is kept (Python dicts are ordered).
        let out = render(
            "{{ {'b': 1, 'a': 2} | tojson }}",
            json!([]),
            false,
            json!({}),
        )
        .unwrap();
        assert_eq!(out, r#"{"b": 1, "a": 2}"#);
        let err = render(
            "{{ 1 | tojson(indent=2, bogus=1) }}",
            json!([]),
            false,
            json!({}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn python_string_and_dict_methods() {
        let src = "{{ m.content.strip() }}|{{ m.content.split(',')[1] }}|{{ m.role.startswith('us') }}|{{ m.role.endswith('x') }}|{{ '  a '.lstrip() }}.|{{ ' a  '.rstrip() }}.|{{ m.role.upper() }}|{{ 'ABC'.lower() }}|{{ 'a-b'.replace('-', '+') }}|{{ 'hello world'.title() }}|{{ m.get('name', 'none') }}|{% for k, v in m.items() %}{{ k }}={{ v|length }};{% endfor %}";
        let out = render(
            src,
            json!([]),
            false,
            json!({"m": {"role": "user", "content": " a,b "}}),
        )
        .unwrap();
        assert_eq!(
            out,
            "a,b|b |True|False|a .| a.|USER|abc|a+b|Hello World|none|role=4;content=5;"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let src = "<a>\n    {% if true %}\n        x\n    {% endif %}\n</a>\n";
        // lstrip removes the indentation before a block tag, trim the newline
        // after it; the template's final newline is dropped.
        assert_eq!(
            render(src, json!([]), false, json!({})).unwrap(),
            "<a>\n        x\n</a>"
        );
    }

    #[test]
    fn loop_controls_and_namespace() {
        let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'stop' %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}";
        let msgs =
            json!([{"role": "user"}, {"role": "assistant"}, {"role": "stop"}, {"role": "user"}]);
        assert_eq!(render(src, msgs, false, json!({})).unwrap(), "2");
    }

    #[test]
    fn unsupported_construct_is_a_one_line_compile_error() {
        let src = "{% for m in messages %}\n{% generation %}{{ m.content }}{% endgeneration %}\n{% endfor %}";
        let err = render(src, json!([]), false, json!({})).unwrap_err();
        let TemplateError::Compile(msg) = &err else {
            panic!("wrong kind: {err:?}")
        };
        assert!(
            msg.contains("syntax error")
                && msg.contains("generation")
                && msg.contains("chat_template:2"),
            "{msg}"
        );
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn bad_input_is_reported() {
        let err = render(CHATML, json!(["not a message"]), false, json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Input("message 0 is not an object".into())
        );
        let err = render(CHATML, json!([]), false, json!({"messages": []})).unwrap_err();
        assert!(matches!(err, TemplateError::Input(_)));
    }

    #[test]
    fn shared_across_threads() {
        let t = ChatTemplate::new(CHATML, None, None).unwrap();
        let outs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|i| {
                    let t = &t;
                    s.spawn(move || {
                        t.render(
                            &[json!({"role": "user", "content": format!("m{i}")})],
                            false,
                            &Map::new(),
                        )
                        .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outs[3], "<|im_start|>user\nm3<|im_end|>\n");
    }

    #[test]
    fn float_repr_is_pythons() {
        for (f, want) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e300, "1.5e+300"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(py_float_repr(f), want);
        }
    }
}
