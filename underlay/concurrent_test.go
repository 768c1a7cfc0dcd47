package underlay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// TestConcurrentSend has several goroutines send numbered datagrams at
// once through one raw socket and two UDP GSO sockets, each through its
// own writers, as the router's workers do, and checks that
// every datagram arrives exactly once: none lost, none duplicated. The
// senders keep a bounded number in flight (credits returned by the
// receiver), so the socket's receive buffer never overflows and any loss
// is the sender's.
func TestConcurrentSend(t *testing.T) {
	const (
		senders  = 4
		each     = 20000
		batch    = 32
		inFlight = 512
		port     = 4789
	)
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	testutil.Run(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "d0")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "d0", "up")
	self := [4]byte{10, 9, 0, 1}
	var (
		s  *Sender
		gs *GSOSender
		rx *Receiver
	)
	err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) {
		if s, err = NewSender("lo"); err != nil {
			return err
		}
		if gs, err = NewGSOSender(netip.AddrFrom4(self), 2, "lo"); err != nil {
			return err
		}
		rx, err = ListenVXLAN(netip.AddrFrom4(self))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer gs.Close()
	defer rx.Close()

	credits := make(chan struct{}, inFlight)
	for i := 0; i < inFlight; i++ {
		credits <- struct{}{}
	}
	done := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(done); rx.Close() }) }
	// A lost datagram never returns its credit: past the deadline, or at
	// a sender's failure, the receiver stops and reports what is missing.
	deadline := time.AfterFunc(60*time.Second, stop)
	defer deadline.Stop()

	var wg sync.WaitGroup
	sendErrs := make([]error, senders)
	for g := 0; g < senders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine its own writers, as each router worker.
			w, gw := s.NewWriter(), gs.NewWriter()
			pkts := make([][]byte, batch)
			dsts := make([][4]byte, batch)
			for i := range pkts {
				pkts[i] = make([]byte, header.IPv4MinLen+header.UDPLen+8)
				dsts[i] = self
			}
			run := make([]byte, 8*batch) // a UDP GSO run of 8-byte datagrams
			for seq := 0; seq < each; seq += batch {
				n := min(batch, each-seq)
				for i := 0; i < n; i++ {
					select {
					case <-credits:
					case <-done:
						return
					}
					id := uint64(g*each + seq + i)
					p := pkts[i]
					header.IPv4(p).Encode(&header.IPv4Fields{TotalLen: len(p), TTL: 64, Protocol: header.ProtocolUDP, Src: self, Dst: self})
					header.UDP(p[header.IPv4MinLen:]).Encode(40000, port, header.UDPLen+8, 0)
					binary.BigEndian.PutUint64(p[header.IPv4MinLen+header.UDPLen:], id)
					binary.BigEndian.PutUint64(run[8*i:], id)
				}
				// Odd batches leave as one UDP GSO run, even ones through
				// the raw socket: both kinds of writer send at once.
				var err error
				if (seq/batch)%2 == 1 {
					err = gw.SendGSO(run[:8*n], 8, self, uint32(g))
				} else if sent, serr := w.Send(pkts[:n], dsts[:n]); serr != nil || sent != n {
					err = fmt.Errorf("sent %d of %d: %v", sent, n, serr)
				}
				if err != nil {
					sendErrs[g] = err
					stop()
					return
				}
			}
		}()
	}

	const total = senders * each
	seen := make([]uint8, total)
	unique, dups, bad := 0, 0, 0
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes, segs, srcs := make([]int, BatchSize), make([]int, BatchSize), make([][4]byte, BatchSize)
	for unique < total {
		n, err := rx.Recv(bufs, sizes, segs, srcs, 0)
		if err != nil {
			break // closed at the deadline
		}
		for i := 0; i < n; i++ {
			step := sizes[i]
			if segs[i] > 0 {
				step = segs[i]
			}
			for d := 0; d < sizes[i]; d += step {
				if min(step, sizes[i]-d) != 8 {
					bad++
					continue
				}
				id := binary.BigEndian.Uint64(bufs[i][d:])
				if id >= total {
					bad++
					continue
				}
				if seen[id]++; seen[id] == 1 {
					unique++
				} else {
					dups++
				}
				select {
				case credits <- struct{}{}:
				default:
				}
			}
		}
	}
	deadline.Stop()
	once.Do(func() { close(done) })
	wg.Wait()
	for g, err := range sendErrs {
		if err != nil {
			t.Errorf("sender %d: %v", g, err)
		}
	}
	if unique != total || dups != 0 || bad != 0 {
		t.Fatalf("%d of %d datagrams arrived, %d lost, %d duplicated, %d malformed", unique, total, total-unique, dups, bad)
	}
}
