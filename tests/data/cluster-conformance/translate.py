#!/usr/bin/env python3
"""Translates the upstream ClusterNetworkPolicy conformance tests into case files.

Reads the Go tests and YAML policies of kubernetes-sigs/network-policy-api
(`conformance/tests/*.go`, `conformance/base/**`) from a git directory and writes
one `<case>.yaml` per upstream ConformanceTest next to this script. The Go is not
interpreted: the few statement shapes the tests use (GetPod, PokeServer, rule
swaps, rule rewrites, namespace relabels, a NetworkPolicy deletion, a priority
change) are recognised by pattern, and any other statement that touches a policy
stops the translation with an error, so a new upstream shape is never dropped
silently. See TRANSLATION.md.

Usage: translate.py GIT_DIR [COMMIT]   (needs PyYAML)
"""

import copy
import os
import re
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# Upstream's default host-network port range (suite.go: HostNetworkPortRangeStart).
HOST_NETWORK_PORTS = [34345 + i for i in range(8)]


def git_show(git_dir, commit, path):
    return subprocess.run(
        ["git", "-C", git_dir, "show", f"{commit}:{path}"],
        check=True, capture_output=True, text=True).stdout


def git_ls(git_dir, commit, path):
    out = subprocess.run(
        ["git", "-C", git_dir, "ls-tree", "--name-only", f"{commit}", path + "/"],
        check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


def host_ports(text):
    return re.sub(r"\{\{\s*index \.HostNetworkPorts (\d+)\s*\}\}",
                  lambda m: str(HOST_NETWORK_PORTS[int(m.group(1))]), text)


def load_manifest(git_dir, commit, path):
    return [doc for doc in yaml.safe_load_all(host_ports(git_show(git_dir, commit, path))) if doc]


def kebab(short_name):
    name = re.sub(r"^CNP", "", short_name)
    name = name.replace("TCP", "Tcp").replace("UDP", "Udp").replace("SCTP", "Sctp").replace("CIDR", "Cidr")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def key_of(obj):
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def split_tests(source):
    """(ShortName, features, manifests, body) for each ConformanceTest in a Go file."""
    tests = []
    starts = [m.start() for m in re.finditer(r"^var \w+ = suite\.ConformanceTest\{", source, re.M)]
    for i, start in enumerate(starts):
        chunk = source[start:starts[i + 1] if i + 1 < len(starts) else len(source)]
        short = re.search(r'ShortName:\s*"(\w+)"', chunk).group(1)
        features = re.findall(r"suite\.(SupportClusterNetworkPolicy\w*)", chunk)
        manifests = re.findall(r'"(base/[\w/.-]+\.yaml)"', chunk)
        body = chunk[chunk.index("Test: func"):]
        tests.append((short, features, manifests, body))
    return tests


def strip_comments(body):
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return "\n".join(re.sub(r"\s*//.*$", "", line) for line in body.splitlines())


EVENTS = [
    ("subtest", r't\.Run\("((?:[^"\\]|\\.)*)"'),
    ("getpod", r'(\w+) :?= kubernetes\.GetPod\(t, s\.Client, "([\w-]+)", "([\w-]+)"'),
    ("poke", r'kubernetes\.PokeServer\(t, s\.ClientSet, &s\.KubeConfig, "([\w-]+)", "([\w-]+)", "(\w+)",\s*'
             r'(\w+)\.Status\.PodIP, int32\(([\w.\[\]]+)\), s\.TimeoutConfig, (true|false)\)'),
    ("getcnp", r'kubernetes\.GetClusterNetworkPolicy\(t, s\.Client, "([\w-]+)"'),
    ("swap", r'(\w+) := mutate\.Spec\.(Ingress|Egress)\[(\d+)\]\s*'
             r'mutate\.Spec\.\2\[\3\] = mutate\.Spec\.\2\[(\d+)\]\s*mutate\.Spec\.\2\[\4\] = \1\b'),
    ("named", r'(\w+) := mutate(?:\.DeepCopy\(\))?\.Spec\.(Ingress|Egress)\[(\d+)\]\s*'
              r'\w+ := "(\w+)"\s*\1\.Protocols = \[\]api\.ClusterNetworkPolicyProtocol\{\s*\{\s*'
              r'DestinationNamedPort: \w+,\s*\},\s*\}\s*mutate\.Spec\.\2\[\3\] = \1'),
    ("action", r'mutate\.Spec\.(Ingress|Egress)\[(\d+)\]\.Action = api\.ClusterNetworkPolicyRuleAction(\w+)'),
    ("priority", r'mutate\.Spec\.Priority = (\d+)'),
    ("prepend-cidr", r'Name:\s*"([\w-]+)",\s*Action:\s*"(\w+)",\s*To: \[\]api\.ClusterNetworkPolicyEgressPeer\{\s*\{\s*'
                     r'Networks: \[\]api\.CIDR\{\s*api\.CIDR\((\w+)\.Status\.PodIP \+ mask\),\s*'
                     r'api\.CIDR\((\w+)\.Status\.PodIP \+ mask\),\s*\},\s*\},\s*\},\s*\},\s*\}\s*'
                     r'mutate\.Spec\.Egress = append\(newRule, mutate\.Spec\.Egress\.\.\.\)'),
    ("relabel", r'GetNamespace\(t, s\.Client, "([\w-]+)".*?SetLabels\(map\[string\]string\{([^}]*)\}\)\s*'
                r'kubernetes\.PatchNamespace'),
    ("delete-np", r'Namespace:\s*"([\w-]+)",\s*Name:\s*"([\w-]+)",\s*\}, np\).*?s\.Client\.Delete\(ctx, np\)'),
    ("patch", r'kubernetes\.PatchClusterNetworkPolicy\('),
]
# Statements that touch a policy or a label; each must be covered by an event above.
MUTATING = re.compile(r"mutate\w*\.|Patch\w+\(|\.Delete\(|\.Create\(|\.Update\(|SetLabels")


def events_of(body):
    found = []
    covered = []
    for kind, pattern in EVENTS:
        for m in re.finditer(pattern, body, re.S):
            found.append((m.start(), kind, m))
            covered.append((m.start(), m.end()))
    for m in MUTATING.finditer(body):
        if not any(a <= m.start() < b for a, b in covered):
            line = body[:m.start()].count("\n") + 1
            raise SystemExit(f"unrecognised mutation at body line {line}: {body.splitlines()[line - 1].strip()}")
    # A GetPod statement inside a longer match (none today) is still its own event.
    found.sort(key=lambda e: e[0])
    return found


def port_of(text):
    m = re.fullmatch(r"s\.HostNetworkPorts\[(\d+)\]", text)
    return HOST_NETWORK_PORTS[int(m.group(1))] if m else int(text)


def translate(git_dir, commit, go_path):
    source = git_show(git_dir, commit, go_path)
    cases = []
    for short, features, manifests, body in split_tests(source):
        body = strip_comments(body)
        objects = {}
        for manifest in manifests:
            for obj in load_manifest(git_dir, commit, "conformance/" + manifest):
                objects[key_of(obj)] = obj
        steps = []
        step = None
        subtest = None

        def new_step():
            nonlocal step
            step = {"subtest": subtest, "apply": {}, "delete": [], "relabel": [], "probes": []}
            steps.append(step)

        def mutation_step():
            if step is None or step["probes"]:
                new_step()

        new_step()
        step["apply"] = {k: v for k, v in objects.items()}
        pods = {}
        cnp = None
        mutated = None
        for _, kind, m in events_of(body):
            if kind == "subtest":
                subtest = m.group(1)
                if step["probes"]:
                    new_step()
                elif step["subtest"] is None:
                    step["subtest"] = subtest
                else:
                    step["subtest"] = subtest
            elif kind == "getpod":
                pods[m.group(1)] = f"{m.group(2)}/{m.group(3)}"
            elif kind == "poke":
                ns, pod, proto, target, port, expect = m.groups()
                step["probes"].append({
                    "from": f"{ns}/{pod}", "to": pods[target], "protocol": proto.upper(),
                    "port": port_of(port), "expect": "allowed" if expect == "true" else "dropped"})
            elif kind == "getcnp":
                cnp = ("ClusterNetworkPolicy", "", m.group(1))
                mutated = copy.deepcopy(objects[cnp])
            elif kind == "swap":
                _, direction, i, j = m.groups()
                rules = mutated["spec"][direction.lower()]
                rules[int(i)], rules[int(j)] = rules[int(j)], rules[int(i)]
            elif kind == "named":
                _, direction, i, name = m.groups()
                mutated["spec"][direction.lower()][int(i)]["protocols"] = [{"destinationNamedPort": name}]
            elif kind == "action":
                direction, i, action = m.groups()
                mutated["spec"][direction.lower()][int(i)]["action"] = action
            elif kind == "priority":
                mutated["spec"]["priority"] = int(m.group(1))
            elif kind == "prepend-cidr":
                name, action, a, b = m.groups()
                rule = {"name": name, "action": action, "to": [{"networks": [
                    "{host-cidr:%s}" % pods[a], "{host-cidr:%s}" % pods[b]]}]}
                mutated["spec"]["egress"].insert(0, rule)
            elif kind == "patch":
                mutation_step()
                objects[cnp] = mutated
                step["apply"][cnp] = mutated
                mutated = copy.deepcopy(mutated)
            elif kind == "relabel":
                mutation_step()
                labels = dict(re.findall(r'"([\w./-]+)":\s*"([\w./-]+)"', m.group(2)))
                step["relabel"].append({"namespace": m.group(1), "labels": labels})
            elif kind == "delete-np":
                mutation_step()
                key = ("NetworkPolicy", m.group(1), m.group(2))
                del objects[key]
                step["delete"].append({"kind": "NetworkPolicy", "namespace": m.group(1), "name": m.group(2)})
        steps = [s for s in steps if s["probes"] or s["apply"] or s["delete"] or s["relabel"]]
        for s in steps:
            if not s["probes"]:
                raise SystemExit(f"{short}: a step without probes")
            s["apply"] = list(s["apply"].values())
        experimental = sorted(f for f in features if f != "SupportClusterNetworkPolicy")
        cases.append({
            "name": kebab(short),
            "fixture": "network-policy-api",
            "upstream": {
                "test": short,
                "file": go_path,
                "manifests": ["conformance/" + m for m in manifests],
                "features": features,
            },
            "experimental": experimental,
            "steps": steps,
        })
    return cases


# --- Cross-check: an independent, minimal evaluator of the tiers over the fixture ---

HOUSES = {"gryffindor": "harry-potter", "slytherin": "draco-malfoy", "hufflepuff": "cedric-diggory",
          "ravenclaw": "luna-lovegood"}
NODE_IPS = {"node-1": "172.18.0.2", "node-2": "172.18.0.3"}


def fixture():
    namespaces, pods = {}, {}
    for n, house in enumerate(list(HOUSES) + ["forbidden-forrest"]):
        ns = "network-policy-conformance-" + house
        namespaces[ns] = {"conformance-house": house, "kubernetes.io/metadata.name": ns}
        workload = HOUSES.get(house, "centaur")
        for i in range(2):
            host = workload == "centaur"
            pods[f"{ns}/{workload}-{i}"] = {
                "ns": ns, "labels": {"conformance-house": house}, "host": host,
                "ip": list(NODE_IPS.values())[i] if host else f"10.244.{n}.{10 + i}",
                "ports": [] if host else [("web", "TCP", 80), ("dns", "UDP", 53)]}
    nodes = {name: {"labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": name}, "ip": ip}
             for name, ip in NODE_IPS.items()}
    return namespaces, pods, nodes


