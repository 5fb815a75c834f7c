//! Keyset pagination for every list the API and the dashboard serve: a
//! page is the `limit` rows after (or before) the key of the last row
//! shown, in an order ending with a unique column, so a page costs the
//! same at the millionth row as at the first and rows inserted or removed
//! between two requests never make a row appear twice or go missing.
//!
//! The cursor handed to clients is opaque: hex of a small JSON document
//! naming the list it belongs to, the direction and the key. It is not
//! signed — it only says where to continue, and a forged one just starts
//! elsewhere — but one that does not decode, belongs to another list or
//! carries a key of the wrong shape is refused (400 naming `cursor`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{invalid, Error};

/// Rows per page when the request names no `limit`.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: i64 = 1000;

/// Which side of the cursor's key a page lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// The rows after the key (the next page).
    #[serde(rename = "n")]
    After,
    /// The rows before the key (the previous page).
    #[serde(rename = "p")]
    Before,
}

/// A decoded cursor: where a page starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The list it belongs to.
    #[serde(rename = "l")]
    pub list: String,
    /// Which side of the key.
    #[serde(rename = "d")]
    pub direction: Direction,
    /// The sort key of the row the page continues from.
    #[serde(rename = "k")]
    pub key: Vec<Value>,
}

impl Cursor {
    /// The token given to clients.
    pub fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The key's `i`-th part as text; a cursor whose key does not have
    /// that shape is refused.
    pub fn text(&self, i: usize) -> Result<&str, Error> {
        self.key.get(i).and_then(Value::as_str).ok_or_else(bad)
    }

    /// The key's `i`-th part as an integer.
    pub fn int(&self, i: usize) -> Result<i64, Error> {
        self.key.get(i).and_then(Value::as_i64).ok_or_else(bad)
    }
}

fn bad() -> Error {
    invalid("cursor: not a cursor this list handed out (take `next` or `prev` from an answer)")
}

/// What a client asked of one page: how many rows, from where.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// Rows wanted, 1 to [`MAX_LIMIT`].
    pub limit: i64,
    /// Where to start; none: at the beginning.
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// The first `limit` rows.
    pub fn first(limit: i64) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// Validates `limit` and `cursor` as a client sent them for `list`
    /// (with `max` as the largest limit).
    pub fn parse(
        list: &str,
        limit: Option<i64>,
        cursor: Option<&str>,
        max: i64,
    ) -> Result<Self, Error> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT.min(max));
        if !(1..=max).contains(&limit) {
            return Err(invalid(format!(
                "limit: {limit} is out of range (1 to {max})"
            )));
        }
        let cursor = match cursor.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(token) => {
                // Ours are a few hundred characters; refuse anything far
                // longer before decoding it.
                if token.len() > 4096 {
                    return Err(bad());
                }
                let bytes = hex::decode(token).map_err(|_| bad())?;
                let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
                if c.list != list || c.key.is_empty() {
                    return Err(bad());
                }
                Some(c)
            }
        };
        Ok(Self { limit, cursor })
    }

    /// How many rows to fetch: one more than wanted, to know whether
    /// another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Whether the rows are read backwards (a previous page).
    pub fn backwards(&self) -> bool {
        self.cursor
            .as_ref()
            .is_some_and(|c| c.direction == Direction::Before)
    }
}

/// One page of a list, in the list's order.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Its rows.
    pub items: Vec<T>,
    /// The cursor of the page after it, if there are more rows.
    pub next: Option<String>,
    /// The cursor of the page before it, unless it is the first.
    pub prev: Option<String>,
}

