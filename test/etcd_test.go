package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/lab"
)

// TestEtcdMemberLoss: with a 3-member etcd cluster, losing one member
// changes nothing; losing quorum keeps forwarding, makes ADD fail quickly
// with a clear error, and everything recovers when the members return,
// without restarting tortied.
func TestEtcdMemberLoss(t *testing.T) {
	l := up(t, lab.Options{Name: "te2", Nodes: 2, Pods: 1, Mode: "vxlan", EtcdMembers: 3})
	ctx := context.Background()
	n1 := l.Nodes[0]
	reach := func(when string) {
		t.Helper()
		if out := ping(t, l, "n1p1", l.Pod("n2p1").Address); !strings.Contains(out, " 0% packet loss") {
			t.Fatalf("%s: pods cannot reach each other:\n%s", when, out)
		}
	}
	if err := l.StopEtcd(2); err != nil {
		t.Fatal(err)
	}
	// If the lost member led, the others elect a new leader first.
	for _, i := range []int{0, 1} {
		if err := l.WaitEtcd(i, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// A runtime retries ADD on "try again later" (CNI code 11); so do we,
	// while the client fails over from the lost member.
	addRetrying(t, l, n1, "quorum", 30*time.Second)
	reach("one member down")

	if err := l.StopEtcd(1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := l.AddPodCNI(ctx, n1, newPod(t, "noquorum"))
	took := time.Since(start)
	if err == nil {
		t.Fatal("ADD succeeded without an etcd quorum")
	}
	if !strings.Contains(err.Error(), "try again later") && !strings.Contains(err.Error(), "not ready") && !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("unclear error without quorum: %v", err)
	}
	t.Logf("ADD without quorum failed after %v: %v", took.Round(time.Millisecond), err)
	list, _ := l.ConfList(n1, "1.1.0")
	if err := l.CNI().GetStatusNetworkList(ctx, list); err == nil || !strings.Contains(err.Error(), "cannot serve ADD") {
		t.Fatalf("STATUS without quorum: %v", err)
	}
	reach("quorum lost")

	for _, i := range []int{1, 2} {
		if err := l.StartEtcd(i); err != nil {
			t.Fatal(err)
		}
	}
	addRetrying(t, l, n1, "recovered", 60*time.Second)
	reach("members back")
	if err := l.CNI().GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS after recovery: %v", err)
	}
}

// addRetrying attaches a pod, retrying while tortied says "try again later".
func addRetrying(t *testing.T, l *lab.Lab, n *lab.Node, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := l.AddPodCNI(context.Background(), n, newPod(t, name))
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "try again later") || time.Now().After(deadline) {
			t.Fatalf("ADD %s: %v", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
