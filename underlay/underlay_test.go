package underlay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// TestLoopback sends VXLAN and IPIP packets built by hand through the raw
// sender to our own address in a fresh namespace and reads them back with
// the batched receivers; then lowers the MTU and expects EMSGSIZE.
func TestLoopback(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	testutil.Run(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "d0")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "d0", "up")
	self := [4]byte{10, 9, 0, 1}
	var (
		s       *Sender
		vx, ipp *Receiver
	)
	err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) {
		if s, err = NewSender("lo"); err != nil {
			return err
		}
		if vx, err = ListenVXLAN(netip.AddrFrom4(self)); err != nil {
			return err
		}
		ipp, err = ListenIPIP()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer vx.Close()
	defer ipp.Close()

	mk := func(proto uint8, payload int) []byte {
		b := make([]byte, 20+payload)
		header.IPv4(b).Encode(&header.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: proto, Src: self, Dst: self})
		return b
	}
	var pkts [][]byte
	for i := 0; i < 10; i++ {
		u := mk(header.ProtocolUDP, 8+8+60)
		header.UDP(u[20:]).Encode(40000+uint16(i), header.VXLANPort, 76, 0)
		header.VXLAN(u[28:]).Encode(4096)
		pkts = append(pkts, u)
	}
	pkts = append(pkts, mk(header.ProtocolIPIP, 40))
	dsts := make([][4]byte, len(pkts))
	for i := range dsts {
		dsts[i] = self
	}
	if n, err := s.NewWriter().Send(pkts, dsts); n != len(pkts) || err != nil {
		t.Fatalf("sent %d: %v", n, err)
	}
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes, segs, srcs := make([]int, 16), make([]int, 16), make([][4]byte, 16)
	got := 0
	for got < 10 {
		n, err := vx.Recv(bufs, sizes, segs, srcs, 64)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if sizes[i] != 68 || srcs[i] != self || header.VXLAN(bufs[i][64:]).VNI() != 4096 {
				t.Fatalf("bad vxlan datagram: size %d from %v", sizes[i], srcs[i])
			}
		}
		got += n
	}
	n, err := ipp.Recv(bufs, sizes, segs, srcs, 64)
	if err != nil || n != 1 || sizes[0] != 60 || header.IPv4(bufs[0][64:]).Protocol() != 4 {
		t.Fatalf("ipip: n=%d size=%d err=%v", n, sizes[0], err)
	}
	// UDP GSO: one send of three 100-byte datagrams arrives as three.
	var g *GSOSender
	if err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) { g, err = NewGSOSender(netip.AddrFrom4(self), 2, "lo"); return err }); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	run := make([]byte, 300)
	for i := 0; i < 3; i++ {
		header.VXLAN(run[i*100:]).Encode(uint32(4096 + i))
	}
	if err := g.NewWriter().SendGSO(run, 100, self, 7); err != nil {
		t.Fatalf("SendGSO: %v", err)
	}
	grouped := false
	for got := 0; got < 3; {
		n, err := vx.Recv(bufs, sizes, segs, srcs, 64)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			step := sizes[i]
			if segs[i] > 0 {
				step, grouped = segs[i], true
			}
			for d := 0; d < sizes[i]; d += step {
				if step != 100 || header.VXLAN(bufs[i][64+d:]).VNI() != uint32(4096+got) {
					t.Fatalf("GSO datagram %d: size %d vni %d", got, step, header.VXLAN(bufs[i][64+d:]).VNI())
				}
				got++
			}
		}
	}
	t.Logf("GSO run received as one GRO message: %v", grouped)
	// Underlay MTU lowered at run time: EMSGSIZE, and MTU() sees the change.
	testutil.Run(t, "ip", "-n", ns, "link", "set", "lo", "mtu", "1280")
	_, err = s.NewWriter().Send([][]byte{mk(header.ProtocolUDP, 1400)}, [][4]byte{self})
	if !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("want EMSGSIZE, got %v", err)
	}
	var mtu int
	if err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) { mtu, err = s.MTU(); return err }); err != nil || mtu != 1280 {
		t.Fatalf("MTU() = %d, %v; want 1280", mtu, err)
	}
}

