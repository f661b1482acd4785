//! Key derivation: `[{namespace}:]{prefix}:{md5_hex}` over the canonical JSON of the key
//! material; `[{namespace}:]{prefix}:{{group}}:{md5_hex}` for a function in an eviction
//! group, whose generation lives at `[{namespace}:]redcache:group:{{group}}`. The braces
//! are a Redis Cluster hash tag: a group's entries and its generation share one slot, so
//! one `MGET` reads both and one script checks both.
//!
//! The material is canonical JSON, written by the serializer of `canonical.rs`.

mod canonical;

use self::canonical::write_str;
use md5::{Digest, Md5};
use serde::Serialize;
use std::fmt;

/// A value that can be part of a cache key: anything `Serialize`. Named so a mistake reads
/// as one about the key, pointing at the argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `serde::Serialize`",
    label = "this is part of the cache key",
    note = "leave the argument out of the key with `skip(name)`, or derive `serde::Serialize` for its type"
)]
pub trait KeyArg {
    /// Appends the canonical JSON of `self` to `out`.
    #[doc(hidden)]
    fn write_key(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
}

impl<T: Serialize + ?Sized> KeyArg for T {
    fn write_key(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        canonical::write(self, out)
    }
}

/// Whether the type name `name` stands for callables it does not tell apart (as a whole or
/// as a type argument), so that every one of them has that name, whatever it does:
/// - a closure or an async block (`f::{{closure}}`), not a type declared inside one
///   (`f::{{closure}}::Row`);
/// - a function pointer (`fn(u64) -> String`, `unsafe extern "C" fn()`);
/// - a callable trait object (`dyn Fn(u64) -> String`, `dyn FnMut()`).
///
/// A function's own type (`app::title`) names that function.
pub(crate) fn names_an_unnamed_callable(name: &str) -> bool {
    let bytes = name.as_bytes();
    // At the start of a type: not inside a path segment (`app::my_fn(`, never written).
    let starts_type = |at: usize| {
        at == 0
            || matches!(
                bytes[at - 1],
                b'<' | b' ' | b'&' | b'(' | b'[' | b',' | b'*'
            )
    };
    name.match_indices("}}")
        .any(|(at, _)| !name[at + 2..].starts_with("::"))
        || name.match_indices("fn(").any(|(at, _)| starts_type(at))
        || [
            "dyn core::ops::function::",
            "dyn core::ops::async_function::",
        ]
        .iter()
        .any(|dyn_fn| name.match_indices(dyn_fn).any(|(at, _)| starts_type(at)))
}

/// The key material of one call, collected by generated code (and by the helpers that must
/// derive the same key). Not public API: reached through `redcache::__private`.
#[derive(Debug)]
pub struct KeyArgs {
    /// `[` then the canonical JSON of the items, comma separated (no closing bracket yet).
    items: Vec<u8>,
    count: usize,
    /// The material is one `key = expr` value, not an argument list.
    expr: bool,
    error: Option<serde_json::Error>,
    /// The names of the generic types and the enclosing item, each as a zero byte, its
    /// kind and its length-prefixed bytes: set before the JSON, apart from it, so no
    /// argument can read like one (canonical JSON never holds a zero byte).
    names: Vec<u8>,
}

impl Default for KeyArgs {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyArgs {
    /// An empty argument list (hashes `[]` if nothing is added).
    pub fn new() -> Self {
        let mut items = Vec::with_capacity(32);
        items.push(b'[');
        KeyArgs {
            items,
            count: 0,
            expr: false,
            error: None,
            names: Vec::new(),
        }
    }

    /// The material of `key = expr`: the value itself, not wrapped in an array.
    pub fn expr<T: KeyArg + ?Sized>(value: &T) -> Self {
        let mut args = Self::new().arg(value);
        args.expr = true;
        args
    }

    /// Appends one argument.
    pub fn arg<T: KeyArg + ?Sized>(mut self, value: &T) -> Self {
        if self.error.is_none() {
            if self.count > 0 {
                self.items.push(b',');
            }
            match value.write_key(&mut self.items) {
                Ok(()) => self.count += 1,
                Err(err) => self.error = Some(err),
            }
        }
        self
    }

    /// Adds a type's name (a generic parameter's, or `type_key`'s), so instances of a
    /// generic function never share entries. rustc names every closure and async block of
    /// a function alike (`handler::{{closure}}`), and every function pointer or callable
    /// trait object of one signature alike (`fn(u64) -> String`), so two instances for two
    /// such callables would share them: such a name is no key (`Error::Encode`: the call
    /// is not cached), unless `type_key` names the instance (see
    /// [`names_an_unnamed_callable`]).
    pub fn ty(self, name: &str) -> Self {
        if names_an_unnamed_callable(name) {
            return self.unnamed(name);
        }
        self.named(b't', name)
    }

