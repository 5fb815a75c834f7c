//! The one fact about x86-64 instructions the differ needs: where a
//! PC-relative relocated field's instruction ends. A reference to a static
//! through its section symbol counts from that end, so `movb $1, x(%rip)`
//! has addend `x - 5` and `movzbl x(%rip)` `x - 4`; with 1-byte neighbours
//! (one-shot flags in `.data..once`) only the instruction tells which byte
//! is meant. Decoding is done backwards from the field and answers only
//! when the bytes allow a single reading.

/// Bytes between the end of the 4-byte PC-relative field at `field` in
/// `code` and the end of its instruction: 0 for branches and most memory
/// operands, 1 or 4 (2 with an operand-size prefix) when an immediate
/// follows. `None` when the bytes before the field do not show the form
/// for certain (VEX/EVEX encodings, a possible but unproven `0x66`
/// prefix): callers then fall back to trying each distance.
pub fn rip_field_tail(code: &[u8], field: usize) -> Option<u8> {
    let at = |back: usize| field.checked_sub(back).and_then(|i| code.get(i)).copied();
    let modrm = at(1)?;
    if modrm & 0xc7 != 0x05 {
        // No RIP-relative ModRM before the field: `call`/`jmp rel32` (E8,
        // E9) and `jcc rel32` (0F 80..8F) end with their field.
        return match (at(2), modrm) {
            (_, 0xe8 | 0xe9) => Some(0),
            (Some(0x0f), 0x80..=0x8f) => Some(0),
            _ => None,
        };
    }
    let reg = (modrm >> 3) & 7;
    let op = at(2)?;
    // The byte before a one-byte opcode could be a REX prefix, a legacy
    // prefix, or the end of the previous instruction; VEX and EVEX
    // prefixes put their map and operands there, which this table does
    // not know: C5 (two-byte VEX) three bytes before the field, C4 or 8F
    // (three-byte VEX, XOP) four, 62 (EVEX) five.
    if at(3) == Some(0xc5) || matches!(at(4), Some(0xc4 | 0x8f)) || at(5) == Some(0x62) {
        return None;
    }
    let one_byte = one_byte_tail(op, reg);
    let two_byte = (at(3) == Some(0x0f)).then(|| two_byte_tail(op));
    let tail = match (one_byte, two_byte) {
        (t, None) => t,
        (t, Some(u)) if t == u => t,
        // `0F 8x` would be a jcc, whose field starts right after it.
        (t, Some(_)) if (0x80..=0x8f).contains(&op) => t,
        // Alone, these opcodes take no ModRM byte (`mov $imm32, %edx`,
        // `movsb`, `lodsb`, `jcc rel8`, `ret $imm16`): only `0F op` fits.
        (_, Some(u)) if matches!(op, 0xba | 0xa4 | 0xac | 0x70..=0x73 | 0xc2) => u,
        _ => return None,
    };
    if tail == 4 {
        // imm16 under an operand-size prefix, unless REX.W widens it.
        let rex = at(3).filter(|b| (0x40..=0x4f).contains(b));
        let prefix = if rex.is_some() { at(4) } else { at(3) };
        if rex.is_some_and(|r| r & 0x08 != 0) {
            return Some(4);
        }
        if prefix == Some(0x66) {
            return None;
        }
    }
    Some(tail)
}

/// Immediate bytes after the memory operand of one-byte opcode `op`
/// (`reg`: the ModRM reg field, which selects within groups).
fn one_byte_tail(op: u8, reg: u8) -> u8 {
    match op {
        0x80 | 0x82 | 0x83 | 0xc6 | 0x6b | 0xc0 | 0xc1 => 1,
        0x81 | 0xc7 | 0x69 => 4,
        0xf6 if reg < 2 => 1,
        0xf7 if reg < 2 => 4,
        _ => 0,
    }
}

/// Immediate bytes after the memory operand of two-byte opcode `0F op`.
fn two_byte_tail(op: u8) -> u8 {
    match op {
        0xba | 0xa4 | 0xac | 0x70..=0x73 | 0xc2 | 0xc4 | 0xc5 | 0xc6 => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `code` with a zero 4-byte field and `after` appended; the field's
    /// offset.
    fn at(code: &[u8], after: &[u8]) -> (Vec<u8>, usize) {
        let mut v = code.to_vec();
        let f = v.len();
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(after);
        (v, f)
    }

    #[test]
    fn tails_of_the_forms_gcc_emits_for_statics() {
        // cmpb $0x0, x(%rip); movb $0x1, x(%rip)
        let (c, f) = at(&[0x80, 0x3d], &[0]);
        assert_eq!(rip_field_tail(&c, f), Some(1));
        let (c, f) = at(&[0xc6, 0x05], &[1]);
        assert_eq!(rip_field_tail(&c, f), Some(1));
        // movzbl x(%rip), %eax
        let (c, f) = at(&[0x0f, 0xb6, 0x05], &[]);
        assert_eq!(rip_field_tail(&c, f), Some(0));
        // movl $7, x(%rip); with REX.W (movq $7, x(%rip))
        let (c, f) = at(&[0xc7, 0x05], &[7, 0, 0, 0]);
        assert_eq!(rip_field_tail(&c, f), Some(4));
        let (c, f) = at(&[0x48, 0xc7, 0x05], &[7, 0, 0, 0]);
        assert_eq!(rip_field_tail(&c, f), Some(4));
        // movw $7, x(%rip): 66 C7 05 — not proven a prefix, no answer.
        let (c, f) = at(&[0x66, 0xc7, 0x05], &[7, 0]);
        assert_eq!(rip_field_tail(&c, f), None);
        // mov x(%rip), %rax; call rel32; jne rel32
        let (c, f) = at(&[0x48, 0x8b, 0x05], &[]);
        assert_eq!(rip_field_tail(&c, f), Some(0));
        let (c, f) = at(&[0xe8], &[]);
        assert_eq!(rip_field_tail(&c, f), Some(0));
        let (c, f) = at(&[0x0f, 0x85], &[]);
        assert_eq!(rip_field_tail(&c, f), Some(0));
        // testb $0x4, x(%rip); btl $3, x(%rip)
        let (c, f) = at(&[0xf6, 0x05], &[4]);
        assert_eq!(rip_field_tail(&c, f), Some(1));
        let (c, f) = at(&[0x0f, 0xba, 0x25], &[3]);
        assert_eq!(rip_field_tail(&c, f), Some(1));
        // Nothing before the field.
        assert_eq!(rip_field_tail(&[0; 4], 0), None);
    }
}
