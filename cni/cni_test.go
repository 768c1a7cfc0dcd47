package cni

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/router/routertest"
)

// TestAddPoolErrors: a network that names a pool that does not exist, or a
// node that no pool selects, is a configuration error (code 7) that names
// the pool, not an I/O failure; nothing is allocated.
func TestAddPoolErrors(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	objs, err := resources.Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: zone-a}\n" +
		"spec: {cidr: 10.1.0.0/24, blockSize: 26, nodeSelector: \"zone == 'a'\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	svc := &Service{Node: "n1", NodeLabels: map[string]string{"zone": "b"}, Endpoints: endpoint.New(zaptest.NewLogger(t), nil, 1500, ""),
		IPAM: &ipam.IPAM{S: s}, Ready: func(context.Context) error { return nil }, Log: zaptest.NewLogger(t)}
	req := Request{Attachment: Attachment{ContainerID: "c1", IfName: "eth0"}, Network: "k8s-pod-network", Netns: "/var/run/netns/p"}
	cases := []struct {
		pools []string
		msg   string
	}{
		{[]string{"default-ipv4-ippool"}, `IP pool "default-ipv4-ippool" does not exist`},
		{[]string{"zone-a", "nope", "10.9.0.0/16"}, `IP pool "nope", "10.9.0.0/16" does not exist`},
		{[]string{"zone-a"}, "no enabled IP pool selects node n1 among zone-a"},
		{nil, "no enabled IP pool selects node n1"},
	}
	for _, c := range cases {
		req.Pools = c.pools
		_, err := svc.Add(ctx, req)
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != CodeInvalidConfig || !strings.Contains(ce.Msg, c.msg) {
			t.Errorf("pools %q: %v, want code %d with %q", c.pools, err, CodeInvalidConfig, c.msg)
		}
	}
	if hs, err := svc.IPAM.Handles(ctx); err != nil || len(hs) != 0 {
		t.Fatalf("handles after failed ADDs: %v %v", hs, err)
	}
}

// TestStoreErrCodes: each kind of datastore or IPAM failure keeps its code.
func TestStoreErrCodes(t *testing.T) {
	s := &Service{}
	for _, c := range []struct {
		err  error
		code uint
	}{
		{datastore.ErrUnavailable, CodeTryAgainLater},
		{ipam.ErrExhausted, CodeExhausted},
		{ipam.ErrNoPool, CodeInvalidConfig},
		{errors.New("disk on fire"), CodeIOFailure},
	} {
		var ce *Error
		if err := s.storeErr("op", c.err); !errors.As(err, &ce) || ce.Code != c.code {
			t.Errorf("%v: %v, want code %d", c.err, err, c.code)
		}
	}
}

func ipamAddrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// fakeEndpoints keeps endpoints as endpoint.Manager does, by key and with
// one per container interface, without TAPs (which need root). Detached
// (tortied stopping), it sets its endpoints aside and refuses every
// change, as the Manager does.
type fakeEndpoints struct {
	mu       sync.Mutex
	eps      map[string]endpoint.Info
	detached bool
	aside    map[string]endpoint.Info // what the next run restores
	// detachInRemoval: tortied begins to stop while a DeleteAttachment
	// removes its endpoint, which then stays for the next run.
	detachInRemoval bool
	// detachAtLook: tortied begins to stop as an Attachment or List
	// comes to look at the endpoints, which it then finds set aside.
	detachAtLook bool
}

// stopAfter makes the next stop come where the fake's flags say.
func (f *fakeEndpoints) stopAfter(inRemoval, atLook bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detachInRemoval, f.detachAtLook = inRemoval, atLook
}

// look detaches first if told to; callers hold mu.
func (f *fakeEndpoints) look() {
	if f.detachAtLook {
		f.detachLocked(true)
	}
}

// setDetached detaches (tortied stopping) or, with false, stands for the
// next run, which has restored every endpoint set aside.
func (f *fakeEndpoints) setDetached(d bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detachLocked(d)
}

func (f *fakeEndpoints) detachLocked(d bool) {
	switch {
	case d && !f.detached:
		f.aside, f.eps = f.eps, nil
	case !d && f.detached:
		f.eps, f.aside = f.aside, nil
	}
	f.detached = d
}

