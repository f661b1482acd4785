//! Code generation of `#[cached]`: this module only writes tokens (the checks that
//! decide whether to generate are in `valid.rs`), and owns the shared pieces the helpers
//! reuse: the path of the runtime's hidden module, the companion's name, the rewritten
//! body.
//!
//! `#[cached]` emits two functions:
//!
//! - the function itself, whose new body builds its [`Call`] (the options as a `static`,
//!   the key material from the key arguments) and awaits one generic runtime call with the
//!   original body as `async move { .. }`. Redis, the codec, TTLs, null caching and
//!   fail-open all live in the runtime;
//! - a hidden companion, `__redcache_key_<name>`, with the same arguments, that builds the
//!   same `Call` with the same tokens and returns it. `invalidate!`, `put!`, `key!` and
//!   `#[evicts]` call the companion, so they derive exactly the key the attribute does.
//!
//! [`Call`]: https://docs.rs/redcache (redcache::__private::Call)

use crate::attr::{CachedArgs, Codec, Output, Seconds};
use crate::error::Errors;
use crate::item::ItemFn;
use crate::valid::{self, returns_unit, validate};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, ReturnType};

/// Entry point: the expanded function, or the function unchanged plus every error.
pub(crate) fn cached(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = match ItemFn::parse_for(input.clone(), "cached") {
        Ok(item) => item,
        Err(err) => return with_error(input, err),
    };
    let mut errors = Errors::default();
    let args = CachedArgs::parse(args, &mut errors);
    let shape = validate(&item, &args, &mut errors);
    match (errors.finish(), shape) {
        (Ok(()), Some(shape)) => generate(&item, &args, shape),
        (result, _) => {
            let mut out = original(&item);
            if let Err(err) = result {
                out.extend(err.to_compile_error());
            }
            out
        }
    }
}

/// What the user wrote, plus the error: the rest of their crate still type-checks.
pub(crate) fn with_error(mut input: TokenStream, err: syn::Error) -> TokenStream {
    input.extend(err.to_compile_error());
    input
}

/// `::redcache::__private`, the runtime's hidden module that generated code calls, with
/// every token at `span`: the one spelling of the path.
pub(crate) fn private_path(span: Span) -> TokenStream {
    quote_spanned!(span=> ::redcache::__private)
}

/// The companion of the function named `name`, spanned where the name was written.
pub(crate) fn companion_ident(name: &Ident) -> Ident {
    format_ident!("__redcache_key_{}", name, span = name.span())
}

/// The runtime entry point for a return shape.
fn runtime_fn(shape: Output) -> &'static str {
    match shape {
        Output::Value => "plain",
        Output::Option => "option",
        Output::Result => "result",
        Output::ResultOption => "result_option",
    }
}

/// The runtime's kind type for a return shape.
fn kind(shape: Output) -> &'static str {
    match shape {
        Output::Value => "Plain",
        Output::Option => "Opt",
        Output::Result => "Res",
        Output::ResultOption => "ResOpt",
    }
}

/// The function exactly as written (used when there are errors).
fn original(item: &ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        brace,
        body,
    } = item;
    let mut out = quote!(#(#attrs)* #vis #sig);
    brace.surround(&mut out, |out| body.to_tokens(out));
    out
}

/// The declared return type, and the span errors about it should point at.
pub(crate) fn return_type(sig: &syn::Signature) -> (TokenStream, Span) {
    match &sig.output {
        ReturnType::Default => (quote!(()), sig.ident.span()),
        ReturnType::Type(_, ty) => (ty.to_token_stream(), ty.span()),
    }
}

