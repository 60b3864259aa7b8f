//! Code generation for `#[derive(Job)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
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
    let name = attrs.name.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let queue = attrs.queue.unwrap_or_else(|| LitStr::new("default", ident.span()));
    // Spanned at the type's name, so that a missing `Perform` points there.
    let constructor = if attrs.rpc {
        quote! { new_rpc }
    } else if attrs.step {
        quote! { new_step }
    } else {
        quote! { new }
    };
    // What a chain's step takes and hands on; calls and exchange-routed jobs are no steps.
    let follows = if attrs.step {
        Some(quote_spanned! {ident.span()=>
            impl ::jobs_core::__private::Follows<<#ident as ::jobs_core::Step>::Input> for #ident {
                type Output = <#ident as ::jobs_core::Step>::Output;
            }
        })
    } else if !attrs.rpc && attrs.exchange.is_none() {
        Some(quote! {
            impl ::jobs_core::__private::Follows<()> for #ident {
                type Output = ();
            }
        })
    } else {
        None
    };
    let registration = quote_spanned! {ident.span()=>
        fn __registration() -> ::core::option::Option<&'static ::jobs_core::__private::Registration> {
            static REGISTRATION: ::jobs_core::__private::Registration =
                ::jobs_core::__private::Registration::#constructor::<#ident>();
            ::core::option::Option::Some(&REGISTRATION)
        }
    };
    let max_attempts = attrs.max_attempts.map(|n| quote! { const MAX_ATTEMPTS: u32 = #n; });
    let blocking = attrs.blocking.then(|| quote! { const BLOCKING: bool = true; });
    let max_running = attrs
        .max_running
        .map(|n| quote! { const MAX_RUNNING: ::core::option::Option<u16> = ::core::option::Option::Some(#n); });
    let rate = attrs.rate.map(|(count, per, span)| {
        quote_spanned! {span=>
            const RATE: ::core::option::Option<::jobs_core::Rate> = ::core::option::Option::Some(
                ::jobs_core::Rate::new(#count, ::core::time::Duration::from_millis(#per)),
            );
        }
    });
    let burst =
        attrs.burst.map(|n| quote! { const BURST: ::core::option::Option<u32> = ::core::option::Option::Some(#n); });
    let rate_key = attrs.rate_key.map(
        |key| quote! { const RATE_KEY: ::core::option::Option<&'static str> = ::core::option::Option::Some(#key); },
    );
    let unique_for = attrs.unique_for.map(|(millis, span)| {
        quote_spanned! {span=>
            const UNIQUE_FOR: ::core::option::Option<::core::time::Duration> =
                ::core::option::Option::Some(::core::time::Duration::from_millis(#millis));
        }
    });
    let unique_key = attrs.unique_key.map(
        |key| quote! { const UNIQUE_KEY: ::core::option::Option<&'static str> = ::core::option::Option::Some(#key); },
    );
    let unique_until = attrs
        .unique_window
        .filter(|until| until.value() == "window")
        .map(|_| quote! { const UNIQUE_UNTIL: ::jobs_core::UniqueUntil = ::jobs_core::UniqueUntil::Window; });
    let expires_in = attrs.expires_in.map(|(millis, span)| {
        quote_spanned! {span=>
            const EXPIRES_IN: ::core::option::Option<::core::time::Duration> =
                ::core::option::Option::Some(::core::time::Duration::from_millis(#millis));
        }
    });
    // A default priority needs a queue that takes priorities.
    let priorities = (attrs.priorities || attrs.priority.is_some()).then(|| quote! { const PRIORITIES: bool = true; });
    let priority = attrs.priority.map(|n| {
        quote_spanned! {n.span()=> const PRIORITY: ::core::option::Option<u8> = ::core::option::Option::Some(#n); }
    });
    let ordered_by = attrs.ordered_by.map(
        |key| quote! { const ORDERED_BY: ::core::option::Option<&'static str> = ::core::option::Option::Some(#key); },
    );
    let shards = attrs.shards.map(|n| quote_spanned! {n.span()=> const SHARDS: u16 = #n; });
    let fields = attrs.fields.as_ref().filter(|f| !f.is_empty()).map(|names| {
        quote! { const FIELDS: &'static [&'static str] = &[#(#names),*]; }
    });
    let timeout = attrs.timeout.map(|(millis, span)| {
        quote_spanned! {span=> const TIMEOUT: ::core::time::Duration = ::core::time::Duration::from_millis(#millis); }
    });
    let backoff = attrs.backoff.map(|path| {
        quote_spanned! {path.span()=>
            fn backoff(attempt: u32) -> ::core::time::Duration {
                let backoff: fn(u32) -> ::core::time::Duration = #path;
                backoff(attempt)
            }
        }
    });
    let route = attrs.exchange.map(|exchange| {
        let kind = match attrs.exchange_type.map(|k| k.value()).as_deref() {
            Some("direct") => quote! { Direct },
            Some("topic") => quote! { Topic },
            _ => quote! { Fanout },
        };
        quote! {
            const ROUTE: ::jobs_core::__private::Route = ::jobs_core::__private::Route::Exchange {
                name: #exchange,
                kind: ::jobs_core::__private::ExchangeKind::#kind,
            };
        }
    });
    Ok(quote! {
        impl ::jobs_core::Job for #ident {
            const NAME: &'static str = #name;
            const QUEUE: &'static str = #queue;
            #route
            #max_attempts
            #blocking
            #max_running
            #rate
            #burst
            #rate_key
            #unique_for
            #unique_key
            #unique_until
            #expires_in
            #priorities
            #priority
            #ordered_by
            #shards
            #fields
            #timeout
            #backoff
            #registration
        }
        #follows
        ::jobs_core::__private::inventory::submit! {
            ::jobs_core::__private::Linked(<#ident as ::jobs_core::Job>::__registration)
        }
    })
}
