//! Assistant-only loss masks from one rendering of a conversation.
//!
//! A chat template is probed once, on made-up messages, to learn three facts:
//!
//! - the **anchor**: the text every assistant turn is preceded by, from the
//!   first special token after the user's content through the assistant role
//!   header (ChatML `<|im_end|>\n<|im_start|>assistant\n`, Llama 3
//!   `<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`, Mistral
//!   `[/INST]`). It is the part of the generation-prompt rendering that the
//!   final and the earlier assistant turns share, so Qwen3's think block,
//!   written after the header of the final turn only, is not part of it;
//! - the **end of turn**: the text after the assistant's content through the
//!   first special token (`<|im_end|>`, `<|eot_id|>`, `</s>`);
//! - the **system policy**: whether a system message survives rendering.
//!
//! In a conversation's rendering, assistant turn k's mask span runs from the
//! end of the k-th anchor through the end of the following end-of-turn text.
//! That is the content plus whatever the template writes inside the turn, and
//! never the role header. Both markers begin or end with special-token text,
//! which content cannot contain (the chat encoder swaps such text for
//! sentinels before rendering), so content cannot fake them.
//!
//! The separator after the end-of-turn token (ChatML's `\n`) is left out of
//! the mask: the model stops at its end-of-turn token and never generates the
//! separator; the template writes it as scaffolding before the next turn.
//!
//! A token is in the mask when its byte range overlaps a span, as in
//! transformers' `return_assistant_tokens_mask` (a char is in a span, so its
//! token is): a token straddling the header and the content (Mistral's `▁A`
//! after `[/INST]`) carries content, so it is trained on.
use std::fmt;

use serde_json::{json, Map, Value as Json};

use crate::template::ChatTemplate;
use crate::tokenize::TextTokenizer;

/// What happens to the session's system message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemPolicy {
    /// The template renders a system message: pass it through.
    Native,
    /// The template drops or rejects it (Mistral v0.3 drops it unless the
    /// conversation ends with a user message): prepend it to the first user
    /// message as `system + "\n\n" + user`.
    FoldIntoFirstUser,
}

impl SystemPolicy {
    /// Native when a system message survives the template's rendering.
    pub fn probe(template: &ChatTemplate, extra: &Map<String, Json>) -> Self {
        let probe = [msg("system", PROBE_SYSTEM), msg("user", PROBE_USER[0]), msg("assistant", PROBE_ASSISTANT[0])];
        match template.render(&probe, false, extra) {
            Ok(r) if r.contains(PROBE_SYSTEM) => Self::Native,
            _ => Self::FoldIntoFirstUser,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::FoldIntoFirstUser => "fold_into_first_user",
        }
    }
}

/// A template that cannot be masked this way; one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chat template layout: {}", self.0)
    }
}

impl std::error::Error for LayoutError {}

/// The probed shape of a template's assistant turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnLayout {
    pub anchor: String,
    pub end_of_turn: String,
    pub system_policy: SystemPolicy,
}

// Probe texts: plain ASCII words that no template rewrites.
const PROBE_SYSTEM: &str = "DittoProbeSystem";
const PROBE_USER: [&str; 2] = ["DittoProbeUserOne", "DittoProbeUserTwo"];
const PROBE_ASSISTANT: [&str; 2] = ["DittoProbeAnswerOne", "DittoProbeAnswerTwo"];

fn msg(role: &str, content: &str) -> Json {
    json!({"role": role, "content": content})
}

fn byte_after(haystack: &str, needle: &str, what: &str) -> Result<(usize, usize), LayoutError> {
    haystack
        .find(needle)
        .map(|p| (p, p + needle.len()))
        .ok_or_else(|| LayoutError(format!("the {what} does not appear in its rendering")))
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Back off to a char boundary of both.
    (0..=n).rev().find(|&i| a.is_char_boundary(i) && b.is_char_boundary(i)).unwrap_or(0)
}

impl TurnLayout {
    /// Probe `template` (rendered with the template variables `extra`).
    pub fn probe(template: &ChatTemplate, tok: &TextTokenizer, extra: &Map<String, Json>) -> Result<Self, LayoutError> {
        let render = |msgs: &[Json], agp: bool| {
            template.render(msgs, agp, extra).map_err(|e| LayoutError(format!("probe render failed: {e}")))
        };
        let (u1, u2) = (PROBE_USER[0], PROBE_USER[1]);
        let (a1, a2) = (PROBE_ASSISTANT[0], PROBE_ASSISTANT[1]);

        let system_policy = SystemPolicy::probe(template, extra);

        // The text between a user's content and the next assistant's content in
        // three places: the generation prompt, a final turn, an earlier turn.
        let prompt = render(&[msg("user", u1)], true)?;
        let (_, u_end) = byte_after(&prompt, u1, "probe user message")?;
        let d_prompt = &prompt[u_end..];

        let last = render(&[msg("user", u1), msg("assistant", a1)], false)?;
        let (_, u_end) = byte_after(&last, u1, "probe user message")?;
        let (a_pos, a_end) = byte_after(&last[u_end..], a1, "probe assistant message").map(|(s, e)| (s + u_end, e + u_end))?;
        let d_last = &last[u_end..a_pos];
        let after_last = &last[a_end..];

        let two = render(&[msg("user", u1), msg("assistant", a1), msg("user", u2), msg("assistant", a2)], false)?;
        let (_, u_end) = byte_after(&two, u1, "probe user message")?;
        let (a_pos, a_end) = byte_after(&two[u_end..], a1, "probe assistant message").map(|(s, e)| (s + u_end, e + u_end))?;
        let d_earlier = &two[u_end..a_pos];
        let after_earlier = &two[a_end..];

        let (first_start, first_end) = tok.first_special_text(d_prompt).ok_or_else(|| {
            LayoutError(format!(
                "no special token between a user message and the assistant header ({d_prompt:?}), so content could fake a turn"
            ))
        })?;
        let shared = common_prefix_len(d_prompt, d_last).min(common_prefix_len(d_prompt, d_earlier));
        if shared < first_end {
            return Err(LayoutError(format!(
                "the generation prompt {d_prompt:?} does not match the assistant turns it precedes ({d_last:?}, {d_earlier:?})"
            )));
        }
        let anchor = d_prompt[first_start..shared].to_owned();

        let end_of_turn = |after: &str| -> Result<String, LayoutError> {
            let (_, e) = tok.first_special_text(after).ok_or_else(|| {
                LayoutError(format!("no end-of-turn special token after an assistant message ({after:?})"))
            })?;
            Ok(after[..e].to_owned())
        };
        let end_last = end_of_turn(after_last)?;
        let end_earlier = end_of_turn(after_earlier)?;
        if end_last != end_earlier {
            return Err(LayoutError(format!(
                "the final assistant turn ends with {end_last:?} but earlier ones with {end_earlier:?}"
            )));
        }
        Ok(Self { anchor, end_of_turn: end_last, system_policy })
    }

