//! Type layouts: the named structures, unions and enumerations (and the
//! anonymous ones a typedef names) that each object's DWARF describes,
//! compared between the original and the patched object. A fix that adds a
//! member to a structure changes no symbol's name, only offsets inside the
//! code that uses it; instances the running kernel already holds keep the
//! old layout, so carried code reading them with the new one would be
//! wrong. The include pass refuses such a change when the patch carries
//! code (`check_types`).

use std::collections::BTreeMap;

use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitOffset};
use object::elf;

use crate::read::Object;

/// A type whose layout differs between the objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeChange {
    /// `struct dm_integrity_c`, `union x`, `enum y`, `typedef spinlock_t`.
    pub name: String,
    /// What differs, for a person: sizes, members moved, added or removed,
    /// enumerator values.
    pub detail: String,
}

/// One definition's layout.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Layout {
    /// A structure or union: size in bytes and members.
    Record { size: u64, members: Vec<Member> },
    /// An enumeration: its enumerators and their values.
    Enum(Vec<(String, i64)>),
}

/// A member of a structure or union. Two members are the same layout when
/// they sit at the same place with the same width and shape: a renamed
/// member, or `unsigned long` spelled `u64`, changes no byte of an
/// instance. The name and the type as written are for messages.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    /// Offset from the start, in bits.
    offset: u64,
    /// Width of a bit field.
    bits: Option<u64>,
    /// What the bytes are: typedefs and qualifiers resolved, base types by
    /// kind and size, pointers as pointers, named structures by name (their
    /// own layout is compared under that name), anonymous ones inline.
    shape: String,
    /// The type as the source names it.
    written: String,
}

