package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/resources"
)

func TestTunnelNeeds(t *testing.T) {
	p := func(name, cidr, ipip, vxlan, sel string, disabled bool) *resources.IPPool {
		return &resources.IPPool{Metadata: resources.Meta{Name: name}, Spec: resources.IPPoolSpec{CIDR: netip.MustParsePrefix(cidr),
			IPIPMode: ipip, VXLANMode: vxlan, NodeSelector: sel, Disabled: disabled}}
	}
	zone := map[string]string{"zone": "a"}
	for _, c := range []struct {
		name        string
		pools       []*resources.IPPool
		ipip, vxlan bool
		from        string
	}{
		{"no pool encapsulates", []*resources.IPPool{p("n", "10.1.0.0/16", "Never", "Never", "", false), p("e", "10.2.0.0/16", "", "", "", false)}, false, false, ""},
		{"ipip", []*resources.IPPool{p("n", "10.1.0.0/16", "Never", "Never", "", false), p("i", "10.2.0.0/16", "CrossSubnet", "Never", "", false)}, true, false, "i"},
		{"vxlan", []*resources.IPPool{p("v", "10.1.0.0/16", "Never", "Always", "", false)}, false, true, "v"},
		{"both", []*resources.IPPool{p("v", "10.1.0.0/16", "Never", "Always", "", false), p("i", "10.2.0.0/16", "Always", "Never", "", false)}, true, true, "v,i"},
		{"disabled ipip pool", []*resources.IPPool{p("i", "10.2.0.0/16", "Always", "Never", "", true)}, false, false, ""},
		{"ipip pool for other nodes", []*resources.IPPool{p("i", "10.2.0.0/16", "Always", "Never", "zone == 'b'", false)}, false, false, ""},
		{"ipip pool for this node", []*resources.IPPool{p("i", "10.2.0.0/16", "Always", "Never", "zone == 'a'", false)}, true, false, "i"},
	} {
		ipip, vxlan, pools := TunnelNeeds(c.pools, zone)
		if ipip != c.ipip || vxlan != c.vxlan || strings.Join(pools, ",") != c.from {
			t.Errorf("%s: ipip %v vxlan %v from %v, want %v %v %s", c.name, ipip, vxlan, pools, c.ipip, c.vxlan, c.from)
		}
	}
}
