package cni

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
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