impl Member {
    fn key(&self) -> (u64, Option<u64>, &str) {
        (self.offset, self.bits, &self.shape)
    }
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Member {}

impl PartialOrd for Member {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Member {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Layout definitions by name; a name may be defined more than once (in
/// different scopes), so each holds the sorted list of its definitions.
type Layouts = BTreeMap<String, Vec<Layout>>;

/// The debugging sections this pass reads (a unit's header names its line
/// program and its string, address and range tables, which gimli reads
/// when it opens the unit).
const SECTIONS: &[&str] = &[
    ".debug_info",
    ".debug_abbrev",
    ".debug_str",
    ".debug_line",
    ".debug_line_str",
    ".debug_str_offsets",
    ".debug_addr",
    ".debug_rnglists",
    ".debug_ranges",
];

/// Compares the type layouts of `orig` and `patched`. `Ok(None)` when
/// either object carries no DWARF (nothing to compare); an error when the
/// DWARF cannot be read.
pub fn changed_types(orig: &Object, patched: &Object) -> Result<Option<Vec<TypeChange>>, String> {
    if same_debug_info(orig, patched) {
        // Identical descriptions (a self-diff, a fix to code alone that
        // moved no line): nothing to parse.
        return Ok(Some(Vec::new()));
    }
    let (Some(a), Some(b)) = (layouts(orig)?, layouts(patched)?) else {
        return Ok(None);
    };
    let mut changes = Vec::new();
    for (name, old) in &a {
        let Some(new) = b.get(name) else {
            continue;
        };
        if old == new {
            continue;
        }
        if let Some(detail) = describe(old, new) {
            changes.push(TypeChange {
                name: name.clone(),
                detail,
            });
        }
    }
    Ok(Some(changes))
}

/// Whether both objects hold the same debugging sections, byte for byte
/// and relocation for relocation (by target name and addend).
fn same_debug_info(orig: &Object, patched: &Object) -> bool {
    SECTIONS.iter().all(|name| {
        let (a, b) = (orig.section_by_name(name), patched.section_by_name(name));
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let (a, b) = (orig.section(a), patched.section(b));
                a.data == b.data
                    && a.relocs.len() == b.relocs.len()
                    && a.relocs.iter().zip(&b.relocs).all(|(x, y)| {
                        x.offset == y.offset
                            && x.r_type == y.r_type
                            && x.addend == y.addend
                            && orig.symbol(x.symbol).name == patched.symbol(y.symbol).name
                    })
            }
            _ => false,
        }
    })
}

/// What differs between two sets of definitions of one name, or `None`
/// when the difference is harmless (enumerators added, none renumbered).
fn describe(old: &[Layout], new: &[Layout]) -> Option<String> {
    match (old, new) {
        ([Layout::Enum(o)], [Layout::Enum(n)]) => {
            let moved: Vec<String> = o
                .iter()
                .filter_map(|(name, v)| {
                    let (_, w) = n.iter().find(|(m, _)| m == name)?;
                    (w != v).then(|| format!("{name} {v} -> {w}"))
                })
                .collect();
            (!moved.is_empty()).then(|| format!("enumerators renumbered: {}", moved.join(", ")))
        }
        (
            [Layout::Record {
                size: os,
                members: om,
            }],
            [Layout::Record {
                size: ns,
                members: nm,
            }],
        ) => {
            let mut parts = Vec::new();
            if os != ns {
                parts.push(format!("size {os} -> {ns} bytes"));
            }
            let at = |bits: u64| -> String {
                if bits.is_multiple_of(8) {
                    format!("{}", bits / 8)
                } else {
                    format!("{}.{}", bits / 8, bits % 8)
                }
            };
            let shown = |m: &Member| match m.bits {
                Some(b) => format!("{}:{b}", m.written),
                None => m.written.clone(),
            };
            for m in nm {
                match om.iter().find(|o| o.name == m.name) {
                    None => parts.push(format!("new member {} at {}", m.name, at(m.offset))),
                    Some(o) => {
                        if o.offset != m.offset {
                            parts.push(format!(
                                "{} moved {} -> {}",
                                m.name,
                                at(o.offset),
                                at(m.offset)
                            ));
                        }
                        if o.shape != m.shape || o.bits != m.bits {
                            parts.push(format!(
                                "{} is now {} (was {})",
                                m.name,
                                shown(m),
                                shown(o)
                            ));
                        }
                    }
                }
            }
            for o in om {
                if !nm.iter().any(|m| m.name == o.name) {
                    parts.push(format!("member {} removed", o.name));
                }
            }
            if parts.is_empty() {
                parts.push("members reordered".into());
            }
            let shown = parts.len().min(5);
            let mut text = parts[..shown].join("; ");
            if parts.len() > shown {
                text.push_str(&format!("; and {} more", parts.len() - shown));
            }
            Some(text)
        }
        _ => Some(format!(
            "{} definition(s) before, {} after, with other layouts",
            old.len(),
            new.len()
        )),
    }
}

/// A debugging section's bytes with its relocations applied (in a
/// relocatable object, a reference into `.debug_str` is an addend to the
/// section's symbol: the bytes hold 0).
fn relocated(obj: &Object, name: &str) -> Option<Vec<u8>> {
    let id = obj.section_by_name(name)?;
    let s = obj.section(id);
    let mut data = s.data.clone();
    for r in &s.relocs {
        let sym = obj.symbol(r.symbol);
        let value = (sym.value as i64).wrapping_add(r.addend);
        let off = usize::try_from(r.offset).ok()?;
        match r.r_type {
            elf::R_X86_64_32 | elf::R_X86_64_32S => {
                if let Some(field) = data.get_mut(off..off + 4) {
                    field.copy_from_slice(&(value as u32).to_le_bytes());
                }
            }
            elf::R_X86_64_64 => {
                if let Some(field) = data.get_mut(off..off + 8) {
                    field.copy_from_slice(&(value as u64).to_le_bytes());
                }
            }
            _ => {}
        }
    }
    Some(data)
}

/// Every named layout in `obj`'s DWARF; `None` without `.debug_info`.
fn layouts(obj: &Object) -> Result<Option<Layouts>, String> {
    if obj.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let sections: BTreeMap<&str, Vec<u8>> = SECTIONS
        .iter()
        .filter_map(|n| relocated(obj, n).map(|d| (*n, d)))
        .collect();
    let load = |id: gimli::SectionId| -> Result<EndianSlice<'_, LittleEndian>, gimli::Error> {
        let data = sections.get(id.name()).map(Vec::as_slice).unwrap_or(&[]);
        Ok(EndianSlice::new(data, LittleEndian))
    };
    let dwarf = gimli::Dwarf::load(load).map_err(|e| e.to_string())?;
    let mut out = Layouts::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(|e| e.to_string())? {
        let unit = dwarf.unit(header).map_err(|e| e.to_string())?;
        collect(&dwarf, &unit, &mut out).map_err(|e| format!("{}: {e}", obj.path.display()))?;
    }
    for defs in out.values_mut() {
        defs.sort();
        defs.dedup();
    }
    Ok(Some(out))
}

type R<'a> = EndianSlice<'a, LittleEndian>;

fn collect(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    out: &mut Layouts,
) -> gimli::Result<()> {
    let mut entries = unit.entries();
    while let Some((_, die)) = entries.next_dfs()? {
        let tag = die.tag();
        let keyword = match tag {
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => "struct",
            gimli::DW_TAG_union_type => "union",
            gimli::DW_TAG_enumeration_type => "enum",
            gimli::DW_TAG_typedef => "typedef",
            _ => continue,
        };
        if die.attr(gimli::DW_AT_declaration)?.is_some() {
            continue;
        }
        let Some(name) = name_of(dwarf, unit, die)? else {
            continue;
        };
        let layout = if tag == gimli::DW_TAG_typedef {
            // A typedef of an anonymous structure (`typedef struct {…}
            // atomic_t`) is the only name that structure has.
            let Some(AttributeValue::UnitRef(target)) = die.attr_value(gimli::DW_AT_type)? else {
                continue;
            };
            let t = unit.entry(target)?;
            if name_of(dwarf, unit, &t)?.is_some() {
                continue;
            }
            match layout_of(dwarf, unit, target, 0)? {
                Some(l) => l,
                None => continue,
            }
        } else {
            match layout_of(dwarf, unit, die.offset(), 0)? {
                Some(l) => l,
                None => continue,
            }
        };
        out.entry(format!("{keyword} {name}"))
            .or_default()
            .push(layout);
    }
    Ok(())
}

fn name_of(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    die: &gimli::DebuggingInformationEntry<R<'_>>,
) -> gimli::Result<Option<String>> {
    match die.attr_value(gimli::DW_AT_name)? {
        Some(v) => Ok(Some(
            dwarf.attr_string(unit, v)?.to_string_lossy().into_owned(),
        )),
        None => Ok(None),
    }
}

/// The layout of the structure, union or enumeration at `at`.
fn layout_of(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    at: UnitOffset,
    depth: u32,
) -> gimli::Result<Option<Layout>> {
    let mut tree = unit.entries_tree(Some(at))?;
    let root = tree.root()?;
    let die = root.entry().clone();
    match die.tag() {
        gimli::DW_TAG_enumeration_type => {
            let mut values = Vec::new();
            let mut children = root.children();
            while let Some(child) = children.next()? {
                let e = child.entry();
                if e.tag() != gimli::DW_TAG_enumerator {
                    continue;
                }
                let name = name_of(dwarf, unit, e)?.unwrap_or_default();
                let value = match e.attr_value(gimli::DW_AT_const_value)? {
                    Some(AttributeValue::Sdata(v)) => v,
                    Some(AttributeValue::Udata(v)) => v as i64,
                    Some(AttributeValue::Data1(v)) => i64::from(v),
                    Some(AttributeValue::Data2(v)) => i64::from(v),
                    Some(AttributeValue::Data4(v)) => i64::from(v),
                    Some(AttributeValue::Data8(v)) => v as i64,
                    _ => 0,
                };
                values.push((name, value));
            }
            Ok(Some(Layout::Enum(values)))
        }
        gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type | gimli::DW_TAG_union_type => {
            let size = die
                .attr_value(gimli::DW_AT_byte_size)?
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            let mut members = Vec::new();
            let mut children = root.children();
            while let Some(child) = children.next()? {
                let m = child.entry();
                if m.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let name = name_of(dwarf, unit, m)?.unwrap_or_default();
                let bit_offset = match m.attr_value(gimli::DW_AT_data_bit_offset)? {
                    Some(v) => v.udata_value().unwrap_or(0),
                    None => {
                        m.attr_value(gimli::DW_AT_data_member_location)?
                            .and_then(|v| v.udata_value())
                            .unwrap_or(0)
                            * 8
                    }
                };
                let bits = m
                    .attr_value(gimli::DW_AT_bit_size)?
                    .and_then(|v| v.udata_value());
                let (shape, written) = match m.attr_value(gimli::DW_AT_type)? {
                    Some(AttributeValue::UnitRef(t)) => (
                        shape_of(dwarf, unit, t, depth + 1)?,
                        written_name(dwarf, unit, t)?,
                    ),
                    _ => ("?".into(), "?".into()),
                };
                members.push(Member {
                    name,
                    offset: bit_offset,
                    bits,
                    shape,
                    written,
                });
            }
            Ok(Some(Layout::Record { size, members }))
        }
        _ => Ok(None),
    }
}

/// A member's type as far as the bytes of an instance go (see
/// [`Member::shape`]).
fn shape_of(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    at: UnitOffset,
    depth: u32,
) -> gimli::Result<String> {
    if depth > 16 {
        return Ok("…".into());
    }
    let die = unit.entry(at)?;
    let inner = |depth: u32| -> gimli::Result<String> {
        match die.attr_value(gimli::DW_AT_type)? {
            Some(AttributeValue::UnitRef(t)) => shape_of(dwarf, unit, t, depth),
            _ => Ok("void".into()),
        }
    };
    let size = die
        .attr_value(gimli::DW_AT_byte_size)?
        .and_then(|v| v.udata_value());
    Ok(match die.tag() {
        gimli::DW_TAG_base_type => {
            let kind = match die.attr_value(gimli::DW_AT_encoding)? {
                Some(AttributeValue::Encoding(e)) if e == gimli::DW_ATE_float => "float",
                Some(AttributeValue::Encoding(e)) if e == gimli::DW_ATE_boolean => "bool",
                _ => "int",
            };
            format!("{kind}{}", size.unwrap_or(0))
        }
        // Qualifiers and typedefs change no byte.
        gimli::DW_TAG_typedef
        | gimli::DW_TAG_const_type
        | gimli::DW_TAG_volatile_type
        | gimli::DW_TAG_restrict_type
        | gimli::DW_TAG_atomic_type => inner(depth + 1)?,
        gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => "pointer".into(),
        gimli::DW_TAG_structure_type
        | gimli::DW_TAG_class_type
        | gimli::DW_TAG_union_type
        | gimli::DW_TAG_enumeration_type => {
            let kw = match die.tag() {
                gimli::DW_TAG_union_type => "union",
                gimli::DW_TAG_enumeration_type => "enum",
                _ => "struct",
            };
            match name_of(dwarf, unit, &die)? {
                Some(n) if die.tag() == gimli::DW_TAG_enumeration_type => {
                    format!("enum {n}/{}", size.unwrap_or(0))
                }
                Some(n) => format!("{kw} {n}"),
                None => match layout_of(dwarf, unit, at, depth + 1)? {
                    Some(l) => format!("{kw} {l:?}"),
                    None => kw.to_string(),
                },
            }
        }
        gimli::DW_TAG_array_type => {
            let mut dims = String::new();
            let mut tree = unit.entries_tree(Some(at))?;
            let root = tree.root()?;
            let mut children = root.children();
            while let Some(child) = children.next()? {
                let e = child.entry();
                if e.tag() != gimli::DW_TAG_subrange_type {
                    continue;
                }
                let count = match e
                    .attr_value(gimli::DW_AT_count)?
                    .and_then(|v| v.udata_value())
                {
                    Some(c) => Some(c),
                    None => e
                        .attr_value(gimli::DW_AT_upper_bound)?
                        .and_then(|v| v.udata_value())
                        .map(|u| u + 1),
                };
                match count {
                    Some(c) => dims.push_str(&format!("[{c}]")),
                    None => dims.push_str("[]"),
                }
            }
            format!("{}{dims}", inner(depth + 1)?)
        }
        gimli::DW_TAG_subroutine_type => "function".into(),
        other => format!("{other}/{}", size.unwrap_or(0)),
    })
}

/// A member's type as its declaration writes it, for messages: the
/// typedef's or the structure's name, `T*` for pointers.
fn written_name(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    at: UnitOffset,
) -> gimli::Result<String> {
    let mut at = at;
    let mut prefix = String::new();
    let mut suffix = String::new();
    for _ in 0..8 {
        let die = unit.entry(at)?;
        let keyword = match die.tag() {
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => "struct ",
            gimli::DW_TAG_union_type => "union ",
            gimli::DW_TAG_enumeration_type => "enum ",
            _ => "",
        };
        if let Some(n) = name_of(dwarf, unit, &die)? {
            return Ok(format!("{prefix}{keyword}{n}{suffix}"));
        }
        match die.tag() {
            gimli::DW_TAG_pointer_type => suffix.insert(0, '*'),
            gimli::DW_TAG_const_type => prefix.push_str("const "),
            gimli::DW_TAG_volatile_type => prefix.push_str("volatile "),
            gimli::DW_TAG_array_type => suffix.push_str("[]"),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                return Ok(format!("{prefix}{keyword}{{…}}{suffix}"))
            }
            _ => {}
        }
        match die.attr_value(gimli::DW_AT_type)? {
            Some(AttributeValue::UnitRef(t)) => at = t,
            _ => return Ok(format!("{prefix}void{suffix}")),
        }
    }
    Ok(format!("{prefix}…{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: u64, members: &[(&str, u64)]) -> Layout {
        Layout::Record {
            size,
            members: members
                .iter()
                .map(|(n, o)| Member {
                    name: n.to_string(),
                    offset: o * 8,
                    bits: None,
                    shape: "int4".into(),
                    written: "int".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn renamed_members_and_retyped_aliases_keep_the_layout() {
        let old = [record(8, &[("a", 0), ("b", 4)])];
        let new = [record(8, &[("a", 0), ("renamed", 4)])];
        assert_eq!(old, new);
    }

    #[test]
    fn a_member_added_in_the_middle_is_described() {
        let old = [record(8, &[("a", 0), ("b", 4)])];
        let new = [record(12, &[("a", 0), ("n", 4), ("b", 8)])];
        let d = describe(&old, &new).unwrap();
        assert_eq!(d, "size 8 -> 12 bytes; new member n at 4; b moved 4 -> 8");
    }

    #[test]
    fn enumerators_added_at_the_end_are_harmless_renumbered_ones_are_not() {
        let e = |v: &[(&str, i64)]| {
            [Layout::Enum(
                v.iter().map(|(n, x)| (n.to_string(), *x)).collect(),
            )]
        };
        assert_eq!(
            describe(
                &e(&[("A", 0), ("B", 1)]),
                &e(&[("A", 0), ("B", 1), ("C", 2)])
            ),
            None
        );
        let d = describe(
            &e(&[("A", 0), ("B", 1)]),
            &e(&[("A", 0), ("N", 1), ("B", 2)]),
        )
        .unwrap();
        assert_eq!(d, "enumerators renumbered: B 1 -> 2");
    }
}
