package test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

var seqRe = regexp.MustCompile(`icmp_seq=(\d+)`)

// TestKillUnderTraffic: tortied on n1 is killed with SIGKILL while a TCP
// stream and a 100-per-second ping run through it, and started again. The
// pods' TAPs persist, the daemon re-attaches them from its state file, the
// stream completes, and the ping shows how long forwarding stopped.
func TestKillUnderTraffic(t *testing.T) {
	l := up(t, lab.Options{Name: "tr1", Nodes: 2, Pods: 1, Mode: "vxlan"})
	n1 := l.Nodes[0]
	target := l.Pod("n1p1").Address
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	streamDone := make(chan error, 1)
	go func() {
		r, err := l.Iperf(ctx, "n2p1", "n1p1", 8*time.Second, 0, false)
		if err == nil {
			t.Logf("TCP through the restart: %.2f Gbit/s average, %d retransmits", r.BitsPerSecond/1e9, r.Retransmits)
		}
		streamDone <- err
	}()

	src, _ := l.Target("n2p1")
	ping := exec.CommandContext(ctx, "ip", "netns", "exec", src, "ping", "-n", "-i", "0.01", "-w", "7", target)
	out, _ := ping.StdoutPipe()
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var seqs []int
	killed := false
	for sc.Scan() {
		m := seqRe.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		seqs = append(seqs, n)
		if !killed && len(seqs) == 100 { // one second of traffic flowing: crash now
			killed = true
			if err := l.Restart(n1, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = ping.Wait()
	if !killed {
		t.Fatalf("only %d replies before the crash point", len(seqs))
	}
	gap, after := 0, 0
	for i := 1; i < len(seqs); i++ {
		if d := seqs[i] - seqs[i-1]; d > gap {
			gap = d
		}
		if seqs[i] > 100 {
			after++
		}
	}
	t.Logf("forwarding gap across kill -9 and restart: about %d ms (%d replies after the restart)", gap*10, after)
	if after == 0 {
		t.Fatal("no traffic after the restart")
	}
	if err := <-streamDone; err != nil {
		t.Fatalf("TCP stream did not survive the restart: %v", err)
	}
	eps, err := api.NewClient(n1.Socket).Endpoints()
	if err != nil || len(eps) != 1 || eps[0].Address.String() != target {
		t.Fatalf("after restart: %+v %v", eps, err)
	}
	list, _ := l.ConfList(n1, "1.1.0")
	if err := l.CNI().CheckNetworkList(ctx, list, l.Pod("n1p1").Runtime()); err != nil {
		t.Fatalf("CHECK after restart: %v", err)
	}
}

// TestRestartRecovery: a pod whose namespace disappears while tortied is
// down is cleaned up and its address released; a corrupt state file is
// rebuilt from the datastore, not trusted.
func TestRestartRecovery(t *testing.T) {
	l := up(t, lab.Options{Name: "tr2", Nodes: 2, Pods: 1, Mode: "ipip"})
	n1 := l.Nodes[0]
	ctx := context.Background()
	doomed := newPod(t, "doomed")
	if err := l.AddPodCNI(ctx, n1, doomed); err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(n1, true); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "ip", "netns", "del", doomed.Netns)
	if err := l.Restart(n1, true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the gone pod's address released", func() bool {
		_, held := handles(t, n1)[lab.NetworkName+"."+doomed.ContainerID]
		return !held
	})
	if eps, _ := api.NewClient(n1.Socket).Endpoints(); len(eps) != 1 {
		t.Fatalf("endpoints after restart: %+v", eps)
	}

	// Corrupt state: the daemon must rebuild from the IPAM handles.
	if err := l.Stop(n1, false); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(lab.Dir(l.Name), n1.Name+"-state", "endpoints.json")
	if err := os.WriteFile(state, []byte(`{"version": 1, "endpoints": [{"name": `), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Restart(n1, false); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "endpoint rebuilt from the datastore", func() bool {
		eps, err := api.NewClient(n1.Socket).Endpoints()
		return err == nil && len(eps) == 1
	})
	if out := ping(t, l, "n2p1", l.Pod("n1p1").Address); !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("pod unreachable after rebuilding: %s", out)
	}
}