func (f *fakeEndpoints) Detached() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.detached
}

func (f *fakeEndpoints) Add(s endpoint.Spec) (endpoint.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.detached {
		return endpoint.Info{}, endpoint.ErrDetached
	}
	if s.IfName == "" {
		s.IfName = "eth0"
	}
	if _, ok := f.eps[s.Key()]; ok {
		return endpoint.Info{}, endpoint.ErrExists
	}
	for _, e := range f.eps {
		if e.Address == s.Address || (e.ContainerID == s.ContainerID && e.IfName == s.IfName) {
			return endpoint.Info{}, endpoint.ErrExists
		}
	}
	if f.eps == nil {
		f.eps = map[string]endpoint.Info{}
	}
	info := endpoint.Info{EndpointSpec: s, MAC: "02:00:00:00:00:01", MTU: 1450}
	f.eps[s.Key()] = info
	return info, nil
}

func (f *fakeEndpoints) Get(key string) (endpoint.Info, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.eps[key]
	return e, ok
}

func (f *fakeEndpoints) Attachment(containerID, ifName string) (endpoint.Info, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.look()
	for _, e := range f.eps {
		if e.ContainerID == containerID && e.IfName == ifName {
			return e, true
		}
	}
	return endpoint.Info{}, false
}

func (f *fakeEndpoints) Delete(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.detached {
		return endpoint.ErrDetached
	}
	delete(f.eps, key)
	return nil
}

func (f *fakeEndpoints) DeleteAttachment(containerID, ifName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.detached {
		return endpoint.ErrDetached
	}
	if f.detachInRemoval {
		f.detachLocked(true)
		return endpoint.ErrDetached
	}
	for k, e := range f.eps {
		if e.ContainerID == containerID && e.IfName == ifName {
			delete(f.eps, k)
		}
	}
	return nil
}

func (f *fakeEndpoints) List() []endpoint.Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.look()
	var out []endpoint.Info
	for _, e := range f.eps {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

func (f *fakeEndpoints) keys() []string {
	var out []string
	for _, e := range f.List() {
		out = append(out, e.Key())
	}
	return out
}

// newTestService serves node-1 from an in-memory datastore with one pool,
// its endpoints kept by a fakeEndpoints.
func newTestService(t *testing.T) (*Service, *fakeEndpoints) {
	t.Helper()
	s := datastore.NewMemory()
	objs, err := resources.Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: pods}\n" +
		"spec: {cidr: 10.1.0.0/24, blockSize: 26}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	r := router.New(router.Config{}, fib.New(), router.Underlay{Sender: func() router.UnderlaySender {
		return (&routertest.Underlay{}).NewSender()
	}})
	t.Cleanup(func() { _ = r.Close() })
	eps := &fakeEndpoints{}
	return &Service{Node: "node-1", Endpoints: eps, IPAM: &ipam.IPAM{S: s}, Router: r,
		Ready: func(context.Context) error { return nil }, Log: zaptest.NewLogger(t)}, eps
}

func podReq(containerID, ns, pod string) Request {
	return Request{Attachment: Attachment{ContainerID: containerID, IfName: "eth0"}, Network: "k8s-pod-network",
		Netns: "/var/run/netns/" + containerID, PodNamespace: ns, PodName: pod}
}

func handleIDs(t *testing.T, svc *Service) []string {
	t.Helper()
	hs, err := svc.IPAM.Handles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, h.ID)
	}
	sort.Strings(out)
	return out
}