def selects(selector, labels):
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    if selector.get("matchExpressions"):
        raise SystemExit("matchExpressions not handled by the cross-check")
    return True


def in_cidr(ip, cidr):
    import ipaddress
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def cnp_peer(peer, other, namespaces, nodes):
    if "namespaces" in peer:
        return not other["host"] and selects(peer["namespaces"], namespaces[other["ns"]])
    if "pods" in peer:
        p = peer["pods"]
        return (not other["host"] and selects(p.get("namespaceSelector"), namespaces[other["ns"]])
                and selects(p.get("podSelector"), other["labels"]))
    if "networks" in peer:
        return any(in_cidr(other["ip"], c) for c in peer["networks"])
    if "nodes" in peer:
        return any(selects(peer["nodes"], n["labels"]) and n["ip"] == other["ip"] for n in nodes.values())
    raise SystemExit(f"peer {peer} not handled by the cross-check")


def cnp_port(entries, dst, protocol, port):
    if not entries:
        return True
    for e in entries:
        if "destinationNamedPort" in e:
            if any(n == e["destinationNamedPort"] and pr == protocol and po == port for n, pr, po in dst["ports"]):
                return True
            continue
        for proto, spec in e.items():
            if proto.upper() != protocol:
                continue
            d = spec["destinationPort"]
            if "number" in d and d["number"] == port:
                return True
            if "range" in d and d["range"]["start"] <= port <= d["range"]["end"]:
                return True
    return False


