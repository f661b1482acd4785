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
}

impl Parse for RawArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = input.call(syn::ext::IdentExt::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            RawValue::Eq(input.parse()?)
        } else if input.peek(token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            RawValue::List(content.parse_terminated(Ident::parse, Token![,])?)
        } else {
            RawValue::Flag
        };
        Ok(RawArg { name, value })
    }
}

/// The checked options of one `#[cached]`.
#[derive(Default)]
pub(crate) struct CachedArgs {
    pub(crate) prefix: Option<(String, Span)>,
    pub(crate) ttl: Option<(u64, Span)>,
    pub(crate) jitter: Option<(u64, Span)>,
    pub(crate) null_ttl: Option<(u64, Span)>,
    pub(crate) skip: Option<(Vec<Ident>, Span)>,
    pub(crate) key: Option<(Expr, Span)>,
    pub(crate) output: Option<(Output, Span)>,
    pub(crate) group: Option<(String, Span)>,
    pub(crate) in_trait_impl: Option<((), Span)>,
}

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
    ("ttl", |a, arg, e| {
        if let Some(v) = seconds(arg, e, true) {
            set(&mut a.ttl, v, arg, e)
        }
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
    ("tag", "group"),
    ("tags", "group"),
    ("nil_ttl", "null_ttl"),
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

fn prefix_value(arg: &RawArg, errors: &mut Errors) -> Option<String> {
    let expr = eq_value(arg, errors, "prefix = \"user:profile\"")?;
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = expr
    else {
        errors.spanned(
            expr,
            "`prefix` must be a string literal: `prefix = \"user:profile\"`",
        );
        return None;
    };
    check_prefix(lit, errors)
}

fn group_value(arg: &RawArg, errors: &mut Errors) -> Option<String> {
    let expr = eq_value(arg, errors, "group = \"products\"")?;
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = expr
    else {
        errors.spanned(
            expr,
            "`group` must be a string literal: `group = \"products\"`",
        );
        return None;
    };
    check_group(lit, errors)
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

fn output_value(arg: &RawArg, errors: &mut Errors) -> Option<Output> {
    let expr = eq_value(arg, errors, "output = \"result\"")?;
    let names: Vec<String> = OUTPUTS.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = format!(
        "`output` must be one of {}: how the return type is cached when it is written as a \
         type alias",
        names.join(", ")
    );
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => match OUTPUTS.iter().find(|(n, _)| *n == lit.value()) {
            Some((_, output)) => Some(*output),
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
    Some(value)
}

fn seconds(arg: &RawArg, errors: &mut Errors, positive: bool) -> Option<u64> {
    let name = arg.name.to_string();
    let expr = eq_value(arg, errors, &format!("{name} = 60"))?;
    let lit = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit,
        _ => {
            errors.spanned(
                expr,
                format_args!("`{name}` must be a whole number of seconds: `{name} = 60`"),
            );
            return None;
        }
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
        Ok(v) => Some(v),
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
