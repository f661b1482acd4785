//! `#[cached(...)]` arguments: parsed into a typed struct, each value checked at its own
//! span, every mistake reported.

use crate::error::Errors;
use proc_macro2::{Ident, Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{token, Expr, ExprLit, Lit, LitStr, Token};

/// One raw `name`, `name = value` or `name(a, b)` argument, before its value is checked.
struct RawArg {
    name: Ident,
    value: RawValue,
}

enum RawValue {
    Flag,
    Eq(Expr),
    List(Punctuated<Ident, Token![,]>),
    Strs(Punctuated<LitStr, Token![,]>),
}

impl Parse for RawArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = input.call(syn::ext::IdentExt::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            RawValue::Eq(ungroup(input.parse()?))
        } else if input.peek(token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            if content.peek(LitStr) {
                RawValue::Strs(content.parse_terminated(<LitStr as Parse>::parse, Token![,])?)
            } else {
                RawValue::List(content.parse_terminated(Ident::parse, Token![,])?)
            }
        } else {
            RawValue::Flag
        };
        Ok(RawArg { name, value })
    }
}

/// `expr` without the invisible groups `macro_rules!` puts around a substituted fragment
/// (`prefix = $prefix` with `$prefix:literal`), so such a value is checked as written.
pub(crate) fn ungroup(expr: Expr) -> Expr {
    match expr {
        Expr::Group(group) => ungroup(*group.expr),
        expr => expr,
    }
}

/// The checked options of one `#[cached]`.
#[derive(Default)]
pub(crate) struct CachedArgs {
    pub(crate) prefix: Option<(String, Span)>,
    pub(crate) ttl: Option<(Seconds, Span)>,
    pub(crate) jitter: Option<(Seconds, Span)>,
    pub(crate) null_ttl: Option<(Seconds, Span)>,
    pub(crate) skip: Option<(Vec<Ident>, Span)>,
    pub(crate) key: Option<(Expr, Span)>,
    pub(crate) output: Option<(Output, Span)>,
    pub(crate) group: Option<(String, Span)>,
    pub(crate) in_trait_impl: Option<((), Span)>,
    /// `lock` (the default lease) or `lock_ms = N`.
    pub(crate) lock: Option<(u64, Span)>,
    pub(crate) lock_ms: Option<(u64, Span)>,
    pub(crate) early_refresh: Option<(f64, Span)>,
    /// `stale_ttl = N`: an entry past its TTL is served for N more seconds while one caller
    /// refreshes it.
    pub(crate) stale_ttl: Option<(Seconds, Span)>,
    /// `stale_if_error = N`: an entry past its TTL answers for N more seconds when the body
    /// fails.
    pub(crate) stale_if_error: Option<(Seconds, Span)>,
    /// `ttl = path_or_closure`: the TTL computed from the value.
    pub(crate) ttl_fn: Option<(Expr, Span)>,
    /// `cache_if = path_or_closure`: whether a value is cached.
    pub(crate) cache_if: Option<(Expr, Span)>,
    /// `type_key = "name"` (or an expression of a `&str`): the name that stands in the key
    /// material for the enclosing impl and the generic type parameters, in place of the
    /// compiler's type names.
    pub(crate) type_key: Option<(Expr, Span)>,
    /// `tags("user:{user_id}", "orders")`: tags built from the arguments.
    pub(crate) tags: Option<(Vec<Tag>, Span)>,
    /// `codec = "msgpack"`: the codec of the function's entries, and its literal's span.
    pub(crate) codec: Option<((Codec, Span), Span)>,
    /// `compress_above = 4096`: entries longer than this many bytes are compressed.
    pub(crate) compress_above: Option<(u64, Span)>,
}

/// A codec `codec = ".."` names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Codec {
    Json,
    MessagePack,
}

const CODECS: &[(&str, Codec)] = &[("json", Codec::Json), ("msgpack", Codec::MessagePack)];

/// One tag of `tags(..)`: its literal, and its text in parts.
pub(crate) struct Tag {
    pub(crate) lit: LitStr,
    pub(crate) parts: Vec<TagPart>,
}

/// Text, or a `{name}` placeholder for an argument.
pub(crate) enum TagPart {
    Text(String),
    Arg(Ident),
}

/// The lease of `lock` without `lock_ms`, in milliseconds.
pub(crate) const DEFAULT_LOCK_MS: u64 = 5_000;

/// How the return type maps to entries, when its last path segment does not say (a type
/// alias): `output = "option"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Output {
    Value,
    Option,
    Result,
    ResultOption,
}

