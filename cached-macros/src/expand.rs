//! Code generation: the only module that writes tokens.
//!
//! The new body computes the key material from the key arguments, then awaits one generic
//! runtime call with the original body as `async move { .. }`. Redis, the codec, TTLs,
//! null caching and fail-open all live in the runtime.

use crate::attr::{CachedArgs, Output};
use crate::error::Errors;
use crate::item::ItemFn;
use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{GenericArgument, GenericParam, PathArguments, ReturnType, Type};

/// Entry point: the expanded function, or the function unchanged plus every error.
pub(crate) fn cached(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(err) => {
            // Keep what the user wrote so the rest of their crate still type-checks.
            let mut out = input;
            out.extend(err.to_compile_error());
            return out;
        }
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

/// The runtime function for a return shape.
fn runtime_fn(shape: Output) -> &'static str {
    match shape {
        Output::Value => "plain",
        Output::Option => "option",
        Output::Result => "result",
        Output::ResultOption => "result_option",
    }
}

/// Checks that need both the options and the function.
fn validate(item: &ItemFn, args: &CachedArgs, errors: &mut Errors) -> Option<Output> {
    let sig = &item.sig;
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, "#[cached] cannot be used on a `const fn`");
    }
    if sig.asyncness.is_none() {
        let mut message = String::from(
            "#[cached] works on `async fn` only: the cache is asynchronous; add `async`",
        );
        if let ReturnType::Type(_, ty) = &sig.output {
            let text = ty.to_token_stream().to_string();
            if text.contains("Pin") && text.contains("Future") {
                message.push_str(
                    " (with #[async_trait], put #[cached] on a native `async fn` in the \
                     trait impl instead: Rust supports them since 1.75)",
                );
            }
        }
        errors.spanned(sig.fn_token, message);
    }
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
                let names: Vec<String> = idents.iter().map(|i| format!("`{i}`")).collect();
                let known = if names.is_empty() {
                    "the function has no arguments".to_string()
                } else {
                    format!("the arguments are {}", names.join(", "))
                };
                errors.spanned(
                    name,
                    format_args!("`skip({name})`: no argument named `{name}`; {known}"),
                );
            }
        }
    }
    let shape = shape_of(&sig.output, errors)?;
    Some(args.output.map_or(shape, |(output, _)| output))
}

fn shape_of(output: &ReturnType, errors: &mut Errors) -> Option<Output> {
    let ty = match output {
        ReturnType::Default => return Some(Output::Value),
        ReturnType::Type(_, ty) => ungroup(ty),
    };
    match ty {
        Type::ImplTrait(_) => {
            errors.spanned(
                ty,
                "#[cached] cannot store an `impl Trait` return: name the type, which must be \
                 `Serialize + DeserializeOwned`",
            );
            None
        }
        Type::Path(path) => {
            let Some(last) = path.path.segments.last() else {
                return Some(Output::Value);
            };
            Some(match last.ident.to_string().as_str() {
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
            })
        }
        _ => Some(Output::Value),
    }
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        ty => ty,
    }
}

fn first_type_arg(args: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = args else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ungroup(ty)),
        _ => None,
    })
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

fn generate(item: &ItemFn, args: &CachedArgs, shape: Output) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        brace,
        body,
    } = item;
    let fn_name = sig.ident.to_string();

    let prefix = match &args.prefix {
        Some((prefix, span)) => quote_spanned!(*span=> #prefix),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let opt = |value: &Option<(u64, Span)>| match value {
        Some((v, _)) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    let (ttl, jitter, null_ttl) = (opt(&args.ttl), opt(&args.jitter), opt(&args.null_ttl));

    let key = key_material(item, args);

    let ret_ty = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => ty.to_token_stream(),
    };
    let ret_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    // A return edge typed with the declared return type: `?` in the body converts into it,
    // and type mismatches point at the user's signature.
    let fake_return = quote_spanned! {ret_span=>
        #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::empty_loop, clippy::let_unit_value, clippy::needless_return)]
        if false {
            let __cached_fake_return: #ret_ty = loop {};
            return __cached_fake_return;
        }
    };
    let runtime_fn = Ident::new(runtime_fn(shape), ret_span);
    let call = quote_spanned! {ret_span=>
        ::redcache::__private::#runtime_fn(&__CACHED_SPEC, __cached_key, async move {
            #fake_return
            #body
        }).await
    };
    // A function returning nothing ends in a statement, as clippy::pedantic asks.
    let returns_unit = match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(ungroup(ty), Type::Tuple(t) if t.elems.is_empty()),
    };
    let semi = returns_unit.then(|| quote!(;));
    let new_body = quote! {
        static __CACHED_SPEC: ::redcache::__private::Spec = ::redcache::__private::Spec {
            prefix: #prefix,
            ttl: #ttl,
            jitter: #jitter,
            null_ttl: #null_ttl,
        };
        let __cached_key = #key;
        #call #semi
    };
    let mut out = quote!(#(#attrs)* #vis #sig);
    brace.surround(&mut out, |out| new_body.to_tokens(out));
    out
}

/// The key material: the key arguments (or the `key` expression), then the names of the
/// generic types and of `Self`, so instances never share entries.
fn key_material(item: &ItemFn, args: &CachedArgs) -> TokenStream {
    let mut key = match &args.key {
        Some((expr, _)) => {
            quote_spanned!(expr.span()=> ::redcache::__private::KeyArgs::expr(&(#expr)))
        }
        None => {
            let skipped: &[Ident] = args.skip.as_ref().map_or(&[], |(s, _)| s);
            let mut key = quote!(::redcache::__private::KeyArgs::new());
            for ident in item.arg_idents() {
                if !skipped.contains(&ident) {
                    key.extend(quote_spanned!(ident.span()=> .arg(&#ident)));
                }
            }
            key
        }
    };
    for param in &item.sig.generics.params {
        match param {
            GenericParam::Type(t) => {
                let t = &t.ident;
                key.extend(quote!(.ty(::redcache::__private::type_name::<#t>())));
            }
            GenericParam::Const(c) => {
                let c = &c.ident;
                key.extend(quote!(.arg(&#c)));
            }
            GenericParam::Lifetime(_) => {}
        }
    }
    if item.has_receiver() {
        key.extend(quote!(.ty(::redcache::__private::type_name::<Self>())));
    }
    key
}