// TestVXLANQueues: four sockets share port 4789; datagrams from 64 source
// ports are each read exactly once, from more than one socket, and the
// datagrams of one source port all reach the same socket in the order
// sent.
func TestVXLANQueues(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	self := [4]byte{127, 0, 0, 1}
	var (
		s   *Sender
		rxs []*Receiver
	)
	err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) {
		if s, err = NewSender("lo"); err != nil {
			return err
		}
		rxs, err = ListenVXLANQueues(netip.AddrFrom4(self), 4)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(rxs) != 4 {
		for _, r := range rxs {
			r.Close()
		}
		t.Fatalf("%d sockets, want 4", len(rxs))
	}
	const ports, each = 64, 4
	w := s.NewWriter()
	for seq := range each {
		var pkts [][]byte
		var dsts [][4]byte
		for p := range ports {
			b := make([]byte, 20+8+8+8)
			header.IPv4(b).Encode(&header.IPv4Fields{TotalLen: len(b), TTL: 64, Protocol: header.ProtocolUDP, Src: self, Dst: self})
			header.UDP(b[20:]).Encode(40000+uint16(p), header.VXLANPort, 24, 0)
			header.VXLAN(b[28:]).Encode(uint32(p))
			b[36] = byte(seq)
			pkts, dsts = append(pkts, b), append(dsts, self)
		}
		if n, err := w.Send(pkts, dsts); n != len(pkts) || err != nil {
			t.Fatalf("sent %d: %v", n, err)
		}
	}
	// One reader per socket, as the router has; each passes on what it
	// read, in the order read.
	type datagram struct {
		queue, size, segs int
		vni               uint32
		seq               byte
	}
	got := make(chan datagram, ports*each)
	var readers sync.WaitGroup
	for q, r := range rxs {
		readers.Add(1)
		go func() {
			defer readers.Done()
			bufs := make([][]byte, 64)
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes, segs, srcs := make([]int, 64), make([]int, 64), make([][4]byte, 64)
			for {
				n, err := r.Recv(bufs, sizes, segs, srcs, 0)
				if err != nil {
					return // closed
				}
				for i := range n {
					got <- datagram{queue: q, size: sizes[i], segs: segs[i], vni: header.VXLAN(bufs[i]).VNI(), seq: bufs[i][8]}
				}
			}
		}()
	}
	defer readers.Wait()
	for _, r := range rxs {
		defer r.Close()
	}
	queueOf := map[uint32]int{} // VNI (the source port's index) -> socket
	next := map[uint32]byte{}   // VNI -> the sequence number expected
	used := map[int]bool{}
	timeout := time.After(10 * time.Second)
	for n := 0; n < ports*each; n++ {
		var d datagram
		select {
		case d = <-got:
		case <-timeout:
			t.Fatalf("%d of %d datagrams read", n, ports*each)
		}
		if d.segs != 0 || d.size != 16 {
			t.Fatalf("message of %d bytes (segments of %d)", d.size, d.segs)
		}
		if first, ok := queueOf[d.vni]; ok && first != d.queue {
			t.Fatalf("flow %d read from sockets %d and %d", d.vni, first, d.queue)
		}
		if d.seq != next[d.vni] {
			t.Fatalf("flow %d: datagram %d read where %d was next", d.vni, d.seq, next[d.vni])
		}
		queueOf[d.vni], next[d.vni], used[d.queue] = d.queue, d.seq+1, true
	}
	if len(used) < 2 {
		t.Fatalf("every flow reached one socket of %d", len(rxs))
	}
}

