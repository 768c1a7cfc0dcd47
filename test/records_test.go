package test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/resources"
)

// badRecords are malformed records of every resource and IPAM kind, as an
// operator writing etcd by hand might leave them (keys under the tortie
// prefix).
var badRecords = map[string]string{
	"ippools/garbage-cidr":      `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"garbage-cidr"},"spec":{"cidr":"garbage"}}`,
	"ippools/out-of-range":      `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"out-of-range"},"spec":{"cidr":"10.300.0.0/16"}}`,
	"ippools/truncated":         `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"trunc`,
	"ippools/wrong-type":        `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"wrong-type"},"spec":{"cidr":"10.245.0.0/16","blockSize":"26"}}`,
	"nodes/bad-address":         `{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"bad-address"},"spec":{"bgp":{"ipv4Address":"not-an-ip"}}}`,
	"nodes/truncated":           `{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"na`,
	"nodes/wrong-type":          `{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"wrong-type"},"spec":{"bgp":["10.0.1.9/24"]}}`,
	"bgpconfigurations/default": `{"apiVersion":"projectcalico.org/v3","kind":"BGPConfiguration","metadata":{"name":"default"},"spec":{"asNumber":"x"}}`,
	"bgppeers/garbage-ip":       `{"apiVersion":"projectcalico.org/v3","kind":"BGPPeer","metadata":{"name":"garbage-ip"},"spec":{"peerIP":"garbage","asNumber":65001}}`,
	"bgppeers/truncated":        `{"apiVersion":"projectcalico.org/v3","kind":"BGPPeer","meta`,
	// A block inside the pool that nobody can read: its addresses must
	// not be handed out again.
	"ipam/blocks/10.244.200.0-26":        `{"cidr":"10.244.200.0/26","affinity":"host:n2","allocations":[{"handle":"x"},{"ha`,
	"ipam/blocks/10.244.201.0-26":        `{"cidr":"garbage","allocations":[]}`,
	"ipam/blocks/garbage":                `{"cidr":"10.300.0.0/26"}`,
	"ipam/handles/truncated":             `{"id":"truncated","node":"n2","ips":["10.244.`,
	"ipam/handles/wrong-type":            `{"id":"wrong-type","node":"n2","ips":"10.244.0.1"}`,
	"ipam/affinities/n2/garbage":         `{"state":"confirmed"}`,
	"ipam/affinities/n2/10.244.200.0-26": `{"state":`,
}

// TestBadRecords: malformed records of every kind written into the
// cluster's (external) etcd take no node down: every tortied keeps
// running and forwarding, CNI ADD still works and never hands out an
// address of an unreadable block, the API and tortiectl show the records,
// and a node restarted with them in place comes up.
func TestBadRecords(t *testing.T) {
	l := up(t, lab.Options{Name: "tbr", Nodes: 3, Pods: 1, Mode: "ipip", EtcdMembers: 1})
	store := etcdClient(t, l)
	ctx := context.Background()
	for k, v := range badRecords {
		if _, err := store.Put(ctx, resources.Prefix+k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	// tortie keeps its IPAM settings in the node configuration: a record
	// where Calico keeps IPAMConfig is not read at all.
	if _, err := store.Put(ctx, resources.Prefix+"ipam/config", []byte(`{"strictAffinity":"garbage`)); err != nil {
		t.Fatal(err)
	}

	reported := func(n *lab.Node) (map[string]api.InvalidRecord, error) {
		recs, err := api.NewClient(n.Socket).InvalidRecords()
		out := map[string]api.InvalidRecord{}
		for _, r := range recs {
			out[strings.TrimPrefix(r.Key, resources.Prefix)] = r
		}
		return out, err
	}
	for _, n := range l.Nodes {
		testutil.WaitFor(t, 30*time.Second, "every bad record reported by "+n.Name, func() bool {
			got, err := reported(n)
			if err != nil {
				return false
			}
			for k := range badRecords {
				if r, ok := got[k]; !ok || r.Error == "" || r.Revision == 0 || r.Kind == "" {
					return false
				}
			}
			return len(got) == len(badRecords)
		})
	}
	alive := func(when string) {
		t.Helper()
		for _, n := range l.Nodes {
			if err := syscall.Kill(n.PID, 0); err != nil {
				t.Fatalf("%s: tortied on %s is gone: %v", when, n.Name, err)
			}
			if st, err := api.NewClient(n.Socket).Status(); err != nil || !st.Ready {
				t.Fatalf("%s: %s status %+v, %v", when, n.Name, st, err)
			}
		}
	}
	alive("bad records written")
	checkAll(t, l)

	// tortiectl shows them.
	out, err := exec.Command(labtest.BinDir+"/tortiectl", "--socket", l.Nodes[1].Socket, "invalid").CombinedOutput()
	if err != nil {
		t.Fatalf("tortiectl invalid: %v\n%s", err, out)
	}
	for k := range badRecords {
		if !strings.Contains(string(out), resources.Prefix+k) {
			t.Errorf("tortiectl invalid does not show %s:\n%s", k, out)
		}
	}

	// New pods still get addresses, never from the unreadable blocks,
	// and reach the others.
	unreadable := []netip.Prefix{netip.MustParsePrefix("10.244.200.0/26"), netip.MustParsePrefix("10.244.201.0/26")}
	for _, n := range l.Nodes {
		p := newPod(t, "after-"+n.Name)
		if err := l.AddPodCNI(ctx, n, p); err != nil {
			t.Fatalf("CNI ADD on %s with bad records stored: %v", n.Name, err)
		}
		a := netip.MustParseAddr(p.Address)
		for _, u := range unreadable {
			if u.Contains(a) {
				t.Fatalf("%s got %v from the unreadable block %v", n.Name, a, u)
			}
		}
		other := l.Nodes[(indexOf(l, n)+1)%len(l.Nodes)].Pods[0].Address
		pingOut, _ := exec.Command("ip", "netns", "exec", p.Netns, "ping", "-n", "-c", "2", "-i", "0.1", "-W", "1", other).CombinedOutput()
		if !strings.Contains(string(pingOut), " 0% packet loss") {
			t.Fatalf("new pod on %s cannot reach %s:\n%s", n.Name, other, pingOut)
		}
	}

	// The node records carry an IPIP tunnel address (the pool is IPIP) and
	// no VXLAN one.
	for _, n := range l.Nodes {
		kv, err := store.Get(ctx, resources.Prefix+"nodes/"+n.Name)
		if err != nil {
			t.Fatal(err)
		}
		var node resources.Node
		if err := json.Unmarshal(kv.Value, &node); err != nil {
			t.Fatal(err)
		}
		if node.Spec.BGP == nil || !node.Spec.BGP.IPv4IPIPTunnelAddr.IsValid() || node.Spec.IPv4VXLANTunnelAddr.IsValid() {
			t.Errorf("%s: tunnel addresses in the node record: %s", n.Name, kv.Value)
		}
	}

	// A node restarted (crashed) with the records in place comes up.
	if err := l.Restart(l.Nodes[0], true); err != nil {
		t.Fatalf("restart with bad records stored: %v", err)
	}
	alive("n1 restarted")
	testutil.WaitFor(t, 30*time.Second, "bad records reported after the restart", func() bool {
		got, err := reported(l.Nodes[0])
		return err == nil && len(got) == len(badRecords)
	})
	checkAll(t, l)
}

func indexOf(l *lab.Lab, n *lab.Node) int {
	for i, m := range l.Nodes {
		if m == n {
			return i
		}
	}
	return -1
}
