//! ipBlock placeholders: pod addresses are known only once the lab runs, so case
//! files write CIDRs in terms of pods and the runner fills them in.
//!
//! | placeholder | expands to |
//! | --- | --- |
//! | `{ip:NS/POD}` | the pod's address |
//! | `{host-cidr:NS/POD}` | the address as `/32` (IPv4) or `/128` (IPv6) |
//! | `{subnet-of:NS/POD}/N` | the address masked to N bits, then `/N` |
//!
//! Upstream uses the pod's single primary IP; the runner uses its first IPv4.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use serde_json::Value;

use crate::model::ObjectRef;

/// Pod addresses the placeholders refer to.
pub type Addresses = BTreeMap<ObjectRef, IpAddr>;

/// Expands every placeholder in every string of `value` (keys are left alone).
pub fn expand_value(value: &mut Value, addresses: &Addresses) -> Result<(), String> {
    match value {
        Value::String(text) => *text = expand(text, addresses)?,
        Value::Array(items) => {
            for item in items {
                expand_value(item, addresses)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                expand_value(item, addresses)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Expands the placeholders in one string; text without any is returned as is.
pub fn expand(text: &str, addresses: &Addresses) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let Some((kind, pod, after)) = placeholder(tail) else {
            out.push('{');
            rest = &tail[1..];
            continue;
        };
        let address = lookup(pod, addresses)?;
        let (expansion, after) = match kind {
            "ip" => (address.to_string(), after),
            "host-cidr" => (IpNet::from(address).to_string(), after),
            _ => subnet(pod, address, after)?,
        };
        out.push_str(&expansion);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// `{subnet-of:POD}` is followed by `/N`: the network of `address` masked to N
/// bits, and the text after N.
fn subnet<'a>(pod: &str, address: IpAddr, after: &'a str) -> Result<(String, &'a str), String> {
    let body = after
        .strip_prefix('/')
        .ok_or_else(|| format!("{{subnet-of:{pod}}} must be followed by /PREFIX"))?;
    let end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let digits = &body[..end];
    let prefix: u8 = digits
        .parse()
        .map_err(|_| format!("{{subnet-of:{pod}}}/{digits}: not a prefix length"))?;
    let network = IpNet::new(address, prefix)
        .map_err(|_| format!("{{subnet-of:{pod}}}/{prefix}: prefix too long for {address}"))?
        .trunc();
    Ok((network.to_string(), &body[end..]))
}

/// `{KIND:NS/POD}` at the start of `text`: the kind, the pod and what follows.
fn placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let end = text.find('}')?;
    let (kind, pod) = text[1..end].split_once(':')?;
    ["ip", "host-cidr", "subnet-of"]
        .contains(&kind)
        .then_some((kind, pod, &text[end + 1..]))
}

fn lookup(pod: &str, addresses: &Addresses) -> Result<IpAddr, String> {
    addresses
        .iter()
        .find(|(key, _)| key.to_string() == pod)
        .map(|(_, ip)| *ip)
        .ok_or_else(|| format!("placeholder names {pod:?}, which is no lab pod with an address"))
}