const OUTPUTS: &[(&str, Output)] = &[
    ("value", Output::Value),
    ("option", Output::Option),
    ("result", Output::Result),
    ("result_option", Output::ResultOption),
];

type Setter = fn(&mut CachedArgs, &RawArg, &mut Errors);

/// Every option: one entry each.
const OPTIONS: &[(&str, Setter)] = &[
    ("prefix", |a, arg, e| {
        if let Some(v) = prefix_value(arg, e) {
            set(&mut a.prefix, v, arg, e)
        }
    }),
    ("ttl", |a, arg, e| match &arg.value {
        // A function of the value (a path or a closure): the TTL computed from it. A path
        // named in upper case is a constant, a number of seconds.
        RawValue::Eq(expr) if names_a_function(expr) => {
            if a.ttl.is_some() {
                e.at(arg.name.span(), "`ttl` is given more than once");
            } else {
                set(&mut a.ttl_fn, expr.clone(), arg, e)
            }
        }
        _ => {
            if a.ttl_fn.is_some() {
                e.at(arg.name.span(), "`ttl` is given more than once");
            } else if let Some(v) = seconds(arg, e, true) {
                set(&mut a.ttl, v, arg, e)
            }
        }
    }),
    ("cache_if", |a, arg, e| match &arg.value {
        RawValue::Eq(expr @ (Expr::Path(_) | Expr::Closure(_))) => {
            set(&mut a.cache_if, expr.clone(), arg, e)
        }
        RawValue::Eq(expr) => e.spanned(
            expr,
            "`cache_if` takes a function of the value, by path or as a closure: \
             `cache_if = is_complete` or `cache_if = |v: &Vec<Item>| !v.is_empty()`",
        ),
        _ => e.at(
            arg.name.span(),
            "`cache_if` needs a function of the value: `cache_if = is_complete`",
        ),
    }),
    ("jitter", |a, arg, e| {
        if let Some(v) = seconds(arg, e, false) {
            set(&mut a.jitter, v, arg, e)
        }
    }),
    ("null_ttl", |a, arg, e| {
        if let Some(v) = seconds(arg, e, false) {
            set(&mut a.null_ttl, v, arg, e)
        }
    }),
    ("skip", |a, arg, e| match &arg.value {
        RawValue::List(names) => set(&mut a.skip, names.iter().cloned().collect(), arg, e),
        _ => e.at(
            arg.name.span(),
            "`skip` takes a list of argument names: `skip(pool, ctx)`",
        ),
    }),
    ("output", |a, arg, e| {
        if let Some(v) = output_value(arg, e) {
            set(&mut a.output, v, arg, e)
        }
    }),
    ("group", |a, arg, e| {
        if let Some(v) = group_value(arg, e) {
            set(&mut a.group, v, arg, e)
        }
    }),
    ("in_trait_impl", |a, arg, e| match &arg.value {
        RawValue::Flag => set(&mut a.in_trait_impl, (), arg, e),
        _ => e.at(
            arg.name.span(),
            "`in_trait_impl` is a flag and takes no value: `#[cached(in_trait_impl)]`",
        ),
    }),
    ("lock", |a, arg, e| match &arg.value {
        RawValue::Flag => set(&mut a.lock, DEFAULT_LOCK_MS, arg, e),
        _ => e.at(
            arg.name.span(),
            "`lock` is a flag: `#[cached(lock)]`; for another lease, `lock_ms = 2000`",
        ),
    }),
    ("lock_ms", |a, arg, e| {
        if let Some(v) = positive_int(arg, e, "lock_ms = 2000", "milliseconds") {
            set(&mut a.lock_ms, v, arg, e)
        }
    }),
    ("early_refresh", |a, arg, e| {
        if let Some(v) = beta_value(arg, e) {
            set(&mut a.early_refresh, v, arg, e)
        }
    }),
    ("stale_ttl", |a, arg, e| {
        if let Some(v) = seconds(arg, e, false) {
            set(&mut a.stale_ttl, v, arg, e)
        }
    }),
    ("stale_if_error", |a, arg, e| {
        if let Some(v) = seconds(arg, e, false) {
            set(&mut a.stale_if_error, v, arg, e)
        }
    }),
    ("type_key", |a, arg, e| match &arg.value {
        RawValue::Eq(expr) => {
            if let Some(expr) = type_key_value(expr, e) {
                set(&mut a.type_key, expr, arg, e)
            }
        }
        _ => e.at(
            arg.name.span(),
            "`type_key` takes the name the function's entries are keyed under in place of \
             the compiler's type names: `type_key = \"user_service\"` or `type_key = T::NAME`",
        ),
    }),
    ("tags", |a, arg, e| match &arg.value {
        RawValue::Strs(lits) if !lits.is_empty() => {
            let tags: Vec<Tag> = lits.iter().filter_map(|lit| parse_tag(lit, e)).collect();
            if tags.len() == lits.len() {
                set(&mut a.tags, tags, arg, e)
            }
        }
        _ => e.at(
            arg.name.span(),
            "`tags` takes string literals, with `{argument}` placeholders: \
             `tags(\"user:{user_id}\", \"orders\")`",
        ),
    }),
    ("codec", |a, arg, e| {
        if let Some(v) = codec_value(arg, e) {
            set(&mut a.codec, v, arg, e)
        }
    }),
    ("compress_above", |a, arg, e| {
        if let Some(v) = positive_int(arg, e, "compress_above = 4096", "bytes") {
            set(&mut a.compress_above, v, arg, e)
        }
    }),
    ("key", |a, arg, e| match &arg.value {
        RawValue::Eq(expr) => set(&mut a.key, expr.clone(), arg, e),
        _ => e.at(
            arg.name.span(),
            "`key` takes an expression: `key = (user.id, page)`",
        ),
    }),
];

