//! Pod interfaces attached at once as `cls_bpf` filters, then handed over to TCX
//! links (`Datapath::attach_now`, `Datapath::handover`), on real veths: the
//! client reaches the server on the port both sides admit and on neither port
//! one side denies, on filters alone, after every step of each interface's
//! handover, and on links after; and an agent stopped part way leaves nothing
//! its successor cannot take over.

use policy_agent::{
    dataplane::{Adoption, Datapath, LoadOptions, FILTER_HANDLE, FILTER_PRIORITY},
    node::tc_filters,
    policy::tables::{DatapathTables, Direction},
};

use super::{
    frames::TCP,
    net::Net,
    pins::{drop_datapath, object, Pins},
    pods::{PODS, SERVER_V4},
    support,
    tables::Tables,
    tcp,
};

/// Admitted by both sides.
const BOTH: u16 = 80;
/// Admitted by the server's ingress only: the client's egress drops it.
const INGRESS_ONLY: u16 = 81;
/// Admitted by the client's egress only: the server's ingress drops it.
const EGRESS_ONLY: u16 = 82;

/// The client isolated for egress, the server for ingress, each admitting the
/// other on `BOTH` and one port of its own.
fn both_sides(net: &Net) -> DatapathTables {
    Tables::new(net)
        .isolate("client", false, true)
        .isolate("server", true, false)
        .pod_class("client", 3)
        .pod_class("server", 5)
        .allow_port("client", Direction::Egress, 5, TCP, BOTH)
        .allow_port("client", Direction::Egress, 5, TCP, EGRESS_ONLY)
        .allow_port("server", Direction::Ingress, 3, TCP, BOTH)
        .allow_port("server", Direction::Ingress, 3, TCP, INGRESS_ONLY)
        .build()
}

/// Fails unless the client reaches the server on `BOTH` only (`when` says
/// which step).
fn enforced(net: &Net, when: &str) {
    let reached = [BOTH, INGRESS_ONLY, EGRESS_ONLY].map(|port| tcp(net, "client", SERVER_V4, port));
    assert_eq!(
        reached,
        [true, false, false],
        "{when}: which of ports {BOTH}, {INGRESS_ONLY}, {EGRESS_ONLY} the client reached"
    );
}

/// Podwall's filters on pod `pod`'s interface: [TC egress, TC ingress].
fn filters(net: &Net, pod: &str) -> [bool; 2] {
    let ifindex = net.ifindex(pod);
    let node = net.node.clone();
    [false, true].map(|ingress| {
        Net::in_ns(&node, || tc_filters(ifindex, ingress))
            .unwrap_or_else(|e| panic!("filter dump: {e}"))
            .iter()
            .any(|f| f.priority == FILTER_PRIORITY && f.handle == FILTER_HANDLE && f.kind == "bpf")
    })
}

/// Whether both TCX hooks of pod `pod`'s interface run a program.
fn linked(net: &Net, pod: &str) -> bool {
    let ifindex = net.ifindex(pod);
    Net::in_ns(&net.node.clone(), || {
        policy_agent::dataplane::tcx_hooks_occupied(ifindex)
    })
}

/// Hands every interface on filters over, one step at a time, checking
/// `enforced` after each step.
fn hand_over_in_steps(net: &mut Net) {
    let node = net.node.clone();
    loop {
        let datapath = &mut net.datapath;
        let Some(mut handover) =
            Net::in_ns(&node, || datapath.handover()).unwrap_or_else(|e| panic!("handover: {e}"))
        else {
            break;
        };
        let ifindex = handover.ifindex();
        Net::in_ns(&node, || handover.link()).unwrap_or_else(|e| panic!("link: {e}"));
        enforced(
            net,
            &format!("interface {ifindex} on pod_yield links and filters"),
        );
        Net::in_ns(&node, || handover.update()).unwrap_or_else(|e| panic!("update: {e}"));
        enforced(net, &format!("interface {ifindex} on links and filters"));
        Net::in_ns(&node, || handover.remove_filters())
            .unwrap_or_else(|e| panic!("remove filters: {e}"));
        enforced(net, &format!("interface {ifindex} on links alone"));
        let outcome = handover.finish(Ok(()), false);
        net.datapath.handed_over(outcome);
    }
}