    /// Byte spans of the `n` assistant turns in `rendered`, or `None` when the
    /// rendering does not hold exactly `n` well-formed assistant turns.
    pub fn assistant_spans(&self, rendered: &str, n: usize) -> Option<Vec<(usize, usize)>> {
        let mut spans = Vec::with_capacity(n);
        let mut cursor = 0;
        for _ in 0..n {
            let start = cursor + rendered[cursor..].find(&self.anchor)? + self.anchor.len();
            let body = rendered[start..].find(&self.end_of_turn)?;
            if rendered[start..start + body].contains(&self.anchor) {
                return None;
            }
            let end = start + body + self.end_of_turn.len();
            spans.push((start, end));
            cursor = end;
        }
        if rendered[cursor..].contains(&self.anchor) {
            return None;
        }
        Some(spans)
    }
}

/// 1 for each token whose byte range overlaps a span. Token starts must be
/// non-decreasing and spans sorted and disjoint.
pub fn token_mask(offsets: &[(usize, usize)], spans: &[(usize, usize)]) -> Vec<u8> {
    let mut mask = vec![0u8; offsets.len()];
    let mut j = 0;
    for (m, &(s, e)) in mask.iter_mut().zip(offsets) {
        while j < spans.len() && spans[j].1 <= s {
            j += 1;
        }
        let Some(&(a, b)) = spans.get(j) else { break };
        let overlaps = if s < e { s < b && e > a } else { a <= s && s < b };
        *m = u8::from(overlaps);
    }
    mask
}

/// For each span, the number of tokens that start before its end: cutting the
/// token sequence there keeps whole turns.
pub fn span_end_tokens(offsets: &[(usize, usize)], spans: &[(usize, usize)]) -> Vec<usize> {
    spans.iter().map(|&(_, end)| offsets.partition_point(|&(s, _)| s < end)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::tests::tiny;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    // Drops system messages, like Mistral v0.3 for conversations ending with the assistant.
    const NO_SYSTEM: &str = "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>{{ m.content }}<|im_end|>\
        {% elif m.role == 'assistant' %} {{ m.content }}<|endoftext|>{% endif %}{% endfor %}";

    fn layout(src: &str) -> TurnLayout {
        TurnLayout::probe(&ChatTemplate::new(src, None, None).unwrap(), &tiny(), &Map::new()).unwrap()
    }

    #[test]
    fn chatml_layout() {
        let l = layout(CHATML);
        assert_eq!(l.anchor, "<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(l.end_of_turn, "<|im_end|>");
        assert_eq!(l.system_policy, SystemPolicy::Native);
    }

    #[test]
    fn dropped_system_is_folded_and_header_may_be_empty() {
        let l = layout(NO_SYSTEM);
        assert_eq!(l.anchor, "<|im_end|>");
        assert_eq!(l.end_of_turn, "<|endoftext|>");
        assert_eq!(l.system_policy, SystemPolicy::FoldIntoFirstUser);
    }

    #[test]
    fn template_without_special_tokens_is_refused() {
        let src = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
        let err = TurnLayout::probe(&ChatTemplate::new(src, None, None).unwrap(), &tiny(), &Map::new()).unwrap_err();
        assert!(err.0.contains("no special token"), "{err}");
    }

    #[test]
    fn spans_cover_content_and_end_of_turn() {
        let l = layout(CHATML);
        let r = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n";
        let spans = l.assistant_spans(r, 2).unwrap();
        let texts: Vec<&str> = spans.iter().map(|&(s, e)| &r[s..e]).collect();
        assert_eq!(texts, ["A1<|im_end|>", "<|im_end|>"]);
        // Wrong counts are caught both ways.
        assert_eq!(l.assistant_spans(r, 3), None);
        assert_eq!(l.assistant_spans(r, 1), None);
    }

    #[test]
    fn mask_is_overlap_of_tokens_and_spans() {
        let offsets = [(0, 2), (2, 3), (3, 3), (3, 6), (6, 8), (8, 9)];
        assert_eq!(token_mask(&offsets, &[(3, 7)]), vec![0, 0, 1, 1, 1, 0]);
        assert_eq!(token_mask(&offsets, &[(1, 2), (8, 9)]), vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(token_mask(&offsets, &[]), vec![0; 6]);
        assert_eq!(span_end_tokens(&offsets, &[(1, 2), (3, 7)]), vec![1, 5]);
    }
}