/// Hints for names people reach for from other caching libraries.
const HINTS: &[(&str, &str)] = &[
    ("ttl_secs", "ttl"),
    ("ttl_seconds", "ttl"),
    ("expire", "ttl"),
    ("expires", "ttl"),
    ("time", "ttl"),
    ("name", "prefix"),
    ("key_prefix", "prefix"),
    ("namespace", "prefix"),
    ("ignore", "skip"),
    ("exclude", "skip"),
    ("convert", "key"),
    ("keys", "key"),
    ("none_ttl", "null_ttl"),
    ("evict_group", "group"),
    ("locked", "lock"),
    ("lock_timeout", "lock_ms"),
    ("xfetch", "early_refresh"),
    ("refresh", "early_refresh"),
    ("beta", "early_refresh"),
    ("tag", "tags"),
    ("evict_tags", "tags"),
    ("nil_ttl", "null_ttl"),
    ("stale_while_revalidate", "stale_ttl"),
    ("swr", "stale_ttl"),
    ("stale", "stale_ttl"),
    ("use_stale_on_failure", "stale_if_error"),
    ("stale_on_error", "stale_if_error"),
    ("type_name", "type_key"),
    ("format", "codec"),
    ("serializer", "codec"),
    ("encoding", "codec"),
    ("compress", "compress_above"),
    ("compression", "compress_above"),
    ("version", "type_key"),
];

/// Stores `value` unless the option was given already (one shared duplicate check).
fn set<T>(slot: &mut Option<(T, Span)>, value: T, arg: &RawArg, errors: &mut Errors) {
    if slot.is_some() {
        errors.at(
            arg.name.span(),
            format_args!("`{}` is given more than once", arg.name),
        );
    } else {
        *slot = Some((value, arg.name.span()));
    }
}

fn eq_value<'a>(arg: &'a RawArg, errors: &mut Errors, example: &str) -> Option<&'a Expr> {
    match &arg.value {
        RawValue::Eq(expr) => Some(expr),
        _ => {
            errors.at(
                arg.name.span(),
                format_args!("`{}` needs a value: `{example}`", arg.name),
            );
            None
        }
    }
}

/// The string literal of `name = "..."`; `example` shows the right form.
fn str_value<'a>(arg: &'a RawArg, errors: &mut Errors, example: &str) -> Option<&'a LitStr> {
    let expr = eq_value(arg, errors, example)?;
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit),
        _ => {
            errors.spanned(
                expr,
                format_args!("`{}` must be a string literal: `{example}`", arg.name),
            );
            None
        }
    }
}

fn prefix_value(arg: &RawArg, errors: &mut Errors) -> Option<String> {
    check_prefix(str_value(arg, errors, "prefix = \"user:profile\"")?, errors)
}

fn group_value(arg: &RawArg, errors: &mut Errors) -> Option<String> {
    check_group(str_value(arg, errors, "group = \"products\"")?, errors)
}

