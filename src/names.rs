//! The user-name profile: which names a client may log in with, and the key
//! under which a name is unique (the directory, the Redis registry and
//! channels). In the spirit of PRECIS (RFC 8265 UsernameCaseMapped, RFC 8266
//! Nickname) and UTS #39:
//!
//! - **Refused**: control characters, format characters (Cf: zero-width
//!   spaces and joiners, soft hyphen, bidi controls such as U+202E),
//!   default-ignorable code points (Hangul fillers, variation selectors),
//!   unassigned and private-use code points, line and paragraph separators;
//!   leading or trailing whitespace and names of whitespace only; a comma
//!   (lists of names, as in a presence answer, are comma-separated); a combining
//!   mark with no letter before it, the same mark twice in a row or more than
//!   four in a row (UTS #39 5.4); and mixed scripts below UTS #39's Moderately
//!   Restrictive level (Latin with Cyrillic or Greek, or two non-Latin scripts).
//! - **Key**: NFKC (fullwidth and other compatibility forms fold to their
//!   plain form), lowercased, runs of spaces collapsed to one, and combining
//!   marks on Latin, Greek and Cyrillic letters dropped: `Alice`, `ａｌｉｃｅ`,
//!   `alicė` (`alice` + U+0307) and `alice` are one user. Marks go because a
//!   diacritic is a few pixels on a letter that otherwise looks the same, so
//!   `café` and `cafe` are one user too; marks of other scripts (Devanagari
//!   vowel signs, kana voicing marks) make different names and stay.
//!
//! What the client chose is what others see as `Sender`; the key only decides
//! who is who. A name that is plain ASCII without capitals (most names) is its
//! own key: [`key`] borrows it, with one table lookup per byte.
//! The client-facing texts of [`Refusal`] are in `protocol.rs`.

use std::ops::Deref;

use compact_str::CompactString;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};
use unicode_security::general_security_profile::IdentifierType;
use unicode_security::mixed_script::AugmentedScriptSet;
use unicode_security::GeneralSecurityProfile;

/// Combining marks in a row past which a name is refused (UTS #39 5.4).
const MAX_MARKS_IN_A_ROW: usize = 4;

/// Why a name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Empty,
    /// Longer than this many bytes (as given, or as its key).
    TooLong(usize),
    Control,
    /// A format or default-ignorable character: it shows as nothing.
    Invisible(char),
    /// A bidirectional control: it reorders what is shown.
    Bidi(char),
    /// An unassigned, private-use or noncharacter code point.
    Unassigned(char),
    Blank,
    EdgeSpace,
    /// A combining mark with no letter before it.
    StrayMark,
    /// The same combining mark twice in a row, or too many in a row.
    PiledMarks,
    /// Scripts mixed the way look-alike names are made.
    MixedScripts,
    /// A comma (or what folds to one): lists of names are comma-separated.
    Comma,
}

/// The key of a name: the name itself when it is already in key form.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Same(&'a str),
    Mapped(CompactString),
}

impl Deref for Key<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Key::Same(s) => s,
            Key::Mapped(s) => s,
        }
    }
}

/// Bytes that leave an ASCII name as its own key: printable, no capital, no space.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b < 0x7F {
        table[b] = !(b >= b'A' as usize && b <= b'Z' as usize);
        b += 1;
    }
    table
};

/// The key `name` is unique under, for looking a name up (a recipient).
/// It does not judge the name: a name [`check`] refuses is held by no one,
/// so its key finds no one.
pub fn key(name: &str) -> Key<'_> {
    if name.bytes().all(|b| PLAIN[usize::from(b)]) {
        return Key::Same(name);
    }
    Key::Mapped(mapped_key(name))
}

/// Judges a name a client wants to log in with; returns its key.
///
/// # Errors
/// A [`Refusal`] saying what is wrong with the name.
pub fn check(name: &str, max_len: usize) -> Result<Key<'_>, Refusal> {
    if name.is_empty() {
        return Err(Refusal::Empty);
    }
    if name.len() > max_len {
        return Err(Refusal::TooLong(max_len));
    }
    for c in name.chars() {
        refuse_char(c)?;
    }
    if name.is_ascii() {
        // Its own NFKC form, one script, no marks.
        check_spaces(name)?;
    } else {
        let folded: String = name.nfkc().collect();
        if folded.contains(',') {
            return Err(Refusal::Comma);
        }
        check_spaces(&folded)?;
        check_marks(&folded)?;
        if mixes_scripts(&folded) {
            return Err(Refusal::MixedScripts);
        }
    }
    let key = key(name);
    if key.len() > max_len {
        return Err(Refusal::TooLong(max_len));
    }
    Ok(key)
}

