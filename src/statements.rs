//! Splits a SQL file into its statements, so each is sent on its own. On
//! Citus a statement sent as part of a longer string may be forwarded to the
//! workers with that whole string (`CREATE TRIGGER` on a distributed table
//! is), which they refuse.

/// The statements of `sql`, each without its `;`, comments and blanks
/// between them dropped. Understands what the crate's SQL uses: `--`
/// comments, quoted strings and identifiers, and dollar quoting.
pub(crate) fn split(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                at = sql[at..].find('\n').map_or(bytes.len(), |end| at + end);
            }
            quote @ (b'\'' | b'"') => {
                at = sql[at + 1..]
                    .find(quote as char)
                    .map_or(bytes.len(), |end| at + 1 + end + 1);
                continue;
            }
            b'$' => {
                if let Some(tag_len) = dollar_tag(&sql[at..]) {
                    let tag = &sql[at..at + tag_len];
                    let body = at + tag_len;
                    at = sql[body..]
                        .find(tag)
                        .map_or(bytes.len(), |end| body + end + tag_len);
                    continue;
                }
            }
            b';' => {
                push(&mut statements, &sql[start..at]);
                start = at + 1;
            }
            _ => {}
        }
        at += 1;
    }
    push(&mut statements, &sql[start..]);
    statements
}

/// The length of a `$tag$` opening at the start of `text`, if one is there.
fn dollar_tag(text: &str) -> Option<usize> {
    let rest = &text[1..];
    let end = rest.find('$')?;
    rest[..end]
        .bytes()
        .all(|b| b == b'_' || b.is_ascii_alphanumeric())
        .then_some(end + 2)
        .filter(|_| !rest[..end].starts_with(|c: char| c.is_ascii_digit()))
}

fn push<'a>(statements: &mut Vec<&'a str>, statement: &'a str) {
    let meaningful = statement
        .lines()
        .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--"));
    if meaningful {
        statements.push(statement.trim());
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_on_semicolons_outside_quotes_comments_and_bodies() {
        let sql = "-- a comment; not a statement\n\
                   CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$;\n\
                   DO $body$ BEGIN PERFORM 1; END $body$;\n\
                   SELECT 'it''s; fine', \"odd;name\" FROM t; -- trailing\n\
                   SELECT $1::int";
        assert_eq!(
            split(sql),
            vec![
                "-- a comment; not a statement\n\
                 CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$",
                "DO $body$ BEGIN PERFORM 1; END $body$",
                "SELECT 'it''s; fine', \"odd;name\" FROM t",
                "-- trailing\nSELECT $1::int",
            ]
        );
    }

    #[test]
    fn every_layer_file_splits_into_statements_that_each_end_cleanly() {
        for (name, text) in crate::migrate::SQL_LAYER {
            let statements = split(text);
            assert!(!statements.is_empty(), "{name}");
            for statement in statements {
                assert!(!statement.ends_with(';'), "{name}: {statement}");
            }
        }
    }
}
