//! The role's system message: the one rule shared by training data
//! (`data_tools` simulation) and inference (the `ditto-jax serve --ui`
//! playground), so a chat starts exactly as the model was trained.
//!
//! Ditto's SFT format gives the model only `You are {label}, {description}`;
//! the profile is never shown at training time (Lu et al., 2024, §3.3). The
//! dialogues contract adds the Chinese form and the form without description.

/// `You are {label}, {description}` / `你是{label}，{description}`, or
/// `You are {label}.` / `你是{label}。` when the description is empty.
///
/// `lang` is a language code; any `zh` variant (`zh`, `zh-hans`, `zh-TW`)
/// takes the Chinese form, everything else the English one. Label and
/// description are trimmed first, so padded table cells give the same text.
pub fn system_message(label: &str, description: &str, lang: &str) -> String {
    let (label, description) = (label.trim(), description.trim());
    let chinese = lang.trim().to_ascii_lowercase().starts_with("zh");
    match (chinese, description.is_empty()) {
        (true, false) => format!("你是{label}，{description}"),
        (true, true) => format!("你是{label}。"),
        (false, false) => format!("You are {label}, {description}"),
        (false, true) => format!("You are {label}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::role_label;

    #[test]
    fn english_with_and_without_description() {
        assert_eq!(system_message("Isaac Newton", "English physicist", "en"), "You are Isaac Newton, English physicist");
        assert_eq!(system_message("Isaac Newton", "", "en"), "You are Isaac Newton.");
        assert_eq!(system_message("Isaac Newton", "   ", "fr"), "You are Isaac Newton.");
    }

    #[test]
    fn chinese_with_and_without_description() {
        assert_eq!(system_message("艾萨克·牛顿", "英国物理学家", "zh"), "你是艾萨克·牛顿，英国物理学家");
        assert_eq!(system_message("艾萨克·牛顿", "", "zh"), "你是艾萨克·牛顿。");
        assert_eq!(system_message("孙悟空", "小说角色", "zh-Hant"), "你是孙悟空，小说角色");
        assert_eq!(system_message("孙悟空", "小说角色", "ZH-tw"), "你是孙悟空，小说角色");
    }

    #[test]
    fn padding_is_trimmed() {
        assert_eq!(system_message("  Ada Lovelace ", " mathematician\n", "en"), "You are Ada Lovelace, mathematician");
    }

    #[test]
    fn the_cleaner_reads_the_label_back() {
        // filters::role_label parses these messages; the two must stay inverse.
        for (label, description, lang) in [
            ("Isaac Newton", "English physicist", "en"),
            ("Isaac Newton", "", "en"),
            ("牛顿", "物理学家", "zh"),
            ("牛顿", "", "zh"),
        ] {
            assert_eq!(role_label(&system_message(label, description, lang)).as_deref(), Some(label));
        }
    }
}
