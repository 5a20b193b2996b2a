//! Reading and checking the definition: TOML → a validated [`Definition`].
//!
//! Serde reads the file into `Raw*` structs that keep source spans; [`Definition::parse`]
//! then checks what TOML itself cannot (numbers unique and present, types known, counts
//! naming real arguments) and reports the first problem as `file:line: message`.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use toml::Spanned;

/// A definition problem, already carrying `file:line:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

// ---- what serde reads ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    hypercall: BTreeMap<String, RawHypercall>,
    #[serde(default, rename = "struct")]
    structs: BTreeMap<String, RawStruct>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHypercall {
    nr: Option<Spanned<u32>>,
    status: Spanned<String>,
    #[serde(default)]
    flags: Vec<Spanned<String>>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    args: Vec<Spanned<RawArg>>,
    #[serde(default)]
    subops: Vec<Spanned<RawSubops>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    ptr: Option<Spanned<String>>,
    count: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubops {
    on: String,
    prefix: String,
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    ops: BTreeMap<String, Spanned<RawOp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    nr: Option<u64>,
    arg: Option<Spanned<String>>,
    status: Option<Spanned<String>>,
    #[serde(default)]
    flags: Vec<Spanned<String>>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStruct {
    c: String,
    rust: Option<String>,
    size: Spanned<u64>,
    fields: BTreeMap<String, Spanned<u64>>,
}

// ---- the checked model -----------------------------------------------------------------

/// A scalar argument or element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    U8,
    U16,
    U32,
    U64,
    I32,
    I64,
}

impl Scalar {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "u8" => Self::U8,
            "u16" => Self::U16,
            "u32" => Self::U32,
            "u64" => Self::U64,
            "i32" => Self::I32,
            "i64" => Self::I64,
            _ => return None,
        })
    }

    /// The Rust (and TOML) name.
    pub fn rust(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::U16 => "u16",
            Self::U32 => "u32",
            Self::U64 => "u64",
            Self::I32 => "i32",
            Self::I64 => "i64",
        }
    }

    fn is_unsigned(self) -> bool {
        matches!(self, Self::U8 | Self::U16 | Self::U32 | Self::U64)
    }
}

/// What a guest pointer points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pointee {
    /// Depends on the sub-operation.
    Void,
    Scalar(Scalar),
    /// Name of a `[struct.<Name>]` entry.
    Struct(String),
}

/// Which way the data behind a guest pointer flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
    InOut,
}

impl Dir {
    /// As written in the definition.
    pub fn name(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
            Self::InOut => "inout",
        }
    }
}

/// How one register argument is to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgKind {
    Scalar(Scalar),
    /// A pointer to one `Pointee`.
    Ptr {
        to: Pointee,
        dir: Dir,
    },
    /// A pointer to `count` elements; `count` is the index of the count argument.
    Array {
        of: Pointee,
        dir: Dir,
        count: usize,
    },
}

/// One register argument (index = position in rdi, rsi, rdx, r10, r8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub kind: ArgKind,
}

/// Implemented or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Implemented,
    Unimplemented,
}

/// Hypercall / sub-op flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flag {
    Noreturn,
    Preemptible,
    Privileged,
}

impl Flag {
    /// As written in the definition.
    pub fn name(self) -> &'static str {
        match self {
            Self::Noreturn => "noreturn",
            Self::Preemptible => "preemptible",
            Self::Privileged => "privileged",
        }
    }
}

/// One numbered sub-operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub name: String,
    pub nr: u64,
    /// A `[struct]` name.
    pub arg: Option<String>,
    /// `None`: not stated (treated as unimplemented).
    pub status: Option<Status>,
    pub flags: Vec<Flag>,
    /// Semantics worth a line in the docs (privilege, errors, deviations from Xen).
    pub note: Option<String>,
}

/// A group of sub-operation constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subops {
    pub on: String,
    pub prefix: String,
    pub ty: Scalar,
    /// Sorted by number.
    pub ops: Vec<Op>,
}

