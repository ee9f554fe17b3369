//! Reads values out of a spanned TOML tree (`toml_edit`) by hand, collecting every
//! error instead of stopping at the first, each with its line:column, key path and a fix.
//! A serde derive would give up at the first bad value; an operator fixing a file wants
//! the whole list. Pure: works on text already in memory, never touches the host.

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::ConfigError;
use super::duration::parse_duration;

/// Byte range of a value in the file, when the parser recorded one.
pub(super) type Span = Option<Range<usize>>;

/// A value together with where it was written, so later checks can point at it.
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub value: T,
    pub span: Span,
}

/// A table (header or inline) and where it sits: its key path and its span.
pub(super) struct Tab<'d> {
    pub table: &'d dyn TableLike,
    pub path: String,
    pub span: Span,
}

impl<'d> Tab<'d> {
    /// The key path of one of this table's keys, e.g. "vip_group[0].priority".
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The span of a key's value, or of the key itself when the value has none.
    pub fn span_of(&self, key: &str) -> Span {
        let (k, item) = self.table.get_key_value(key)?;
        item.span().or_else(|| k.span())
    }

    /// The span of the key's name (for "unknown key" and "remove this key").
    pub fn key_span(&self, key: &str) -> Span {
        let (k, item) = self.table.get_key_value(key)?;
        k.span().or_else(|| item.span())
    }

    fn get(&self, key: &str) -> Option<&'d Item> {
        self.table.get(key)
    }
}