// TestTryRecv: TryRecv returns no message and no error on an empty socket,
// where PollFD does not poll readable; once datagrams arrive, PollFD polls
// readable and TryRecv takes them, in order, saying it found the socket
// empty exactly when it took fewer than it had room for; after Close it
// says the socket is closed.
func TestTryRecv(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	self := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	var rx *Receiver
	if err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) { rx, err = ListenVXLAN(self); return err }); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	fd, err := rx.PollFD()
	if err != nil {
		t.Fatal(err)
	}
	readable := func(timeout time.Duration) bool { return testutil.Readable(t, fd, timeout) }
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes, segs, srcs := make([]int, 4), make([]int, 4), make([][4]byte, 4)
	if n, drained, err := rx.TryRecv(bufs, sizes, segs, srcs, 64); n != 0 || !drained || err != nil {
		t.Fatalf("TryRecv of an empty socket: %d, drained %v, %v; want 0, true, nil", n, drained, err)
	}
	if readable(0) {
		t.Fatal("PollFD polls readable with nothing queued")
	}
	// Six datagrams, more than one call has room for: a full call has not
	// found the socket empty, a short one has. Loopback usually delivers
	// each before its send returns, so the first call is full; in case it
	// is not, the round is sent again.
	var full bool
	for round := 0; round < 5 && !full; round++ {
		err = nsutil.Do(testutil.NetnsPath(ns), func() error {
			c, err := net.Dial("udp4", "127.0.0.1:4789")
			if err != nil {
				return err
			}
			defer c.Close()
			for b := byte(1); b <= 6; b++ {
				if _, err := c.Write([]byte{b, b, b, b, b, b, b, b}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for len(got) < 6 {
			if !readable(10 * time.Second) {
				t.Fatalf("after %d of 6 datagrams, PollFD does not poll readable", len(got))
			}
			n, drained, err := rx.TryRecv(bufs, sizes, segs, srcs, 64)
			if err != nil {
				t.Fatal(err)
			}
			if drained != (n < len(bufs)) {
				t.Fatalf("%d datagrams into room for %d, drained %v: want drained exactly when short", n, len(bufs), drained)
			}
			full = full || n == len(bufs)
			switch left := 6 - len(got) - n; {
			case n == len(bufs) && left > 0 && !readable(10*time.Second):
				t.Fatalf("a full call left %d datagrams, but the socket does not poll readable", left)
			case drained && left == 0 && readable(0):
				t.Fatal("a short call took the last datagram, but the socket still polls readable")
			}
			for i := 0; i < n; i++ {
				if sizes[i] != 8 || srcs[i] != self.As4() {
					t.Fatalf("datagram of %d bytes from %v, want 8 from %v", sizes[i], srcs[i], self)
				}
				got = append(got, bufs[i][64])
			}
		}
		if string(got) != "\x01\x02\x03\x04\x05\x06" {
			t.Fatalf("received % x, want 01 to 06", got)
		}
	}
	if !full {
		t.Fatal("no TryRecv took a full batch in five rounds of six datagrams")
	}
	if n, _, err := rx.TryRecv(bufs, sizes, segs, srcs, 64); n != 0 || err != nil {
		t.Fatalf("TryRecv after the datagrams: %d, %v; want 0, nil", n, err)
	}
	rx.Close()
	if _, _, err := rx.TryRecv(bufs, sizes, segs, srcs, 64); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("TryRecv after Close: %v, want os.ErrClosed", err)
	}
}

// TestInterfaceGRO reads and sets a veth's GRO, checked against ethtool's
// own reading: a veth starts without it; on and off take; an unknown
// interface is an error naming it.
func TestInterfaceGRO(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "-n", ns, "link", "add", "ua", "type", "veth", "peer", "name", "ub")
	ethtoolGRO := func() string {
		out := testutil.Run(t, "ip", "netns", "exec", ns, "ethtool", "-k", "ua")
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "generic-receive-offload:") {
				return strings.Fields(l)[1]
			}
		}
		t.Fatalf("ethtool -k ua has no generic-receive-offload line:\n%s", out)
		return ""
	}
	in := func(f func() error) {
		t.Helper()
		if err := nsutil.Do(testutil.NetnsPath(ns), f); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []bool{false, true, false} {
		if want {
			in(func() error { return SetInterfaceGRO("ua", true) })
		} else if ethtoolGRO() == "on" {
			in(func() error { return SetInterfaceGRO("ua", false) })
		}
		var got bool
		in(func() (err error) { got, err = InterfaceGRO("ua"); return err })
		if got != want || ethtoolGRO() != map[bool]string{true: "on", false: "off"}[want] {
			t.Fatalf("GRO: InterfaceGRO says %v, ethtool says %s; want %v", got, ethtoolGRO(), want)
		}
	}
	err := nsutil.Do(testutil.NetnsPath(ns), func() error { _, err := InterfaceGRO("nosuch0"); return err })
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("GRO of a missing interface: %v", err)
	}
}

