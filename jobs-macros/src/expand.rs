//! Code generation for `#[derive(Job)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, LitStr};

use crate::attr;

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    if let Data::Union(u) = &input.data {
        return Err(syn::Error::new_spanned(
            u.union_token,
            "`Job` cannot be derived for a union; use a struct or an enum",
        ));
    }
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "`Job` cannot be derived for a generic type: each job type needs one name and one registration",
        ));
    }
    let ident = &input.ident;
    let attrs = match attr::parse(input) {
        Ok(attrs) => attrs,
        // One mistake, one message: a plain impl keeps the user's other uses of
        // the type from failing too.
        Err(err) => {
            let err = err.to_compile_error();
            let name = ident.to_string();
            return Ok(quote! {
                #err
                impl ::jobs_core::Job for #ident {
                    const NAME: &'static str = #name;
                    const QUEUE: &'static str = "default";
                }
            });
        }
    };
    let name = attrs
        .name
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let queue = attrs
        .queue
        .unwrap_or_else(|| LitStr::new("default", ident.span()));
    // Spanned at the type's name, so that a missing `Perform` points there.
    let registration = quote_spanned! {ident.span()=>
        ::jobs_core::__private::inventory::submit! {
            ::jobs_core::__private::Registration::new::<#ident>()
        }
    };
    Ok(quote! {
        impl ::jobs_core::Job for #ident {
            const NAME: &'static str = #name;
            const QUEUE: &'static str = #queue;
        }
        #registration
    })
}
