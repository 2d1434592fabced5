//! The GSTIN: India's 15-character GST registration number, the subject of
//! a GSP taxpayer session. The format is always enforced; the check
//! character only when asked, because the public documentation's own
//! example (`24AAACJ3770E2ZZ`) fails it.

use std::fmt;

/// The format every GSTIN must match, as published (checked by hand below).
pub const FORMAT: &str =
    r"^(0[1-9]|[1-2][0-9]|3[0-7])[A-Z]{3}[ABCFGHLJPTK][A-Z]\d{4}[A-Z][1-9A-Z]Z[0-9A-Z]$";

/// What a GSTIN looks like, for error messages.
pub const FORMAT_HELP: &str = "expected 15 characters: a state code 01-37, a 10-character PAN \
(5 letters, the 4th one of A B C F G H L J P T K; 4 digits; 1 letter), an entity number \
(1-9 or A-Z), the letter Z and a check character (0-9 or A-Z)";

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GstinError {
    #[error("a GSTIN is exactly 15 characters, not {0}")]
    Length(usize),
    #[error("character {position} of a GSTIN must be {expected}")]
    Character {
        position: usize,
        expected: &'static str,
    },
    #[error("the GSTIN check character (the 15th) is wrong: expected {expected}")]
    CheckDigit { expected: char },
}

/// A GSTIN that matched [`FORMAT`] (and, if asked, its check character).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gstin(String);

/// One position of the format: what it accepts and how to say so.
struct Slot {
    accepts: fn(u8) -> bool,
    expected: &'static str,
}

fn upper(b: u8) -> bool {
    b.is_ascii_uppercase()
}
fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}
fn pan_holder_type(b: u8) -> bool {
    b"ABCFGHLJPTK".contains(&b)
}
fn entity_number(b: u8) -> bool {
    matches!(b, b'1'..=b'9' | b'A'..=b'Z')
}
fn letter_z(b: u8) -> bool {
    b == b'Z'
}
fn alnum(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_uppercase()
}

const LETTER: Slot = Slot {
    accepts: upper,
    expected: "an uppercase letter A-Z",
};
const DIGIT: Slot = Slot {
    accepts: digit,
    expected: "a digit 0-9",
};

/// Positions 3 to 15 (the state code, positions 1-2, is checked as a pair).
const SLOTS: [Slot; 13] = [
    LETTER,
    LETTER,
    LETTER,
    Slot {
        accepts: pan_holder_type,
        expected: "one of A B C F G H L J P T K (the PAN holder type)",
    },
    LETTER,
    DIGIT,
    DIGIT,
    DIGIT,
    DIGIT,
    LETTER,
    Slot {
        accepts: entity_number,
        expected: "1-9 or A-Z (the entity number)",
    },
    Slot {
        accepts: letter_z,
        expected: "the letter Z",
    },
    Slot {
        accepts: alnum,
        expected: "0-9 or A-Z (the check character)",
    },
];

fn value(b: u8) -> u32 {
    match b {
        b'0'..=b'9' => u32::from(b - b'0'),
        b'A'..=b'Z' => u32::from(b - b'A') + 10,
        _ => 0,
    }
}

impl Gstin {
    pub const LEN: usize = 15;