/// A group name: non-empty, and usable inside a Redis Cluster hash tag.
pub(crate) fn check_group(lit: &LitStr, errors: &mut Errors) -> Option<String> {
    let value = lit.value();
    if value.is_empty() {
        errors.at(lit.span(), "`group` must not be empty");
        return None;
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
    {
        errors.at(
            lit.span(),
            "`group` must not contain whitespace, control characters or braces: it becomes \
             the `{group}` hash tag of the function's keys",
        );
        return None;
    }
    Some(value)
}

/// A tag's text split at its `{name}` placeholders; errors at the literal for an empty
/// tag, a placeholder that is not a name, or a stray brace.
pub(crate) fn parse_tag(lit: &LitStr, errors: &mut Errors) -> Option<Tag> {
    let text = lit.value();
    if text.is_empty() {
        errors.at(lit.span(), "a tag must not be empty");
        return None;
    }
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let Some(open) = rest.find(['{', '}']) else {
            parts.push(TagPart::Text(rest.to_owned()));
            break;
        };
        if open > 0 {
            parts.push(TagPart::Text(rest[..open].to_owned()));
        }
        let after = &rest[open..];
        let close = after.find('}').filter(|_| after.starts_with('{'));
        let name = close.map(|close| &after[1..close]);
        match name.and_then(|name| syn::parse_str::<Ident>(name).ok()) {
            Some(mut ident) => {
                ident.set_span(lit.span());
                parts.push(TagPart::Arg(ident));
                rest = &after[close.unwrap_or_default() + 1..];
            }
            None => {
                errors.at(
                    lit.span(),
                    "a tag's braces hold the name of an argument, `{user_id}`, and nothing \
                     else: no other braces, no expressions",
                );
                return None;
            }
        }
    }
    Some(Tag {
        lit: lit.clone(),
        parts,
    })
}

/// A `type_key` value: a non-empty string literal, or any other expression (a `&str`
/// constant of a generic parameter, `T::NAME`), which the compiler checks.
fn type_key_value(expr: &Expr, errors: &mut Errors) -> Option<Expr> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = expr
    {
        if lit.value().is_empty() {
            errors.at(lit.span(), "`type_key` must not be empty");
            return None;
        }
    }
    Some(expr.clone())
}

fn output_value(arg: &RawArg, errors: &mut Errors) -> Option<Output> {
    let meaning = "how the return type is cached when it is written as a type alias";
    one_of(arg, errors, "output = \"result\"", OUTPUTS, meaning).map(|(output, _)| output)
}

fn codec_value(arg: &RawArg, errors: &mut Errors) -> Option<(Codec, Span)> {
    let meaning = "how the function's values are written in the store";
    one_of(arg, errors, "codec = \"msgpack\"", CODECS, meaning)
}

/// A string literal naming one of `table`'s entries: the entry and the literal's span;
/// anything else is an error listing the names, saying what the option means.
fn one_of<T: Copy>(
    arg: &RawArg,
    errors: &mut Errors,
    example: &str,
    table: &[(&str, T)],
    meaning: &str,
) -> Option<(T, Span)> {
    let expr = eq_value(arg, errors, example)?;
    let names: Vec<String> = table.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = format!(
        "`{}` must be one of {}: {meaning}",
        arg.name,
        names.join(", ")
    );
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => match table.iter().find(|(n, _)| *n == lit.value()) {
            Some((_, value)) => Some((*value, lit.span())),
            None => {
                errors.at(lit.span(), expected);
                None
            }
        },
        _ => {
            errors.spanned(expr, expected);
            None
        }
    }
}

fn check_prefix(lit: &LitStr, errors: &mut Errors) -> Option<String> {
    let value = lit.value();
    if value.is_empty() {
        errors.at(lit.span(), "`prefix` must not be empty");
        return None;
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.at(
            lit.span(),
            "`prefix` must not contain whitespace or control characters: it is the start of \
             every Redis key of this function",
        );
        return None;
    }
    if value.contains(['{', '}']) {
        errors.at(
            lit.span(),
            "`prefix` must not contain braces: it is a fixed string, so `{..}` in it is not \
             filled in from the arguments (the arguments' hash follows it), and on a Redis \
             Cluster braces would put every entry of this function on one node (and in a \
             `group`, the group must be the key's hash tag); to retire entries by an \
             argument, use `tags(\"user:{id}\")`",
        );
        return None;
    }
    Some(value)
}

