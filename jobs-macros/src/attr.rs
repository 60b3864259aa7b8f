//! Parsing and validation of `#[job(...)]`.

use syn::{DeriveInput, LitStr};

/// The options given in `#[job(...)]`, validated.
pub(crate) struct JobAttrs {
    pub(crate) queue: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
}

pub(crate) fn parse(input: &DeriveInput) -> syn::Result<JobAttrs> {
    let mut attrs = JobAttrs {
        queue: None,
        name: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("job")) {
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let slot = match key.as_str() {
                "queue" => &mut attrs.queue,
                "name" => &mut attrs.name,
                _ => {
                    return Err(
                        meta.error("unknown `job` attribute key; expected `queue` or `name`")
                    )
                }
            };
            if slot.is_some() {
                return Err(meta.error(format!("`{key}` is given twice")));
            }
            let value: LitStr = meta.value()?.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("`{key}` takes a string literal, as in `{key} = \"...\"`"),
                )
            })?;
            validate(&key, &value)?;
            *slot = Some(value);
            Ok(())
        })?;
    }
    Ok(attrs)
}

fn validate(key: &str, value: &LitStr) -> syn::Result<()> {
    let text = value.value();
    let problem = match key {
        "queue" if text.is_empty() => Some("the queue name cannot be empty"),
        "queue" if text.len() > 250 => Some("the queue name is longer than 250 bytes"),
        "queue" if text.starts_with("amq.") => {
            Some("queue names starting with `amq.` are reserved by RabbitMQ")
        }
        "name" if text.is_empty() => Some("the job name cannot be empty"),
        "name" if text.len() > 255 => Some("the job name is longer than 255 bytes"),
        _ => None,
    };
    match problem {
        Some(message) => Err(syn::Error::new_spanned(value, message)),
        None => Ok(()),
    }
}