    /// `name`, of a type or an impl, names a callable with no name of its own (see
    /// [`ty`](Self::ty)): no key material.
    pub(crate) fn unnamed(mut self, name: &str) -> Self {
        if self.error.is_none() {
            self.error = Some(serde::ser::Error::custom(format_args!(
                "`{name}` names a closure, an async block, a function pointer or a `dyn Fn`, \
                 which has no name of its own to key a generic function's entries by; pass \
                 a function item instead, or pin a name with `type_key` if only one is ever \
                 given"
            )));
        }
        self
    }

    /// Appends the name `type_key = ..` gives, as a trailing string of the arguments: the
    /// form such keys have always had, which they keep (that is what the option is for).
    pub fn pinned(mut self, name: &str) -> Self {
        if self.count > 0 {
            self.items.push(b',');
        }
        write_str(name, &mut self.items);
        self.count += 1;
        self
    }

    /// Adds the item a function is defined in (an impl's self type and trait), so methods
    /// of different impls, and a method and a free function, never share entries.
    pub fn item(self, name: &str) -> Self {
        self.named(b'i', name)
    }

    fn named(mut self, kind: u8, name: &str) -> Self {
        self.names.push(0);
        self.names.push(kind);
        self.names
            .extend_from_slice(&(name.len() as u64).to_le_bytes());
        self.names.extend_from_slice(name.as_bytes());
        self
    }

    /// The canonical JSON that is hashed; `Error::Encode` when the material has none (a map
    /// key that is not a string, a number, a `bool` or a unit variant; a NaN or infinite
    /// float; an object with two entries of one name).
    pub fn material(self) -> Result<Vec<u8>, crate::Error> {
        if let Some(source) = self.error {
            return Err(crate::Error::Encode { source });
        }
        let mut items = self.items;
        if self.expr && self.count == 1 {
            items.remove(0);
        } else {
            items.push(b']');
        }
        if self.names.is_empty() {
            return Ok(items);
        }
        let mut material = self.names;
        material.push(0);
        material.extend_from_slice(&items);
        Ok(material)
    }

    /// The full key for this material.
    pub(crate) fn key(
        self,
        namespace: Option<&str>,
        prefix: &str,
        group: Option<&str>,
    ) -> Result<String, crate::Error> {
        Ok(derive_key(namespace, prefix, group, &self.material()?))
    }
}

/// Whether `a` and `b` have one key material: the same canonical JSON, `Some(None)` told
/// from `None`. False if either has none (a NaN, a map with non-string keys).
pub(crate) fn same_material<A, B>(a: &A, b: &B) -> bool
where
    A: Serialize + ?Sized,
    B: Serialize + ?Sized,
{
    let (mut first, mut second) = (Vec::new(), Vec::new());
    canonical::write(a, &mut first).is_ok()
        && canonical::write(b, &mut second).is_ok()
        && first == second
}

/// The md5 of `bytes` in lowercase hex.
#[cfg(feature = "http")]
pub(crate) fn md5_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(32);
    push_md5_hex(&mut out, bytes);
    out
}

/// How a fault log names a tag (or anything else built from a call's arguments): its kind
/// and the md5 of it, never the material itself (an id, an email), as keys do.
pub(crate) fn shown(kind: &str, material: &str) -> String {
    let mut shown = String::with_capacity(kind.len() + 33);
    shown.push_str(kind);
    shown.push(':');
    push_md5_hex(&mut shown, material.as_bytes());
    shown
}

/// Appends the md5 of `bytes`, in lowercase hex, to `out`.
pub(crate) fn push_md5_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0; 32];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(Md5::digest(bytes)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    // Hex digits are ASCII.
    out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
}

/// `[{namespace}:]{prefix}:[{{group}}:]{md5_hex}` where `md5_hex` is the full md5 of
/// `material`.
pub(crate) fn derive_key(
    namespace: Option<&str>,
    prefix: &str,
    group: Option<&str>,
    material: &[u8],
) -> String {
    let ns_len = namespace.map_or(0, |ns| ns.len() + 1);
    let group_len = group.map_or(0, |g| g.len() + 3);
    let mut key = String::with_capacity(ns_len + prefix.len() + group_len + 33);
    if let Some(ns) = namespace {
        key.push_str(ns);
        key.push(':');
    }
    key.push_str(prefix);
    key.push(':');
    if let Some(group) = group {
        key.push('{');
        key.push_str(group);
        key.push_str("}:");
    }
    push_md5_hex(&mut key, material);
    key
}

/// `[{namespace}:]` followed by `parts`: how every key a cache writes is named.
pub(crate) fn namespaced(namespace: Option<&str>, parts: &[&str]) -> String {
    let len = namespace.map_or(0, |ns| ns.len() + 1) + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut key = String::with_capacity(len);
    if let Some(ns) = namespace {
        key.push_str(ns);
        key.push(':');
    }
    for part in parts {
        key.push_str(part);
    }
    key
}

