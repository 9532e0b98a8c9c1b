//! Hostname globs for `hosts = [...]`: the guard that keeps a plan written for one fleet from rebooting another.
//! A leaf module: the plan checks a glob's syntax, the host matches its own name against it.
//! A tiny matcher (`*`, `?`, `[a-z]`, `[!x]`) — hostnames need nothing more, and a dependency would be more code
//! to trust than this.

use std::fmt;

/// A checked hostname glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostGlob {
    pattern: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl HostGlob {
    /// Parses a glob; the error says what is wrong and at which character (0-based).
    pub(crate) fn parse(pattern: &str) -> Result<Self, (usize, String)> {
        if pattern.is_empty() {
            return Err((0, "empty pattern".to_owned()));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' => tokens.push(Token::AnyRun),
                '?' => tokens.push(Token::AnyOne),
                '[' => {
                    let start = i;
                    i += 1;
                    let negated = matches!(chars.get(i), Some('!' | '^'));
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    while i < chars.len() && chars[i] != ']' {
                        let lo = chars[i];
                        if chars.get(i + 1) == Some(&'-')
                            && chars.get(i + 2).is_some_and(|c| *c != ']')
                        {
                            let hi = chars[i + 2];
                            if hi < lo {
                                return Err((i, format!("range `{lo}-{hi}` is backwards")));
                            }
                            ranges.push((lo, hi));
                            i += 3;
                        } else {
                            ranges.push((lo, lo));
                            i += 1;
                        }
                    }
                    if i >= chars.len() {
                        return Err((start, "`[` is never closed".to_owned()));
                    }
                    if ranges.is_empty() {
                        return Err((start, "empty character class `[]`".to_owned()));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                ']' => return Err((i, "`]` without a matching `[`".to_owned())),
                c if c.is_whitespace() || c.is_control() || c == '/' => {
                    return Err((i, format!("{c:?} cannot appear in a hostname")));
                }
                c => tokens.push(Token::Literal(c.to_ascii_lowercase())),
            }
            i += 1;
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            tokens,
        })
    }

    /// Whether `hostname` matches. Hostnames are case-insensitive (RFC 4343).
    pub(crate) fn matches(&self, hostname: &str) -> bool {
        let name: Vec<char> = hostname.chars().map(|c| c.to_ascii_lowercase()).collect();
        matches_at(&self.tokens, &name)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }
}

fn matches_at(tokens: &[Token], name: &[char]) -> bool {
    match tokens.split_first() {
        None => name.is_empty(),
        Some((Token::AnyRun, rest)) => (0..=name.len()).any(|skip| matches_at(rest, &name[skip..])),
        Some((token, rest)) => match name.split_first() {
            None => false,
            Some((c, name_rest)) => {
                let ok = match token {
                    Token::Literal(l) => l == c,
                    Token::AnyOne => true,
                    Token::Class { negated, ranges } => {
                        ranges.iter().any(|(lo, hi)| {
                            (lo.to_ascii_lowercase()..=hi.to_ascii_lowercase()).contains(c)
                        }) != *negated
                    }
                    Token::AnyRun => unreachable!("handled above"),
                };
                ok && matches_at(rest, name_rest)
            }
        },
    }
}

impl fmt::Display for HostGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> HostGlob {
        HostGlob::parse(p).expect("valid glob")
    }

    #[test]
    fn matches_fleet_names() {
        assert!(glob("hv-prod-*").matches("hv-prod-7"));
        assert!(glob("hv-prod-*").matches("HV-PROD-12"));
        assert!(!glob("hv-prod-*").matches("hv-stage-7"));
        assert!(glob("hv-?").matches("hv-1"));
        assert!(!glob("hv-?").matches("hv-12"));
        assert!(glob("hv-[0-4]*").matches("hv-3a"));
        assert!(!glob("hv-[!0-4]").matches("hv-3"));
        assert!(glob("hv-[!0-4]").matches("hv-9"));
        assert!(glob("*").matches(""));
        assert!(glob("a*b*c").matches("axxbyyc"));
        assert!(!glob("a*b*c").matches("axxbyy"));
    }

    #[test]
    fn rejects_broken_globs() {
        assert_eq!(HostGlob::parse("hv-[0-9").unwrap_err().0, 3);
        assert!(HostGlob::parse("hv-[]").is_err());
        assert!(HostGlob::parse("hv-]").is_err());
        assert!(HostGlob::parse("").is_err());
        assert!(HostGlob::parse("hv 1").is_err());
        assert!(
            HostGlob::parse("hv-[9-0]")
                .unwrap_err()
                .1
                .contains("backwards")
        );
    }
}
