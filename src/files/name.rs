//! A received file's name (spec/11-files.md §5): whatever the sender wrote, the recipient
//! writes only a plain name inside its download directory — the last path component, with
//! no separators, NUL or control characters, no leading dots, at most 255 bytes.

/// The name used when nothing usable is left.
pub const FALLBACK: &str = "file";

/// A safe file name from `offered`.
pub fn sanitize(offered: &str) -> String {
    let last = offered
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        FALLBACK.to_owned()
    } else {
        out
    }
}

/// The `k`-th alternative to `name` when it is taken: `report (2).pdf`.
pub fn numbered(name: &str, k: u32) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    format!("{stem} ({k}){ext}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        for (offered, want) in [
            ("../../etc/passwd", "passwd"),
            ("/etc/shadow", "shadow"),
            ("..\\..\\windows\\system32\\x.dll", "x.dll"),
            ("..", FALLBACK),
            ("/", FALLBACK),
            (".bashrc", "bashrc"),
            ("a\0b", "ab"),
            ("C:evil", "Cevil"),
            ("report.pdf", "report.pdf"),
            ("  ", FALLBACK),
        ] {
            assert_eq!(sanitize(offered), want, "{offered:?}");
        }
        assert_eq!(numbered("report.pdf", 2), "report (2).pdf");
        assert_eq!(numbered("README", 3), "README (3)");
    }

    proptest! {
        #[test]
        fn a_sanitized_name_is_one_plain_component(s in ".{0,400}") {
            let n = sanitize(&s);
            prop_assert!(!n.is_empty() && n.len() <= 255);
            prop_assert!(!n.contains('/') && !n.contains('\\') && !n.contains('\0'));
            prop_assert!(!n.starts_with('.'));
            prop_assert!(n != "." && n != "..");
        }
    }
}
