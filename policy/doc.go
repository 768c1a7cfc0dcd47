// Package policy is tortie's network policy engine: it compiles Kubernetes
// NetworkPolicies and Calico's NetworkPolicies, GlobalNetworkPolicies,
// tiers, profiles and network sets (projectcalico.org/v3) into a Set that
// decides, for one packet crossing one local endpoint in one direction,
// Allow or Deny with Calico's semantics, and says which rule decided. It
// is pure: no packets, no I/O; the packet path calls it for a flow's first
// packet and keeps the verdict in the flow table.
//
// # Compiling
//
// Compile takes the cluster-wide view of endpoints (key, namespace, labels,
// namespace labels, service account and its labels, IPv4 address, named
// ports, profiles) and every policy resource. Selectors are resolved once,
// as Felix resolves them into IP sets: a rule's selector, namespaceSelector
// and serviceAccounts become the sorted, merged address ranges of the
// endpoints (as /32s) and network sets they name; nets and notNets become
// ranges too; a named port becomes the sorted (address, protocol, port)
// keys of the endpoints that define it. Evaluation then needs no labels
// and no maps: binary searches, protocol and port-range comparisons. It does
// not allocate, and a Set is never modified after Compile, so any number of
// goroutines may read it while the caller compiles the next one and swaps
// it in with an atomic pointer.
//
// Each local endpoint gets, per direction, one program: a flat list of
// compiled rules. Subject says whether a program can deny at all (an
// endpoint no policy or profile decides for is allowed everything), so the
// packet path skips connection tracking for pods no policy selects; every
// verdict names its Counter, an index into Counters fixed per Set, so
// denials are counted per policy in arrays.
//
// # Order of evaluation
//
// Tiers run in ascending order (a tier without an order runs last; ties by
// name). The default tier exists even when not declared, at order
// 1,000,000 as Calico creates it. A tier is skipped for an endpoint and
// direction unless one of its policies applies: its selector (and, for a
// GlobalNetworkPolicy, namespaceSelector; for either, serviceAccountSelector)
// selects the endpoint, a NetworkPolicy only in its own namespace, and its
// types include the direction. Types left empty default as Calico does:
// Ingress, plus Egress when there are egress rules (Egress alone when there
// are only egress rules).
//
// Within a tier, policies run in ascending order (none: last; ties by
// name) and their rules in order. The first rule that matches decides:
// Allow and Deny end evaluation, Pass jumps to the next tier that applies,
// Log marks the verdict Logged and goes on. When no rule of a tier decides,
// the tier's default action does: Deny (the end of tier drop), or Pass.
//
// Kubernetes NetworkPolicies are placed as Calico places them: in the
// default tier at order 1000, named knp.default.<name>, with only Allow
// rules, so that the default tier's end denies what none of the selecting
// policies allows (the union of their rules), per direction, and only for
// pods some policy selects; policyTypes defaults as the API server does
// (Ingress, plus Egress when there are egress rules).
//
// # When nothing matches
//
// When no tier applies, or the last tier that applies passed, the
// endpoint's profiles decide: their rules in order, then Deny. An endpoint
// that names no profile gets Calico's per-namespace profile for Kubernetes
// pods, which allows everything: a pod no policy selects is not isolated.
//
// # What selectors see
//
// Calico selectors see an endpoint's labels (over the labels of its
// profiles) plus projectcalico.org/namespace, /orchestrator and
// /serviceaccount; namespace selectors see the namespace's labels plus
// projectcalico.org/name and kubernetes.io/metadata.name. In a namespaced
// NetworkPolicy a rule's selector names endpoints and NetworkSets of its own
// namespace unless the rule has a namespaceSelector; in a
// GlobalNetworkPolicy or a profile it names them in every namespace, and
// GlobalNetworkSets too. Kubernetes peers name pods only.
//
// Only IPv4 is compiled: rules whose nets are all IPv6, and ICMPv6 rules,
// never match.
package policy