def np_peer(peer, other, side_ns, namespaces):
    if "ipBlock" in peer:
        return in_cidr(other["ip"], peer["ipBlock"]["cidr"])
    if other["host"]:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespaces[other["ns"]]):
            return False
    elif other["ns"] != side_ns:
        return False
    return selects(peer.get("podSelector"), other["labels"])


def side(policies, namespaces, nodes, me, other, dst, protocol, port, direction):
    """True/False: allowed/denied by this side."""
    if me["host"]:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")

    def tier(name):
        cnps = sorted((p for p in policies if p["kind"] == "ClusterNetworkPolicy" and p["spec"]["tier"] == name),
                      key=lambda p: (p["spec"]["priority"], p["metadata"]["name"]))
        for p in cnps:
            subject = p["spec"]["subject"]
            if "namespaces" in subject:
                hit = selects(subject["namespaces"], namespaces[me["ns"]])
            else:
                hit = (selects(subject["pods"].get("namespaceSelector"), namespaces[me["ns"]])
                       and selects(subject["pods"].get("podSelector"), me["labels"]))
            if not hit:
                continue
            for rule in p["spec"].get(rules_key) or []:
                if any(cnp_peer(peer, other, namespaces, nodes) for peer in rule[peers_key]) \
                        and cnp_port(rule.get("protocols"), dst, protocol, port):
                    return rule["action"]
        return None

    action = tier("Admin")
    if action in ("Accept", "Deny"):
        return action == "Accept"
    nps = [p for p in policies if p["kind"] == "NetworkPolicy" and p["metadata"]["namespace"] == me["ns"]
           and selects(p["spec"].get("podSelector"), me["labels"])
           and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if nps:
        for p in nps:
            for rule in p["spec"].get(rules_key) or []:
                peers = rule.get(peers_key)
                if (not peers or any(np_peer(x, other, me["ns"], namespaces) for x in peers)) and not rule.get("ports"):
                    return True
                if rule.get("ports"):
                    raise SystemExit("NetworkPolicy ports not handled by the cross-check")
        return False
    action = tier("Baseline")
    return action != "Deny"


def check(cases):
    import json
    bad = 0
    for case in cases:
        namespaces, pods, nodes = fixture()
        applied = {}
        addresses = {k: v["ip"] for k, v in pods.items()}
        for n, step in enumerate(case["steps"], 1):
            for obj in step["apply"]:
                text = re.sub(r"\{host-cidr:([\w/-]+)\}", lambda m: addresses[m.group(1)] + "/32", json.dumps(obj))
                obj = json.loads(text)
                applied[key_of(obj)] = obj
            for d in step["delete"]:
                del applied[(d["kind"], d.get("namespace", ""), d["name"])]
            for r in step["relabel"]:
                namespaces[r["namespace"]] = dict(r["labels"], **{"kubernetes.io/metadata.name": r["namespace"]})
            for p in step["probes"]:
                src, dst = pods[p["from"]], pods[p["to"]]
                policies = list(applied.values())
                got = (side(policies, namespaces, nodes, src, dst, dst, p["protocol"], p["port"], "Egress")
                       and side(policies, namespaces, nodes, dst, src, dst, p["protocol"], p["port"], "Ingress"))
                if got != (p["expect"] == "allowed"):
                    bad += 1
                    print(f"MISMATCH {case['name']} step {n} {p}: cross-check says {got}")
    return bad


class Dumper(yaml.SafeDumper):
    pass


def flow_probe(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


class Probe(dict):
    pass


Dumper.add_representer(Probe, flow_probe)
Dumper.add_representer(dict, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items()))


def main():
    git_dir = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else "HEAD"
    commit = subprocess.run(["git", "-C", git_dir, "rev-parse", commit],
                            check=True, capture_output=True, text=True).stdout.strip()
    files = [f for f in git_ls(git_dir, commit, "conformance/tests") if f.endswith("-rules.go")
             or f.endswith("integration.go") or f.endswith("priority.go")]
    total = 0
    all_cases = []
    for go_path in sorted(files):
        for case in translate(git_dir, commit, go_path):
            all_cases.append(copy.deepcopy(case))
            for step in case["steps"]:
                step["probes"] = [Probe(p) for p in step["probes"]]
                total += len(step["probes"])
            header = ("# Generated by translate.py from kubernetes-sigs/network-policy-api\n"
                      f"# @ {commit} (Apache-2.0); do not edit by hand.\n")
            text = yaml.dump(case, Dumper=Dumper, sort_keys=False, width=1000)
            with open(os.path.join(HERE, case["name"] + ".yaml"), "w") as out:
                out.write(header + text)
            print(case["name"], len(case["steps"]), sum(len(s["probes"]) for s in case["steps"]),
                  case["experimental"])
    print("probes", total)
    bad = check(all_cases)
    print(f"cross-check: {bad} probes disagree")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
