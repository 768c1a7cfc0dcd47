package test

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/nsutil"
)

// listenIn opens a TCP listener inside a lab namespace and reports the
// source address of the first connection.
func listenIn(t *testing.T, l *lab.Lab, target, addr string) <-chan string {
	t.Helper()
	ns, err := l.Target(target)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	from := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		from <- strings.Split(c.RemoteAddr().String(), ":")[0]
		c.Close()
	}()
	return from
}

func connectFrom(t *testing.T, l *lab.Lab, pod, addr string) {
	t.Helper()
	ns, _ := l.Target(pod)
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("ip", "netns", "exec", ns, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port).CombinedOutput()
	if err != nil {
		t.Fatalf("%s could not connect to %s: %v %s", pod, addr, err, out)
	}
}

// TestNATOutgoing: a pod of a natOutgoing pool reaches a host outside all
// pools with its node's address as source; pod to pod is not NATed.
func TestNATOutgoing(t *testing.T) {
	l := up(t, lab.Options{Name: "tx1", Nodes: 2, Pods: 1, Mode: "vxlan"})
	out := listenIn(t, l, "outside", lab.OutsideAddr+":8080")
	connectFrom(t, l, "n1p1", lab.OutsideAddr+":8080")
	select {
	case src := <-out:
		if src != l.Nodes[0].Addr() {
			t.Fatalf("the outside saw %s, want n1's address %s", src, l.Nodes[0].Addr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection reached the outside")
	}
	in := listenIn(t, l, "n2p1", l.Pod("n2p1").Address+":8081")
	connectFrom(t, l, "n1p1", l.Pod("n2p1").Address+":8081")
	select {
	case src := <-in:
		if src != l.Pod("n1p1").Address {
			t.Fatalf("pod to pod was NATed: n2p1 saw %s, want %s", src, l.Pod("n1p1").Address)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pod-to-pod connection")
	}
}
