//! Datapath settings `run` and `lab run` share (`DatapathArgs`): whether tracked
//! flows outlive a policy change that denies them, which `skb->mark` bits podwall
//! owns, and how many tracked flows one pod may hold. They become the `CONFIG`
//! entry the classifiers read.

use clap::Args;
use policy_common::{
    config::{mark_bits, Config, CONFIG_FLAG_KEEP_ESTABLISHED},
    ct::CT_ENDPOINT_FLOWS_DEFAULT,
};

/// `config::DEFAULT_MARK_MASK` as `--mark-mask` shows it (`the_defaults_are_the_configs_defaults`).
const DEFAULT_MARK_MASK_TEXT: &str = "0xff";

/// The datapath flags of `run` and `lab run`.
#[derive(Args, Clone, Debug)]
pub struct DatapathArgs {
    /// Let tracked connections go on after a policy change that denies them (as
    /// Cilium and Calico do). By default the first packet of each flow after a
    /// change decides the flow again, and a flow the new policy denies is cut.
    #[arg(long)]
    keep_established_flows: bool,
    /// The skb->mark bits podwall may set and clear, as one mask: its lowest bit
    /// marks Service egress decided at the backend, the next a verified reply, the
    /// rest (one contiguous run of at least two) the policy generation a pod's
    /// egress was decided with. Pick bits nothing else on the node uses (Calico:
    /// 0xffff0000; Cilium: 0x0f00, 0xf000; kube-proxy: 0x4000, 0x8000).
    #[arg(long, default_value = DEFAULT_MARK_MASK_TEXT, value_parser = parse_mark_mask)]
    mark_mask: u32,
    /// Tracked flows one pod interface may hold (at least 1); a new flow past it
    /// is dropped (counted as drop_ct_endpoint_limit).
    #[arg(long, default_value_t = CT_ENDPOINT_FLOWS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..))]
    conntrack_flows_per_pod: u32,
}

impl DatapathArgs {
    /// `base` with these settings.
    pub fn config(&self, base: Config) -> Config {
        // `parse_mark_mask` accepted only masks `mark_bits` takes.
        let marks = mark_bits(self.mark_mask).map_or(base, |bits| base.with_marks(bits));
        let keep = if self.keep_established_flows {
            CONFIG_FLAG_KEEP_ESTABLISHED
        } else {
            0
        };
        Config {
            flags: marks.flags & !CONFIG_FLAG_KEEP_ESTABLISHED | keep,
            ct_endpoint_flows: self.conntrack_flows_per_pod,
            ..marks
        }
    }
}

/// Parses `--mark-mask` (hex with `0x`, else decimal) and checks its shape.
fn parse_mark_mask(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    let mask = parsed.map_err(|e| format!("{text:?} is not a 32-bit mask: {e}"))?;
    if mark_bits(mask).is_none() {
        return Err(format!(
            "{mask:#x} cannot hold podwall's marks: it needs at least four bits, and the bits above its two lowest must be one contiguous run (for example 0xff or 0xf0)"
        ));
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use policy_common::config::DEFAULT_MARK_MASK;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        datapath: DatapathArgs,
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let argv = std::iter::once("podwall").chain(args.iter().copied());
        Flags::try_parse_from(argv)
            .map(|flags| flags.datapath.config(Config::DEFAULT))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_the_configs_defaults() {
        assert_eq!(config(&[]), Ok(Config::DEFAULT));
        assert_eq!(
            parse_mark_mask(DEFAULT_MARK_MASK_TEXT),
            Ok(DEFAULT_MARK_MASK)
        );
    }

    #[test]
    fn a_mark_mask_assigns_its_bits_in_order_and_keep_established_sets_its_flag() {
        let got = config(&["--mark-mask", "0xf000000", "--keep-established-flows"]);
        let want = Config {
            mark_deferred_egress: 0x100_0000,
            mark_reply_verified: 0x200_0000,
            mark_stamp_mask: 0xc00_0000,
            mark_stamp_shift: 26,
            flags: CONFIG_FLAG_KEEP_ESTABLISHED,
            ..Config::DEFAULT
        };
        assert_eq!(got, Ok(want));
        let limited = config(&["--conntrack-flows-per-pod", "100"]);
        assert_eq!(limited.map(|c| c.ct_endpoint_flows), Ok(100));
        assert!(config(&["--conntrack-flows-per-pod", "0"]).is_err());
    }

    #[test]
    fn masks_without_room_for_a_stamp_or_with_a_gap_in_it_are_refused() {
        for mask in ["0x7", "0x0", "0b11", "0x10f", "0x13"] {
            assert!(config(&["--mark-mask", mask]).is_err(), "{mask}");
        }
        assert!(config(&["--mark-mask", "0x1f"]).is_ok());
        // The lowest two bits may lie anywhere below the stamp's run.
        assert!(config(&["--mark-mask", "0x1c1"]).is_ok());
    }
}
