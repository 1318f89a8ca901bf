//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): just
//! enough to find the byte offset of a (possibly nested) struct member.
//!
//! Rust eBPF has no CO-RE relocations, so the disk program reads `struct bio`
//! fields at offsets found here at start-up. aya parses BTF too, but keeps its
//! type lookup private.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF blob too short or truncated at byte {0}")]
    Truncated(usize),
    #[error("bad BTF magic {0:#x}")]
    Magic(u16),
    #[error("unknown BTF kind {kind} for type {id}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("struct {0} not found in BTF")]
    NoStruct(String),
    #[error("member {member} not found in struct {strukt}")]
    NoMember { strukt: String, member: String },
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    /// Offset in bits from the start of the containing struct.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// For modifiers and typedefs: the type they refer to.
    referenced: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types by id (id 0 is `void`) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
    /// Enumerator name -> value (string offsets until `parse` ends).
    enumerators: HashMap<String, i64>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(BtfError::Truncated(at))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(BtfError::Truncated(at))
}

impl Btf {
    /// Parses a little-endian BTF blob (the format of `/sys/kernel/btf/vmlinux`).
    pub fn parse(blob: &[u8]) -> Result<Self, BtfError> {
        let magic = u16_at(blob, 0)?;
        if magic != MAGIC {
            return Err(BtfError::Magic(magic));
        }
        let hdr_len = u32_at(blob, 4)? as usize;
        let type_off = u32_at(blob, 8)? as usize;
        let type_len = u32_at(blob, 12)? as usize;
        let str_off = u32_at(blob, 16)? as usize;
        let str_len = u32_at(blob, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let str_start = hdr_len + str_off;
        let strings =
            blob.get(str_start..str_start + str_len).ok_or(BtfError::Truncated(str_start + str_len))?.to_vec();
        if blob.len() < types_end {
            return Err(BtfError::Truncated(types_end));
        }

        let mut enumerators = Vec::new();
        let void = Type { name: 0, kind: 0, referenced: 0, members: Vec::new() };
        let mut types = vec![void];
        let mut at = types_start;
        while at < types_end {
            let id = types.len() as u32;
            let name = u32_at(blob, at)?;
            let info = u32_at(blob, at + 4)?;
            let size_or_type = u32_at(blob, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            if kind == KIND_ENUM {
                for i in 0..vlen {
                    let value = u32_at(blob, at + 8 * i + 4)? as i32;
                    enumerators.push((u32_at(blob, at + 8 * i)?, i64::from(value)));
                }
            }
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
                | KIND_FLOAT | KIND_TYPE_TAG => {}
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(blob, at + 8)?;
                        members.push(Member {
                            name: u32_at(blob, at)?,
                            type_id: u32_at(blob, at + 4)?,
                            // With kind_flag the high 8 bits hold a bitfield size.
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
                _ => return Err(BtfError::UnknownKind { id, kind }),
            }
            types.push(Type { name, kind, referenced: size_or_type, members });
        }

        let mut btf = Self { types, strings, structs_by_name: HashMap::new(), enumerators: HashMap::new() };
        for (name, value) in enumerators {
            let name = btf.string(name).to_owned();
            btf.enumerators.entry(name).or_insert(value);
        }
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.string(t.name).to_owned();
                // Keep the first complete definition of a name.
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and const/volatile/restrict/type-tag modifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) =>
                {
                    id = t.referenced
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `member` inside the struct or union `id`, searching
    /// anonymous struct/union members too.
    fn member_bits(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name != 0 && self.string(m.name) == member {
                return Some((m.bit_offset, m.type_id));
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            let inner = self.resolve(m.type_id);
            if matches!(self.types.get(inner as usize), Some(t) if t.kind == KIND_STRUCT || t.kind == KIND_UNION)
                && let Some((bits, ty)) = self.member_bits(inner, member)
            {
                return Some((m.bit_offset + bits, ty));
            }
        }
        None
    }

    /// Byte offset of a member path such as `["bi_iter", "bi_size"]` in
    /// struct `strukt`.
    /// The value of an enumerator of some (32-bit) enum, by name.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.enumerators.get(name).copied()
    }

    pub fn offset_of(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut id = *self.structs_by_name.get(strukt).ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut bits = 0;
        for member in path {
            let (b, ty) = self
                .member_bits(id, member)
                .ok_or_else(|| BtfError::NoMember { strukt: strukt.to_owned(), member: (*member).to_owned() })?;
            bits += b;
            id = self.resolve(ty);
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, extra words) tuples.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self { types: Vec::new(), strings: vec![0] }
        }
        fn s(&mut self, name: &str) -> u32 {
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn t(&mut self, name: u32, kind: u32, vlen: u32, kind_flag: bool, size: u32, extra: &[u32]) {
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for w in [name, info, size].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn build(self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for w in [24u32, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// A `struct bio` shaped like the kernel's: `bi_opf` at 16, `bi_iter` at
    /// 32 whose `bi_size` is at +8, plus a typedef, a const and an anonymous
    /// union holding a field.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let (int, u32n) = (b.s("int"), b.s("u32"));
        let (bvec, size, sector) = (b.s("bvec_iter"), b.s("bi_size"), b.s("bi_sector"));
        let (bio, opf, iter, anon_field) = (b.s("bio"), b.s("bi_opf"), b.s("bi_iter"), b.s("bi_private"));
        b.t(int, KIND_INT, 0, false, 4, &[32]); // 1
        b.t(u32n, KIND_TYPEDEF, 0, false, 1, &[]); // 2: typedef u32 -> int
        b.t(0, KIND_CONST, 0, false, 2, &[]); // 3: const u32
        b.t(bvec, KIND_STRUCT, 2, false, 16, &[sector, 1, 0, size, 3, 64]); // 4
        b.t(0, KIND_UNION, 1, false, 8, &[anon_field, 1, 0]); // 5: anonymous union
        b.t(0, KIND_PTR, 0, false, 6, &[]); // 6: self-referencing pointer, harmless
        b.t(bio, KIND_STRUCT, 3, true, 64, &[opf, 2, 128, iter, 4, 256, 0, 5, 384]); // 7
        let (ids, cpu_id, memory_id) = (b.s("cgroup_subsys_id"), b.s("cpu_cgrp_id"), b.s("memory_cgrp_id"));
        b.t(ids, KIND_ENUM, 2, false, 4, &[cpu_id, 0, memory_id, 4]); // 8
        b.build()
    }

    #[test]
    fn finds_direct_nested_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("bio", &["bi_opf"]).unwrap(), 16);
        assert_eq!(btf.offset_of("bio", &["bi_iter", "bi_size"]).unwrap(), 40);
        assert_eq!(btf.offset_of("bio", &["bi_private"]).unwrap(), 48);
    }

    #[test]
    fn finds_enumerators() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.enum_value("memory_cgrp_id"), Some(4));
        assert_eq!(btf.enum_value("cpu_cgrp_id"), Some(0));
        assert_eq!(btf.enum_value("io_cgrp_id"), None);
    }

    #[test]
    fn missing_things_are_typed_errors() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("nope", &["x"]), Err(BtfError::NoStruct("nope".into())));
        assert!(matches!(btf.offset_of("bio", &["bi_nope"]), Err(BtfError::NoMember { .. })));
        let mut bad = sample();
        bad[0] = 0;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::Magic(_))));
        assert!(matches!(Btf::parse(&sample()[..30]), Err(BtfError::Truncated(_))));
    }

    #[test]
    fn parses_this_kernels_bio_when_present() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return; // no BTF on this machine: nothing to check
        };
        let btf = Btf::parse(&blob).unwrap();
        let opf = btf.offset_of("bio", &["bi_opf"]).unwrap();
        let size = btf.offset_of("bio", &["bi_iter", "bi_size"]).unwrap();
        assert!(opf < size && size < 256, "opf {opf} size {size}");
        let memcg = super::super::memiter::offsets(&btf).unwrap();
        assert_eq!(memcg.valid, 1);
        assert!(memcg.usage > 0 && memcg.kn > 0, "{memcg:?}");
    }
}