/// Whether `ty` is a `Result` after all, behind an alias (`type Answer = Result<u32, E>`):
/// an expression of `Option<fn(&ty) -> bool>`, which tells an `Err` (the runtime's
/// `ErrProbe`).
pub(crate) fn err_probe(ty: &TokenStream, private: &TokenStream) -> TokenStream {
    quote! {{
        #[allow(unused_imports)]
        use #private::{IsResult as _, NotResult as _};
        (&#private::ErrProbe::<#ty>::new()).errs()
    }}
}

/// `async move { body }` with a return edge typed with the declared return type: `?` in
/// the body converts into it, and type mismatches point at the user's signature.
/// An `impl Trait` cannot be named in the body (only `#[evicts]` takes one): the edge names
/// the rest of the type (`Result<_, E>`), or nothing for a bare `impl Trait`.
pub(crate) fn body_future(sig: &syn::Signature, body: &TokenStream) -> TokenStream {
    let (ret_ty, ret_span) = return_type(sig);
    let edge_ty = match &sig.output {
        ReturnType::Type(_, ty) if valid::mentions_impl_trait(ty) => {
            valid::nameable_part(ty).map(|ty| ty.to_token_stream())
        }
        _ => Some(ret_ty),
    };
    let typed_return = edge_ty.map(|ret_ty| {
        quote_spanned! {ret_span=>
            #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::empty_loop, clippy::let_unit_value, clippy::needless_return)]
            if false {
                let __cached_fake_return: #ret_ty = loop {};
                return __cached_fake_return;
            }
        }
    });
    quote_spanned! {ret_span=>
        async move {
            #typed_return
            #body
        }
    }
}

/// The function with its signature, attributes and visibility as written, and a new body:
/// `let <local> = <setup>;` then `<runtime_fn>(<local>, async move { body }).await`.
pub(crate) fn rewrite(
    item: &ItemFn,
    local: &str,
    setup: TokenStream,
    runtime_fn: &str,
) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        brace,
        body,
    } = item;
    let body_future = body_future(sig, body);
    let semi = returns_unit(sig).then(|| quote!(;));
    let ret_span = return_type(sig).1;
    let local = Ident::new(local, ret_span);
    let runtime_fn = Ident::new(runtime_fn, ret_span);
    let private = private_path(ret_span);
    let new_body = quote_spanned! {ret_span=>
        let #local = #setup;
        #private::#runtime_fn(#local, #body_future).await #semi
    };
    let mut out = quote!(#(#attrs)* #vis #sig);
    brace.surround(&mut out, |out| new_body.to_tokens(out));
    out
}

fn generate(item: &ItemFn, args: &CachedArgs, shape: Output) -> TokenStream {
    let call = call_expr(item, args, shape);
    let mut out = rewrite(item, "__cached_call", call.clone(), runtime_fn(shape));
    if args.in_trait_impl.is_none() {
        out.extend(companion(item, args, shape, &call));
    }
    out
}

