package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/lab"
)

// TestNodeNameHeld: a tortied started under the name of a live node, at
// another address, exits with a clear error and changes nothing of the
// live node's; under its own name again it starts, and the lab's pods
// reach each other.
func TestNodeNameHeld(t *testing.T) {
	l := up(t, lab.Options{Name: "tnh", Nodes: 3, Pods: 1, Mode: "vxlan"})
	n1, n3 := l.Nodes[0], l.Nodes[2]
	cfgPath := filepath.Join(lab.Dir(l.Name), n3.Name+".yaml")
	own, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(n3, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(cfgPath, own, 0o644) })
	as := strings.Replace(string(own), "nodeName: "+n3.Name+"\n", "nodeName: "+n1.Name+"\n", 1)
	if as == string(own) {
		t.Fatalf("no nodeName line in %s:\n%s", cfgPath, own)
	}
	if err := os.WriteFile(cfgPath, []byte(as), 0o644); err != nil {
		t.Fatal(err)
	}
	// launch waits for readiness: it comes back with tortied's exit.
	err = l.Restart(n3, false)
	if err == nil || !strings.Contains(err.Error(), "node name held by a live node") || !strings.Contains(err.Error(), n1.Address) {
		t.Fatalf("a second node named %s: %v; want an exit naming the live node's address %s", n1.Name, err, n1.Address)
	}
	st, err := api.NewClient(n1.Socket).Status()
	if err != nil || !st.Ready {
		t.Fatalf("%s after the refused start: %+v, %v", n1.Name, st, err)
	}

	if err := os.WriteFile(cfgPath, own, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Restart(n3, false); err != nil {
		t.Fatal(err)
	}
	checkAll(t, l)
}