#[test]
fn a_pod_on_filters_is_enforced_at_every_step_of_its_handover_to_links() {
    support::require_root_and_bpf();
    let mut net = Net::up_on_filters(&PODS[..2]);
    let tables = both_sides(&net);
    net.apply(&tables);
    for pod in ["client", "server"] {
        assert_eq!(filters(&net, pod), [true, true], "{pod}'s filters");
        assert!(
            !linked(&net, pod),
            "{pod} has TCX programs before its handover"
        );
    }
    enforced(&net, "on filters");
    hand_over_in_steps(&mut net);
    for pod in ["client", "server"] {
        assert_eq!(
            filters(&net, pod),
            [false, false],
            "{pod}'s filters after its handover"
        );
        assert!(
            linked(&net, pod),
            "{pod} has no TCX programs after its handover"
        );
    }
    enforced(&net, "on links");
    // Detached from links as any.
    let server = net.ifindex("server");
    net.datapath
        .detach(server)
        .unwrap_or_else(|e| panic!("detach: {e}"));
    assert!(!linked(&net, "server"));
}

#[test]
fn a_handover_run_whole_leaves_links_alone_and_a_detach_on_filters_removes_them() {
    support::require_root_and_bpf();
    let mut net = Net::up_on_filters(&PODS[..2]);
    let tables = both_sides(&net);
    net.apply(&tables);
    let node = net.node.clone();
    let client = net.ifindex("client");
    // The server's filters go with a detach; the client is handed over whole.
    let server = net.ifindex("server");
    Net::in_ns(&node, || net.datapath.detach(server)).unwrap_or_else(|e| panic!("detach: {e}"));
    assert_eq!(
        filters(&net, "server"),
        [false, false],
        "the server's filters after a detach"
    );
    let datapath = &mut net.datapath;
    let handover = Net::in_ns(&node, || datapath.handover())
        .unwrap_or_else(|e| panic!("handover: {e}"))
        .unwrap_or_else(|| panic!("no handover for the client"));
    assert_eq!(handover.ifindex(), client);
    let outcome = Net::in_ns(&node, || handover.run());
    assert!(outcome.links.is_ok(), "{:?}", outcome.links.as_ref().err());
    net.datapath.handed_over(outcome);
    let datapath = &mut net.datapath;
    assert!(Net::in_ns(&node, || datapath.handover())
        .unwrap_or_else(|e| panic!("handover: {e}"))
        .is_none());
    assert_eq!(filters(&net, "client"), [false, false]);
    assert!(linked(&net, "client"));
    // The client's links decide its egress; the server, detached, decides
    // nothing.
    let reached =
        [BOTH, INGRESS_ONLY, EGRESS_ONLY].map(|port| tcp(&net, "client", SERVER_V4, port));
    assert_eq!(reached, [true, false, true]);
}