fn positive_int(arg: &RawArg, errors: &mut Errors, example: &str, unit: &str) -> Option<u64> {
    let name = arg.name.to_string();
    let expr = eq_value(arg, errors, example)?;
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = expr
    else {
        errors.spanned(
            expr,
            format_args!("`{name}` must be a whole number of {unit}: `{example}`"),
        );
        return None;
    };
    match lit.base10_parse::<u64>() {
        Ok(0) => {
            errors.at(lit.span(), format_args!("`{name}` must be greater than 0"));
            None
        }
        Ok(v) => Some(v),
        Err(err) => {
            errors.at(lit.span(), format_args!("`{name}`: {err}"));
            None
        }
    }
}

fn beta_value(arg: &RawArg, errors: &mut Errors) -> Option<f64> {
    let expr = eq_value(arg, errors, "early_refresh = 1.0")?;
    let parsed = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Float(lit),
            ..
        }) => lit.base10_parse::<f64>().ok().map(|v| (v, lit.span())),
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit.base10_parse::<f64>().ok().map(|v| (v, lit.span())),
        _ => None,
    };
    match parsed {
        Some((v, _)) if v.is_finite() && v > 0.0 => Some(v),
        _ => {
            errors.spanned(
                expr,
                "`early_refresh` is XFetch's beta, a number greater than 0: \
                 `early_refresh = 1.0` (larger refreshes earlier)",
            );
            None
        }
    }
}

/// A number of seconds: a literal, checked here, or an expression the compiler evaluates as
/// a constant `u64` (`ttl = PROFILE_TTL`, `ttl = 15 * 60`) and checks where it expands.
pub(crate) enum Seconds {
    Lit(u64),
    Const(Expr),
}

/// Whether `ttl = expr` names a function of the value: a closure, or a path whose last
/// name is not in upper case (constants are, by Rust's naming convention).
fn names_a_function(expr: &Expr) -> bool {
    match expr {
        Expr::Closure(_) => true,
        Expr::Path(path) => path.path.segments.last().is_some_and(|last| {
            let name = last.ident.to_string();
            let constant = name.bytes().any(|b| b.is_ascii_uppercase())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            !constant
        }),
        Expr::Group(group) => names_a_function(&group.expr),
        _ => false,
    }
}

fn seconds(arg: &RawArg, errors: &mut Errors, positive: bool) -> Option<Seconds> {
    let name = arg.name.to_string();
    let expr = eq_value(arg, errors, &format!("{name} = 60"))?;
    // Without the parentheses, which would be unneeded where the expression lands.
    let mut bare = ungroup(expr.clone());
    while let Expr::Paren(inner) = bare {
        bare = ungroup(*inner.expr);
    }
    let lit = match bare {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit,
        // Any other expression but a literal is a constant's: `ttl = PROFILE_TTL`.
        Expr::Lit(_) => {
            // `ttl` also takes a function of the value (a path or a closure).
            let or_function = if name == "ttl" {
                " or a function of the value: `ttl = until_expiry`"
            } else {
                ""
            };
            errors.spanned(
                expr,
                format_args!(
                    "`{name}` must be a whole number of seconds: `{name} = 60`{or_function}"
                ),
            );
            return None;
        }
        expr => return Some(Seconds::Const(expr)),
    };
    match lit.base10_parse::<u64>() {
        Ok(0) if positive => {
            errors.at(
                lit.span(),
                format_args!(
                    "`{name}` must be greater than 0: every entry expires (leave the \
                     attribute off to not cache)"
                ),
            );
            None
        }
        Ok(v) => Some(Seconds::Lit(v)),
        Err(err) => {
            errors.at(lit.span(), format_args!("`{name}`: {err}"));
            None
        }
    }
}

impl CachedArgs {
    /// Parses and checks the attribute's arguments; `errors` receives every problem.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> CachedArgs {
        let mut args = CachedArgs::default();
        let raw = match Punctuated::<RawArg, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(raw) => raw,
            Err(err) => {
                errors.push(err);
                return args;
            }
        };
        for arg in &raw {
            let name = arg.name.to_string();
            match OPTIONS.iter().find(|(option, _)| *option == name) {
                Some((_, setter)) => setter(&mut args, arg, errors),
                None => errors.at(arg.name.span(), unknown_message(&name)),
            }
        }
        args
    }
}

fn unknown_message(name: &str) -> String {
    let valid: Vec<String> = OPTIONS.iter().map(|(n, _)| format!("`{n}`")).collect();
    let mut message = format!(
        "unknown option `{name}`; the options are {}",
        valid.join(", ")
    );
    if let Some((_, hint)) = HINTS.iter().find(|(wrong, _)| *wrong == name) {
        message.push_str(&format!("; did you mean `{hint}`?"));
    }
    message
}
