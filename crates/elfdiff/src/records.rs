//! The livepatch relocation records a patch object carries
//! (`.noreboot.klp`) until its module is linked: both halves of one
//! format, the emit pass writing them and klp's post-link conversion into
//! `.klp.rela.*` sections reading them. Linkers would mangle the kernel's
//! own livepatch sections, so the records travel as plain data.
//!
//! A record is [`SIZE`] bytes, little-endian:
//!
//! | offset | field | how it is stored |
//! |---:|---|---|
//! | 0 | place | 8 bytes, an `R_X86_64_64` relocation against the section to patch (it follows the link) |
//! | 8 | relocation type | u32 |
//! | 12 | `sympos` | u32 |
//! | 16 | addend | i64 |
//! | 24 | object the relocation is applied with (`.klp.rela.<object>.*`) | u32, an `R_X86_64_32` relocation into [`STRINGS`] |
//! | 28 | object that defines the symbol (`.klp.sym.<object>.*`) | u32, the same |
//! | 32 | symbol name | u32, the same |
//! | 36 | zero | u32 |
//!
//! The two objects differ only for a module's reference to an export of
//! another module it depends on: applied when the patched module loads,
//! against the other module's symbol, already loaded by then.

/// Name of the record section.
pub const SECTION: &str = ".noreboot.klp";
/// Name of its string table.
pub const STRINGS: &str = ".noreboot.klp.str";
/// Size of one record.
pub const SIZE: u64 = 40;
/// Offset of the place field.
pub const PLACE: u64 = 0;
/// Offsets of the string fields: applied-with object, symbol's object,
/// symbol name.
pub const NAME_FIELDS: [u64; 3] = [24, 28, 32];
/// Relocations one record carries: the place and its string fields.
pub const RELOCATIONS_PER_RECORD: usize = 1 + NAME_FIELDS.len();

/// The fields a record holds as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// The original relocation's type.
    pub r_type: u32,
    /// Position among the symbols of that name (0 = unique).
    pub sympos: u32,
    /// The original relocation's addend.
    pub addend: i64,
}

/// One record's bytes: the numbers in place, the place and string fields
/// zero (their relocations fill them).
pub fn encode(f: Fixed) -> [u8; SIZE as usize] {
    let mut out = [0u8; SIZE as usize];
    out[8..12].copy_from_slice(&f.r_type.to_le_bytes());
    out[12..16].copy_from_slice(&f.sympos.to_le_bytes());
    out[16..24].copy_from_slice(&f.addend.to_le_bytes());
    out
}

/// The numbers of one record (`rec` is [`SIZE`] bytes).
pub fn decode(rec: &[u8]) -> Option<Fixed> {
    if rec.len() != SIZE as usize {
        return None;
    }
    Some(Fixed {
        r_type: u32::from_le_bytes(rec[8..12].try_into().ok()?),
        sympos: u32::from_le_bytes(rec[12..16].try_into().ok()?),
        addend: i64::from_le_bytes(rec[16..24].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_leave_the_relocated_fields_zero() {
        let f = Fixed {
            r_type: 4,
            sympos: 3,
            addend: -4,
        };
        let b = encode(f);
        assert_eq!(decode(&b), Some(f));
        assert!(b[..8].iter().all(|&x| x == 0));
        assert!(b[24..].iter().all(|&x| x == 0));
        assert_eq!(decode(&b[..32]), None);
    }
}
