//! The call-shaped helpers (`invalidate!`, `put!`, `key!`) and `#[evicts]`: each turns a
//! call of a `#[cached]` function into a call of its companion, which returns the exact
//! `Call` the attribute builds.

use crate::attr::check_group;
use crate::error::Errors;
use crate::expand::{self, companion_ident, private_path};
use crate::item::ItemFn;
use crate::valid;
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, Token};

/// How each helper is written, for error messages.
const USAGE: &str = "write the call as you would call the function: `f(42)`, \
                     `service.get_user(42)` or `Service::get_user(&service, 42)`; pass `_` \
                     for a `skip`ped argument";

/// `f(args)` -> `__redcache_key_f(args)`; `obj.m(args)` -> `obj.__redcache_key_m(args)`.
/// `macro_name` is how the user wrote the helper: `invalidate!`, `#[evicts]`.
fn companion_call(expr: &Expr, macro_name: &str) -> syn::Result<TokenStream> {
    match expr {
        Expr::Call(call) => {
            let Expr::Path(path) = &*call.func else {
                return Err(not_a_call(expr, macro_name));
            };
            let mut path = path.clone();
            let Some(last) = path.path.segments.last_mut() else {
                return Err(not_a_call(expr, macro_name));
            };
            last.ident = companion_ident(&last.ident);
            let args = call.args.iter().map(argument);
            Ok(quote!(#path(#(#args),*)))
        }
        Expr::MethodCall(call) => {
            let receiver = &call.receiver;
            let method = companion_ident(&call.method);
            let turbofish = &call.turbofish;
            let args = call.args.iter().map(argument);
            Ok(quote!(#receiver.#method #turbofish (#(#args),*)))
        }
        Expr::Await(inner) => Err(syn::Error::new_spanned(
            expr,
            format_args!(
                "`{macro_name}` takes the call without `.await`: `{}`",
                inner.base.to_token_stream()
            ),
        )),
        Expr::Paren(inner) => companion_call(&inner.expr, macro_name),
        // The invisible group `macro_rules!` puts around a substituted `$call:expr`.
        Expr::Group(inner) => companion_call(&inner.expr, macro_name),
        _ => Err(not_a_call(expr, macro_name)),
    }
}

fn not_a_call(expr: &Expr, macro_name: &str) -> syn::Error {
    syn::Error::new_spanned(
        expr,
        format_args!("`{macro_name}` takes a call of a `#[cached]` function; {USAGE}"),
    )
}

/// An argument as passed to the companion: `_` (for a skipped argument) becomes a marker
/// that is no key argument (not `Serialize`), so `_` for an argument in the key is a
/// compile error, not a `null` in the key.
fn argument(arg: &Expr) -> TokenStream {
    match arg {
        Expr::Infer(infer) => {
            let private = private_path(infer.span());
            quote_spanned!(infer.span()=> #private::Skipped)
        }
        arg => arg.to_token_stream(),
    }
}

/// `invalidate!(f(args))`, `key!(f(args))`: `runtime_fn(companion call)`.
pub(crate) fn call_helper(input: TokenStream, macro_name: &str, runtime_fn: &str) -> TokenStream {
    let result = syn::parse2::<Expr>(input)
        .and_then(|expr| companion_call(&expr, &format!("{macro_name}!")));
    match result {
        Ok(call) => {
            let runtime_fn = syn::Ident::new(runtime_fn, Span::call_site());
            let private = private_path(Span::call_site());
            quote!(#private::#runtime_fn(#call))
        }
        Err(err) => err.to_compile_error(),
    }
}

/// `put!(f(args), value)`.
pub(crate) fn put(input: TokenStream) -> TokenStream {
    let parsed = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(input);
    let result = parsed.and_then(|exprs| {
        let mut it = exprs.iter();
        match (it.next(), it.next(), it.next()) {
            (Some(call), Some(value), None) => {
                let call = companion_call(call, "put!")?;
                let private = private_path(Span::call_site());
                Ok(quote!(#private::put(#call, #value)))
            }
            _ => Err(syn::Error::new_spanned(
                &exprs,
                "`put!` takes a call and the value it returns: \
                 `put!(get_user(42), Some(user))`",
            )),
        }
    });
    result.unwrap_or_else(|err| err.to_compile_error())
}

/// One argument of `#[evicts(..)]`: a call, `group = ".."` or `tag = ".."`.
enum Target {
    Call(Expr),
    Group(syn::LitStr),
    /// A format string over the function's arguments (`"user:{id}"`).
    Tag(syn::LitStr),
}

impl Parse for Target {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(syn::Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let name: syn::Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            if name != "group" && name != "tag" {
                return Err(syn::Error::new(
                    name.span(),
                    format_args!(
                        "unknown option `{name}`; #[evicts] takes calls of `#[cached]` \
                         functions, `group = \"..\"` and `tag = \"..\"`"
                    ),
                ));
            }
            return match crate::attr::ungroup(value) {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(lit), ..
                }) if name == "group" => Ok(Target::Group(lit)),
                Expr::Lit(ExprLit {
                    lit: Lit::Str(lit), ..
                }) if !lit.value().is_empty() => Ok(Target::Tag(lit)),
                other if name == "group" => Err(syn::Error::new_spanned(
                    other,
                    "`group` must be a string literal: `group = \"products\"`",
                )),
                other => Err(syn::Error::new_spanned(
                    other,
                    "`tag` must be a non-empty string literal, with `{argument}` placeholders: \
                     `tag = \"user:{id}\"`",
                )),
            };
        }
        Ok(Target::Call(input.parse()?))
    }
}

/// `#[evicts(targets..)]` on an async fn.
pub(crate) fn evicts(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = match ItemFn::parse_for(input.clone(), "evicts") {
        Ok(item) => item,
        Err(err) => return expand::with_error(input, err),
    };
    let mut errors = Errors::default();
    valid::check_async(&item.sig, "evicts", &mut errors);
    let targets = match Punctuated::<Target, Token![,]>::parse_terminated.parse2(args.clone()) {
        Ok(targets) => targets,
        Err(err) => {
            errors.push(err);
            Punctuated::new()
        }
    };
    if targets.is_empty() && errors.is_empty() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "#[evicts] needs what to evict: `#[evicts(get_user(id))]`, \
             `#[evicts(group = \"users\")]`, or several",
        ));
    }
    let private = private_path(Span::call_site());
    let mut evict = quote!(#private::Evict::new());
    for target in &targets {
        match target {
            Target::Call(expr) => match companion_call(expr, "#[evicts]") {
                Ok(call) => evict.extend(quote!(.call(#call))),
                Err(err) => errors.push(err),
            },
            Target::Group(lit) => {
                if let Some(group) = check_group(lit, &mut errors) {
                    evict.extend(quote!(.group(#group)));
                }
            }
            // Checked and built as `#[cached(tags(..))]`'s, from the arguments, before the
            // body runs (a name that is not in scope is reported at the literal).
            Target::Tag(lit) => {
                if let Some(tag) = crate::attr::parse_tag(lit, &mut errors) {
                    let text = expand::tag_text(&tag);
                    evict.extend(quote_spanned!(lit.span()=> .tag(#text)));
                }
            }
        }
    }
    if let Err(err) = errors.finish() {
        return expand::with_error(input, err);
    }
    let (setup, runtime_fn) = match &item.sig.output {
        syn::ReturnType::Type(_, ty)
            if matches!(
                valid::shape_of_type(ty),
                crate::attr::Output::Result | crate::attr::Output::ResultOption
            ) =>
        {
            (evict, "evict_on_ok")
        }
        // A type that does not read as a `Result` may still be an alias of one: its `Err`
        // evicts nothing either (asked of the type, as `#[cached]` does). An `impl Trait`
        // is no `Result`, and cannot be asked.
        syn::ReturnType::Type(_, ty) if !valid::mentions_impl_trait(ty) => {
            let errs = expand::err_probe(&ty.to_token_stream(), &private);
            (quote!((#evict, #errs)), "evict_after")
        }
        _ => (
            quote!((#evict, ::core::option::Option::None)),
            "evict_after",
        ),
    };
    expand::rewrite(&item, "__cached_evict", setup, runtime_fn)
}
