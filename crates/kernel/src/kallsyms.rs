//! The text form of a kernel's symbol table: `System.map` and
//! `/proc/kallsyms` lines (`ADDRESS TYPE NAME`, and `\t[module]` after the
//! name for a loadable module's symbol in kallsyms). The one parser every
//! crate uses, so a `[module]` line means the same everywhere.

/// One line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSymbol {
    /// Link-time (System.map) or run-time (kallsyms) address.
    pub address: u64,
    /// nm-style type letter (`T`, `t`, `D`, …; lower case: local).
    pub kind: char,
    /// Symbol name.
    pub name: String,
    /// The loadable module it belongs to (`[module]` in kallsyms); `None`
    /// for the kernel image's own symbols.
    pub module: Option<String>,
}

impl MapSymbol {
    /// Whether the symbol is local to its object file (lower-case type).
    pub fn is_local(&self) -> bool {
        self.kind.is_ascii_lowercase()
    }
}

/// Parses System.map or kallsyms text; an error names the line (1-based)
/// and what is wrong with it. Blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<MapSymbol>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let mut it = l.split_whitespace();
            let (Some(a), Some(k), Some(n)) = (it.next(), it.next(), it.next()) else {
                return Err(format!(
                    "line {}: expected `address type name`, got {l:?}",
                    i + 1
                ));
            };
            let address = u64::from_str_radix(a, 16)
                .map_err(|_| format!("line {}: bad address {a:?}", i + 1))?;
            let kind = k
                .chars()
                .next()
                .filter(|_| k.len() == 1)
                .ok_or_else(|| format!("line {}: bad type {k:?}", i + 1))?;
            let module = match it.next() {
                None => None,
                Some(m) => Some(
                    m.strip_prefix('[')
                        .and_then(|m| m.strip_suffix(']'))
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| format!("line {}: bad module {m:?}", i + 1))?
                        .to_string(),
                ),
            };
            Ok(MapSymbol {
                address,
                kind,
                name: n.to_string(),
                module,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_map_and_kallsyms_lines() {
        let s = parse("ffffffff81000000 T _text\n\nffffffff81234560 t cmdline_proc_show\nffffffffc0000000 t foo\t[virtio]\n").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].address, 0xffffffff81000000);
        assert!(!s[0].is_local() && s[1].is_local());
        assert_eq!(s[1].name, "cmdline_proc_show");
        assert_eq!(s[1].module, None);
        assert_eq!(s[2].module.as_deref(), Some("virtio"));
        assert!(parse("zz T x\n")
            .unwrap_err()
            .contains("line 1: bad address"));
        assert!(parse("0 T x\nffff\n").unwrap_err().contains("line 2"));
        assert!(parse("0 TT x\n").unwrap_err().contains("bad type"));
        assert!(parse("0 t x virtio\n").unwrap_err().contains("bad module"));
    }
}