impl<T> Page<T> {
    /// Makes a page from the rows a query fetched for `req` (up to
    /// `req.fetch()` of them, in the direction it read), with `key` giving
    /// each row's sort key.
    pub fn from_rows(
        list: &str,
        req: &PageRequest,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> Vec<Value>,
    ) -> Self {
        let more = rows.len() as i64 > req.limit;
        rows.truncate(req.limit as usize);
        let backwards = req.backwards();
        if backwards {
            rows.reverse();
        }
        let cursor = |direction, row: Option<&T>| {
            row.map(|r| {
                Cursor {
                    list: list.to_string(),
                    direction,
                    key: key(r),
                }
                .encode()
            })
        };
        // Reading forwards, a next page exists when a row beyond this
        // page was fetched, a previous one when this page did not start at
        // the beginning; backwards, the other way round.
        let (has_next, has_prev) = if backwards {
            (true, more)
        } else {
            (more, req.cursor.is_some())
        };
        Self {
            next: if has_next {
                cursor(Direction::After, rows.last())
            } else {
                None
            },
            prev: if has_prev {
                cursor(Direction::Before, rows.first())
            } else {
                None
            },
            items: rows,
        }
    }
}

/// A value bound to a query built at run time.
#[derive(Debug, Clone)]
pub enum Bind {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
}

/// SQL built at run time with its `$n` parameters in order.
#[derive(Debug, Default)]
pub struct Sql {
    /// The statement so far.
    pub text: String,
    /// Its parameters.
    pub binds: Vec<Bind>,
}

impl Sql {
    /// Starts a statement.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            binds: Vec::new(),
        }
    }

    /// Appends text.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a parameter's placeholder and remembers its value.
    pub fn bind(&mut self, b: Bind) -> &mut Self {
        self.binds.push(b);
        self.text.push_str(&format!("${}", self.binds.len()));
        self
    }

    /// A query of rows of `T` with the parameters bound.
    pub fn query_as<'a, T>(
        &'a self,
    ) -> sqlx::query::QueryAs<'a, sqlx::Any, T, sqlx::any::AnyArguments<'a>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let mut q = sqlx::query_as::<_, T>(&self.text);
        for b in &self.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// The smallest string greater than every string starting with `prefix`
/// (none: `prefix` is empty or all U+10FFFF), for a range scan of an
/// index where `LIKE 'prefix%'` would not use one on both backends.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value, skipping the surrogate gap.
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = Cursor {
            list: "hosts".into(),
            direction: Direction::After,
            key: vec![json!("web-1"), json!("abc")],
        };
        let p = PageRequest::parse("hosts", Some(5), Some(&c.encode()), MAX_LIMIT).unwrap();
        assert_eq!(p.cursor, Some(c.clone()));
        assert_eq!(p.limit, 5);
        for bad in ["zz", "7b7d", &hex::encode("[1]"), &c.encode()[..10]] {
            let e = PageRequest::parse("hosts", None, Some(bad), MAX_LIMIT).unwrap_err();
            assert!(e.to_string().contains("cursor"), "{e}");
        }
        let e = PageRequest::parse("audit", None, Some(&c.encode()), MAX_LIMIT).unwrap_err();
        assert!(e.to_string().contains("cursor"), "{e}");
        for l in [0, -1, MAX_LIMIT + 1] {
            let e = PageRequest::parse("hosts", Some(l), None, MAX_LIMIT).unwrap_err();
            assert!(e.to_string().contains("limit"), "{e}");
        }
        assert_eq!(
            PageRequest::parse("hosts", None, None, MAX_LIMIT)
                .unwrap()
                .limit,
            DEFAULT_LIMIT
        );
    }

    #[test]
    fn pages_know_their_neighbours() {
        let key = |r: &i64| vec![json!(r)];
        let first = Page::from_rows("n", &PageRequest::first(2), vec![1, 2, 3], key);
        assert_eq!(first.items, vec![1, 2]);
        assert!(first.next.is_some() && first.prev.is_none());
        let next = PageRequest::parse("n", Some(2), first.next.as_deref(), 10).unwrap();
        let last = Page::from_rows("n", &next, vec![3], key);
        assert!(last.next.is_none() && last.prev.is_some());
        let back = PageRequest::parse("n", Some(2), last.prev.as_deref(), 10).unwrap();
        assert!(back.backwards());
        // Read backwards: 2, 1 (and nothing before).
        let p = Page::from_rows("n", &back, vec![2, 1], key);
        assert_eq!(p.items, vec![1, 2]);
        assert!(p.prev.is_none() && p.next.is_some());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("web-").as_deref(), Some("web."));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
    }
}
