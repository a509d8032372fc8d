//! What the datapath reports, made readable: verdict events named with the pods and
//! policies they concern (`policy-agent flows`, `lab run --show-drops`), and what a
//! datapath's owner publishes so another process can follow its events.
//!
//! Imports `dataplane` (event records, pins), `policy::tables` and `model`; never
//! `source` or `lab`, so the lab and the node agent publish the same way.

pub mod flows;