#[test]
fn an_agent_stopped_on_filters_is_taken_over_in_place() {
    let pins = Pins::new();
    let (mut net, adoption) = Net::up_pinned_with(&PODS[..2], &pins.0, true);
    assert_eq!(adoption, Adoption::Fresh);
    let tables = both_sides(&net);
    net.apply(&tables);
    enforced(&net, "on filters");

    // The agent is gone: its filters stay and decide.
    drop_datapath(&mut net);
    assert_eq!(filters(&net, "server"), [true, true]);
    enforced(&net, "on the filters of an agent gone");

    // Its successor replaces each filter in place, then hands over.
    let (adopted, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    assert_eq!(adoption, Adoption::Adopted { interfaces: 0 });
    net.datapath = adopted;
    let node = net.node.clone();
    for pod in ["client", "server"] {
        let host = net.pod(pod).host.clone();
        let datapath = &mut net.datapath;
        let index = Net::in_ns(&node, || datapath.attach_now(&host))
            .unwrap_or_else(|e| panic!("attach {pod} again: {e}"));
        assert_eq!(index, net.ifindex(pod));
        assert_eq!(
            filters(&net, pod),
            [true, true],
            "{pod}'s filters, replaced"
        );
    }
    enforced(&net, "on filters replaced by the successor");
    hand_over_in_steps(&mut net);
    enforced(&net, "on the successor's links");
}

#[test]
fn an_agent_stopped_mid_handover_leaves_links_its_successor_adopts_and_filters_it_removes() {
    let pins = Pins::new();
    let (mut net, _) = Net::up_pinned_with(&PODS[..2], &pins.0, true);
    let tables = both_sides(&net);
    net.apply(&tables);
    let node = net.node.clone();
    // The first interface offered stops after step 1 (pinned pod_yield links
    // beside its filters): its handover is forgotten, as the agent's exit would.
    let datapath = &mut net.datapath;
    let mut handover = Net::in_ns(&node, || datapath.handover())
        .unwrap_or_else(|e| panic!("handover: {e}"))
        .unwrap_or_else(|| panic!("no interface to hand over"));
    let stopped = handover.ifindex();
    Net::in_ns(&node, || handover.link()).unwrap_or_else(|e| panic!("link: {e}"));
    drop(handover);
    drop_datapath(&mut net);
    enforced(&net, "mid-handover, the agent gone");

    // The successor adopts the links (moved to its programs: they decide), and
    // its first handover call removes the filters beside them.
    let (adopted, adoption) = Datapath::open_pinned(&object(), &LoadOptions::default(), &pins.0)
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    net.datapath = adopted;
    assert_eq!(adoption, Adoption::Adopted { interfaces: 1 });
    assert_eq!(
        net.datapath.attached_interfaces().collect::<Vec<_>>(),
        [stopped]
    );
    let stopped_pod = if stopped == net.ifindex("client") {
        "client"
    } else {
        "server"
    };
    assert_eq!(filters(&net, stopped_pod), [true, true]);
    enforced(&net, "on adopted links beside the filters");
    let datapath = &mut net.datapath;
    assert!(Net::in_ns(&node, || datapath.handover())
        .unwrap_or_else(|e| panic!("handover: {e}"))
        .is_none());
    assert_eq!(
        filters(&net, stopped_pod),
        [false, false],
        "filters beside adopted links"
    );
    assert!(linked(&net, stopped_pod));
    enforced(&net, "on adopted links alone");
}

#[test]
fn uninstall_removes_the_filters_of_its_instance_only() {
    let pins = Pins::new();
    let other = Pins::new();
    let (mut net, _) = Net::up_pinned_with(&PODS[..2], &pins.0, true);
    let tables = both_sides(&net);
    net.apply(&tables);
    drop_datapath(&mut net);
    enforced(&net, "on the filters of an agent gone");
    let node = net.node.clone();
    // Another instance's uninstall leaves them.
    let (another, _) = Datapath::open_pinned(&object(), &LoadOptions::default(), &other.0)
        .unwrap_or_else(|e| panic!("another instance: {e}"));
    drop(another);
    Net::in_ns(&node, || Datapath::uninstall(&other.0))
        .unwrap_or_else(|e| panic!("uninstall another: {e}"));
    assert_eq!(
        filters(&net, "server"),
        [true, true],
        "after another instance's uninstall"
    );
    // Its own removes them: nothing decides any more.
    assert!(Net::in_ns(&node, || Datapath::uninstall(&pins.0))
        .unwrap_or_else(|e| panic!("uninstall: {e}")));
    for pod in ["client", "server"] {
        assert_eq!(
            filters(&net, pod),
            [false, false],
            "{pod}'s filters after uninstall"
        );
    }
    let reached =
        [BOTH, INGRESS_ONLY, EGRESS_ONLY].map(|port| tcp(&net, "client", SERVER_V4, port));
    assert_eq!(reached, [true, true, true]);
}