/// A character no name may hold, whatever surrounds it.
fn refuse_char(c: char) -> Result<(), Refusal> {
    if c.is_ascii() {
        return match c {
            ',' => Err(Refusal::Comma),
            c if c.is_ascii_control() => Err(Refusal::Control),
            _ => Ok(()),
        };
    }
    match c.general_category() {
        GeneralCategory::Control | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            return Err(Refusal::Control)
        }
        GeneralCategory::Format if is_bidi_control(c) => return Err(Refusal::Bidi(c)),
        GeneralCategory::Format => return Err(Refusal::Invisible(c)),
        GeneralCategory::PrivateUse | GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            return Err(Refusal::Unassigned(c))
        }
        _ => {}
    }
    match c.identifier_type() {
        Some(IdentifierType::Default_Ignorable) => Err(Refusal::Invisible(c)),
        Some(IdentifierType::Not_Character) => Err(Refusal::Unassigned(c)),
        _ => Ok(()),
    }
}

/// The explicit directional marks, embeddings, overrides and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whitespace: never at either end, never all of it, and inside only the
/// spaces that fold to U+0020 (an Ogham space mark, say, does not).
fn check_spaces(folded: &str) -> Result<(), Refusal> {
    if folded.chars().all(char::is_whitespace) {
        return Err(Refusal::Blank);
    }
    let edge = |c: Option<char>| c.is_some_and(char::is_whitespace);
    if edge(folded.chars().next()) || edge(folded.chars().next_back()) {
        return Err(Refusal::EdgeSpace);
    }
    match folded.chars().find(|&c| c.is_whitespace() && c != ' ') {
        Some(c) => Err(Refusal::Invisible(c)),
        None => Ok(()),
    }
}

fn is_mark(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Mark
}

/// Marks need a letter before them, and may not pile up (UTS #39 5.4),
/// judged on the decomposed form, where every mark stands on its own.
fn check_marks(folded: &str) -> Result<(), Refusal> {
    let (mut in_a_row, mut previous) = (0, None);
    for c in folded.nfd() {
        if !is_mark(c) {
            in_a_row = 0;
            previous = Some(c);
            continue;
        }
        if previous.is_none_or(char::is_whitespace) {
            return Err(Refusal::StrayMark);
        }
        in_a_row += 1;
        if in_a_row > MAX_MARKS_IN_A_ROW || previous == Some(c) {
            return Err(Refusal::PiledMarks);
        }
        previous = Some(c);
    }
    Ok(())
}

/// Below UTS #39's Moderately Restrictive level: more than one script
/// (Common and Inherited characters such as digits, punctuation and marks
/// count as any script), unless the mix is Latin with Han and kana or
/// Hangul or Bopomofo, or Latin with one other recommended script that is
/// neither Cyrillic nor Greek (whose letters double for Latin ones).
fn mixes_scripts(folded: &str) -> bool {
    let mut all = AugmentedScriptSet::default();
    let mut besides_latin = AugmentedScriptSet::default();
    for c in folded.chars() {
        let set = AugmentedScriptSet::for_char(c);
        all.intersect_with(set);
        if !set.base.contains_script(Script::Latin) {
            besides_latin.intersect_with(set);
        }
    }
    if !all.is_empty() || besides_latin.kore || besides_latin.hanb || besides_latin.jpan {
        return false;
    }
    let mut scripts = besides_latin.base.iter();
    match (scripts.next(), scripts.next()) {
        (Some(script), None) => !script.is_recommended() || matches!(script, Script::Cyrillic | Script::Greek),
        _ => true,
    }
}

/// The key of a name that is not its own key.
fn mapped_key(name: &str) -> CompactString {
    if name.is_ascii() {
        return collapse_spaces(name.chars().map(|c| c.to_ascii_lowercase()));
    }
    let lowered = name.nfkc().collect::<String>().to_lowercase();
    let mut kept = String::with_capacity(lowered.len());
    let mut drop_marks = false;
    for c in lowered.nfd() {
        if is_mark(c) {
            if !drop_marks {
                kept.push(c);
            }
            continue;
        }
        drop_marks = matches!(c.script(), Script::Latin | Script::Greek | Script::Cyrillic);
        kept.push(c);
    }
    collapse_spaces(kept.nfkc())
}

