//! A light model of the annotated function: the signature is parsed, the body kept as raw
//! tokens (faster, and still works on half-typed code).

use proc_macro2::{Ident, TokenStream};
use syn::parse::{ParseStream, Parser};
use syn::{token, Attribute, FnArg, Pat, Signature, Visibility};

pub(crate) struct ItemFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) brace: token::Brace,
    pub(crate) body: TokenStream,
}

impl ItemFn {
    /// The item `#[attr]` (`cached`, `evicts`) is on, which must be a function with a body.
    pub(crate) fn parse_for(tokens: TokenStream, attr: &str) -> syn::Result<Self> {
        (|input: ParseStream<'_>| Self::parse_in(input, attr)).parse2(tokens)
    }

    fn parse_in(input: ParseStream<'_>, attr: &str) -> syn::Result<Self> {
        let mut attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let lookahead = input.fork();
        let _ = lookahead.parse::<Option<token::Const>>();
        let _ = lookahead.parse::<Option<token::Async>>();
        let _ = lookahead.parse::<Option<token::Unsafe>>();
        let _ = lookahead.parse::<Option<syn::Abi>>();
        if !lookahead.peek(token::Fn) {
            return Err(input.error(format!("#[{attr}] applies to `async fn` items only")));
        }
        let sig: Signature = input.parse()?;
        if input.peek(token::Semi) {
            return Err(input.error(format!(
                "#[{attr}] needs a function body; put it on the function in the `impl` block"
            )));
        }
        let content;
        let brace = syn::braced!(content in input);
        // A body's inner attributes (`#![allow(..)]`) apply to the function: they become
        // its outer ones, since the body is moved into a block where they could not stand.
        for mut inner in content.call(Attribute::parse_inner)? {
            inner.style = syn::AttrStyle::Outer;
            attrs.push(inner);
        }
        let body: TokenStream = content.parse()?;
        Ok(ItemFn {
            attrs,
            vis,
            sig,
            brace,
            body,
        })
    }

    /// Whether the function takes `self` in any form.
    pub(crate) fn has_receiver(&self) -> bool {
        self.sig.receiver().is_some()
    }

    /// Every identifier the arguments bind, in declaration order (patterns bind several).
    pub(crate) fn arg_idents(&self) -> Vec<Ident> {
        let mut idents = Vec::new();
        for input in &self.sig.inputs {
            if let FnArg::Typed(arg) = input {
                bound_idents(&arg.pat, &mut idents);
            }
        }
        idents
    }
}

/// Every identifier `pat` binds, in order.
pub(crate) fn bound_idents(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => out.push(p.ident.clone()),
        Pat::Tuple(p) => p.elems.iter().for_each(|p| bound_idents(p, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|p| bound_idents(p, out)),
        Pat::Struct(p) => p.fields.iter().for_each(|f| bound_idents(&f.pat, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|p| bound_idents(p, out)),
        Pat::Reference(p) => bound_idents(&p.pat, out),
        Pat::Paren(p) => bound_idents(&p.pat, out),
        Pat::Type(p) => bound_idents(&p.pat, out),
        Pat::Or(p) => {
            if let Some(first) = p.cases.first() {
                bound_idents(first, out);
            }
        }
        _ => {}
    }
}
