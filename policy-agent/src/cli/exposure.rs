//! `policy-agent exposure`: for each pod and port, what can reach it from
//! outside the cluster, from any namespace, from its own namespace, and which
//! pods not created yet would (`policy::exposure`), as a table or JSON.

use std::collections::BTreeMap;

use clap::Args;

use super::{parse_port_protocol, Input, Output};
use crate::{
    model::Protocol,
    policy::exposure::{exposure, Exposure, NewPods},
};

/// Arguments of `exposure`.
#[derive(Args)]
pub struct ExposureArgs {
    #[command(flatten)]
    manifests: Input,
    /// The ports to judge on every pod (repeatable); default: each pod's declared
    /// TCP and UDP containerPorts.
    #[arg(long = "probe", value_name = "PORT/PROTO", value_parser = parse_port_protocol)]
    probes: Vec<(u16, Protocol)>,
    /// Table or JSON (a list of
    /// `{"pod","port","protocol","outside","any_namespace","own_namespace","new_pods"}`).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Runs `exposure`.
pub fn run(args: &ExposureArgs) -> anyhow::Result<()> {
    let state = args.manifests.load()?;
    let all = exposure(&state, &args.probes);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&all)?),
        Output::Table => print!("{}", to_table(&all)),
    }
    Ok(())
}

fn pairs(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// `pods labelled app=web in namespace prod`, and the like.
fn describe(new: &NewPods) -> String {
    let pods = if new.pod_labels.is_empty() {
        "any pod".to_string()
    } else {
        format!("pods labelled {}", pairs(&new.pod_labels))
    };
    let namespaces = match (&new.namespace, new.namespace_labels.is_empty()) {
        (Some(name), _) => format!("in namespace {name}"),
        (None, true) => "in any namespace".to_string(),
        (None, false) => format!("in namespaces labelled {}", pairs(&new.namespace_labels)),
    };
    format!("{pods} {namespaces}")
}

fn yes(reached: bool) -> &'static str {
    if reached {
        "yes"
    } else {
        "no"
    }
}

/// Each pod and port, then what reaches it, one line each.
fn to_table(all: &[Exposure]) -> String {
    let mut out = String::new();
    for e in all {
        let outside: Vec<String> = e.outside.iter().map(ToString::to_string).collect();
        let outside = if outside.is_empty() {
            "no".to_string()
        } else {
            outside.join(", ")
        };
        out.push_str(&format!("{} {}/{}\n", e.pod, e.port, e.protocol));
        out.push_str(&format!("  from outside the cluster: {outside}\n"));
        out.push_str(&format!(
            "  from any namespace: {}; from its own namespace: {}\n",
            yes(e.any_namespace),
            yes(e.own_namespace)
        ));
        if !e.new_pods.is_empty() {
            let new: Vec<String> = e.new_pods.iter().map(describe).collect();
            out.push_str(&format!(
                "  new pods that would reach it: {}\n",
                new.join("; ")
            ));
        }
    }
    out
}
