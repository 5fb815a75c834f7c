//! Line maps: where each line of the original source file landed in the
//! patched one, read from the fix's unified diff. A `__LINE__` immediate
//! that changes from `n` to exactly `map(n)` is a shifted line number, not
//! a code change — a far stronger test than guessing from callee names,
//! which is the fallback when no patch is at hand.

use std::collections::BTreeMap;

/// Old line → new line for one source file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineMap {
    /// Hunks as (old start, old len, new start, new len) plus the exact
    /// mapping of the lines inside them.
    inside: BTreeMap<u32, Option<u32>>,
    /// (first old line after a hunk, delta from there on).
    deltas: Vec<(u32, i64)>,
}

impl LineMap {
    /// Reads the hunks of one file's unified diff (`@@ -a,b +c,d @@`).
    /// Text before the first hunk (headers) is ignored.
    pub fn from_unified_diff(diff: &str) -> Result<LineMap, String> {
        let mut map = LineMap::default();
        let mut lines = diff.lines().enumerate().peekable();
        let mut delta: i64 = 0;
        while let Some((no, line)) = lines.next() {
            let Some(rest) = line.strip_prefix("@@ -") else {
                continue;
            };
            let parse = |s: &str| -> Result<(u32, u32), String> {
                let mut it = s.splitn(2, ',');
                let start = it
                    .next()
                    .unwrap_or("")
                    .parse::<u32>()
                    .map_err(|_| format!("line {}: bad hunk header {line:?}", no + 1))?;
                let len = match it.next() {
                    Some(l) => l
                        .parse::<u32>()
                        .map_err(|_| format!("line {}: bad hunk header {line:?}", no + 1))?,
                    None => 1,
                };
                Ok((start, len))
            };
            let mut parts = rest.split(' ');
            let (os, ol) = parse(parts.next().unwrap_or(""))?;
            let (ns, nl) = parse(parts.next().and_then(|p| p.strip_prefix('+')).unwrap_or(""))?;
            // A zero-length side starts after the named line.
            let (mut o, mut n) = (
                if ol == 0 { os + 1 } else { os },
                if nl == 0 { ns + 1 } else { ns },
            );
            let (mut seen_o, mut seen_n) = (0, 0);
            while seen_o < ol || seen_n < nl {
                let Some((_, body)) = lines.next() else {
                    return Err(format!("hunk at line {} is cut short", no + 1));
                };
                match body.as_bytes().first() {
                    Some(b' ') | None => {
                        map.inside.insert(o, Some(n));
                        o += 1;
                        n += 1;
                        seen_o += 1;
                        seen_n += 1;
                    }
                    Some(b'-') => {
                        map.inside.insert(o, None);
                        o += 1;
                        seen_o += 1;
                    }
                    Some(b'+') => {
                        n += 1;
                        seen_n += 1;
                    }
                    Some(b'\\') => {}
                    _ => {
                        return Err(format!(
                            "unexpected line {body:?} in the hunk at line {}",
                            no + 1
                        ))
                    }
                }
            }
            delta += i64::from(nl) - i64::from(ol);
            map.deltas.push((o, delta));
        }
        Ok(map)
    }

    /// The new line of old line `old`, or `None` if the patch removed it.
    pub fn get(&self, old: u32) -> Option<u32> {
        if let Some(v) = self.inside.get(&old) {
            return *v;
        }
        let delta = self
            .deltas
            .iter()
            .take_while(|(from, _)| *from <= old)
            .last()
            .map_or(0, |(_, d)| *d);
        u32::try_from(i64::from(old) + delta).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_around_hunks() {
        let diff = "--- a/x.c\n+++ b/x.c\n@@ -10,3 +10,4 @@\n ctx\n+added\n ctx2\n ctx3\n@@ -50,2 +51,1 @@\n-gone\n ctx\n";
        let m = LineMap::from_unified_diff(diff).unwrap();
        assert_eq!(m.get(5), Some(5));
        assert_eq!(m.get(10), Some(10));
        assert_eq!(m.get(11), Some(12));
        assert_eq!(m.get(30), Some(31));
        assert_eq!(m.get(50), None);
        assert_eq!(m.get(51), Some(51));
        assert_eq!(m.get(90), Some(90));
        assert!(LineMap::from_unified_diff("@@ -1,2 +1,2 @@\n ctx\n").is_err());
        assert!(LineMap::from_unified_diff("@@ -x +1 @@\n").is_err());
    }
}
