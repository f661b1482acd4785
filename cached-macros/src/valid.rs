//! Checks of the annotated function against its options, and what its signature says:
//! `async` and not `const`, option combinations, `skip` names, the return shape. Each
//! mistake goes into the error accumulator at its own span; nothing here writes tokens.

use crate::attr::{CachedArgs, Output};
use crate::error::Errors;
use crate::item::ItemFn;
use proc_macro2::Ident;
use quote::ToTokens;
use syn::{GenericArgument, PathArguments, ReturnType, Type};

/// The first of `names` that `tokens` read as a variable: an identifier that is neither a
/// field, a method or a path's later segment (after `.` or `::`), nor a path's first
/// segment or a macro (before `::` or `!`).
fn reads_any(tokens: proc_macro2::TokenStream, names: &[Ident]) -> Option<Ident> {
    use proc_macro2::TokenTree;
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let punct = |at: usize| match tokens.get(at) {
        Some(TokenTree::Punct(p)) => Some(p.as_char()),
        _ => None,
    };
    for (at, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Ident(ident) if names.contains(ident) => {
                let behind = |back: usize| at.checked_sub(back).and_then(punct);
                // `x.field`, `a::b`; not a range, `..x`.
                let field = behind(1) == Some('.') && behind(2) != Some('.');
                let later_segment = behind(1) == Some(':') && behind(2) == Some(':');
                let first_segment = punct(at + 1) == Some(':') && punct(at + 2) == Some(':');
                // `x!(..)`; not `x != y`.
                let called = punct(at + 1) == Some('!') && punct(at + 2) != Some('=');
                if !(field || later_segment || first_segment || called) {
                    return Some(ident.clone());
                }
            }
            TokenTree::Group(group) => {
                if let Some(found) = reads_any(group.stream(), names) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// Checks that need the function: `async`, not `const`, no parameter under `#[cfg]`.
/// `attr` is the attribute's name, for the messages (`cached`, `evicts`).
pub(crate) fn check_async(sig: &syn::Signature, attr: &str, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.spanned(
            constness,
            format_args!("#[{attr}] cannot be used on a `const fn`"),
        );
    }
    if sig.asyncness.is_none() {
        let mut message =
            format!("#[{attr}] works on `async fn` only: the cache is asynchronous; add `async`");
        if let ReturnType::Type(_, ty) = &sig.output {
            let text = ty.to_token_stream().to_string();
            if text.contains("Pin") && text.contains("Future") {
                message.push_str(
                    " (with #[async_trait], put the attribute on a native `async fn` in the \
                     trait impl instead: Rust supports them since 1.75)",
                );
            }
        }
        errors.spanned(sig.fn_token, message);
    }
    for input in &sig.inputs {
        let syn::FnArg::Typed(arg) = input else {
            continue;
        };
        if let Some(cfg) = arg.attrs.iter().find(|a| makes_cfg(a)) {
            errors.spanned(
                cfg,
                format_args!(
                    "#[{attr}] cannot take a parameter under `#[cfg]`: the code it generates \
                     passes every parameter on (and a cached function's key is made of \
                     them); declare the function twice, each under its own `#[cfg]`"
                ),
            );
        }
    }
}

/// Whether `attr` is a `#[cfg]`, or a `#[cfg_attr(predicate, ..)]` that may make one
/// (nested `cfg_attr`s included).
fn makes_cfg(attr: &syn::Attribute) -> bool {
    makes_cfg_meta(&attr.meta)
}

fn makes_cfg_meta(meta: &syn::Meta) -> bool {
    if meta.path().is_ident("cfg") {
        return true;
    }
    let syn::Meta::List(list) = meta else {
        return false;
    };
    if !list.path.is_ident("cfg_attr") {
        return false;
    }
    let parsed = list.parse_args_with(
        syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
    );
    parsed.is_ok_and(|metas| metas.iter().skip(1).any(makes_cfg_meta))
}

/// Checks that need both the options and the function. Returns the return shape to
/// generate for, or `None` when there is none (an `impl Trait` return).
pub(crate) fn validate(item: &ItemFn, args: &CachedArgs, errors: &mut Errors) -> Option<Output> {
    let sig = &item.sig;
    check_async(sig, "cached", errors);
    let idents = item.arg_idents();
    if let Some((skipped, skip_span)) = &args.skip {
        if args.key.is_some() {
            errors.at(
                *skip_span,
                "`skip` has no effect with `key`: the key is made of the `key` expression only",
            );
        }
        for name in skipped {
            if !idents.contains(name) {
                let known = known_arguments(&idents);
                errors.spanned(
                    name,
                    format_args!("`skip({name})`: no argument named `{name}`; {known}"),
                );
            }
        }
    }
    if let Some((tags, _)) = &args.tags {
        let skipped: &[Ident] = args.skip.as_ref().map_or(&[], |(s, _)| s);
        for tag in tags {
            for part in &tag.parts {
                let crate::attr::TagPart::Arg(name) = part else {
                    continue;
                };
                if skipped.contains(name) {
                    errors.at(
                        tag.lit.span(),
                        format_args!(
                            "tag placeholder `{{{name}}}`: `{name}` is in `skip(..)`; a tag \
                             is built from key arguments, which `invalidate!` and `put!` \
                             are given too"
                        ),
                    );
                } else if !idents.contains(name) {
                    let known = known_arguments(&idents);
                    errors.at(
                        tag.lit.span(),
                        format_args!(
                            "tag placeholder `{{{name}}}`: no argument named `{name}`; {known}"
                        ),
                    );
                }
            }
        }
    }
    if let (Some((expr, _)), Some((skipped, _))) = (&args.type_key, &args.skip) {
        if let Some(name) = reads_any(expr.to_token_stream(), skipped) {
            errors.spanned(
                &name,
                format_args!(
                    "`type_key` reads `{name}`, which is in `skip(..)`: `invalidate!` and \
                     `put!` pass `_` for a skipped argument, so the name must come from the \
                     type parameters or the key arguments (`type_key = R::NAME`)"
                ),
            );
        }
    }
    if args.key.is_none() {
        let skipped: &[Ident] = args.skip.as_ref().map_or(&[], |(s, _)| s);
        for input in &item.sig.inputs {
            let syn::FnArg::Typed(arg) = input else {
                continue;
            };
            let params: Vec<&Ident> = item
                .sig
                .generics
                .type_params()
                .map(|param| &param.ident)
                .collect();
            if let Some(set) = keyed_hash_set(&arg.pat, &arg.ty, skipped, &params) {
                errors.spanned(
                    set,
                    "a `HashSet` cannot be part of a key: it lists its items in an order \
                     of its own, which differs between equal sets, so equal arguments would \
                     get different keys (and `invalidate!` would miss); take a `BTreeSet` \
                     or a sorted `Vec`, or give `key = ..` or `skip(..)`",
                );
            }
        }
    }
    if let (Some(_), Some((_, span))) = (&args.lock, &args.lock_ms) {
        errors.at(
            *span,
            "give either `lock` (a 5 s lease) or `lock_ms = N`, not both",
        );
    }
    if let (Some((_, span)), false) = (&args.in_trait_impl, item.has_receiver()) {
        errors.at(
            *span,
            "`in_trait_impl` is for methods in a trait impl; this function has no `self`",
        );
    }
    let shape = shape_of(&sig.output, errors)?;
    let shape = args.output.map_or(shape, |(output, _)| output);
    if let Some((_, span)) = &args.stale_if_error {
        if !matches!(shape, Output::Result | Output::ResultOption) {
            errors.at(
                *span,
                "`stale_if_error` answers a failed call with the entry past its TTL: it needs \
                 a function returning `Result<T, E>` (or `Result<Option<T>, E>`)",
            );
        }
    }
    if let Some((_, span)) = &args.null_ttl {
        if !matches!(shape, Output::Option | Output::ResultOption) {
            errors.at(
                *span,
                "`null_ttl` is how long a `None` lives, and this function returns no `Option` \
                 (read from the last segment of its return type): for an alias of `Option<T>` \
                 or `Result<Option<T>, E>`, say so with `output = \"option\"` or \
                 `output = \"result_option\"`; otherwise leave `null_ttl` out",
            );
        }
    }
    Some(shape)
}

/// What an error about a name that is not an argument says the arguments are.
fn known_arguments(idents: &[Ident]) -> String {
    let names: Vec<String> = idents.iter().map(|i| format!("`{i}`")).collect();
    if names.is_empty() {
        "the function has no arguments".to_string()
    } else {
        format!("the arguments are {}", names.join(", "))
    }
}

/// The shape of the declared return type; an `impl Trait` return is an error at its span.
fn shape_of(output: &ReturnType, errors: &mut Errors) -> Option<Output> {
    let ty = match output {
        ReturnType::Default => return Some(Output::Value),
        ReturnType::Type(_, ty) => ungroup(ty),
    };
    if mentions_impl_trait(ty) {
        errors.spanned(
            ty,
            "#[cached] cannot store an `impl Trait` return: name the type, which must be \
             `Serialize + DeserializeOwned`",
        );
        return None;
    }
    Some(shape_of_type(ty))
}

/// `ty` with each `impl Trait` in it as `_` (`Result<impl Display, E>` as `Result<_, E>`):
/// what the body's return edge can name of it, so that its returns still convert into
/// the rest; `None` if nothing is left to name (a bare `impl Trait`, or one this does not
/// reach).
pub(crate) fn nameable_part(ty: &Type) -> Option<Type> {
    fn infer(ty: &mut Type) {
        match ty {
            Type::ImplTrait(_) => {
                *ty = Type::Infer(syn::TypeInfer {
                    underscore_token: Default::default(),
                })
            }
            Type::Path(path) => {
                if let Some(qself) = &mut path.qself {
                    infer(&mut qself.ty);
                }
                for segment in &mut path.path.segments {
                    if let PathArguments::AngleBracketed(args) = &mut segment.arguments {
                        for arg in &mut args.args {
                            if let GenericArgument::Type(ty) = arg {
                                infer(ty);
                            }
                        }
                    }
                }
            }
            Type::Reference(r) => infer(&mut r.elem),
            Type::Tuple(t) => t.elems.iter_mut().for_each(infer),
            Type::Paren(p) => infer(&mut p.elem),
            Type::Group(g) => infer(&mut g.elem),
            Type::Array(a) => infer(&mut a.elem),
            Type::Slice(s) => infer(&mut s.elem),
            Type::Ptr(p) => infer(&mut p.elem),
            _ => {}
        }
    }
    let mut named = ungroup(ty).clone();
    infer(&mut named);
    let nothing = matches!(named, Type::Infer(_)) || mentions_impl_trait(&named);
    (!nothing).then_some(named)
}

/// Whether a type is or holds an `impl Trait` (`impl Display`, `Option<impl Display>`),
/// which cannot be named anywhere in the function's new body.
pub(crate) fn mentions_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

/// The shape a return type's last path segment says.
pub(crate) fn shape_of_type(ty: &Type) -> Output {
    let Type::Path(path) = ungroup(ty) else {
        return Output::Value;
    };
    let Some(last) = path.path.segments.last() else {
        return Output::Value;
    };
    match last.ident.to_string().as_str() {
        "Option" => Output::Option,
        "Result" => match first_type_arg(&last.arguments) {
            Some(Type::Path(ok))
                if ok.path.segments.last().is_some_and(|s| s.ident == "Option") =>
            {
                Output::ResultOption
            }
            _ => Output::Result,
        },
        _ => Output::Value,
    }
}

/// Whether the function returns `()`: its new body then ends in a statement, as
/// clippy::pedantic asks.
pub(crate) fn returns_unit(sig: &syn::Signature) -> bool {
    match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(ungroup(ty), Type::Tuple(t) if t.elems.is_empty()),
    }
}

/// The type inside invisible groups (from `macro_rules!`) and parentheses.
fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        ty => ty,
    }
}