// TestAddNamesEndpoints: a pod's endpoint is named as Calico names its
// WorkloadEndpoint and kept per namespace, so the same pod name in two
// namespaces makes two endpoints; the handle has Calico's attributes; a
// request without a pod keeps the container's name; a retried ADD returns
// the same result and makes nothing new.
func TestAddNamesEndpoints(t *testing.T) {
	ctx := context.Background()
	svc, eps := newTestService(t)
	before := time.Now()
	res, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Add(ctx, podReq("bbbbbbbbbbbbbbbb", "other", "web-0")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Add(ctx, podReq("cccccccccccccccc", "", "")); err != nil {
		t.Fatal(err)
	}
	want := []string{"cccccccccccc-eth0", "other/node--1-k8s-web--0-eth0", "shop/node--1-k8s-web--0-eth0"}
	if got := eps.keys(); !slices.Equal(got, want) {
		t.Fatalf("endpoints %q, want %q", got, want)
	}
	h, err := svc.IPAM.GetHandle(ctx, HandleID("k8s-pod-network", "aaaaaaaaaaaaaaaa"))
	if err != nil {
		t.Fatal(err)
	}
	a := h.Attrs
	if a["node"] != "node-1" || a["pod"] != "web-0" || a["namespace"] != "shop" || a["ifName"] != "eth0" ||
		a["containerID"] != "aaaaaaaaaaaaaaaa" || a["netns"] != "/var/run/netns/aaaaaaaaaaaaaaaa" || a["network"] != "k8s-pod-network" {
		t.Errorf("handle attrs %v", a)
	}
	ts, err := time.Parse(timestampLayout, a["timestamp"])
	if err != nil || ts.Before(before.Truncate(time.Second)) || ts.After(time.Now()) || ts.Location() != time.UTC {
		t.Errorf("timestamp %q: %v, %v", a["timestamp"], ts, err)
	}
	// The rebuilt endpoint has the name ADD gave.
	if s, ok := SpecFromHandle(h); !ok || s.Key() != "shop/node--1-k8s-web--0-eth0" {
		t.Errorf("rebuilt from the handle: %+v %v", s, ok)
	}

	again, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0"))
	if err != nil || again != res {
		t.Fatalf("retried ADD: %+v %v, first %+v", again, err, res)
	}
	if got := eps.keys(); !slices.Equal(got, want) {
		t.Fatalf("endpoints after a retried ADD %q, want %q", got, want)
	}
	if got := handleIDs(t, svc); len(got) != 3 {
		t.Fatalf("handles after a retried ADD: %q", got)
	}
}

// TestAddBadPodName: a pod name Calico cannot put in a WorkloadEndpoint
// name fails ADD with CNI_ARGS' code before any address is taken.
func TestAddBadPodName(t *testing.T) {
	svc, eps := newTestService(t)
	_, err := svc.Add(context.Background(), podReq("aaaaaaaaaaaaaaaa", "shop", "web-"))
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != CodeInvalidEnv || !strings.Contains(ce.Msg, "web-") {
		t.Fatalf("ADD: %v, want code %d naming the pod", err, CodeInvalidEnv)
	}
	if got := handleIDs(t, svc); len(got) != 0 || len(eps.keys()) != 0 {
		t.Fatalf("left behind: handles %q, endpoints %q", got, eps.keys())
	}
}

// TestFindByContainer: DEL, CHECK, GC and a retried ADD find a container's
// endpoint whatever it is named: under Calico's name when the DEL carries
// no pod, under the name of an earlier version after an upgrade.
func TestFindByContainer(t *testing.T) {
	ctx := context.Background()
	svc, eps := newTestService(t)
	if _, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	// Endpoints as an earlier version named them, with their addresses.
	old := func(id, pod string) {
		r := podReq(id, "shop", pod)
		handle := HandleID(r.Network, id)
		addr, err := svc.IPAM.Assign(ctx, ipam.Request{Handle: handle, Node: svc.Node, Attrs: svc.ipamAttrs(r, time.Now())})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eps.Add(endpoint.Spec{Name: EndpointName(id, "eth0"), Netns: r.Netns, Address: addr, IfName: "eth0",
			ContainerID: id, Network: r.Network, Handle: handle, PodNamespace: "shop", PodName: pod}); err != nil {
			t.Fatal(err)
		}
	}
	old("dddddddddddddddd", "db-0")
	old("eeeeeeeeeeeeeeee", "cache-0")
	old("ffffffffffffffff", "queue-0")

	// A retried ADD of the old endpoint's container returns it.
	res, err := svc.Add(ctx, podReq("dddddddddddddddd", "shop", "db-0"))
	if info, _ := eps.Get("shop/dddddddddddd-eth0"); err != nil || res.Address != info.Address.String()+"/32" {
		t.Fatalf("retried ADD of an old endpoint: %+v %v", res, err)
	}
	if got := eps.keys(); len(got) != 4 {
		t.Fatalf("endpoints after retried ADD: %q", got)
	}

	// CHECK without the pod's name finds both forms: it fails on what it
	// inspects (no namespace, no route here), not for want of an endpoint.
	for _, c := range []struct{ id, key string }{
		{"aaaaaaaaaaaaaaaa", "shop/node--1-k8s-web--0-eth0"},
		{"dddddddddddddddd", "shop/dddddddddddd-eth0"},
	} {
		err := svc.Check(ctx, podReq(c.id, "", ""))
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != CodeCheckFailed || !strings.Contains(ce.Msg, c.key) {
			t.Errorf("CHECK %s: %v, want code %d about %s", c.id, err, CodeCheckFailed, c.key)
		}
	}
	var ce *Error
	if err := svc.Check(ctx, podReq("0000000000000000", "", "")); !errors.As(err, &ce) || ce.Code != CodeUnknownContainer {
		t.Errorf("CHECK of an unknown container: %v", err)
	}

	// DEL without the pod's name removes both forms and releases their
	// addresses.
	for _, id := range []string{"aaaaaaaaaaaaaaaa", "dddddddddddddddd"} {
		if err := svc.Del(ctx, podReq(id, "", "")); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"shop/eeeeeeeeeeee-eth0", "shop/ffffffffffff-eth0"}
	if got := eps.keys(); !slices.Equal(got, want) {
		t.Fatalf("endpoints after DEL %q, want %q", got, want)
	}
	if got := handleIDs(t, svc); !slices.Equal(got, []string{"k8s-pod-network.eeeeeeeeeeeeeeee", "k8s-pod-network.ffffffffffffffff"}) {
		t.Fatalf("handles after DEL %q", got)
	}

	// GC removes what the runtime no longer lists, whatever its name.
	if _, err := svc.Add(ctx, podReq("9999999999999999", "shop", "api-0")); err != nil {
		t.Fatal(err)
	}
	err = svc.GC(ctx, GCRequest{Network: "k8s-pod-network", Valid: []Attachment{{ContainerID: "ffffffffffffffff", IfName: "eth0"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := eps.keys(); !slices.Equal(got, []string{"shop/ffffffffffff-eth0"}) {
		t.Fatalf("endpoints after GC %q", got)
	}
	if got := handleIDs(t, svc); !slices.Equal(got, []string{"k8s-pod-network.ffffffffffffffff"}) {
		t.Fatalf("handles after GC %q", got)
	}
}

// TestNewSandboxReplacesEarlier: a pod's new sandbox takes its endpoint's
// name over from the earlier sandbox whose DEL has not come; that DEL then
// releases the earlier address and leaves the new endpoint alone.
func TestNewSandboxReplacesEarlier(t *testing.T) {
	ctx := context.Background()
	svc, eps := newTestService(t)
	if _, err := svc.Add(ctx, podReq("1111111111111111", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Add(ctx, podReq("2222222222222222", "shop", "web-0"))
	if err != nil {
		t.Fatal(err)
	}
	info, ok := eps.Get("shop/node--1-k8s-web--0-eth0")
	if !ok || info.ContainerID != "2222222222222222" || res.Address != info.Address.String()+"/32" || len(eps.keys()) != 1 {
		t.Fatalf("after the new sandbox's ADD: %+v %v, endpoints %q", info, ok, eps.keys())
	}
	if err := svc.Del(ctx, podReq("1111111111111111", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	if info, ok := eps.Get("shop/node--1-k8s-web--0-eth0"); !ok || info.ContainerID != "2222222222222222" {
		t.Fatalf("the earlier sandbox's DEL took the new endpoint: %+v %v", info, ok)
	}
	if got := handleIDs(t, svc); !slices.Equal(got, []string{"k8s-pod-network.2222222222222222"}) {
		t.Fatalf("handles %q", got)
	}
}

// TestWhileStopping: while tortied stops (its endpoints set aside for the
// next run), ADD, DEL and GC answer code 11, try again later, and change
// nothing the next run restores: no address is released (a retried ADD
// would be handed its pod's address by IPAM, then release it), no
// WorkloadEndpoint deleted. Three ways in: a command that comes after
// the stop began; an ADD whose wait for policy is cut short by the stop
// (its rollback finds the endpoint kept); a DEL whose endpoint removal
// meets the stop. Once the next run serves, the retried DEL removes all.
func TestWhileStopping(t *testing.T) {
	ctx := context.Background()
	svc, eps := newTestService(t)
	web0 := podReq("1111111111111111", "shop", "web-0")
	if _, err := svc.Add(ctx, web0); err != nil {
		t.Fatal(err)
	}
	stopping := func(what string, err error) {
		t.Helper()
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != CodeTryAgainLater {
			t.Errorf("%s while stopping: %v, want code %d", what, err, CodeTryAgainLater)
		}
	}
	kept := func(when string, handles []string, weps ...string) {
		t.Helper()
		if got := handleIDs(t, svc); !slices.Equal(got, handles) {
			t.Fatalf("%s: handles %q, want %q", when, got, handles)
		}
		for _, name := range weps {
			if w, err := (resources.Client{S: svc.IPAM.S}).WorkloadEndpoint(ctx, "shop", name); err != nil || w == nil {
				t.Fatalf("%s: WorkloadEndpoint %s gone (%v)", when, name, err)
			}
		}
	}
	const wep0, wep1 = "node--1-k8s-web--0-eth0", "node--1-k8s-web--1-eth0"
	h0, h1 := "k8s-pod-network.1111111111111111", "k8s-pod-network.2222222222222222"

	eps.setDetached(true)
	_, err := svc.Add(ctx, podReq("2222222222222222", "shop", "web-1"))
	stopping("ADD", err)
	_, err = svc.Add(ctx, web0)
	stopping("a retried ADD", err)
	stopping("DEL", svc.Del(ctx, web0))
	stopping("GC", svc.GC(ctx, GCRequest{Network: "k8s-pod-network"}))
	kept("after commands while stopping", []string{h0}, wep0)

	// An ADD whose policy wait the stop cuts short.
	eps.setDetached(false)
	svc.PolicyReady = func(context.Context, string) error {
		eps.setDetached(true)
		return context.Canceled
	}
	_, err = svc.Add(ctx, podReq("2222222222222222", "shop", "web-1"))
	stopping("an ADD cut short", err)
	svc.PolicyReady = nil
	kept("after an ADD cut short", []string{h0, h1}, wep0, wep1)

	// A DEL whose endpoint removal meets the stop.
	eps.setDetached(false)
	eps.stopAfter(true, false)
	stopping("a DEL under way", svc.Del(ctx, web0))
	kept("after a DEL under way", []string{h0, h1}, wep0, wep1)

	// A retried ADD, and a GC, whose look at the endpoints found them
	// set aside by a stop that came just after the command began.
	eps.setDetached(false)
	eps.stopAfter(false, true)
	_, err = svc.Add(ctx, web0)
	stopping("a retried ADD meeting the stop", err)
	eps.setDetached(false)
	stopping("a GC meeting the stop", svc.GC(ctx, GCRequest{Network: "k8s-pod-network"}))
	kept("after commands meeting the stop", []string{h0, h1}, wep0, wep1)

	// The next run: the retried DELs remove both pods.
	eps.stopAfter(false, false)
	eps.setDetached(false)
	if got := eps.keys(); !slices.Equal(got, []string{"shop/" + wep0, "shop/" + wep1}) {
		t.Fatalf("the next run has endpoints %q", got)
	}
	for _, r := range []Request{web0, podReq("2222222222222222", "shop", "web-1")} {
		if err := svc.Del(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := handleIDs(t, svc); len(got) != 0 || len(eps.keys()) != 0 {
		t.Fatalf("after the retried DELs: handles %q, endpoints %q", got, eps.keys())
	}
}

// TestRetriedAddRecords: a retried ADD, which finds its endpoint, records
// the pod's WorkloadEndpoint and waits for its policy as the first did: a
// first ADD cut short once its attach was done (tortied stopping) may
// have left the endpoint without its record, and the pod would escape
// policy.
func TestRetriedAddRecords(t *testing.T) {
	ctx := context.Background()
	svc, _ := newTestService(t)
	waits := 0
	svc.PolicyReady = func(context.Context, string) error { waits++; return nil }
	web0 := podReq("1111111111111111", "shop", "web-0")
	first, err := svc.Add(ctx, web0)
	if err != nil {
		t.Fatal(err)
	}
	c := resources.Client{S: svc.IPAM.S}
	if err := c.DeleteWorkloadEndpoint(ctx, "shop", "node--1-k8s-web--0-eth0", "1111111111111111"); err != nil {
		t.Fatal(err)
	}
	again, err := svc.Add(ctx, web0)
	if err != nil || again.Address != first.Address {
		t.Fatalf("retried ADD: %+v %v, want %+v", again, err, first)
	}
	if w, err := c.WorkloadEndpoint(ctx, "shop", "node--1-k8s-web--0-eth0"); err != nil || w == nil {
		t.Fatalf("the retried ADD left no WorkloadEndpoint (%v)", err)
	}
	if waits != 2 {
		t.Fatalf("policy waited for %d times, want 2", waits)
	}
}

// TestWorkloadEndpointRecords: ADD of a pod records its WorkloadEndpoint
// as Calico does (labels a tortiectl label set on an earlier record of the
// pod kept), DEL removes it, the DEL of an earlier sandbox leaves the new
// sandbox's record alone, and an endpoint without a pod gets none.
func TestWorkloadEndpointRecords(t *testing.T) {
	ctx := context.Background()
	svc, _ := newTestService(t)
	rc := resources.Client{S: svc.IPAM.S}
	// An earlier record of the pod, labelled by an operator.
	old := &resources.WorkloadEndpoint{Metadata: resources.NamespacedMeta{Name: "node--1-k8s-web--0-eth0", Namespace: "shop",
		Labels: map[string]string{"app": "web"}}, Spec: resources.WorkloadEndpointSpec{Node: "node-1", Pod: "web-0", ContainerID: "gone"}}
	if err := rc.Apply(ctx, []resources.Object{old}); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := rc.WorkloadEndpoint(ctx, "shop", "node--1-k8s-web--0-eth0")
	if err != nil || w == nil {
		t.Fatalf("no WorkloadEndpoint after ADD: %v", err)
	}
	want := resources.WorkloadEndpointSpec{Orchestrator: "k8s", Node: "node-1", Pod: "web-0", ContainerID: "aaaaaaaaaaaaaaaa",
		Endpoint: "eth0", IPNetworks: []string{res.Address}, Profiles: []string{"kns.shop"}, MAC: "02:00:00:00:00:01"}
	if !reflect.DeepEqual(w.Spec, want) {
		t.Errorf("spec %+v, want %+v", w.Spec, want)
	}
	if l := w.Metadata.Labels; len(l) != 3 || l["app"] != "web" || l["projectcalico.org/namespace"] != "shop" || l["projectcalico.org/orchestrator"] != "k8s" {
		t.Errorf("labels %v", l)
	}
	if w.PolicyKey() != "shop/web-0" {
		t.Errorf("policy key %q", w.PolicyKey())
	}
	// A new sandbox of the pod takes the record over; the DEL of the
	// earlier one leaves it.
	if _, err := svc.Add(ctx, podReq("bbbbbbbbbbbbbbbb", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	if err := svc.Del(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	if w, err := rc.WorkloadEndpoint(ctx, "shop", "node--1-k8s-web--0-eth0"); err != nil || w == nil || w.Spec.ContainerID != "bbbbbbbbbbbbbbbb" {
		t.Fatalf("after the earlier sandbox's DEL: %+v %v", w, err)
	}
	if err := svc.Del(ctx, podReq("bbbbbbbbbbbbbbbb", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	if w, err := rc.WorkloadEndpoint(ctx, "shop", "node--1-k8s-web--0-eth0"); err != nil || w != nil {
		t.Fatalf("after DEL: %+v %v", w, err)
	}
	if _, err := svc.Add(ctx, podReq("cccccccccccccccc", "", "")); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := svc.IPAM.S.List(ctx, resources.CalicoPrefix); len(kvs) != 0 {
		t.Errorf("records for an endpoint without a pod: %v", kvs)
	}
}

// TestAddFailsWithoutWorkloadEndpoint: when the record cannot be written,
// ADD fails and leaves nothing: a pod no policy can select must not run.
func TestAddFailsWithoutWorkloadEndpoint(t *testing.T) {
	ctx := context.Background()
	svc, eps := newTestService(t)
	svc.IPAM.S = &failingPuts{Store: svc.IPAM.S, prefix: resources.CalicoPrefix}
	if _, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0")); err == nil {
		t.Fatal("ADD succeeded without its WorkloadEndpoint")
	}
	if len(eps.keys()) != 0 || len(handleIDs(t, svc)) != 0 {
		t.Errorf("left behind: endpoints %v, handles %v", eps.keys(), handleIDs(t, svc))
	}
}

// TestAddWaitsForPolicy: ADD returns once the pod's policy is in force,
// asked for by the pod's key; when it does not come, ADD fails with "try
// again later" and leaves nothing, neither the address nor the record.
func TestAddWaitsForPolicy(t *testing.T) {
	ctx := context.Background()
	svc, eps := newTestService(t)
	var asked []string
	svc.PolicyReady = func(_ context.Context, key string) error {
		asked = append(asked, key)
		if key == "shop/web-1" {
			return errors.New("the policy does not compile")
		}
		return nil
	}
	if _, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Add(ctx, podReq("bbbbbbbbbbbbbbbb", "shop", "web-1"))
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != CodeTryAgainLater || !strings.Contains(ce.Msg, "does not compile") {
		t.Fatalf("ADD under a policy that never includes the pod: %v", err)
	}
	if len(asked) != 2 || asked[0] != "shop/web-0" {
		t.Errorf("asked for %q", asked)
	}
	if len(eps.keys()) != 1 || len(handleIDs(t, svc)) != 1 {
		t.Errorf("left behind: endpoints %v, handles %v", eps.keys(), handleIDs(t, svc))
	}
	if w, err := (resources.Client{S: svc.IPAM.S}).WorkloadEndpoint(ctx, "shop", "node--1-k8s-web--1-eth0"); err != nil || w != nil {
		t.Errorf("record left behind: %+v %v", w, err)
	}
	// An endpoint without a pod has no policy to wait for.
	if _, err := svc.Add(ctx, podReq("cccccccccccccccc", "", "")); err != nil || len(asked) != 2 {
		t.Errorf("ADD without a pod: %v, asked %q", err, asked)
	}
}

// failingPuts refuses writes under prefix.
type failingPuts struct {
	datastore.Store
	prefix string
}

func (f *failingPuts) Put(ctx context.Context, key string, v []byte) (int64, error) {
	if strings.HasPrefix(key, f.prefix) {
		return 0, datastore.ErrUnavailable
	}
	return f.Store.Put(ctx, key, v)
}

// TestGCWorkloadEndpoints: GC removes this node's WorkloadEndpoints whose
// container is neither valid nor attached, and keeps the live pod's and
// other nodes' records.
func TestGCWorkloadEndpoints(t *testing.T) {
	ctx := context.Background()
	svc, _ := newTestService(t)
	rc := resources.Client{S: svc.IPAM.S}
	if _, err := svc.Add(ctx, podReq("aaaaaaaaaaaaaaaa", "shop", "web-0")); err != nil {
		t.Fatal(err)
	}
	wep := func(node, name, container string) *resources.WorkloadEndpoint {
		return &resources.WorkloadEndpoint{Metadata: resources.NamespacedMeta{Name: name, Namespace: "shop"},
			Spec: resources.WorkloadEndpointSpec{Node: node, Pod: name, ContainerID: container, IPNetworks: []string{"10.1.0.99/32"}}}
	}
	if err := rc.Apply(ctx, []resources.Object{wep("node-1", "gone", "dead"), wep("node-2", "elsewhere", "other")}); err != nil {
		t.Fatal(err)
	}
	if err := svc.GC(ctx, GCRequest{Network: "k8s-pod-network", Valid: []Attachment{{ContainerID: "aaaaaaaaaaaaaaaa", IfName: "eth0"}}}); err != nil {
		t.Fatal(err)
	}
	var names []string
	weps, err := svc.workloadEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range weps {
		names = append(names, w.Metadata.Name)
	}
	sort.Strings(names)
	if want := []string{"elsewhere", "node--1-k8s-web--0-eth0"}; !slices.Equal(names, want) {
		t.Errorf("after GC: %q, want %q", names, want)
	}
}
