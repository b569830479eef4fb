//! SQL normalisation: one statement shape, one fingerprint.
//!
//! Literals (strings, numbers, hex blobs) and bind parameters (`?`, `?1`, `$1`, `:name`,
//! `@name`) become `?`; `IN (?, ?, …)` lists collapse to `IN (?)`; comments go; keywords
//! and identifiers are lower-cased (quoted identifiers are kept verbatim); whitespace is
//! canonical. The fingerprint is the 64-bit FNV-1a hash of the normalised text, stable
//! across builds and platforms, so the collector can merge it from any agent.

use sightline_protocol::MAX_SQL_LEN;

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The fingerprint of a statement: FNV-1a 64 of its normalised text.
pub fn fingerprint(sql: &str) -> u64 {
    fnv1a(normalize(sql).as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword or identifier, lower-cased (or a quoted identifier, verbatim).
    Word(String),
    /// A literal or parameter: always printed as `?`.
    Param,
    /// Punctuation and operators.
    Punct(String),
}

impl Token {
    fn is(&self, text: &str) -> bool {
        match self {
            Token::Word(w) | Token::Punct(w) => w == text,
            Token::Param => false,
        }
    }
}

/// Normalises `sql` (see the module docs); the result is at most [`MAX_SQL_LEN`] bytes.
pub fn normalize(sql: &str) -> String {
    let tokens = collapse_in_lists(tokenize(sql));
    let mut out = String::with_capacity(sql.len().min(MAX_SQL_LEN));
    let mut previous: Option<&Token> = None;
    for token in &tokens {
        let text = match token {
            Token::Word(w) | Token::Punct(w) => w.as_str(),
            Token::Param => "?",
        };
        let glue = match previous {
            None => false,
            Some(p) => p.is("(") || p.is(".") || matches!(text, "," | ")" | "." | ";"),
        };
        if previous.is_some() && !glue {
            out.push(' ');
        }
        out.push_str(text);
        previous = Some(token);
        if out.len() > MAX_SQL_LEN {
            break;
        }
    }
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    if out.len() > MAX_SQL_LEN {
        let mut end = MAX_SQL_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

fn tokenize(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    let n = chars.len();
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < n && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i = (i + 2).min(n);
        } else if c == '\'' {
            // String literal, '' escapes a quote.
            i += 1;
            while i < n {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(n);
            push_param(&mut tokens);
        } else if c == '"' || c == '`' || c == '[' {
            // Quoted identifier: kept as written.
            let close = if c == '[' { ']' } else { c };
            let start = i;
            i += 1;
            while i < n && chars[i] != close {
                i += 1;
            }
            i = (i + 1).min(n);
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|d| d.is_ascii_digit())) {
            // Number: digits, a fraction, an exponent, or 0x hex.
            i += 1;
            while i < n {
                let d = chars[i];
                let exp_sign = (d == '+' || d == '-')
                    && matches!(chars.get(i - 1), Some('e' | 'E'))
                    && !matches!(chars.get(i.wrapping_sub(2)), Some('x' | 'X'));
                if d.is_ascii_alphanumeric() || d == '.' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            push_number(&mut tokens);
        } else if (c == 'x' || c == 'X') && next == Some('\'') {
            // Blob literal X'…'.
            i += 2;
            while i < n && chars[i] != '\'' {
                i += 1;
            }
            i = (i + 1).min(n);
            push_param(&mut tokens);
        } else if c == '?' || c == '$' || c == ':' || c == '@' {
            // Bind parameters: ?, ?NNN, $N, :name, @name. A lone `:` (or `::` cast) is
            // punctuation.
            let start = i;
            i += 1;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if c == '?' || i > start + 1 {
                push_param(&mut tokens);
            } else {
                if c == ':' && chars.get(i) == Some(&':') {
                    i += 1;
                    tokens.push(Token::Punct("::".to_owned()));
                    continue;
                }
                tokens.push(Token::Punct(c.to_string()));
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token::Word(word.to_lowercase()));
        } else {
            // Two-character operators stay together.
            let two: String = [c, next.unwrap_or(' ')].iter().collect();
            if matches!(two.as_str(), "<=" | ">=" | "<>" | "!=" | "||" | "==" | "->") {
                tokens.push(Token::Punct(two));
                i += 2;
            } else {
                tokens.push(Token::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    tokens
}

fn push_param(tokens: &mut Vec<Token>) {
    tokens.push(Token::Param);
}

/// A number; a unary minus in front of it is part of the literal (`= -1` is `= ?`).
fn push_number(tokens: &mut Vec<Token>) {
    if tokens.last().is_some_and(|t| t.is("-") || t.is("+")) {
        let before = tokens.len().checked_sub(2).and_then(|i| tokens.get(i));
        let unary = match before {
            None => true,
            Some(Token::Param) => false,
            Some(Token::Word(w)) => is_keyword(w),
            Some(Token::Punct(p)) => p != ")",
        };
        if unary {
            tokens.pop();
        }
    }
    tokens.push(Token::Param);
}

/// Keywords after which a `-` is a sign, not a subtraction.
fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "select"
            | "where"
            | "and"
            | "or"
            | "not"
            | "in"
            | "values"
            | "set"
            | "limit"
            | "offset"
            | "then"
            | "else"
            | "when"
            | "between"
            | "like"
            | "is"
            | "return"
            | "returning"
            | "by"
            | "having"
            | "on"
    )
}

/// `in ( ? , ? , … )` → `in ( ? )`; so is a repeated `values (…), (…)` tuple list.
fn collapse_in_lists(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if token.is("in") && tokens.get(i + 1).is_some_and(|t| t.is("(")) {
            // Find the matching `)` and check the list holds only params and commas.
            let mut j = i + 2;
            let mut only_params = true;
            while j < tokens.len() && !tokens[j].is(")") {
                if !(tokens[j] == Token::Param || tokens[j].is(",")) {
                    only_params = false;
                    break;
                }
                j += 1;
            }
            if only_params && j < tokens.len() && j > i + 2 {
                out.push(token.clone());
                out.push(Token::Punct("(".to_owned()));
                out.push(Token::Param);
                out.push(Token::Punct(")".to_owned()));
                i = j + 1;
                continue;
            }
        }
        // `values (…)` followed by `, (…)` repeats of the same tuple: keep the first.
        if token.is(",")
            && tokens.get(i + 1).is_some_and(|t| t.is("("))
            && out.last().is_some_and(|t| t.is(")"))
            && let (Some(prev), Some(end)) = (last_tuple(&out), tuple_end(&tokens, i + 1))
            && prev == &tokens[i + 1..=end]
            && in_values(&out)
        {
            i = end + 1;
            continue;
        }
        out.push(token.clone());
        i += 1;
    }
    out
}

/// The tokens of the parenthesised tuple that ends `tokens`.
fn last_tuple(tokens: &[Token]) -> Option<&[Token]> {
    let start = tokens.iter().rposition(|t| t.is("("))?;
    let inner = &tokens[start..];
    inner
        .iter()
        .all(|t| *t == Token::Param || t.is(",") || t.is("(") || t.is(")"))
        .then_some(inner)
}

/// Index of the `)` closing the tuple opened at `open`, if it holds only params.
fn tuple_end(tokens: &[Token], open: usize) -> Option<usize> {
    let mut j = open + 1;
    while j < tokens.len() {
        let t = &tokens[j];
        if t.is(")") {
            return Some(j);
        }
        if !(*t == Token::Param || t.is(",")) {
            return None;
        }
        j += 1;
    }
    None
}

/// True when the last tuple in `tokens` follows a `values` keyword.
fn in_values(tokens: &[Token]) -> bool {
    tokens
        .iter()
        .rev()
        .find(|t| matches!(t, Token::Word(_)))
        .is_some_and(|t| t.is("values"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literals_params_and_case() {
        assert_eq!(
            normalize(
                "SELECT  u.id, p.display_name\n FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = ?"
            ),
            "select u.id, p.display_name from users u join profiles p on p.user_id = u.id where u.id = ?"
        );
        assert_eq!(
            normalize(
                "select * from t where a = 'it''s' and b = 42 and c = -3.5e-2 and d = $1 and e = :name and f = ?17;"
            ),
            "select * from t where a = ? and b = ? and c = ? and d = ? and e = ? and f = ?"
        );
        assert_eq!(
            normalize("SELECT x FROM t WHERE id IN (1, 2, 3) AND y IN (?)"),
            "select x from t where id in (?) and y in (?)"
        );
        assert_eq!(
            normalize("select a - 1 from t -- trailing\n /* block */ where \"Mixed\" = X'00ff'"),
            "select a - ? from t where \"Mixed\" = ?"
        );
        assert_eq!(
            normalize("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')"),
            "insert into t (a, b) values (?, ?)"
        );
        assert_eq!(
            normalize("select id from t where sub in (select id from u where v = 1)"),
            "select id from t where sub in (select id from u where v = ?)"
        );
        assert_eq!(normalize("select t1.c2 from t1"), "select t1.c2 from t1");
    }

    #[test]
    fn fingerprint_is_stable() {
        // Pinned: changing the normalisation or the hash re-keys every stored query.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint("SELECT 1"), fnv1a(b"select ?"));
    }

    #[test]
    fn long_statements_are_bounded() {
        let long = format!("select {} from t", "column_name, ".repeat(1_000));
        assert!(normalize(&long).len() <= MAX_SQL_LEN);
    }

    fn literal() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0.0f64..1e9).prop_map(|f| format!("{f}")),
            "[a-zA-Z0-9 '%_]{0,12}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            Just("?".to_owned()),
            (1u32..99).prop_map(|n| format!("${n}")),
            (1u32..99).prop_map(|n| format!("?{n}")),
        ]
    }

    fn spacing() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(" ".to_owned()),
            Just("\n  ".to_owned()),
            Just("\t".to_owned())
        ]
    }

    proptest! {
        #[test]
        fn literals_do_not_change_the_fingerprint(
            a in literal(), b in literal(),
            list in prop::collection::vec(literal(), 1..20),
            s1 in spacing(), s2 in spacing(),
            upper in any::<bool>(),
        ) {
            let template = |a: &str, b: &str, list: &[String], s1: &str, s2: &str| {
                let sql = format!(
                    "SELECT id,{s1}name FROM users WHERE age > {a}{s2}AND city = {b} AND id IN ({})",
                    list.join(", ")
                );
                if upper { sql } else { sql.to_lowercase() }
            };
            let one = template(&a, &b, &list, &s1, &s2);
            let other = template("7", "'x'", &["1".to_owned()], " ", " ");
            prop_assert_eq!(fingerprint(&one), fingerprint(&other), "{} vs {}", one, other);
        }

        #[test]
        fn normalising_is_idempotent(sql in "[ -~\n]{0,200}") {
            let once = normalize(&sql);
            prop_assert_eq!(normalize(&once), once.clone());
        }

        #[test]
        fn never_panics_and_stays_bounded(sql in any::<String>()) {
            prop_assert!(normalize(&sql).len() <= MAX_SQL_LEN);
        }

        #[test]
        fn different_shapes_differ(t1 in "[a-z]{1,8}", t2 in "[a-z]{1,8}") {
            prop_assume!(t1 != t2);
            prop_assert_ne!(
                fingerprint(&format!("select a from {t1} where b = 1")),
                fingerprint(&format!("select a from {t2} where b = 1"))
            );
        }
    }
}
