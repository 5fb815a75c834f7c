//! Bounds on every value that comes from outside (agents, admin requests,
//! the command line) before it reaches the database: lengths, character
//! sets, counts. Errors name the field, so a 400 says what to fix.

use crate::error::{invalid, Error};

/// Longest hostname (DNS names are at most 253 bytes).
pub const MAX_HOSTNAME: usize = 255;
/// `struct new_utsname` fields are 64 bytes.
pub const MAX_RELEASE: usize = 64;
/// `uname -v`, Debian and effective versions.
pub const MAX_VERSION: usize = 256;
/// GNU build-ids are 20 bytes in practice; bundles allow 64 hex digits.
pub const MAX_BUILD_ID: usize = 64;
/// Agent versions.
pub const MAX_AGENT_VERSION: usize = 64;
/// Tags per host, and each tag's length.
pub const MAX_TAGS: usize = 64;
/// One tag.
pub const MAX_TAG: usize = 64;
/// Free text (reasons, notes).
pub const MAX_TEXT: usize = 16 * 1024;
/// Skipped levels and stalled tasks per request.
pub const MAX_LIST: usize = 256;
/// One stalled task line.
pub const MAX_TASK: usize = 4096;
/// Feed and token names.
pub const MAX_NAME: usize = 64;
/// The longest delay a feed may have: a year.
pub const MAX_DELAY_HOURS: i64 = 24 * 366;

/// A string of at most `max` bytes without control characters; `nonempty`
/// refuses "".
pub fn text(field: &str, s: &str, max: usize, nonempty: bool) -> Result<(), Error> {
    if nonempty && s.is_empty() {
        return Err(invalid(format!("field `{field}`: must not be empty")));
    }
    if s.len() > max {
        return Err(invalid(format!(
            "field `{field}`: {} bytes, more than the limit of {max}",
            s.len()
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(format!(
            "field `{field}`: contains control characters"
        )));
    }
    if let Some(c) = s.chars().find(|&c| is_hidden_format(c)) {
        return Err(invalid(format!(
            "field `{field}`: contains U+{:04X}, an invisible formatting character (bidirectional override or zero-width), which would make the text display as something it is not",
            c as u32
        )));
    }
    Ok(())
}

/// Unicode formatting characters that change how text around them is
/// shown without being seen: bidirectional embeddings, overrides,
/// isolates and marks (U+202E shows a hostname reversed), and the
/// zero-width ones (two names that look alike but differ).
fn is_hidden_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A one-line string: [`text`] without newlines or tabs.
pub fn line(field: &str, s: &str, max: usize, nonempty: bool) -> Result<(), Error> {
    text(field, s, max, nonempty)?;
    if s.contains(['\n', '\t']) {
        return Err(invalid(format!("field `{field}`: must be one line")));
    }
    Ok(())
}

/// A GNU build-id: lowercase hex, an even number of digits.
pub fn build_id(field: &str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= MAX_BUILD_ID
        && s.len().is_multiple_of(2)
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(invalid(format!(
            "field `{field}`: {s:.80?} is not a build-id (lowercase hex, at most {MAX_BUILD_ID} digits)"
        )));
    }
    Ok(())
}

/// A feed or token name: a lowercase letter or digit, then letters,
/// digits, `-`, `_` or `.`.
pub fn name(field: &str, s: &str) -> Result<(), Error> {
    let mut bytes = s.bytes();
    let ok = s.len() <= MAX_NAME
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if !ok {
        return Err(invalid(format!(
            "field `{field}`: {s:.80?} is not a valid name (lowercase letters, digits, `-`, `_`, `.`; at most {MAX_NAME})"
        )));
    }
    Ok(())
}

/// A host's tags: at most [`MAX_TAGS`], each a non-empty line of at most
/// [`MAX_TAG`] bytes. The same rule for the tags a host registers with and
/// those an admin sets.
pub fn tags(field: &str, tags: &[String]) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!(
            "field `{field}`: {} tags, more than the limit of {MAX_TAGS}",
            tags.len()
        )));
    }
    for t in tags {
        line(field, t, MAX_TAG, true)?;
    }
    Ok(())
}

/// A patch level as the API carries it (u32) turned into the database's
/// integer, refusing 0 where a real level is meant.
pub fn level(field: &str, l: u32) -> Result<i64, Error> {
    if l == 0 {
        return Err(invalid(format!("field `{field}`: levels start at 1")));
    }
    Ok(i64::from(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_build_ids() {
        assert!(name("feed", "stable").is_ok());
        assert!(name("feed", "delayed-24h").is_ok());
        assert!(name("feed", "").is_err());
        assert!(name("feed", "Stable").is_err());
        assert!(name("feed", "a/b").is_err());
        assert!(build_id("b", "0123abcd").is_ok());
        assert!(build_id("b", "0123ABCD").is_err());
        assert!(build_id("b", "abc").is_err());
        assert!(build_id("b", &"a".repeat(66)).is_err());
    }

    #[test]
    fn text_limits() {
        assert!(text("t", "ok\nmulti", 10, true).is_ok());
        assert!(line("t", "ok\nmulti", 10, true).is_err());
        assert!(text("t", "", 10, true).is_err());
        assert!(text("t", "x\u{7}", 10, false).is_err());
        assert!(text("t", &"x".repeat(11), 10, false).is_err());
        // Bidirectional overrides and zero-width characters are refused,
        // naming the character; other non-ASCII text is fine.
        let e = line("hostname", "web\u{202E}1", 64, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("U+202E") && e.contains("hostname"), "{e}");
        assert!(line("hostname", "we\u{200B}b", 64, true).is_err());
        assert!(line("tag", "\u{FEFF}eu", 64, true).is_err());
        assert!(line("hostname", "büro-straße", 64, true).is_ok());
    }

    #[test]
    fn tag_limits() {
        let t = |v: &[&str]| tags("tags", &v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(t(&[]).is_ok());
        assert!(t(&["web", "eu-west 1"]).is_ok());
        assert!(t(&[""]).is_err());
        assert!(t(&["a\nb"]).is_err());
        assert!(t(&[&"x".repeat(MAX_TAG + 1)]).is_err());
        assert!(t(&vec!["x"; MAX_TAGS + 1]).is_err());
    }
}