/// Why `group` cannot name a group: empty, or with control characters or braces (it
/// becomes its keys' `{group}` hash tag). (`#[cached(group = ..)]` refuses whitespace too;
/// an HTTP layer's group may have it.)
pub(crate) fn group_problem(group: &str) -> Option<&'static str> {
    if group.is_empty() {
        return Some("a group name is not empty");
    }
    group
        .chars()
        .any(|c| c.is_control() || c == '{' || c == '}')
        .then_some(
            "a group name has no control characters or braces (a key shows its group in \
             braces: `{products}` is the group `products`)",
        )
}

/// Where a group's generation lives: `[{namespace}:]redcache:group:{{group}}`.
pub(crate) fn group_key(namespace: Option<&str>, group: &str) -> String {
    namespaced(namespace, &["redcache:group:{", group, "}"])
}

/// Where a tag's generation lives: `[{namespace}:]redcache:tag:{tag}`.
pub(crate) fn tag_key(namespace: Option<&str>, tag: &str) -> String {
    namespaced(namespace, &["redcache:tag:", tag])
}

/// `[{namespace}:]{prefix}:`, the start of every key of a prefix.
pub(crate) fn prefix_start(namespace: Option<&str>, prefix: &str) -> String {
    namespaced(namespace, &[prefix, ":"])
}

/// A fresh, random, non-zero group generation.
pub(crate) fn new_generation() -> u64 {
    rand::random::<u64>().max(1)
}

pub(crate) fn parse_gen(raw: &[u8]) -> Option<u64> {
    // As `str::parse::<u64>` reads it (a `+` allowed), without its UTF-8 check and
    // general path: every grouped hit reads one.
    let digits = raw.strip_prefix(b"+").unwrap_or(raw);
    if digits.is_empty() {
        return None;
    }
    let mut gen: u64 = 0;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        gen = gen.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    (gen != 0).then_some(gen)
}

/// A group generation key that holds something redcache did not write.
#[derive(Debug)]
pub(crate) struct BadGeneration;

impl fmt::Display for BadGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the group generation is not a number; invalidate_group resets it")
    }
}

impl std::error::Error for BadGeneration {}

#[cfg(test)]
mod tests {
    #[test]
    fn generations_are_read_as_decimal_numbers_as_str_parse_reads_them() {
        let cases: [&[u8]; 12] = [
            b"1",
            b"+7",
            b"18446744073709551615",
            b"18446744073709551616",
            b"0",
            b"",
            b"+",
            b"-1",
            b"12a",
            b" 1",
            b"\xff",
            b"0042",
        ];
        for raw in cases {
            let expected = std::str::from_utf8(raw)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .filter(|g| *g != 0);
            assert_eq!(parse_gen(raw), expected, "{raw:?}");
        }
    }

    use super::*;

    #[test]
    fn callables_without_a_name_of_their_own_are_told_from_named_types() {
        for unnamed in [
            "app::main::{{closure}}",
            "app::Table<app::f::{{closure}}>",
            "fn(u64) -> alloc::string::String",
            "unsafe extern \"C\" fn(u64)",
            "fn(&str) -> &str",
            "(u8, fn())",
            "[fn(u8); 2]",
            "alloc::boxed::Box<dyn core::ops::function::Fn(u64) + core::marker::Send>",
            "&dyn core::ops::function::FnMut(u64)",
        ] {
            assert!(names_an_unnamed_callable(unnamed), "{unnamed}");
        }
        for named in [
            "app::title",
            "app::t::{{closure}}::Row",
            "u64",
            "app::Table<app::Row>",
            "alloc::sync::Arc<dyn app::Repo>",
            "app::my_fn<u8>",
            "alloc::boxed::Box<dyn core::ops::deref::Deref<Target = u8>>",
        ] {
            assert!(!names_an_unnamed_callable(named), "{named}");
        }
    }
    use std::collections::{BTreeMap, HashMap};

    fn material(args: KeyArgs) -> String {
        String::from_utf8(args.material().unwrap()).unwrap()
    }

