package plugin

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"tortie"` + extra + `}`)
}

// TestParseErrors: every bad configuration gets the CNI code for it and a
// message that names what is wrong.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		conf []byte
		code uint
		msg  []string
	}{
		{"syntax error", []byte(`{"cniVersion":"1.1.0",`), types.ErrDecodingFailure, []string{"not valid JSON"}},
		{"not an object", []byte(`[1]`), types.ErrInvalidNetworkConfig, []string{"the network configuration", "want an object"}},
		{"mtu as a string", conf(`,"mtu":"1500"`), types.ErrInvalidNetworkConfig, []string{`field "mtu"`, "got a JSON string", "want an integer"}},
		{"pools as a string", conf(`,"ipam":{"pools":"p"}`), types.ErrInvalidNetworkConfig, []string{`field "ipam.pools"`, "want a list of strings"}},
		{"ipv4_pools of numbers", conf(`,"ipam":{"ipv4_pools":[1]}`), types.ErrInvalidNetworkConfig, []string{`field "ipam.ipv4_pools`, "want a string"}},
		{"ipam as a list", conf(`,"ipam":[]`), types.ErrInvalidNetworkConfig, []string{`field "ipam"`, "want an object"}},
		{"no name", []byte(`{"cniVersion":"1.1.0","type":"tortie"}`), types.ErrInvalidNetworkConfig, []string{`"name"`}},
		{"host-local", conf(`,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}`), types.ErrInvalidNetworkConfig,
			[]string{`ipam.type "host-local" is not supported`, `"calico-ipam"`}},
		{"ipv6 pools", conf(`,"ipam":{"type":"calico-ipam","ipv6_pools":["default-ipv6-ippool"]}`), types.ErrInvalidNetworkConfig, []string{"IPv6"}},
		{"assign_ipv6", conf(`,"ipam":{"type":"calico-ipam","assign_ipv6":"true"}`), types.ErrInvalidNetworkConfig, []string{"IPv6"}},
		{"mtu too small", conf(`,"mtu":100`), types.ErrInvalidNetworkConfig, []string{"mtu 100"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(c.conf)
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("want a CNI error, got %v", err)
			}
			if e.Code != c.code {
				t.Errorf("code %d, want %d (%s)", e.Code, c.code, e.Msg)
			}
			for _, m := range c.msg {
				if !strings.Contains(e.Msg, m) {
					t.Errorf("message %q lacks %q", e.Msg, m)
				}
			}
		})
	}
}

// TestParsePools: calico-ipam's ipv4_pools and tortie's pools both restrict
// the request; no list leaves the choice to the node's pools.
func TestParsePools(t *testing.T) {
	args := &skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/var/run/netns/p", Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod"}
	cases := []struct {
		conf  []byte
		pools []string
	}{
		{conf(``), nil},
		{conf(`,"ipam":{}`), nil},
		{conf(`,"ipam":{"type":"calico-ipam"}`), nil},
		{conf(`,"ipam":{"type":"calico-ipam","ipv4_pools":["a","10.1.0.0/16"],"assign_ipv4":"true"}`), []string{"a", "10.1.0.0/16"}},
		{conf(`,"ipam":{"pools":["b"]}`), []string{"b"}},
		{conf(`,"ipam":{"ipv4_pools":["a"],"pools":["b"]}`), []string{"a", "b"}},
	}
	for _, c := range cases {
		nc, err := parse(c.conf)
		if err != nil {
			t.Fatalf("%s: %v", c.conf, err)
		}
		r := request(nc, args)
		if !slices.Equal(r.Pools, c.pools) {
			t.Errorf("%s: pools %q, want %q", c.conf, r.Pools, c.pools)
		}
		if r.Network != "k8s-pod-network" || r.PodNamespace != "ns" || r.PodName != "pod" || nc.Socket != DefaultSocket {
			t.Errorf("%s: request %+v, socket %s", c.conf, r, nc.Socket)
		}
	}
}

// The example conflist parses as the runtime hands it over (name and
// cniVersion injected into the plugin's entry) and names no pool, so that
// any pool selecting the node serves it.
func TestExampleConflist(t *testing.T) {
	b, err := os.ReadFile("../../examples/10-tortie.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 1 || list.Plugins[0]["type"] != "tortie" {
		t.Fatalf("plugins %v", list.Plugins)
	}
	p := list.Plugins[0]
	p["name"], p["cniVersion"] = list.Name, list.CNIVersion
	b, _ = json.Marshal(p)
	c, err := parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if pools := c.IPAM.poolList(); len(pools) != 0 {
		t.Fatalf("the example restricts pools to %q", pools)
	}
	if !slices.Contains(IPAMTypes, c.IPAM.Type) {
		t.Fatalf("the example's ipam.type %q", c.IPAM.Type)
	}
}