/// The longest duration any key takes: a day. Every timer, interval, delay and lifetime
/// havip has is seconds to minutes; a bound keeps `heartbeat * 3` or `now + interval` from
/// overflowing on a typo like "10000000000000000000s".
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Collects errors for one file while its tree is walked.
pub(super) struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    /// Relative paths in the file are taken relative to the file's directory, so a
    /// lab or a test can keep its key and data next to its config.
    base_dir: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            file,
            text,
            base_dir,
            errors: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // Offsets from the parser sit on char boundaries; floor anyway so a bad one
        // cannot panic the slice below.
        let offset = (0..=offset)
            .rev()
            .find(|&o| self.text.is_char_boundary(o))
            .unwrap_or(0);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Records one error. `message` (text, or a value parser's typed error) says what is
    /// wrong and what would be right; this adds where: the file, line:column and key path.
    pub fn error(&mut self, span: &Span, key: impl Into<String>, message: impl fmt::Display) {
        let position = span.as_ref().map(|s| self.position(s.start));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position,
            key: key.into(),
            message: message.to_string(),
        });
    }

    /// Reports every key of `tab` that is not in `known`, suggesting the closest known
    /// key when one is a likely typo.
    pub fn unknown_keys(&mut self, tab: &Tab<'_>, known: &[&str]) {
        for (key, _) in tab.table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = tab.key_span(key);
            let message = match suggest(key, known) {
                Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
                None => format!("unknown key `{key}`; the keys here are {}", list(known)),
            };
            self.error(&span, tab.key(key), message);
        }
    }

    /// Reports a required key that is absent, at the table's header. Returns whether
    /// the key is present (its value may still be invalid; the getters report that).
    pub fn require(&mut self, tab: &Tab<'_>, key: &str, example: &str) -> bool {
        let what = match tab.path.rsplit_once('[') {
            _ if tab.path.is_empty() => "the file".to_string(),
            Some((array, _)) => format!("this [[{array}]] entry"),
            None => format!("[{}]", tab.path),
        };
        self.require_with(
            tab,
            key,
            &format!("missing; add `{key} = {example}` to {what}"),
        )
    }

    /// Like `require`, for sections and lists whose fix is not a single `key = value`.
    pub fn require_with(&mut self, tab: &Tab<'_>, key: &str, message: &str) -> bool {
        if tab.has(key) {
            return true;
        }
        // A misspelling of this key was already reported as unknown, with this key as
        // the suggestion: one slip, one error.
        if tab.table.iter().any(|(k, _)| suggest(k, &[key]).is_some()) {
            return false;
        }
        self.error(&tab.span, tab.key(key), message);
        false
    }

    /// The value of `key` if present and a plain value; a table where a value belongs is
    /// reported here.
    fn value<'d>(&mut self, tab: &Tab<'d>, key: &str, want: &str) -> Option<&'d Value> {
        let item = tab.get(key)?;
        match item {
            Item::Value(v) => Some(v),
            _ => {
                self.error(
                    &tab.key_span(key),
                    tab.key(key),
                    format!("is {}; it must be {want}", describe(item)),
                );
                None
            }
        }
    }

    fn wrong_type(&mut self, tab: &Tab<'_>, key: &str, found: &Value, want: &str) {
        self.error(
            &found.span(),
            tab.key(key),
            format!("is {}; it must be {want}", describe_value(found)),
        );
    }

    pub fn string(&mut self, tab: &Tab<'_>, key: &str) -> Option<At<String>> {
        let want = "a string in quotes";
        let v = self.value(tab, key, want)?;
        match v.as_str() {
            Some(s) => Some(At {
                value: s.to_string(),
                span: v.span(),
            }),
            None => {
                self.wrong_type(tab, key, v, want);
                None
            }
        }
    }

    /// A string that must not be empty (names, interfaces, hosts).
    pub fn non_empty_string(&mut self, tab: &Tab<'_>, key: &str) -> Option<At<String>> {
        let s = self.string(tab, key)?;
        if s.value.trim().is_empty() {
            self.error(
                &s.span,
                tab.key(key),
                "is empty; give it a value or remove the key",
            );
            return None;
        }
        Some(s)
    }

    pub fn boolean(&mut self, tab: &Tab<'_>, key: &str) -> Option<bool> {
        let want = "true or false (without quotes)";
        let v = self.value(tab, key, want)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(tab, key, v, want);
                None
            }
        }
    }

    /// An integer within `range`; out-of-range values are reported with the range.
    pub fn integer(
        &mut self,
        tab: &Tab<'_>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<At<i64>> {
        let want = format!(
            "a whole number from {} to {} (without quotes)",
            range.start(),
            range.end()
        );
        let v = self.value(tab, key, &want)?;
        let Some(n) = v.as_integer() else {
            self.wrong_type(tab, key, v, &want);
            return None;
        };
        if !range.contains(&n) {
            self.error(
                &v.span(),
                tab.key(key),
                format!("{n} is out of range; it must be {want}"),
            );
            return None;
        }
        Some(At {
            value: n,
            span: v.span(),
        })
    }

    /// A duration no longer than `MAX_DURATION`, so that no arithmetic on it (a timer
    /// times three, an instant plus an interval) can overflow.
    pub fn duration(&mut self, tab: &Tab<'_>, key: &str) -> Option<At<Duration>> {
        let want = "a duration in quotes, like \"2s\" or \"50ms\"";
        let v = self.value(tab, key, want)?;
        let Some(text) = v.as_str() else {
            let hint = match v.as_integer() {
                Some(n) => format!("; write \"{n}s\" or \"{n}ms\""),
                None => String::new(),
            };
            self.error(
                &v.span(),
                tab.key(key),
                format!("is {}; it must be {want}{hint}", describe_value(v)),
            );
            return None;
        };
        match parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    &v.span(),
                    tab.key(key),
                    format!(
                        "{text:?} is longer than {}, the longest duration havip takes anywhere; write a shorter one",
                        super::format_duration(MAX_DURATION)
                    ),
                );
                None
            }
            Ok(d) => Some(At {
                value: d,
                span: v.span(),
            }),
            Err(why) => {
                self.error(&v.span(), tab.key(key), why);
                None
            }
        }
    }

    pub fn socket_addr(&mut self, tab: &Tab<'_>, key: &str) -> Option<At<SocketAddr>> {
        let s = self.string(tab, key)?;
        match s.value.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(At {
                value: addr,
                span: s.span,
            }),
            Err(_) => {
                self.error(
                    &s.span,
                    tab.key(key),
                    format!(
                        "{:?} is not an IP address with a port; write it like \"198.18.0.11:7400\" or \"[2001:db8::11]:7400\"",
                        s.value
                    ),
                );
                None
            }
        }
    }

    /// A filesystem path; relative paths are resolved against the config file's directory.
    pub fn path(&mut self, tab: &Tab<'_>, key: &str) -> Option<At<PathBuf>> {
        let s = self.non_empty_string(tab, key)?;
        let path = PathBuf::from(s.value);
        let path = if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        };
        Some(At {
            value: path,
            span: s.span,
        })
    }

    /// An array of strings (argv, addresses). Each element keeps its span so a bad
    /// element can be pointed at ("vip_group[0].addresses[1]").
    pub fn string_array(&mut self, tab: &Tab<'_>, key: &str) -> Option<At<Vec<At<String>>>> {
        let want = "an array of strings, like [\"a\", \"b\"]";
        let v = self.value(tab, key, want)?;
        let Some(array) = v.as_array() else {
            self.wrong_type(tab, key, v, want);
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, element) in array.iter().enumerate() {
            match element.as_str() {
                Some(s) => out.push(At {
                    value: s.to_string(),
                    span: element.span(),
                }),
                None => {
                    ok = false;
                    self.error(
                        &element.span(),
                        format!("{}[{i}]", tab.key(key)),
                        format!(
                            "is {}; every element must be a string in quotes",
                            describe_value(element)
                        ),
                    );
                }
            }
        }
        ok.then_some(At {
            value: out,
            span: v.span(),
        })
    }

    /// A sub-table written as `[a.b]` or inline as `b = { ... }`.
    pub fn table<'d>(&mut self, tab: &Tab<'d>, key: &str) -> Option<Tab<'d>> {
        let (k, item) = tab.table.get_key_value(key)?;
        let path = tab.key(key);
        match item.as_table_like() {
            Some(table) => {
                let span = item.span().or_else(|| k.span());
                Some(Tab { table, path, span })
            }
            None => {
                let span = item.span().or_else(|| k.span());
                self.error(
                    &span,
                    path.clone(),
                    format!("is {}; it must be a table: write `[{path}]` on its own line and the keys below it", describe(item)),
                );
                None
            }
        }
    }

    /// The entries of `[[key]]` (or an inline array of tables). A single `[key]` table
    /// is reported with the fix, since that is the usual slip.
    pub fn tables<'d>(&mut self, tab: &Tab<'d>, key: &str) -> Vec<Tab<'d>> {
        let Some((k, item)) = tab.table.get_key_value(key) else {
            return Vec::new();
        };
        let path = tab.key(key);
        let entry = |i: usize| format!("{path}[{i}]");
        match item {
            Item::ArrayOfTables(array) => array
                .iter()
                .enumerate()
                .map(|(i, t)| Tab {
                    table: t as &dyn TableLike,
                    path: entry(i),
                    span: t.span(),
                })
                .collect(),
            Item::Value(Value::Array(array)) => {
                let mut out = Vec::new();
                for (i, v) in array.iter().enumerate() {
                    match v.as_inline_table() {
                        Some(t) => out.push(Tab {
                            table: t as &dyn TableLike,
                            path: entry(i),
                            span: t.span(),
                        }),
                        None => self.error(
                            &v.span(),
                            entry(i),
                            format!(
                                "is {}; each entry must be a table like {{ name = \"...\" }}",
                                describe_value(v)
                            ),
                        ),
                    }
                }
                out
            }
            _ => {
                let span = item.span().or_else(|| k.span());
                self.error(
                    &span,
                    path.clone(),
                    format!("is {}; write each entry as `[[{path}]]` (double brackets) followed by its keys", describe(item)),
                );
                Vec::new()
            }
        }
    }
}

/// "a string", "an integer", ... for messages that say what was found.
fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "empty",
        Item::Value(v) => describe_value(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn describe_value(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number with a fraction",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date/time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// "`a`, `b` and `c`" for messages.
pub(super) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        None => "none".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The known key closest to `typo`, if it is close enough to be a slip of the fingers.
pub(super) fn suggest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    let typo_lower = typo.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (edit_distance(&typo_lower, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters; the key lists are short, so O(n*m) is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        let known = ["failback", "failback_delay", "priority", "interface"];
        assert_eq!(suggest("failback_dealy", &known), Some("failback_delay"));
        assert_eq!(suggest("failback-delay", &known), Some("failback_delay"));
        assert_eq!(suggest("priorty", &known), Some("priority"));
        assert_eq!(suggest("colour", &known), None);
    }

    #[test]
    fn positions_are_one_based_chars() {
        let reader = Reader::new(Path::new("x.toml"), "a = 1\nbé = \"x\"\n");
        assert_eq!(reader.position(0), (1, 1));
        assert_eq!(reader.position(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(reader.position(12), (2, 6));
    }
}