fn collapse_spaces(chars: impl Iterator<Item = char>) -> CompactString {
    let mut out = CompactString::default();
    let mut after_space = false;
    for c in chars {
        if c == ' ' && after_space {
            continue;
        }
        after_space = c == ' ';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(name: &str) -> String {
        check(name, 64).map(|k| k.to_string()).unwrap_or_else(|r| panic!("{name:?} refused: {r:?}"))
    }

    #[test]
    fn plain_names_are_their_own_key_without_a_copy() {
        for name in ["alice", "bob_42", "x.y-z", "n0", "~!@#$%^&*()"] {
            assert_eq!(key(name), Key::Same(name));
            assert_eq!(check(name, 64), Ok(Key::Same(name)));
        }
    }

    #[test]
    fn commas_are_refused_whatever_their_width() {
        for name in ["a,b", ",", "a\u{FF0C}b", "a\u{FE50}b"] {
            assert_eq!(check(name, 64), Err(Refusal::Comma), "{name:?}");
        }
    }

    #[test]
    fn look_alikes_of_alice_share_its_key() {
        for name in ["Alice", "ALICE", "ａｌｉｃｅ", "alice\u{0307}", "alicė", "Ａｌｉｃｅ"] {
            assert_eq!(key_of(name), "alice", "{name:?}");
        }
        assert_eq!(key_of("café"), key_of("cafe\u{0301}"));
        assert_eq!(key_of("café"), "cafe");
        assert_eq!(key_of("İstanbul"), "istanbul");
        assert_eq!(key_of("al  ice"), "al ice");
        assert_eq!(key_of("a\u{00A0}b"), "a b");
    }

    #[test]
    fn invisible_reordering_and_blank_names_are_refused() {
        assert_eq!(check("alice\u{200B}", 64), Err(Refusal::Invisible('\u{200B}')));
        assert_eq!(check("al\u{00AD}ice", 64), Err(Refusal::Invisible('\u{00AD}')));
        assert_eq!(check("\u{3164}alice", 64), Err(Refusal::Invisible('\u{3164}')));
        assert_eq!(check("alice\u{FE0F}", 64), Err(Refusal::Invisible('\u{FE0F}')));
        assert_eq!(check("\u{202E}ecila", 64), Err(Refusal::Bidi('\u{202E}')));
        assert_eq!(check("a\u{2067}b", 64), Err(Refusal::Bidi('\u{2067}')));
        assert_eq!(check("a\u{E000}", 64), Err(Refusal::Unassigned('\u{E000}')));
        assert_eq!(check("a\u{FFFF}", 64), Err(Refusal::Unassigned('\u{FFFF}')));
        assert_eq!(check("a\u{2028}b", 64), Err(Refusal::Control));
        assert_eq!(check("a\u{85}b", 64), Err(Refusal::Control));
        assert_eq!(check("a\tb", 64), Err(Refusal::Control));
        assert_eq!(check("alice ", 64), Err(Refusal::EdgeSpace));
        assert_eq!(check(" alice", 64), Err(Refusal::EdgeSpace));
        assert_eq!(check("alice\u{3000}", 64), Err(Refusal::EdgeSpace));
        assert_eq!(check("   ", 64), Err(Refusal::Blank));
        assert_eq!(check("\u{00A0}", 64), Err(Refusal::Blank));
        assert_eq!(check("a\u{1680}b", 64), Err(Refusal::Invisible('\u{1680}')));
        assert_eq!(check("", 64), Err(Refusal::Empty));
        assert_eq!(check("abcdef", 5), Err(Refusal::TooLong(5)));
    }

    #[test]
    fn marks_need_a_letter_and_may_not_pile_up() {
        assert_eq!(check("\u{0301}a", 64), Err(Refusal::StrayMark));
        assert_eq!(check("a \u{0301}b", 64), Err(Refusal::StrayMark));
        assert_eq!(check("a\u{0301}\u{0301}", 64), Err(Refusal::PiledMarks));
        assert_eq!(check("a\u{0300}\u{0301}\u{0302}\u{0303}\u{0304}", 64), Err(Refusal::PiledMarks));
        assert!(check("a\u{0300}\u{0301}\u{0302}\u{0303}", 64).is_ok());
    }

    #[test]
    fn confusable_script_mixes_are_refused_and_others_pass() {
        assert_eq!(check("\u{0430}lice", 64), Err(Refusal::MixedScripts), "Cyrillic a");
        assert_eq!(check("\u{03BF}scar", 64), Err(Refusal::MixedScripts), "Greek omicron");
        assert_eq!(check("\u{0430}\u{03B1}", 64), Err(Refusal::MixedScripts), "Cyrillic and Greek");
        for name in ["алиса", "Ελένη", "すし寿司", "alice東京", "ali_علي", "मीरा", "김철수", "bob 42!", "Zoë"]
        {
            assert!(check(name, 64).is_ok(), "{name:?}");
        }
        // Non-Latin marks make different names.
        assert_ne!(key_of("が"), key_of("か"));
    }

    #[test]
    fn a_key_is_its_own_key_and_lookups_agree_with_logins() {
        let names =
            ["Alice", "ａｌｉｃｅ", "café", "cafe\u{0301}", "İstanbul", "ǅemal", "ﬁsh", "Straße", "ΣΊΣΥΦΟΣ", "x  y"];
        for name in names {
            let k = key_of(name);
            assert_eq!(key_of(&k), k, "{name:?}");
            assert_eq!(&*key(name), k, "{name:?}");
        }
    }

    #[test]
    fn keys_may_not_outgrow_the_limit() {
        // U+FDFA folds to 18 characters (33 bytes).
        assert_eq!(check("\u{FDFA}", 20), Err(Refusal::TooLong(20)));
    }
}
