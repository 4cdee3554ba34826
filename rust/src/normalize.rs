pub fn normalize(text: &str) -> String { text.to_lowercase() }
