//! Where regorus 0.14 reads Rego v0 otherwise than OPA, for what Gatekeeper templates
//! write, fixed in the text before regorus reads it. Each fix keeps every line where it
//! was, so that error messages still name the file's lines.
//!
//! 1. A partial rule with several bodies (`violation[r] { a } { b }`, OPA's "incremental
//!    definition" shorthand) is refused by regorus; each further body gets the head again
//!    (`violation[r] { a } violation[r] { b }`), which is what OPA makes of it.
//! 2. A reference at the end of a line followed by `(` on the next is read by regorus as a
//!    call (`x := input.a` / `(y)` became `input.a(y)`); OPA ends the expression at the
//!    line. A `;` is put at the end of such a line inside a rule body.
//! 3. `sprintf` with fewer arguments than verbs fails in regorus; Go (and so OPA) writes
//!    `%!v(MISSING)` for each missing one. `sprintf(f, a)` becomes
//!    `sprintf(__verdict_missing_verbs(f, a), a)`, where the extension escapes the verbs
//!    that have no argument so that they print as Go prints them.
//!
//! `not f(x, y)` with `y` undefined is left alone (OPA's compiler moves the reference out
//! of the negation; regorus does not): see the Gatekeeper docs.

use regorus::Value;

/// The extension of fix 3.
pub const MISSING_VERBS: &str = "__verdict_missing_verbs";

/// Keywords after which a line does not end a reference.
const KEYWORDS: [&str; 10] = [
    "in", "not", "some", "every", "with", "as", "if", "contains", "else", "default",
];

/// The text with all three fixes applied.
pub fn apply(rego: &str) -> String {
    let text = incremental_bodies(rego);
    let text = line_ends(&text);
    sprintf_arguments(&text)
}

/// Registers the extension fix 3 calls.
pub fn register(engine: &mut regorus::Engine) -> anyhow::Result<()> {
    engine.add_extension(
        MISSING_VERBS.to_string(),
        2,
        Box::new(|args: Vec<Value>| {
            let (Some(Value::String(format)), Some(given)) = (args.first(), args.get(1)) else {
                return Ok(args.first().cloned().unwrap_or(Value::Undefined));
            };
            let count = match given {
                Value::Array(items) => items.len(),
                _ => return Ok(Value::String(format.clone())),
            };
            Ok(Value::from(escape_missing(format, count)))
        }),
    )
}

/// `format` with every verb past the first `given` written as `%%!<verb>(MISSING)`.
fn escape_missing(format: &str, given: usize) -> String {
    let mut out = String::with_capacity(format.len());
    let mut chars = format.char_indices().peekable();
    let mut verbs = 0;
    while let Some((start, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek().map(|(_, c)| *c) == Some('%') {
            chars.next();
            out.push_str("%%");
            continue;
        }
        // Flags, width and precision, then the verb.
        let mut end = format.len();
        let mut verb = None;
        for (i, c) in chars.by_ref() {
            if c.is_ascii_digit() || "+-# .".contains(c) {
                continue;
            }
            verb = Some(c);
            end = i + c.len_utf8();
            break;
        }
        let Some(verb) = verb else {
            out.push_str(&format[start..]);
            break;
        };
        if verbs >= given {
            out.push_str(&format!("%%!{verb}(MISSING)"));
        } else {
            out.push_str(&format[start..end]);
        }
        verbs += 1;
    }
    out
}

/// A token of Rego text, as far as the fixes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A string, raw string or comment: copied as is.
    Opaque,
    Open(char),
    Close(char),
    Newline,
    Space,
    /// Any other character.
    Char(char),
}

/// `(start, end, token)` for every token of `text`.
fn tokens(text: &str) -> Vec<(usize, usize, Token)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        let start = i;
        let token = match c {
            '"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                out.push((start, i, Token::Opaque));
                continue;
            }
            '`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                out.push((start, i, Token::Opaque));
                continue;
            }
            '#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                out.push((start, i, Token::Opaque));
                continue;
            }
            '{' | '[' | '(' => Token::Open(c),
            '}' | ']' | ')' => Token::Close(c),
            '\n' => Token::Newline,
            c if c.is_whitespace() => Token::Space,
            c => Token::Char(c),
        };
        i += c.len_utf8();
        out.push((start, i, token));
    }
    out
}

/// Fix 1: each body after the first of a rule gets the rule's head.
fn incremental_bodies(text: &str) -> String {
    let tokens = tokens(text);
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut statement: Option<usize> = None;
    let mut head: Option<String> = None;
    let mut after_body = false;
    for &(start, end, token) in &tokens {
        if depth == 0 {
            match token {
                Token::Newline => statement = None,
                Token::Space | Token::Opaque => {}
                Token::Open('{') if statement.is_none() => {
                    if let (true, Some(head)) = (after_body, &head) {
                        out.push_str(head);
                        out.push(' ');
                    }
                }
                Token::Open('{') => {
                    let written = text[statement.unwrap_or(start)..start].trim();
                    head = (!written.is_empty()).then(|| written.to_string());
                }
                _ => {
                    if statement.is_none() {
                        statement = Some(start);
                        after_body = false;
                    }
                }
            }
        }
        match token {
            Token::Open(_) => depth += 1,
            Token::Close(c) => {
                depth = depth.saturating_sub(1);
                if depth == 0 && c == '}' {
                    after_body = true;
                    statement = None;
                }
            }
            _ => {}
        }
        out.push_str(&text[start..end]);
    }
    out
}

