package cni

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/ipam"
)

// splitWEPName undoes the escaping: single dashes separate the parts, double
// dashes are dashes within one. It shows a name keeps its parts apart.
func splitWEPName(name string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(name); i++ {
		switch {
		case name[i] != '-':
			cur.WriteByte(name[i])
		case i+1 < len(name) && name[i+1] == '-':
			cur.WriteByte('-')
			i++
		default:
			parts = append(parts, cur.String())
			cur.Reset()
		}
	}
	return append(parts, cur.String())
}

// TestWorkloadEndpointName: the names Calico's libcalico-go gives (its own
// examples first), escaping that splits back into the parts, and the parts
// Calico refuses, refused with the part named.
func TestWorkloadEndpointName(t *testing.T) {
	cases := []struct {
		node, pod, ifName string
		want              string
		badField          string
	}{
		{"node-1", "pod-name", "eth0", "node--1-k8s-pod--name-eth0", ""},
		{"node", "pod", "eth0", "node-k8s-pod-eth0", ""},
		{"n1", "web-0", "eth0", "n1-k8s-web--0-eth0", ""},
		{"ip-10-0-0-1.ec2.internal", "coredns-5d78c9869d-x7k2p", "eth0",
			"ip--10--0--0--1.ec2.internal-k8s-coredns--5d78c9869d--x7k2p-eth0", ""},
		{"worker--2", "a--b", "net-1", "worker----2-k8s-a----b-net--1", ""},
		{"kind-worker", "web", "eth0", "kind--worker-k8s-web-eth0", ""},
		{"", "web", "eth0", "", "node"},
		{"-n1", "web", "eth0", "", "node"},
		{"n1-", "web", "eth0", "", "node"},
		{"n1", "", "eth0", "", "pod"},
		{"n1", "-web", "eth0", "", "pod"},
		{"n1", "web-", "eth0", "", "pod"},
		{"n1", "web", "", "", "interface"},
		{"n1", "web", "eth-", "", "interface"},
		{"n1", "web", "-eth", "", "interface"},
	}
	for _, c := range cases {
		got, err := WorkloadEndpointName(c.node, c.pod, c.ifName)
		if c.badField != "" {
			var ne *NameError
			if !errors.As(err, &ne) || ne.Field != c.badField || got != "" {
				t.Errorf("(%q, %q, %q) = %q, %v; want a NameError for %s", c.node, c.pod, c.ifName, got, err, c.badField)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("(%q, %q, %q) = %q, %v; want %q", c.node, c.pod, c.ifName, got, err, c.want)
			continue
		}
		if parts := splitWEPName(got); !slices.Equal(parts, []string{c.node, "k8s", c.pod, c.ifName}) {
			t.Errorf("%q splits into %q", got, parts)
		}
	}
}

// TestEndpointNameOfRequest: a request with a pod is named as Calico names
// the WorkloadEndpoint (without the namespace); one without keeps the
// container's name; names Calico refuses are errors with codes that say
// whose fault they are.
func TestEndpointNameOfRequest(t *testing.T) {
	s := &Service{Node: "node-1"}
	req := func(ns, pod string) Request {
		return Request{Attachment: Attachment{ContainerID: "0123456789abcdef", IfName: "eth0"}, PodNamespace: ns, PodName: pod}
	}
	for _, c := range []struct {
		r    Request
		want string
	}{
		{req("shop", "web-0"), "node--1-k8s-web--0-eth0"},
		{req("other", "web-0"), "node--1-k8s-web--0-eth0"},
		{req("", ""), "0123456789ab-eth0"},
		{req("shop", ""), "0123456789ab-eth0"},
		{req("", "web-0"), "0123456789ab-eth0"},
	} {
		if got, err := s.endpointName(c.r); err != nil || got != c.want {
			t.Errorf("%s/%s: %q, %v; want %q", c.r.PodNamespace, c.r.PodName, got, err, c.want)
		}
	}
	if _, err := s.endpointName(req("shop", "web-")); err == nil || err.Code != CodeInvalidEnv || !strings.Contains(err.Msg, `pod name "web-"`) {
		t.Errorf("bad pod name: %v", err)
	}
	if _, err := (&Service{}).endpointName(req("shop", "web")); err == nil || err.Code != CodeInvalidConfig {
		t.Errorf("no node name: %v", err)
	}
}

// TestIPAMAttrs: the handle carries Calico's attributes for a pod (node,
// pod, namespace, and the timestamp in the form Calico writes: UTC, Go's
// time String layout) next to tortie's own.
func TestIPAMAttrs(t *testing.T) {
	s := &Service{Node: "node-1"}
	r := Request{Attachment: Attachment{ContainerID: "c1", IfName: "eth0"}, Network: "k8s-pod-network", Netns: "/var/run/netns/p",
		PodNamespace: "shop", PodName: "web-0"}
	now := time.Date(2025, 3, 4, 5, 6, 7, 890000000, time.FixedZone("CET", 3600))
	got := s.ipamAttrs(r, now)
	want := map[string]string{"netns": "/var/run/netns/p", "ifName": "eth0", "containerID": "c1", "network": "k8s-pod-network",
		"namespace": "shop", "pod": "web-0", "node": "node-1", "timestamp": "2025-03-04 04:06:07.89 +0000 UTC"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attr %s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("attrs %v, want exactly %v", got, want)
	}
	if got["timestamp"] != now.UTC().String() {
		t.Errorf("timestamp %q is not what time.Time.String gives: %q", got["timestamp"], now.UTC().String())
	}
	if ts, err := time.Parse(timestampLayout, got["timestamp"]); err != nil || !ts.Equal(now) {
		t.Errorf("timestamp %q parses to %v, %v", got["timestamp"], ts, err)
	}
}

// TestSpecFromHandle: the endpoint rebuilt from an IPAM handle has the name
// ADD gives it, with the handle's node: Calico's for a pod, the container's
// otherwise, and the container's when the pod's names cannot make one.
func TestSpecFromHandle(t *testing.T) {
	h := func(node string, attrs map[string]string) ipam.Handle {
		a := map[string]string{"netns": "/var/run/netns/p", "ifName": "eth0", "containerID": "0123456789abcdef", "network": "k8s-pod-network"}
		for k, v := range attrs {
			a[k] = v
		}
		return ipam.Handle{ID: "k8s-pod-network.0123456789abcdef", Node: node, IPs: ipamAddrs("10.1.0.5"), Attrs: a}
	}
	for _, c := range []struct {
		h        ipam.Handle
		name, ns string
	}{
		{h("node-1", map[string]string{"namespace": "shop", "pod": "web-0", "node": "node-1"}), "node--1-k8s-web--0-eth0", "shop"},
		{h("n2", map[string]string{"namespace": "shop", "pod": "web-0"}), "n2-k8s-web--0-eth0", "shop"},
		{h("n2", nil), "0123456789ab-eth0", ""},
		{h("n2", map[string]string{"namespace": "shop", "pod": "web-"}), "0123456789ab-eth0", "shop"},
	} {
		s, ok := SpecFromHandle(c.h)
		if !ok || s.Name != c.name || s.PodNamespace != c.ns || s.ContainerID != "0123456789abcdef" || s.IfName != "eth0" ||
			s.Handle != c.h.ID || s.Address != c.h.IPs[0] {
			t.Errorf("%v: %+v %v; want name %q namespace %q", c.h.Attrs, s, ok, c.name, c.ns)
		}
	}
	if _, ok := SpecFromHandle(h("n2", map[string]string{"netns": ""})); ok {
		t.Error("a handle without netns made a spec")
	}
}