/// The `codec` and `compress_above` fields of the spec. A codec or compression that the
/// build of redcache cannot write is a compile error at the option, by a constant assertion
/// on the runtime's features.
fn format(args: &CachedArgs, private: &TokenStream) -> (TokenStream, TokenStream) {
    let codec = match &args.codec {
        Some(((Codec::Json, span), _)) => {
            quote_spanned!(*span=> ::core::option::Option::Some(#private::Codec::Json))
        }
        Some(((Codec::MessagePack, span), _)) => quote_spanned! {*span=>
            {
                const _: () = ::core::assert!(
                    #private::MSGPACK,
                    "`codec = \"msgpack\"` needs redcache's `msgpack` feature \
                     (features = [\"msgpack\"] in Cargo.toml)",
                );
                ::core::option::Option::Some(#private::Codec::MessagePack)
            }
        },
        None => quote!(::core::option::Option::None),
    };
    let compress_above = match &args.compress_above {
        Some((bytes, span)) => {
            let bytes = *bytes as usize;
            quote_spanned! {*span=>
                {
                    const _: () = ::core::assert!(
                        #private::COMPRESSION,
                        "`compress_above` needs redcache's `compression` feature \
                         (features = [\"compression\"] in Cargo.toml)",
                    );
                    ::core::option::Option::Some(#bytes)
                }
            }
        }
        None => quote!(::core::option::Option::None),
    };
    (codec, compress_above)
}

/// `Call::<Kind, ReturnType>::new(&SPEC, key material)`: what a call of this function is
/// to the cache. Emitted in the function and in its companion: one derivation.
fn call_expr(item: &ItemFn, args: &CachedArgs, shape: Output) -> TokenStream {
    let sig = &item.sig;
    let fn_name = sig.ident.to_string();
    let prefix = match &args.prefix {
        Some((prefix, span)) => quote_spanned!(*span=> #prefix),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let (ttl, jitter) = (seconds(&args.ttl, Some("ttl")), seconds(&args.jitter, None));
    let null_ttl = seconds(&args.null_ttl, None);
    let (stale_ttl, stale_if_error) = (
        seconds(&args.stale_ttl, None),
        seconds(&args.stale_if_error, None),
    );
    let group = match &args.group {
        Some((group, _)) => quote!(::core::option::Option::Some(#group)),
        None => quote!(::core::option::Option::None),
    };
    let lock = match args.lock_ms.or(args.lock) {
        Some((ms, _)) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let early_refresh = match &args.early_refresh {
        Some((beta, _)) => quote!(::core::option::Option::Some(#beta)),
        None => quote!(::core::option::Option::None),
    };
    let key = key_material(item, args);
    let (ret_ty, ret_span) = return_type(sig);
    let kind = Ident::new(kind(shape), ret_span);
    let private = private_path(ret_span);
    let (codec, compress_above) = format(args, &private);
    let hooks = hooks(args, &kind, &ret_ty, &private);
    let tags = tags(args);
    // A plain value read off the return type's name may still be a `Result` (an alias of
    // one): its `Err` is never cached. Not when `output = "value"` says to cache it whole.
    let errs = match (shape, &args.output) {
        (Output::Value, None) => {
            let probe = err_probe(&ret_ty, &private);
            quote!(.errs(#probe))
        }
        _ => TokenStream::new(),
    };
    quote_spanned! {ret_span=>
        {
            static __CACHED_SPEC: #private::Spec = #private::Spec {
                prefix: #prefix,
                ttl: #ttl,
                jitter: #jitter,
                null_ttl: #null_ttl,
                group: #group,
                lock_ms: #lock,
                early_refresh: #early_refresh,
                stale_ttl: #stale_ttl,
                stale_if_error: #stale_if_error,
                codec: #codec,
                compress_above: #compress_above,
            };
            #private::Call::<#private::#kind, #ret_ty>::new(
                &__CACHED_SPEC,
                #key,
            )
            #hooks
            #errs
            #tags
            .local({
                // The local tier keeps the value if it is `Clone + Send + Sync + 'static`
                // (autoref specialization picks `ViaClone`), and otherwise reads Redis.
                #[allow(unused_imports)]
                use #private::{NotLocal as _, ViaClone as _};
                (&#private::Probe::<#private::#kind, #ret_ty>::new()).local_ops()
            })
        }
    }
}

/// A number of seconds of the `Spec`. A constant's expression is evaluated by the compiler
/// where the `Spec` is built, as a `u64` (a wrong type is reported at the expression), and
/// there checked to be above 0 if the option `positive` names must be.
fn seconds(value: &Option<(Seconds, Span)>, positive: Option<&str>) -> TokenStream {
    match value {
        Some((Seconds::Lit(v), _)) => quote!(::core::option::Option::Some(#v)),
        Some((Seconds::Const(expr), _)) => {
            let check = positive.map(|positive| {
                let message = format!(
                    "`{positive}` must be greater than 0: every entry expires (leave the \
                     attribute off to not cache)"
                );
                quote_spanned!(expr.span()=> ::core::assert!(__cached_seconds > 0, #message);)
            });
            quote_spanned! {expr.span()=>
                ::core::option::Option::Some({
                    let __cached_seconds: u64 = #expr;
                    #check
                    __cached_seconds
                })
            }
        }
        None => quote!(::core::option::Option::None),
    }
}

/// `.ttl_with(..)` and `.cache_if(..)` for the options that take a function of the value:
/// closures from the return type to the stored value (if any) through the user's
/// function, coercible to function pointers (they capture nothing), so a wrong signature
/// is reported at the user's expression.
fn hooks(
    args: &CachedArgs,
    kind: &Ident,
    ret_ty: &TokenStream,
    private: &TokenStream,
) -> TokenStream {
    let mut out = TokenStream::new();
    let value_ty = quote!(<#private::#kind as #private::Holds<#ret_ty>>::Value);
    let value = quote!(#private::stored_value::<#private::#kind, #ret_ty>(__cached_out));
    if let Some((f, span)) = &args.ttl_fn {
        // Coerced to the expected function pointer at the user's expression, so a wrong
        // signature is reported there.
        let typed = quote_spanned! {f.span()=>
            #[allow(clippy::type_complexity)]
            let __cached_f: fn(&#value_ty) -> ::core::time::Duration = #f;
        };
        out.extend(quote_spanned! {*span=>
            .ttl_with(|__cached_out: &#ret_ty| { #typed #value.map(__cached_f) })
        });
    }
    if let Some((f, span)) = &args.cache_if {
        let typed = quote_spanned! {f.span()=>
            #[allow(clippy::type_complexity)]
            let __cached_f: fn(&#value_ty) -> bool = #f;
        };
        out.extend(quote_spanned! {*span=>
            .cache_if(|__cached_out: &#ret_ty| { #typed #value.is_none_or(__cached_f) })
        });
    }
    out
}

/// `.tags(..)`: each tag's text with its placeholders' arguments formatted in (`Display`),
/// spanned at the tag's literal so that an argument that cannot be shown is reported there.
fn tags(args: &CachedArgs) -> TokenStream {
    let Some((tags, span)) = &args.tags else {
        return TokenStream::new();
    };
    let built = tags.iter().map(tag_text);
    quote_spanned!(*span=> .tags([#(#built),*]))
}

/// The `String` of one tag: its text with its placeholders' arguments formatted in.
pub(crate) fn tag_text(tag: &crate::attr::Tag) -> TokenStream {
    let mut format = String::new();
    let mut values = Vec::new();
    for part in &tag.parts {
        match part {
            crate::attr::TagPart::Text(text) => format.push_str(text),
            crate::attr::TagPart::Arg(name) => {
                format.push_str("{}");
                values.push(name);
            }
        }
    }
    let private = private_path(tag.lit.span());
    if values.is_empty() {
        return quote_spanned!(tag.lit.span()=> #private::owned(#format));
    }
    quote_spanned!(tag.lit.span()=> #private::format!(#format #(, #values)*))
}

/// The hidden companion: same generics and arguments (the receiver as `&self`; an argument
/// that is entirely skipped takes anything, so helpers may pass `_`), returning the call.
fn companion(item: &ItemFn, args: &CachedArgs, shape: Output, call: &TokenStream) -> TokenStream {
    let sig = &item.sig;
    let vis = &item.vis;
    let name = companion_ident(&sig.ident);
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let skipped: &[Ident] = args.skip.as_ref().map_or(&[], |(s, _)| s);
    let inputs = sig.inputs.iter().map(|input| match input {
        FnArg::Receiver(_) => quote!(&self),
        FnArg::Typed(arg) => {
            let mut bound = Vec::new();
            crate::item::bound_idents(&arg.pat, &mut bound);
            let all_skipped = !bound.is_empty() && bound.iter().all(|i| skipped.contains(i));
            if all_skipped && args.key.is_none() {
                quote!(_: impl ::core::marker::Sized)
            } else {
                let (pat, ty) = (&arg.pat, &arg.ty);
                quote!(#pat: #ty)
            }
        }
    });
    let (ret_ty, _) = return_type(sig);
    let kind = Ident::new(kind(shape), Span::call_site());
    let private = private_path(Span::call_site());
    let doc = format!(
        "The cache key of a call of [`{}`]: what `redcache::invalidate!`, `put!`, `key!` \
         and `#[evicts]` call. Generated by `#[redcache::cached]`.",
        sig.ident
    );
    // The companion exists where the function does (`#[cfg(..)]` written after `#[cached]`).
    let cfgs = item.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_snake_case, unused_variables, unused_mut, clippy::all, clippy::pedantic)]
        #vis fn #name #generics (#(#inputs),*)
            -> #private::Call<#private::#kind, #ret_ty>
            #where_clause
        {
            #call
        }
    }
}

/// A statement that compiles only if `value` (a reference) is not to a `HashSet`, whatever
/// its type is called (the runtime's `SetProbe`), with the error at `span`.
fn refuse_hash_set(private: &TokenStream, value: TokenStream, span: Span) -> TokenStream {
    quote_spanned! {span=>
        {
            #[allow(unused_imports)]
            use #private::{IsHashSet as _, NotHashSet as _};
            #private::ordered((&#private::SetProbe::of(#value)).order());
        }
    }
}

/// The key material: the key arguments (or the `key` expression), then the names of the
/// generic types, then the enclosing impl, so instances and impls never share entries.
fn key_material(item: &ItemFn, args: &CachedArgs) -> TokenStream {
    let private = private_path(Span::call_site());
    let mut key = match &args.key {
        Some((expr, _)) => {
            let span = expr.span();
            let private = private_path(span);
            // A `HashSet` is refused there as in an argument: the expression's value, or
            // an element of a tuple written there.
            let probe =
                |part: TokenStream, span: Span| refuse_hash_set(&private_path(span), part, span);
            let probes: Vec<TokenStream> = match expr {
                syn::Expr::Tuple(tuple) => (0..tuple.elems.len())
                    .zip(&tuple.elems)
                    .map(|(i, elem)| {
                        let i = syn::Index::from(i);
                        probe(quote!(&__redcache_key.#i), elem.span())
                    })
                    .collect(),
                _ => vec![probe(quote!(__redcache_key), span)],
            };
            // (A `match`, whose scrutinee's temporaries live as long as the call's.)
            quote_spanned! {span=>
                match &(#expr) {
                    __redcache_key => {
                        #(#probes)*
                        #private::KeyArgs::expr(__redcache_key)
                    }
                }
            }
        }
        None => {
            let skipped: &[Ident] = args.skip.as_ref().map_or(&[], |(s, _)| s);
            let mut key = quote!(#private::KeyArgs::new());
            for ident in item.arg_idents() {
                if !skipped.contains(&ident) {
                    // A `HashSet` the written type does not show (an alias) is refused here.
                    let refused = refuse_hash_set(&private, quote!(&#ident), ident.span());
                    key.extend(quote_spanned! {ident.span()=>
                        .arg({
                            #refused
                            &#ident
                        })
                    });
                }
            }
            key
        }
    };
    let type_key = args.type_key.as_ref().map(|(expr, _)| expr);
    for param in &item.sig.generics.params {
        match param {
            // With `type_key`, that name stands for the type parameters.
            GenericParam::Type(_) if type_key.is_some() => {}
            GenericParam::Type(t) => {
                let t = &t.ident;
                key.extend(quote!(.ty(#private::type_name::<#t>())));
            }
            GenericParam::Const(c) => {
                let c = &c.ident;
                key.extend(quote!(.arg(&#c)));
            }
            GenericParam::Lifetime(_) => {}
        }
    }
    // `type_key`: the name the user wrote, in place of every compiler-written type name.
    if let Some(expr) = type_key {
        let span = expr.span();
        let private = private_path(span);
        return quote_spanned! {span=>
            #key.pinned(#private::type_key(&(#expr)))
        };
    }
    // The item the function is defined in, when it is not a module: an impl's self type
    // and trait (generic arguments included), so same-named functions of different impls
    // never share entries. The runtime reads it from the type name of a closure written
    // here, in the function (and in its companion, which sits beside it).
    quote! {
        #private::within(#key, &|| (), ::core::module_path!())
    }
}