/// Fix 2: a `;` after a reference that ends a line of a body when the next line starts
/// with `(`.
fn line_ends(text: &str) -> String {
    let tokens = tokens(text);
    let mut out = String::with_capacity(text.len() + 8);
    let mut stack: Vec<char> = Vec::new();
    // The end of the last significant token on the current line, and whether it can end
    // a reference.
    let mut last: Option<(usize, bool)> = None;
    let mut pending: Option<usize> = None;
    let mut inserts: Vec<usize> = Vec::new();
    for (n, &(start, _end, token)) in tokens.iter().enumerate() {
        match token {
            Token::Newline => {
                if stack.last() == Some(&'{') {
                    if let Some((at, true)) = last {
                        pending = Some(at);
                    }
                }
                last = None;
                continue;
            }
            Token::Space => continue,
            // A comment keeps what came before it as the line's last token.
            Token::Opaque if text[start..].starts_with('#') => continue,
            _ => {}
        }
        if let Some(at) = pending.take() {
            if token == Token::Open('(') {
                inserts.push(at);
            }
        }
        match token {
            Token::Open(c) => stack.push(c),
            Token::Close(_) => {
                stack.pop();
            }
            _ => {}
        }
        let ends_reference = match token {
            Token::Close(']') => true,
            Token::Char(c) if c.is_alphanumeric() || c == '_' => {
                let word_start = tokens[..=n]
                    .iter()
                    .rev()
                    .take_while(
                        |(_, _, t)| matches!(t, Token::Char(c) if c.is_alphanumeric() || *c == '_'),
                    )
                    .last()
                    .map_or(start, |(s, _, _)| *s);
                let word = &text[word_start..tokens[n].1];
                !KEYWORDS.contains(&word) && !word.chars().all(|c| c.is_ascii_digit())
            }
            _ => false,
        };
        last = Some((tokens[n].1, ends_reference));
    }
    let mut out_pos = 0;
    for at in inserts {
        out.push_str(&text[out_pos..at]);
        out.push(';');
        out_pos = at;
    }
    out.push_str(&text[out_pos..]);
    out
}

/// Fix 3: `sprintf(f, a)` becomes `sprintf(__verdict_missing_verbs(f, a), a)`.
fn sprintf_arguments(text: &str) -> String {
    let tokens = tokens(text);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut n = 0;
    while n < tokens.len() {
        let (start, _, token) = tokens[n];
        let is_call = token == Token::Char('s')
            && text[start..].starts_with("sprintf(")
            && !text[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if !is_call {
            n += 1;
            continue;
        }
        // The tokens of `sprintf`, then the `(`.
        let open = n + "sprintf".len();
        let mut depth = 0usize;
        let mut comma = None;
        let mut close = None;
        for (m, &(_, _, t)) in tokens.iter().enumerate().skip(open) {
            match t {
                Token::Open(_) => depth += 1,
                Token::Close(_) => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(m);
                        break;
                    }
                }
                Token::Char(',') if depth == 1 && comma.is_none() => comma = Some(m),
                _ => {}
            }
        }
        let (Some(comma), Some(close)) = (comma, close) else {
            n += 1;
            continue;
        };
        let format = &text[tokens[open].1..tokens[comma].0];
        let arguments = &text[tokens[comma].1..tokens[close].0];
        if arguments.contains('\n') || format.contains('\n') {
            // Keep lines in place: only single-line calls are rewritten.
            n += 1;
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(&format!(
            "sprintf({MISSING_VERBS}({format},{arguments}),{arguments})"
        ));
        copied = tokens[close].1;
        n = close + 1;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_get_their_head() {
        let text = "package p\n\nviolation[{\"msg\": m}] {\n  m := \"a\"\n} {\n  m := \"b\"\n}\n\nx = 1 { true } else = 2 { true }\n";
        let fixed = incremental_bodies(text);
        assert_eq!(
            fixed,
            "package p\n\nviolation[{\"msg\": m}] {\n  m := \"a\"\n} violation[{\"msg\": m}] {\n  m := \"b\"\n}\n\nx = 1 { true } else = 2 { true }\n"
        );
        assert_eq!(fixed.lines().count(), text.lines().count());
    }

    #[test]
    fn a_line_ending_a_reference_is_not_called() {
        let text =
            "p {\n  x := input.a\n  (x == 1)\n  y := [1,\n  (2)]\n  count(x)\n  not\n  (x)\n}\n";
        assert_eq!(
            line_ends(text),
            "p {\n  x := input.a;\n  (x == 1)\n  y := [1,\n  (2)]\n  count(x)\n  not\n  (x)\n}\n"
        );
    }

    #[test]
    fn missing_verbs_print_as_go_prints_them() {
        assert_eq!(
            escape_missing("a %v b %5.2f c %d %%", 1),
            "a %v b %%!f(MISSING) c %%!d(MISSING) %%"
        );
        assert_eq!(escape_missing("%v %v", 2), "%v %v");
        let text = "msg := sprintf(\"%v %v\", [x])\nm := sprintf(\"x\",\n [y])";
        assert_eq!(
            sprintf_arguments(text),
            "msg := sprintf(__verdict_missing_verbs(\"%v %v\", [x]), [x])\nm := sprintf(\"x\",\n [y])"
        );
    }
}