    /// Parse `s`; with `check_digit`, the 15th character must also be the
    /// check character of the first 14.
    pub fn parse(s: &str, check_digit: bool) -> Result<Self, GstinError> {
        let n = s.chars().count();
        if n != Self::LEN {
            return Err(GstinError::Length(n));
        }
        // 15 chars; any non-ASCII one makes the byte length differ and is
        // reported at the first byte that fails its slot.
        let b = s.as_bytes();
        let state_ok = matches!(
            (b[0], b[1]),
            (b'0', b'1'..=b'9') | (b'1'..=b'2', b'0'..=b'9') | (b'3', b'0'..=b'7')
        );
        if !state_ok {
            let position = if b[0].is_ascii_digit() && b[0] <= b'3' {
                2
            } else {
                1
            };
            return Err(GstinError::Character {
                position,
                expected: "part of a state code 01-37",
            });
        }
        for (i, slot) in SLOTS.iter().enumerate() {
            let byte = b.get(i + 2).copied().unwrap_or(0);
            if !(slot.accepts)(byte) {
                return Err(GstinError::Character {
                    position: i + 3,
                    expected: slot.expected,
                });
            }
        }
        if b.len() != Self::LEN {
            // Unreachable after the slot checks (all ASCII), kept as a guard.
            return Err(GstinError::Length(n));
        }
        if check_digit {
            let expected = Self::check_character(&s[..14]);
            if b[14] != expected as u8 {
                return Err(GstinError::CheckDigit { expected });
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The check character of the first 14 characters: values 0-9A-Z →
    /// 0..35, weights 1, 2, 1, 2, …; each product contributes its base-36
    /// digit sum; the check is what brings the total to a multiple of 36.
    pub fn check_character(first14: &str) -> char {
        let sum: u32 = first14
            .bytes()
            .take(14)
            .enumerate()
            .map(|(i, b)| {
                let p = value(b) * if i % 2 == 0 { 1 } else { 2 };
                p / 36 + p % 36
            })
            .sum();
        ALPHABET[((36 - sum % 36) % 36) as usize] as char
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The two-digit state code.
    pub fn state_code(&self) -> &str {
        &self.0[..2]
    }

    /// The PAN of the registered entity.
    pub fn pan(&self) -> &str {
        &self.0[2..12]
    }
}

impl fmt::Display for Gstin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Gstin {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_of_the_known_good_example() {
        assert_eq!(Gstin::check_character("27AAPFU0939F1Z"), 'V');
        let g = Gstin::parse("27AAPFU0939F1ZV", true).unwrap();
        assert_eq!(g.as_str(), "27AAPFU0939F1ZV");
        assert_eq!(g.state_code(), "27");
        assert_eq!(g.pan(), "AAPFU0939F");
    }

    #[test]
    fn the_public_example_passes_the_format_but_not_the_check_digit() {
        assert!(Gstin::parse("24AAACJ3770E2ZZ", false).is_ok());
        let e = Gstin::parse("24AAACJ3770E2ZZ", true).unwrap_err();
        assert!(matches!(e, GstinError::CheckDigit { .. }), "{e}");
    }

    #[test]
    fn a_wrong_check_character_is_refused_only_when_checking() {
        assert!(Gstin::parse("27AAPFU0939F1ZA", false).is_ok());
        assert_eq!(
            Gstin::parse("27AAPFU0939F1ZA", true),
            Err(GstinError::CheckDigit { expected: 'V' })
        );
    }

    #[test]
    fn state_codes() {
        for ok in ["01", "09", "10", "29", "30", "37"] {
            assert!(
                Gstin::parse(&format!("{ok}AAPFU0939F1ZV"), false).is_ok(),
                "{ok}"
            );
        }
        for bad in ["00", "38", "40", "99", "A1", "3A"] {
            let e = Gstin::parse(&format!("{bad}AAPFU0939F1ZV"), false).unwrap_err();
            assert!(
                matches!(
                    e,
                    GstinError::Character {
                        position: 1 | 2,
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn each_position_is_checked() {
        let cases = [
            ("27aAPFU0939F1ZV", 3),  // lowercase letter
            ("27A1PFU0939F1ZV", 4),  // digit where a letter goes
            ("27AAPDU0939F1ZV", 6),  // D is not a PAN holder type
            ("27AAPF10939F1ZV", 7),  // 5th PAN letter
            ("27AAPFUX939F1ZV", 8),  // PAN digits
            ("27AAPFU09391F1ZV", 0), // too long (length error)
            ("27AAPFU093991ZV", 12), // last PAN letter
            ("27AAPFU0939F0ZV", 13), // entity number 0 not allowed
            ("27AAPFU0939F1YV", 14), // must be Z
            ("27AAPFU0939F1Z-", 15), // check character
        ];
        for (s, position) in cases {
            let e = Gstin::parse(s, false).unwrap_err();
            if position == 0 {
                assert_eq!(e, GstinError::Length(16));
            } else {
                assert!(
                    matches!(e, GstinError::Character { position: p, .. } if p == position),
                    "{s}: {e}"
                );
            }
        }
    }

    #[test]
    fn lengths_and_non_ascii() {
        assert_eq!(Gstin::parse("", false), Err(GstinError::Length(0)));
        assert_eq!(
            Gstin::parse("27AAPFU0939F1Z", false),
            Err(GstinError::Length(14))
        );
        // 15 characters, one of them not ASCII.
        assert!(Gstin::parse("27AAPFU0939F1ZÉ", false).is_err());
        assert!(Gstin::parse("27ÉAPFU0939F1ZV", false).is_err());
    }

    #[test]
    fn every_valid_body_has_exactly_one_check_character() {
        let body = "29ABCPE1234F1Z";
        let c = Gstin::check_character(body);
        let mut accepted = 0;
        for &x in ALPHABET {
            if Gstin::parse(&format!("{body}{}", x as char), true).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1);
        assert!(Gstin::parse(&format!("{body}{c}"), true).is_ok());
    }
}