/// The first std `HashSet` in the part of `ty` that `pat` binds to key arguments: a name
/// not in `skipped` takes its whole type, `_` none; tuples, references and parentheses
/// are followed part by part, and any other pattern with a key argument takes `ty` whole.
fn keyed_hash_set<'a>(
    pat: &syn::Pat,
    ty: &'a Type,
    skipped: &[Ident],
    params: &[&Ident],
) -> Option<&'a syn::Path> {
    use syn::Pat;
    match (pat, ungroup(ty)) {
        (Pat::Wild(_), _) => None,
        (Pat::Ident(name), _) if skipped.contains(&name.ident) => None,
        (Pat::Ident(_), _) => hash_set_in(ty, params),
        (Pat::Paren(p), _) => keyed_hash_set(&p.pat, ty, skipped, params),
        (Pat::Reference(p), Type::Reference(r)) => keyed_hash_set(&p.pat, &r.elem, skipped, params),
        (Pat::Tuple(p), Type::Tuple(t)) if p.elems.len() == t.elems.len() => p
            .elems
            .iter()
            .zip(&t.elems)
            .find_map(|(p, ty)| keyed_hash_set(p, ty, skipped, params)),
        (pat, _) => {
            let mut bound = Vec::new();
            crate::item::bound_idents(pat, &mut bound);
            bound
                .iter()
                .any(|name| !skipped.contains(name))
                .then(|| hash_set_in(ty, params))
                .flatten()
        }
    }
}

