package endpoint

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/router/routertest"
)

// managerWith is a manager holding endpoints as records only: finding and
// conflict checks need no TAP (which needs root).
func managerWith(t *testing.T, specs ...Spec) *Manager {
	m := New(zaptest.NewLogger(t), nil, 1500, "")
	for _, s := range specs {
		m.eps[s.Key()] = &entry{info: Info{EndpointSpec: s}}
	}
	return m
}

func spec(name, ns, containerID, addr string) Spec {
	return Spec{Name: name, PodNamespace: ns, ContainerID: containerID, IfName: "eth0", Address: netip.MustParseAddr(addr)}
}

// TestKey: a pod's endpoint is known by namespace and name, others by name.
func TestKey(t *testing.T) {
	for _, c := range []struct {
		s    Spec
		want string
	}{
		{Spec{Name: "n1-k8s-web-eth0", PodNamespace: "shop"}, "shop/n1-k8s-web-eth0"},
		{Spec{Name: "0123456789ab-eth0", PodNamespace: "shop"}, "shop/0123456789ab-eth0"},
		{Spec{Name: "n1p1"}, "n1p1"},
	} {
		if got := c.s.Key(); got != c.want {
			t.Errorf("%+v: key %q, want %q", c.s, got, c.want)
		}
	}
}

// TestConflict: the same pod name in two namespaces is no conflict; the
// same key, the same address, or a second endpoint for one container's
// interface is, whatever the names.
func TestConflict(t *testing.T) {
	m := managerWith(t, spec("n1-k8s-web-eth0", "shop", "c1", "10.1.0.1"), spec("static", "", "", "10.1.0.9"))
	for _, c := range []struct {
		s    Spec
		want string // "" = no conflict
	}{
		{spec("n1-k8s-web-eth0", "other", "c2", "10.1.0.2"), ""},
		{spec("static2", "", "", "10.1.0.3"), ""},
		{spec("n1-k8s-web-eth0", "shop", "c2", "10.1.0.2"), "name shop/n1-k8s-web-eth0"},
		{spec("n1-k8s-db-eth0", "shop", "c2", "10.1.0.1"), "address 10.1.0.1 is used by shop/n1-k8s-web-eth0"},
		{spec("c1c1-eth0", "shop", "c1", "10.1.0.2"), "container c1 interface eth0 is attached as shop/n1-k8s-web-eth0"},
		{spec("other", "", "", "10.1.0.9"), "address 10.1.0.9 is used by static"},
	} {
		err := m.conflict(c.s)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want none", c.s.Key(), err)
		case c.want != "" && (!errors.Is(err, ErrExists) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want ErrExists with %q", c.s.Key(), err, c.want)
		}
	}
	// A second interface of the same container is its own attachment.
	s := spec("c1-net1", "shop", "c1", "10.1.0.4")
	s.IfName = "net1"
	if err := m.conflict(s); err != nil {
		t.Errorf("second interface: %v", err)
	}
}

// TestAttachment: an endpoint is found by container and interface whatever
// its name; endpoints without a container are never found so.
func TestAttachment(t *testing.T) {
	m := managerWith(t, spec("n1-k8s-web-eth0", "shop", "c1", "10.1.0.1"), spec("c2c2c2c2c2c2-eth0", "shop", "c2", "10.1.0.2"),
		spec("static", "", "", "10.1.0.9"))
	for _, c := range []struct {
		id, ifName, want string
	}{
		{"c1", "eth0", "shop/n1-k8s-web-eth0"},
		{"c2", "eth0", "shop/c2c2c2c2c2c2-eth0"},
		{"c1", "net1", ""},
		{"c3", "eth0", ""},
		{"", "eth0", ""},
	} {
		info, ok := m.Attachment(c.id, c.ifName)
		if got := info.Key(); ok != (c.want != "") || (ok && got != c.want) {
			t.Errorf("(%q, %q): %q %v, want %q", c.id, c.ifName, got, ok, c.want)
		}
	}
	var keys []string
	for _, e := range m.List() {
		keys = append(keys, e.Key())
	}
	if want := []string{"shop/c2c2c2c2c2c2-eth0", "shop/n1-k8s-web-eth0", "static"}; !slices.Equal(keys, want) {
		t.Errorf("List: %q, want %q", keys, want)
	}
}

// TestDetachKeepsState: Detach leaves the state file listing every
// endpoint for the next run, and nothing after it changes the file: an
// Add or a removal is refused with ErrDetached, and a removal already
// under way when Detach came (its endpoint out of the table, its save
// still to come) does not write the file without the endpoints Detach let
// go, which would have the next run restore none of them.
func TestDetachKeepsState(t *testing.T) {
	testutil.RequireRoot(t)
	r := router.New(router.Config{NodeAddr: [4]byte{10, 0, 0, 1}, UnderlayMTU: 1500}, fib.New(),
		router.Underlay{Sender: func() router.UnderlaySender { return (&routertest.Underlay{}).NewSender() }})
	t.Cleanup(func() { r.Close() })
	state := filepath.Join(t.TempDir(), "endpoints.json")
	m := New(zaptest.NewLogger(t), r, 1500, state)
	pod := func(i int) Spec {
		s := spec(fmt.Sprintf("p%d", i), "shop", fmt.Sprintf("c%d", i), fmt.Sprintf("10.1.0.%d", i+1))
		s.Netns = testutil.NetnsPath(testutil.Netns(t))
		return s
	}
	var want []string
	for i := range 3 {
		s := pod(i)
		if _, err := m.Add(s); err != nil {
			t.Fatal(err)
		}
		want = append(want, s.Key())
	}
	// A removal under way: p0 is out of the table, its detach to come.
	m.mu.Lock()
	e := m.eps["shop/p0"]
	delete(m.eps, "shop/p0")
	m.mu.Unlock()
	m.Detach()
	if err := m.detach("shop/p0", e); !errors.Is(err, ErrDetached) {
		t.Errorf("a removal finished after Detach: %v, want ErrDetached", err)
	}
	if _, err := m.Add(pod(3)); !errors.Is(err, ErrDetached) {
		t.Errorf("Add after Detach: %v, want ErrDetached", err)
	}
	if err := m.Delete("shop/p1"); !errors.Is(err, ErrDetached) {
		t.Errorf("Delete after Detach: %v, want ErrDetached", err)
	}
	if err := m.DeleteAttachment("c2", "eth0"); !errors.Is(err, ErrDetached) {
		t.Errorf("DeleteAttachment after Detach: %v, want ErrDetached", err)
	}
	specs, err := LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range specs {
		got = append(got, s.Key())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("the state file after Detach lists %q, want %q", got, want)
	}
}