// TestFullSendBuffer: behind a link whose queue holds what it is given and
// sends nearly nothing (tbf at 8 kbit/s, with room for 100 MB), each
// sender's socket buffer fills, and the send that finds it full fails at
// once with EAGAIN rather than wait for room that may never come. What
// the senders say went is exactly what reached the link's queue: a
// sendmmsg cut short counts only the packets it sent.
func TestFullSendBuffer(t *testing.T) {
	ns := testutil.Netns(t)
	// No IPv6: nothing but the test's packets reaches the link's queue.
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		testutil.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	testutil.Run(t, "ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	testutil.Run(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "d0")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "d0", "up")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "d1", "up")
	testutil.Run(t, "ip", "-n", ns, "neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "d0")
	testutil.Run(t, "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "d0", "root", "tbf", "rate", "8kbit", "burst", "1600", "limit", "100000000")
	self, peer := [4]byte{10, 9, 0, 1}, [4]byte{10, 9, 0, 2}
	var (
		s *Sender
		g *GSOSender
	)
	err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) {
		if s, err = NewSender("d0"); err != nil {
			return err
		}
		g, err = NewGSOSender(netip.AddrFrom4(self), 1, "d0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer g.Close()

	// queued is how many packets the link took: sent on, and waiting.
	// The two counters are not read at one instant, so a packet leaving
	// between them (one every 1.4 s) would count twice: two readings
	// must agree.
	queued := func() int {
		t.Helper()
		read := func() int {
			q := testutil.QdiscStats(t, ns, "d0")
			if q.Drops != 0 {
				t.Fatalf("the link dropped %d packets", q.Drops)
			}
			return q.Packets + q.Qlen
		}
		for {
			if a, b := read(), read(); a == b {
				return a
			}
		}
	}
	// Each sender goes until a send fails; the test waits for that with
	// a deadline, which a sender that waits for room never meets.
	const most = 200 << 20 // bytes: over the queue's limit, so EAGAIN must come first
	until := func(name string, send func() (int, error)) {
		t.Helper()
		done := make(chan error, 1)
		var went, calls int
		go func() {
			for went < most {
				calls++
				n, err := send()
				went += n
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("%s: after %d bytes in %d sends: %v, want EAGAIN", name, went, calls, err)
			}
			t.Logf("%s: EAGAIN after %d bytes in %d sends", name, went, calls)
		case <-time.After(time.Minute):
			t.Fatalf("%s: a send waited for room in a full socket buffer", name)
		}
	}

	pkts := make([][]byte, BatchSize)
	dsts := make([][4]byte, BatchSize)
	for i := range pkts {
		pkts[i] = make([]byte, 1400)
		header.IPv4(pkts[i]).Encode(&header.IPv4Fields{TotalLen: 1400, TTL: 64, Protocol: header.ProtocolUDP, Src: self, Dst: peer})
		dsts[i] = peer
	}
	w := s.NewWriter()
	raw := 0
	until("raw", func() (int, error) {
		n, err := w.Send(pkts, dsts)
		if err != nil && n >= len(pkts) {
			t.Errorf("raw: %d of %d sent with %v", n, len(pkts), err)
		}
		raw += n
		return n * 1400, err
	})
	if q := queued(); q != raw {
		t.Fatalf("raw: the senders say %d packets went, the link took %d", raw, q)
	}

	// A run of 45 datagrams reaches the link as one packet, which tbf
	// cuts into its 45 datagrams: the whole is larger than its burst.
	run := make([]byte, 45*1400)
	gw := g.NewWriter()
	runs := 0
	until("GSO", func() (int, error) {
		if err := gw.SendGSO(run, 1400, peer, 0); err != nil {
			return 0, err
		}
		runs++
		return len(run), nil
	})
	if q := queued(); q != raw+45*runs {
		t.Fatalf("GSO: %d runs of 45 went after %d raw packets, the link took %d packets", runs, raw, q)
	}
}