/// The first std `HashSet` named in `ty` (`HashSet<u64>`, `&HashSet<String>`,
/// `Option<std::collections::HashSet<u8>>`, ...), if any: a path that is `HashSet` alone
/// (unless a type parameter of the function has that name) or ends in
/// `collections::HashSet`, `hash_set::HashSet` or `hashbrown::HashSet` (seeded at random
/// too).
fn hash_set_in<'a>(ty: &'a Type, params: &[&Ident]) -> Option<&'a syn::Path> {
    match ty {
        Type::Path(path) => {
            let segments = &path.path.segments;
            let names: Vec<&Ident> = segments.iter().map(|s| &s.ident).collect();
            let std_set = match names.as_slice() {
                [only] => *only == "HashSet" && !params.contains(only),
                [.., parent, last] => {
                    *last == "HashSet"
                        && (*parent == "collections"
                            || *parent == "hash_set"
                            || *parent == "hashbrown")
                }
                [] => false,
            };
            if std_set && path.qself.is_none() {
                return Some(&path.path);
            }
            segments.iter().find_map(|segment| {
                let PathArguments::AngleBracketed(args) = &segment.arguments else {
                    return None;
                };
                args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(ty) => hash_set_in(ty, params),
                    _ => None,
                })
            })
        }
        Type::Reference(r) => hash_set_in(&r.elem, params),
        Type::Group(g) => hash_set_in(&g.elem, params),
        Type::Paren(p) => hash_set_in(&p.elem, params),
        Type::Array(a) => hash_set_in(&a.elem, params),
        Type::Slice(s) => hash_set_in(&s.elem, params),
        Type::Tuple(t) => t.elems.iter().find_map(|ty| hash_set_in(ty, params)),
        _ => None,
    }
}

/// The first type argument of `Name<..>`: the `T` of `Result<T, E>`.
fn first_type_arg(args: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = args else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ungroup(ty)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_argument_is_read_only_as_a_variable() {
        let names = [Ident::new("repo", proc_macro2::Span::call_site())];
        let reads = |expr: &str| reads_any(expr.parse().unwrap(), &names).map(|i| i.to_string());
        for expr in [
            "repo.table()",
            "(repo).name",
            "f(&repo)",
            "format!(\"{}\", repo)",
            "if repo != x { a } else { b }",
            "&names[0..repo]",
        ] {
            assert_eq!(reads(expr).as_deref(), Some("repo"), "{expr}");
        }
        for expr in [
            "T::NAME",
            "Self::repo",
            "id.repo()",
            "repo::TABLE",
            "repo!()",
            "\"repo\"",
        ] {
            assert_eq!(reads(expr), None, "{expr}");
        }
    }
}