/// One hypercall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hypercall {
    pub name: String,
    pub nr: u32,
    pub status: Status,
    pub flags: Vec<Flag>,
    pub summary: String,
    pub args: Vec<Arg>,
    pub subops: Vec<Subops>,
}

impl Hypercall {
    /// Index of an argument that is the count of an array argument.
    pub fn is_count(&self, idx: usize) -> bool {
        self.args
            .iter()
            .any(|a| matches!(a.kind, ArgKind::Array { count, .. } if count == idx))
    }
}

/// An ABI struct with its expected layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiStruct {
    pub name: String,
    pub c: String,
    /// Path inside xen-pv-abi, if the struct exists there.
    pub rust: Option<String>,
    pub size: u64,
    /// (field, offset), sorted by offset then name.
    pub fields: Vec<(String, u64)>,
}

/// The whole checked definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Sorted by number.
    pub hypercalls: Vec<Hypercall>,
    /// Sorted by name.
    pub structs: Vec<AbiStruct>,
}

/// Maps byte offsets to 1-based line numbers and formats errors.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, offset: usize, msg: impl fmt::Display) -> Error {
        Error(format!("{}:{}: {msg}", self.file, self.line(offset)))
    }

    /// Offset of the line that opens `[header]` (for problems with no better span).
    fn header(&self, header: &str) -> usize {
        self.text.find(header).unwrap_or(0)
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_status(src: &Source<'_>, s: &Spanned<String>) -> Result<Status, Error> {
    match s.get_ref().as_str() {
        "implemented" => Ok(Status::Implemented),
        "unimplemented" => Ok(Status::Unimplemented),
        other => Err(src.err(
            s.span().start,
            format_args!("unknown status {other:?} (implemented or unimplemented)"),
        )),
    }
}

fn parse_flags(src: &Source<'_>, flags: &[Spanned<String>]) -> Result<Vec<Flag>, Error> {
    let mut out = Vec::new();
    for f in flags {
        out.push(match f.get_ref().as_str() {
            "noreturn" => Flag::Noreturn,
            "preemptible" => Flag::Preemptible,
            "privileged" => Flag::Privileged,
            other => {
                return Err(src.err(
                    f.span().start,
                    format_args!("unknown flag {other:?} (noreturn, preemptible, privileged)"),
                ));
            }
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl Definition {
    /// Parses and checks `text`; `file` names it in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Self, Error> {
        let src = Source { file, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| src.line(s.start));
            Error(format!("{file}:{line}: {}", e.message()))
        })?;

        let structs = check_structs(&src, &raw.structs)?;
        let known: HashMap<&str, &AbiStruct> =
            structs.iter().map(|s| (s.name.as_str(), s)).collect();

        let mut hypercalls = Vec::new();
        // number → (name, line) of the first hypercall that took it.
        let mut taken: BTreeMap<u32, (String, usize)> = BTreeMap::new();
        for (name, h) in &raw.hypercall {
            let header = src.header(&format!("[hypercall.{name}]"));
            if !is_ident(name) {
                return Err(src.err(header, format_args!("{name:?} is not a valid name")));
            }
            let Some(nr) = &h.nr else {
                return Err(src.err(header, format_args!("hypercall {name} has no number")));
            };
            let line = src.line(nr.span().start);
            if let Some((other, other_line)) = taken.get(nr.get_ref()) {
                return Err(src.err(
                    nr.span().start,
                    format_args!(
                        "duplicate hypercall number {} (also {other} at line {other_line})",
                        nr.get_ref()
                    ),
                ));
            }
            taken.insert(*nr.get_ref(), (name.clone(), line));
            let status = parse_status(&src, &h.status)?;
            let args = check_args(&src, name, &h.args, &known, status)?;
            let mut subops = Vec::new();
            for group in &h.subops {
                subops.push(check_subops(&src, group, &args, &known)?);
            }
            hypercalls.push(Hypercall {
                name: name.clone(),
                nr: *nr.get_ref(),
                status,
                flags: parse_flags(&src, &h.flags)?,
                summary: h.summary.clone(),
                args,
                subops,
            });
        }
        hypercalls.sort_by_key(|h| h.nr);
        Ok(Definition {
            hypercalls,
            structs,
        })
    }

    /// The struct called `name`.
    pub fn abi_struct(&self, name: &str) -> Option<&AbiStruct> {
        self.structs.iter().find(|s| s.name == name)
    }
}

fn check_structs(
    src: &Source<'_>,
    raw: &BTreeMap<String, RawStruct>,
) -> Result<Vec<AbiStruct>, Error> {
    let mut out = Vec::new();
    for (name, s) in raw {
        if !is_ident(name) || !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            let at = src.header(&format!("[struct.{name}]"));
            return Err(src.err(at, format_args!("struct name {name:?} must be CamelCase")));
        }
        let size = *s.size.get_ref();
        let mut fields = Vec::new();
        for (field, off) in &s.fields {
            if *off.get_ref() >= size {
                return Err(src.err(
                    off.span().start,
                    format_args!(
                        "field {name}.{field} at offset {} is outside the struct's {size} bytes",
                        off.get_ref()
                    ),
                ));
            }
            fields.push((field.clone(), *off.get_ref()));
        }
        fields.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        out.push(AbiStruct {
            name: name.clone(),
            c: s.c.clone(),
            rust: s.rust.clone(),
            size,
            fields,
        });
    }
    Ok(out)
}

fn check_pointee(
    src: &Source<'_>,
    ty: &Spanned<String>,
    known: &HashMap<&str, &AbiStruct>,
    implemented: bool,
) -> Result<Pointee, Error> {
    let t = ty.get_ref().as_str();
    if t == "void" {
        return Ok(Pointee::Void);
    }
    if let Some(s) = Scalar::parse(t) {
        return Ok(Pointee::Scalar(s));
    }
    match known.get(t) {
        None => Err(src.err(
            ty.span().start,
            format_args!("unknown type {t:?} (a scalar, void, or a [struct.<Name>] entry)"),
        )),
        // The hypervisor's trait needs a real Rust type to hand out.
        Some(s) if implemented && s.rust.is_none() => Err(src.err(
            ty.span().start,
            format_args!(
                "struct {t} is used by an implemented hypercall but has no `rust` path in xen-pv-abi"
            ),
        )),
        Some(_) => Ok(Pointee::Struct(t.to_owned())),
    }
}

fn check_args(
    src: &Source<'_>,
    hypercall: &str,
    raw: &[Spanned<RawArg>],
    known: &HashMap<&str, &AbiStruct>,
    status: Status,
) -> Result<Vec<Arg>, Error> {
    if raw.len() > 5 {
        return Err(src.err(
            raw[5].span().start,
            format_args!("hypercall {hypercall} has more than 5 arguments"),
        ));
    }
    let implemented = status == Status::Implemented;
    let mut args: Vec<Arg> = Vec::new();
    for a in raw {
        let a_ref = a.get_ref();
        let name = a_ref.name.get_ref();
        if !is_ident(name) || args.iter().any(|b| &b.name == name) {
            return Err(src.err(
                a_ref.name.span().start,
                format_args!("bad or repeated argument name {name:?}"),
            ));
        }
        let kind = match &a_ref.ptr {
            None => {
                if let Some(c) = &a_ref.count {
                    return Err(src.err(
                        c.span().start,
                        "`count` needs `ptr` (only a guest pointer can be an array)",
                    ));
                }
                match Scalar::parse(a_ref.ty.get_ref()) {
                    Some(s) => ArgKind::Scalar(s),
                    None => {
                        return Err(src.err(
                            a_ref.ty.span().start,
                            format_args!(
                                "unknown type {:?} for a register argument (u8, u16, u32, u64, i32, i64; \
                                 structs only behind `ptr`)",
                                a_ref.ty.get_ref()
                            ),
                        ));
                    }
                }
            }
            Some(dir) => {
                let dir_v = match dir.get_ref().as_str() {
                    "in" => Dir::In,
                    "out" => Dir::Out,
                    "inout" => Dir::InOut,
                    other => {
                        return Err(src.err(
                            dir.span().start,
                            format_args!("unknown direction {other:?} (in, out, inout)"),
                        ));
                    }
                };
                let to = check_pointee(src, &a_ref.ty, known, implemented)?;
                match &a_ref.count {
                    None => ArgKind::Ptr { to, dir: dir_v },
                    // Resolved below, once every argument is known.
                    Some(_) => ArgKind::Array {
                        of: to,
                        dir: dir_v,
                        count: usize::MAX,
                    },
                }
            }
        };
        args.push(Arg {
            name: name.clone(),
            kind,
        });
    }
    for (i, a) in raw.iter().enumerate() {
        let Some(count) = &a.get_ref().count else {
            continue;
        };
        let idx = args.iter().position(|b| &b.name == count.get_ref());
        let ok = idx.is_some_and(|j| {
            matches!(args[j].kind, ArgKind::Scalar(s) if s.is_unsigned()) && j != i
        });
        let Some(j) = idx.filter(|_| ok) else {
            return Err(src.err(
                count.span().start,
                format_args!(
                    "count {:?} must name another unsigned scalar argument of {hypercall}",
                    count.get_ref()
                ),
            ));
        };
        if let ArgKind::Array { count, .. } = &mut args[i].kind {
            *count = j;
        }
    }
    Ok(args)
}

fn check_subops(
    src: &Source<'_>,
    raw: &Spanned<RawSubops>,
    args: &[Arg],
    known: &HashMap<&str, &AbiStruct>,
) -> Result<Subops, Error> {
    let g = raw.get_ref();
    let at = raw.span().start;
    if !is_ident(&g.prefix) || !g.prefix.ends_with('_') {
        return Err(src.err(
            at,
            format_args!("prefix {:?} must look like FOO_", g.prefix),
        ));
    }
    let ty = match &g.ty {
        Some(t) => Scalar::parse(t.get_ref()).ok_or_else(|| {
            src.err(
                t.span().start,
                format_args!("unknown type {:?}", t.get_ref()),
            )
        })?,
        None => match args.iter().find(|a| a.name == g.on).map(|a| &a.kind) {
            Some(ArgKind::Scalar(s)) => *s,
            _ => Scalar::U32,
        },
    };
    let mut ops = Vec::new();
    for (name, op) in &g.ops {
        let o = op.get_ref();
        let line_at = op.span().start;
        if !is_ident(name) {
            return Err(src.err(line_at, format_args!("bad sub-op name {name:?}")));
        }
        let Some(nr) = o.nr else {
            return Err(src.err(
                line_at,
                format_args!("sub-op {}{} has no number", g.prefix, name.to_uppercase()),
            ));
        };
        if let Some(other) = ops.iter().find(|p: &&Op| p.nr == nr) {
            return Err(src.err(
                line_at,
                format_args!(
                    "duplicate sub-op number {nr}: {} and {} of {}",
                    other.name, name, g.prefix
                ),
            ));
        }
        let arg = match &o.arg {
            None => None,
            Some(t) => match check_pointee(src, t, known, false)? {
                Pointee::Struct(s) => Some(s),
                _ => {
                    return Err(src.err(
                        t.span().start,
                        "a sub-op `arg` names a [struct.<Name>] entry",
                    ));
                }
            },
        };
        let status = o
            .status
            .as_ref()
            .map(|s| parse_status(src, s))
            .transpose()?;
        ops.push(Op {
            name: name.clone(),
            nr,
            arg,
            status,
            flags: parse_flags(src, &o.flags)?,
            note: o.note.clone(),
        });
    }
    ops.sort_by_key(|o| o.nr);
    Ok(Subops {
        on: g.on.clone(),
        prefix: g.prefix.clone(),
        ty,
        ops,
    })
}