    #[test]
    fn arguments_form_a_compact_array() {
        assert_eq!(material(KeyArgs::new().arg(&42u64).arg("x")), r#"[42,"x"]"#);
        assert_eq!(material(KeyArgs::new()), "[]");
        assert_eq!(
            material(KeyArgs::new().arg(&Some(1.5f64)).arg(&())),
            "[1.5,null]"
        );
    }

    #[test]
    fn golden_key() {
        // md5("[42,\"x\"]"), computed independently with `printf '[42,"x"]' | md5sum`.
        let key = KeyArgs::new()
            .arg(&42)
            .arg("x")
            .key(None, "user:profile", None)
            .unwrap();
        assert_eq!(key, "user:profile:f2a6f229156f54f3c6a0c4f73ecf014f");
        let key = KeyArgs::new()
            .arg(&42)
            .arg("x")
            .key(Some("app"), "p", None)
            .unwrap();
        assert_eq!(key, "app:p:f2a6f229156f54f3c6a0c4f73ecf014f");
        let key = KeyArgs::new()
            .arg(&42)
            .arg("x")
            .key(Some("app"), "p", Some("products"))
            .unwrap();
        assert_eq!(key, "app:p:{products}:f2a6f229156f54f3c6a0c4f73ecf014f");
        assert_eq!(
            group_key(Some("app"), "products"),
            "app:redcache:group:{products}"
        );
        assert_eq!(group_key(None, "products"), "redcache:group:{products}");
    }

    #[test]
    fn maps_are_sorted_at_every_depth() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..200 {
            a.insert(format!("k{i}"), HashMap::from([("z", i), ("a", i)]));
        }
        for i in (0..200).rev() {
            b.insert(format!("k{i}"), HashMap::from([("a", i), ("z", i)]));
        }
        let ka = material(KeyArgs::new().arg(&a));
        let kb = material(KeyArgs::new().arg(&b));
        assert_eq!(ka, kb);
        let sorted: BTreeMap<String, BTreeMap<&str, i32>> = a
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        let expected = format!("[{}]", serde_json::to_string(&sorted).unwrap());
        assert!(ka == expected, "not sorted: {}", &ka[..60]);
        assert!(
            ka.starts_with(r#"[{"k0":{"a":0,"z":0},"k1":"#),
            "{}",
            &ka[..40]
        );
    }

    #[test]
    fn expr_material_is_the_value_itself() {
        assert_eq!(material(KeyArgs::expr(&42)), "42");
        assert_eq!(material(KeyArgs::expr(&(1, "a"))), r#"[1,"a"]"#);
        let u32_named = "\0t\x03\0\0\0\0\0\0\0u32\0";
        assert_eq!(
            material(KeyArgs::expr(&7).ty("u32")),
            format!("{u32_named}7")
        );
        assert_eq!(
            material(KeyArgs::new().arg(&7).ty("u32")),
            format!("{u32_named}[7]")
        );
    }

    #[test]
    fn names_of_types_and_items_never_read_like_arguments_or_each_other() {
        let materials = [
            KeyArgs::new().arg(&7).arg("app::User"),
            KeyArgs::new().arg(&7).ty("app::User"),
            KeyArgs::new().arg(&7).item("app::User"),
            KeyArgs::new().arg(&7).ty("app::User").item("app::User"),
            KeyArgs::new().arg(&7).ty("app::").ty("User"),
            KeyArgs::new().arg(&7).ty("app::U").item("ser"),
        ]
        .map(|args| args.material().unwrap());
        for (i, a) in materials.iter().enumerate() {
            for b in &materials[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Without names, the material is the arguments' JSON alone (keys of plain free
        // functions are what they were).
        assert_eq!(material(KeyArgs::new().arg(&7)), "[7]");
    }

    #[test]
    fn strings_are_escaped_and_non_ascii_kept() {
        assert_eq!(material(KeyArgs::new().arg("a\"b\n")), r#"["a\"b\n"]"#);
        assert_eq!(material(KeyArgs::new().arg("żółw")), "[\"żółw\"]");
    }

    #[test]
    fn unserializable_material_is_an_error_not_a_panic() {
        let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        let err = KeyArgs::new().arg(&bad).material().unwrap_err();
        assert!(err.to_string().contains("cannot be serialized"), "{err}");
    }

    fn key_error<T: Serialize + ?Sized>(value: &T) -> String {
        match KeyArgs::new().arg(value).material() {
            Ok(material) => panic!("a key: {}", String::from_utf8_lossy(&material)),
            Err(err) => err.to_string(),
        }
    }

    #[derive(Serialize)]
    struct Reading {
        at: u32,
        value: f64,
    }

    #[test]
    fn a_non_finite_float_is_an_error_not_a_shared_key() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN] {
            let errors = [
                key_error(&x),
                key_error(&(x as f32)),
                key_error(&Some(x)),
                key_error(&vec![1.0, x]),
                key_error(&Reading { at: 1, value: x }),
                key_error(&HashMap::from([("x", x)])),
                key_error(&BTreeMap::from([((x as f32).to_string(), x)])),
            ];
            for err in errors {
                assert!(
                    err.contains(
                        "a non-finite float (NaN or infinity) cannot be part of a cache key"
                    ),
                    "{x}: {err}"
                );
            }
            assert!(KeyArgs::expr(&x).material().is_err());
            assert!(KeyArgs::new().arg(&1).arg(&x).ty("f64").material().is_err());
        }
        // As a map key too (serde_json refuses it as well).
        let err = key_error(&HashMap::from([(FloatKey(f64::INFINITY), 1)]));
        assert!(err.contains("non-finite float"), "{err}");
        // Finite extremes still make keys.
        assert_eq!(
            material(
                KeyArgs::new()
                    .arg(&f64::MAX)
                    .arg(&f32::MIN_POSITIVE)
                    .arg(&-0.0)
            ),
            "[1.7976931348623157e+308,1.1754944e-38,-0.0]"
        );
    }

    /// A map key that is a float.
    #[derive(Serialize, PartialEq)]
    struct FloatKey(f64);

    impl Eq for FloatKey {}

    impl std::hash::Hash for FloatKey {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.to_bits().hash(state);
        }
    }

    #[test]
    fn some_of_a_null_is_not_none() {
        let forms = [
            (material(KeyArgs::new().arg(&None::<Option<u8>>)), "[null]"),
            (material(KeyArgs::new().arg(&Some(None::<u8>))), "[[null]]"),
            (material(KeyArgs::new().arg(&Some(Some(5u8)))), "[5]"),
            (material(KeyArgs::new().arg(&None::<()>)), "[null]"),
            (material(KeyArgs::new().arg(&Some(()))), "[[null]]"),
            (material(KeyArgs::expr(&Some(None::<u8>))), "[null]"),
            (material(KeyArgs::expr(&None::<Option<u8>>)), "null"),
        ];
        for (actual, expected) in forms {
            assert_eq!(actual, expected);
        }
        // Every value of a three-deep Option has its own material, at every depth of nesting.
        let values = [None, Some(None), Some(Some(None)), Some(Some(Some(1u8)))];
        let materials: Vec<String> = values
            .iter()
            .map(|v| material(KeyArgs::new().arg(v)))
            .collect();
        assert_eq!(materials, ["[null]", "[[null]]", "[[[null]]]", "[1]"]);
        let in_struct: Vec<String> = values
            .iter()
            .map(|v| material(KeyArgs::new().arg(&HashMap::from([("o", v)]))))
            .collect();
        assert_eq!(
            in_struct,
            [
                r#"[{"o":null}]"#,
                r#"[{"o":[null]}]"#,
                r#"[{"o":[[null]]}]"#,
                r#"[{"o":1}]"#
            ]
        );
        // A newtype is transparent: its Some(None) is wrapped like a bare one.
        #[derive(Serialize)]
        struct Wrap(Option<Option<u8>>);
        assert_eq!(material(KeyArgs::new().arg(&Some(Wrap(None)))), "[[null]]");
        assert_eq!(
            material(KeyArgs::new().arg(&Some(Wrap(Some(None))))),
            "[[[null]]]"
        );
        assert_eq!(
            material(KeyArgs::new().arg(&Some(Wrap(Some(Some(2)))))),
            "[2]"
        );
        // Options of things that are never null keep their material.
        assert_eq!(
            material(KeyArgs::new().arg(&Some("a")).arg(&Some(vec![1u8]))),
            r#"["a",[1]]"#
        );
        // A sequence of one null (or one wrapped value) reads like a wrapped `Some`, so a
        // `Some` of it is wrapped: every value of this type has its own material.
        type Patch = Option<Option<Vec<Option<u8>>>>;
        let values: [Patch; 6] = [
            None,
            Some(None),
            Some(Some(vec![])),
            Some(Some(vec![None])),
            Some(Some(vec![None, None])),
            Some(Some(vec![Some(1)])),
        ];
        let materials: Vec<String> = values.iter().map(|v| material(KeyArgs::expr(v))).collect();
        assert_eq!(
            materials,
            ["null", "[null]", "[]", "[[[null]]]", "[null,null]", "[1]"]
        );
        let tuple: Option<Option<(Option<u8>,)>> = Some(Some((None,)));
        assert_eq!(material(KeyArgs::expr(&tuple)), "[[[null]]]");
        assert_eq!(
            material(KeyArgs::expr(&Some(serde_json::json!([null])))),
            "[[null]]"
        );
    }

    #[derive(Serialize)]
    struct Scaled {
        factor: f32,
        name: &'static str,
    }

    #[test]
    fn an_f32_has_one_form_wherever_it_is() {
        let bare = material(KeyArgs::new().arg(&0.1f32));
        assert_eq!(bare, "[0.1]");
        assert_eq!(material(KeyArgs::new().arg(&[0.1f32])), "[[0.1]]");
        assert_eq!(
            material(KeyArgs::new().arg(&Scaled {
                factor: 0.1,
                name: "n"
            })),
            r#"[{"factor":0.1,"name":"n"}]"#
        );
        assert_eq!(
            material(KeyArgs::new().arg(&HashMap::from([("a", 0.1f32)]))),
            r#"[{"a":0.1}]"#
        );
        assert_eq!(
            material(KeyArgs::new().arg(&BTreeMap::from([(1, vec![Some(0.1f32)])]))),
            r#"[{"1":[0.1]}]"#
        );
        // What serde_json writes for each, bare or not.
        assert_eq!(
            serde_json::to_string(&Scaled {
                factor: 0.1,
                name: "n"
            })
            .unwrap(),
            r#"{"factor":0.1,"name":"n"}"#
        );
    }

    #[test]
    fn an_object_with_two_entries_of_one_name_is_an_error() {
        /// Serializes as a map with every entry given, duplicates included.
        struct Entries(Vec<(&'static str, u8)>);
        impl Serialize for Entries {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_map(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        for entries in [vec![("b", 1), ("a", 2), ("a", 1)], vec![("a", 1), ("a", 1)]] {
            let err = KeyArgs::new()
                .arg(&Entries(entries))
                .material()
                .unwrap_err();
            assert!(err.to_string().contains("two entries of one name"), "{err}");
        }
        assert_eq!(
            material(KeyArgs::new().arg(&Entries(vec![("b", 1), ("a", 2)]))),
            r#"[{"a":2,"b":1}]"#
        );
    }

    #[test]
    fn a_flattened_map_and_a_field_of_one_name_are_refused() {
        #[derive(Serialize)]
        struct Query {
            page: u32,
            #[serde(flatten)]
            extra: HashMap<String, u32>,
        }
        let query = |extra: &str| Query {
            page: 1,
            extra: HashMap::from([(extra.to_owned(), 2), ("q".to_owned(), 9)]),
        };
        assert_eq!(
            material(KeyArgs::new().arg(&query("size"))),
            r#"[{"page":1,"q":9,"size":2}]"#
        );
        assert!(KeyArgs::new().arg(&query("page")).material().is_err());
    }

    /// Serializes as serde_json's `Number` (with `arbitrary_precision`) or `RawValue` do.
    struct Token(&'static str, &'static str);

    impl Serialize for Token {
        fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut s = ser.serialize_struct(self.0, 1)?;
            s.serialize_field(self.0, self.1)?;
            s.end()
        }
    }

    #[test]
    fn serde_json_numbers_and_raw_values_are_written_as_json() {
        const NUMBER: &str = "$serde_json::private::Number";
        const RAW: &str = "$serde_json::private::RawValue";
        let digits = "-12345678901234567890123.4500";
        assert_eq!(
            material(KeyArgs::new().arg(&Token(NUMBER, digits))),
            format!("[{digits}]")
        );
        assert!(KeyArgs::new()
            .arg(&Token(NUMBER, "1,2"))
            .material()
            .is_err());
        // A raw value is made canonical, as inside an object it always was.
        let raw = Token(RAW, r#"{"b": 1.0, "a": [1e2, null]}"#);
        assert_eq!(
            material(KeyArgs::new().arg(&raw)),
            r#"[{"a":[100.0,null],"b":1.0}]"#
        );
        assert_eq!(
            material(KeyArgs::new().arg(&Some(Token(RAW, " null ")))),
            "[[null]]"
        );
        assert!(KeyArgs::new().arg(&Token(RAW, "{")).material().is_err());
    }

    /// Shapes of every kind serde has, with the material they had before the key serializer
    /// was our own: an entry's key must never move under a deployed cache.
    mod shapes {
        use serde::Serialize;
        use std::collections::{BTreeMap, HashMap};

        #[derive(Serialize)]
        struct Point {
            y: i32,
            x: i32,
            label: &'static str,
            tags: Vec<u8>,
            inner: Option<Inner>,
        }

        #[derive(Serialize)]
        struct Inner {
            z: bool,
            a: f64,
        }

        #[derive(Serialize)]
        struct Unit;

        #[derive(Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
        struct Name(&'static str);

        #[derive(Serialize)]
        struct Pair(u8, &'static str);

        #[derive(Serialize)]
        enum Shape {
            Empty,
            Circle(i64),
            Line(u8, u8),
            Rect { w: u8, h: u8 },
        }

        #[derive(Serialize, PartialEq, Eq, Hash)]
        enum Colour {
            Red,
            Blue,
        }

        #[derive(Serialize)]
        #[serde(tag = "kind")]
        enum Tagged {
            Node { z: u8, y: u8 },
        }

        #[derive(Serialize)]
        struct Flat {
            b: u8,
            #[serde(flatten)]
            rest: BTreeMap<&'static str, u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            gone: Option<u8>,
        }

        /// `(what, material)` for each shape.
        pub(super) fn all() -> Vec<(&'static str, Vec<u8>)> {
            fn m<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
                super::KeyArgs::new().arg(v).material().unwrap()
            }
            let point = Point {
                y: 2,
                x: -1,
                label: "p\"\\\n",
                tags: vec![1, 2],
                inner: Some(Inner { z: true, a: 0.5 }),
            };
            let escapes: HashMap<&str, u8> = [
                "ab", "a#", "a\"", "a ", "a\n", "a", "a\\", "\u{1}", "ż", "z",
            ]
            .into_iter()
            .zip(0..)
            .collect();
            vec![
                (
                    "floats",
                    m(&(
                        1.0f64,
                        1e20f64,
                        1e-7f64,
                        -0.0f64,
                        f64::MAX,
                        f64::MIN_POSITIVE,
                        0.1f32,
                        16777216.0f32,
                    )),
                ),
                (
                    "integers",
                    m(&(u64::MAX, i64::MIN, 7i128, 9u128, -3i8, 255u8)),
                ),
                (
                    "text",
                    m(&('ż', "\u{1}\u{7f}\"\\/\r\t\u{8}\u{c}", String::from("🐢"))),
                ),
                (
                    "units",
                    m(&(
                        (),
                        Unit,
                        Name("n"),
                        Pair(1, "a"),
                        None::<u8>,
                        Some(3u8),
                        Some(1.5f64),
                    )),
                ),
                (
                    "enums",
                    m(&(
                        Shape::Empty,
                        Shape::Circle(-1),
                        Shape::Line(1, 2),
                        Shape::Rect { w: 3, h: 4 },
                    )),
                ),
                ("tagged", m(&Tagged::Node { z: 1, y: 2 })),
                (
                    "flatten",
                    m(&Flat {
                        b: 1,
                        rest: BTreeMap::from([("c", 2), ("a", 3)]),
                        gone: None,
                    }),
                ),
                ("struct", m(&point)),
                ("nested", m(&vec![Some(&point)])),
                (
                    "int keys",
                    m(&HashMap::from([(10, "ten"), (9, "nine"), (-1, "minus")])),
                ),
                ("u64 keys", m(&HashMap::from([(u64::MAX, 1u8), (0, 2)]))),
                ("bool keys", m(&HashMap::from([(true, 1u8), (false, 0)]))),
                ("char keys", m(&HashMap::from([('b', 1u8), ('a', 0)]))),
                (
                    "unit variant keys",
                    m(&HashMap::from([(Colour::Red, 1u8), (Colour::Blue, 0)])),
                ),
                (
                    "newtype keys",
                    m(&BTreeMap::from([(Name("b"), 1u8), (Name("a"), 0)])),
                ),
                ("escaped keys", m(&escapes)),
                (
                    "empty",
                    m(&(HashMap::<u8, u8>::new(), Vec::<u8>::new(), "")),
                ),
                (
                    "value",
                    m(&serde_json::json!({"b": [1, 2.5, null, {"y": 1, "x": true}], "a": "s"})),
                ),
            ]
        }
    }

    #[test]
    fn materials_of_every_shape_are_unchanged() {
        // Recorded before key material had its own serializer (`print_shapes` prints them).
        let expected: &[(&str, &str)] = &[
            ("floats", r#"[[1.0,1e+20,1e-7,-0.0,1.7976931348623157e+308,2.2250738585072014e-308,0.1,16777216.0]]"#),
            ("integers", r#"[[18446744073709551615,-9223372036854775808,7,9,-3,255]]"#),
            ("text", "[[\"ż\",\"\\u0001\u{7f}\\\"\\\\/\\r\\t\\b\\f\",\"🐢\"]]"),
            ("units", r#"[[null,null,"n",[1,"a"],null,3,1.5]]"#),
            ("enums", r#"[["Empty",{"Circle":-1},{"Line":[1,2]},{"Rect":{"h":4,"w":3}}]]"#),
            ("tagged", r#"[{"kind":"Node","y":2,"z":1}]"#),
            ("flatten", r#"[{"a":3,"b":1,"c":2}]"#),
            ("struct", r#"[{"inner":{"a":0.5,"z":true},"label":"p\"\\\n","tags":[1,2],"x":-1,"y":2}]"#),
            ("nested", r#"[[{"inner":{"a":0.5,"z":true},"label":"p\"\\\n","tags":[1,2],"x":-1,"y":2}]]"#),
            ("int keys", r#"[{"-1":"minus","10":"ten","9":"nine"}]"#),
            ("u64 keys", r#"[{"0":2,"18446744073709551615":1}]"#),
            ("bool keys", r#"[{"false":0,"true":1}]"#),
            ("char keys", r#"[{"a":0,"b":1}]"#),
            ("unit variant keys", r#"[{"Blue":0,"Red":1}]"#),
            ("newtype keys", r#"[{"a":0,"b":1}]"#),
            ("escaped keys", "[{\"\\u0001\":7,\"a\":5,\"a\\n\":4,\"a \":3,\"a\\\"\":2,\"a#\":1,\"a\\\\\":6,\"ab\":0,\"z\":9,\"ż\":8}]"),
            ("empty", r#"[[{},[],""]]"#),
            ("value", r#"[{"a":"s","b":[1,2.5,null,{"x":true,"y":1}]}]"#),
        ];
        let actual = shapes::all();
        assert_eq!(actual.len(), expected.len());
        for ((what, material), (want_what, want)) in actual.into_iter().zip(expected) {
            assert_eq!(what, *want_what);
            assert_eq!(String::from_utf8(material).unwrap(), *want, "{what}");
        }
    }

    #[test]
    #[ignore = "prints the materials of the shapes, to pin a new one"]
    fn print_shapes() {
        for (what, material) in shapes::all() {
            let text = String::from_utf8(material).unwrap();
            if text.contains(|c: char| c.is_control() || c == '#') {
                println!("({what:?}, {text:?}),");
            } else {
                println!("({what:?}, r#\"{text}\"#),");
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn is_key(key: &str, prefix: &str) -> bool {
            key.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|hex| {
                    hex.len() == 32
                        && hex
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
        }

        proptest! {
            #[test]
            fn material_is_the_compact_json_array_of_the_arguments(
                text in ".*",
                number in any::<i64>(),
                bytes in proptest::collection::vec(any::<u8>(), 0..64),
                float in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            ) {
                let args = KeyArgs::new().arg(&text).arg(&number).arg(&bytes).arg(&float);
                let material = args.material().unwrap();
                let expected = serde_json::to_vec(&(&text, number, &bytes, float)).unwrap();
                prop_assert_eq!(&material, &expected);
                let key = derive_key(None, "p", None, &material);
                prop_assert!(is_key(&key, "p"), "{}", key);
            }

            #[test]
            fn material_of_floats_and_nested_sequences_is_their_compact_json(
                doubles in proptest::collection::vec(
                    any::<f64>().prop_filter("finite", |f| f.is_finite()), 0..8),
                singles in proptest::collection::vec(
                    any::<f32>().prop_filter("finite", |f| f.is_finite()), 0..8),
                nested in proptest::collection::vec(
                    proptest::collection::vec(proptest::option::of(".*"), 0..4), 0..4),
                flag in any::<bool>(),
                wide in any::<u128>(),
            ) {
                let args = KeyArgs::new().arg(&doubles).arg(&singles).arg(&nested).arg(&flag).arg(&wide);
                let material = args.material().unwrap();
                let expected = serde_json::to_vec(&(&doubles, &singles, &nested, flag, wide)).unwrap();
                prop_assert_eq!(String::from_utf8(material).unwrap(), String::from_utf8(expected).unwrap());
            }

            #[test]
            fn material_of_a_map_is_the_json_of_the_sorted_map(
                entries in proptest::collection::vec(
                    (".*", (any::<i32>(), any::<f32>().prop_filter("finite", |f| f.is_finite()), proptest::option::of(".*"))),
                    0..16),
                numbered in proptest::collection::vec((any::<i64>(), ".*"), 0..16),
                nested in proptest::collection::vec(
                    ("[a-c\"\\\\\n ]{0,3}", proptest::collection::vec(("[a-c\"\\\\\n ]{0,3}", any::<u8>()), 0..4)),
                    0..6),
            ) {
                let map: HashMap<String, _> = entries.iter().cloned().collect();
                let sorted: BTreeMap<String, _> = entries.into_iter().collect();
                prop_assert_eq!(
                    String::from_utf8(KeyArgs::expr(&map).material().unwrap()).unwrap(),
                    serde_json::to_string(&sorted).unwrap()
                );
                // Integer keys are strings, sorted as strings.
                let map: HashMap<i64, String> = numbered.iter().cloned().collect();
                let sorted: BTreeMap<String, String> =
                    map.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                prop_assert_eq!(
                    String::from_utf8(KeyArgs::expr(&map).material().unwrap()).unwrap(),
                    serde_json::to_string(&sorted).unwrap()
                );
                // Maps in maps, with keys that need escapes.
                let map: HashMap<String, HashMap<String, u8>> = nested
                    .iter()
                    .map(|(k, inner)| (k.clone(), inner.iter().cloned().collect()))
                    .collect();
                let sorted: BTreeMap<String, BTreeMap<String, u8>> = map
                    .iter()
                    .map(|(k, inner)| (k.clone(), inner.iter().map(|(k, v)| (k.clone(), *v)).collect()))
                    .collect();
                prop_assert_eq!(
                    String::from_utf8(KeyArgs::new().arg(&map).material().unwrap()).unwrap(),
                    serde_json::to_string(&[sorted]).unwrap()
                );
            }

            #[test]
            fn map_insertion_order_never_changes_the_key(
                entries in proptest::collection::vec((".*", any::<i32>()), 0..32),
            ) {
                let forward: HashMap<String, i32> = entries.iter().cloned().collect();
                let mut backward = HashMap::new();
                for (k, v) in entries.iter().rev() {
                    backward.entry(k.clone()).or_insert(*v);
                }
                // Keep the same value for a duplicated key in both maps.
                let backward: HashMap<String, i32> = backward
                    .into_keys()
                    .map(|k| { let v = forward[&k]; (k, v) })
                    .collect();
                let a = KeyArgs::new().arg(&forward).key(Some("ns"), "p", None).unwrap();
                let b = KeyArgs::new().arg(&backward).key(Some("ns"), "p", None).unwrap();
                prop_assert_eq!(&a, &b);
                prop_assert!(is_key(a.strip_prefix("ns:").unwrap(), "p"));
            }

            #[test]
            fn huge_and_non_ascii_material_gives_a_fixed_size_key(text in "\\PC{0,2000}") {
                let big = text.repeat(50);
                let key = KeyArgs::new().arg(&big).key(None, "p", None).unwrap();
                prop_assert!(is_key(&key, "p"));
            }
        }
    }
}
