package tap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// podTAP makes an offload TAP "eth0" with 10.9.0.1/24 in a fresh namespace
// and a static neighbour 10.9.0.2, so datagrams to it leave without ARP.
func podTAP(t *testing.T) (ns string, d *Device, mac net.HardwareAddr) {
	t.Helper()
	return podTAPQueues(t, 1)
}

// podTAPQueues is podTAP with queues queues.
func podTAPQueues(t *testing.T, queues int) (ns string, d *Device, mac net.HardwareAddr) {
	t.Helper()
	ns = testutil.Netns(t)
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		var err error
		d, err = Open("eth0", Options{Offload: true, Queues: queues})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	testutil.Run(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "eth0")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	testutil.Run(t, "ip", "-n", ns, "neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "eth0")
	err = nsutil.Do(testutil.NetnsPath(ns), func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = ifc.HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns, d, mac
}

// TestBatchedReadKeepsOrder: datagrams the pod sends come out of Read in
// the order they were sent, several per call.
func TestBatchedReadKeepsOrder(t *testing.T) {
	ns, d, _ := podTAP(t)
	if !d.Batched() {
		t.Log("io_uring unavailable: reading one frame per syscall")
	}
	const n = 200
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		c, err := net.Dial("udp4", "10.9.0.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			if _, err := c.Write(binary.BigEndian.AppendUint32(nil, uint32(i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bufs, sizes := make([][]byte, 8), make([]int, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	const off = 64
	next, calls, most := 0, 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for next < n && time.Now().Before(deadline) {
		got, err := d.Read(bufs, sizes, off)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		most = max(most, got)
		for i := 0; i < got; i++ {
			f := bufs[i][off+10 : off+sizes[i]] // after the virtio-net header
			if len(f) < 14+20+8+4 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14+9] != 17 {
				continue // IPv6 router solicitations and the like
			}
			if seq := int(binary.BigEndian.Uint32(f[14+20+8:])); seq != next {
				t.Fatalf("datagram %d read where %d was due", seq, next)
			}
			next++
		}
	}
	if next != n {
		t.Fatalf("read %d of %d datagrams", next, n)
	}
	if d.Batched() && most < 2 {
		t.Errorf("never more than %d frame per read with %d queued", most, n)
	}
	t.Logf("%d datagrams in %d reads (at most %d per read)", n, calls, most)
}

// TestBatchedWriteDelivers: frames written back to back, with and without
// the device's own virtio-net header, reach a socket in the pod in order,
// also through a TAP of several queues.
func TestBatchedWriteDelivers(t *testing.T) {
	for _, queues := range []int{1, 3} {
		t.Run(fmt.Sprintf("queues=%d", queues), func(t *testing.T) { batchedWriteDelivers(t, queues) })
	}
}

func batchedWriteDelivers(t *testing.T, queues int) {
	ns, d, mac := podTAPQueues(t, queues)
	if d.Queues() != queues {
		t.Fatalf("%d queues, want %d", d.Queues(), queues)
	}
	var conn *net.UDPConn
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 9, 0, 1), Port: 7000})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	frame := func(seq int) []byte {
		f := make([]byte, 14+20+8+4)
		copy(f[0:6], mac)
		copy(f[6:12], []byte{2, 0, 0, 0, 0, 2})
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := header.IPv4(f[14:])
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		ip.SetTotalLen(len(f) - 14)
		copy(ip[12:16], []byte{10, 9, 0, 2})
		copy(ip[16:20], []byte{10, 9, 0, 1})
		ip.ComputeChecksum()
		binary.BigEndian.PutUint16(f[34:], 5000)
		binary.BigEndian.PutUint16(f[36:], 7000)
		binary.BigEndian.PutUint16(f[38:], 12)
		binary.BigEndian.PutUint32(f[42:], uint32(seq))
		return f
	}
	const n = 40
	// Plain frames, back to back in one buffer as datagrams of a GRO read lie.
	var plain [][]byte
	for i := 0; i < n/2; i++ {
		plain = append(plain, frame(i))
	}
	if w, err := d.WritePlain(plain); err != nil || w != len(plain) {
		t.Fatalf("WritePlain: %d, %v", w, err)
	}
	// Frames with their own (all-zero) header in front, at an offset.
	var withHdr [][]byte
	for i := n / 2; i < n; i++ {
		withHdr = append(withHdr, append(make([]byte, 32+10), frame(i)...))
	}
	if w, err := d.Write(withHdr, 32); err != nil || w != len(withHdr) {
		t.Fatalf("Write: %d, %v", w, err)
	}
	// One more, gathered from three slices.
	if d.MaxVec() >= 3 {
		f := frame(n)
		if err := d.WriteVec([][]byte{make([]byte, 10), f[:20], f[20:]}); err != nil {
			t.Fatalf("WriteVec: %v", err)
		}
	}
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if seq := int(binary.BigEndian.Uint32(buf[:m])); seq != i {
			t.Fatalf("datagram %d arrived where %d was due", seq, i)
		}
	}
	if d.MaxVec() >= 3 {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := conn.ReadFromUDP(buf)
		if err != nil || binary.BigEndian.Uint32(buf[:m]) != n {
			t.Fatalf("the gathered frame: %v % x", err, buf[:max(m, 0)])
		}
	}
}

// TestClosedDevice: after Close, reads and writes say so instead of
// touching a descriptor number that may have been reused.
func TestClosedDevice(t *testing.T) {
	_, d, _ := podTAP(t)
	done := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		for { // the pod's kernel may send a frame or two (IPv6 neighbour discovery)
			if _, err := d.Read(bufs, sizes, 0); err != nil {
				done <- err
				return
			}
		}
	}()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != os.ErrClosed {
			t.Errorf("read after close: %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked read did not return after Close")
	}
	if _, err := d.Write([][]byte{make([]byte, 64)}, 0); err == nil {
		t.Error("write after close succeeded")
	}
	if _, err := d.WritePlain([][]byte{make([]byte, 64)}); err == nil {
		t.Error("plain write after close succeeded")
	}
}

// TestCloseWhileWriting: several goroutines write (as every router worker
// writes to every pod) while the port is removed; each write either goes
// or reports the close, and none touches the write ring after it closed,
// with one queue and with several (whose writers take whichever queue's
// ring is free).
func TestCloseWhileWriting(t *testing.T) {
	for _, queues := range []int{1, 2} {
		t.Run(fmt.Sprintf("queues=%d", queues), func(t *testing.T) { closeWhileWriting(t, queues) })
	}
}

func closeWhileWriting(t *testing.T, queues int) {
	_, d, mac := podTAPQueues(t, queues)
	const writers = 4
	var wrote atomic.Int64
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		go func() {
			f := make([]byte, 10+14+64) // virtio-net header, Ethernet, payload
			copy(f[10:16], mac)
			binary.BigEndian.PutUint16(f[22:], 0x88b5) // local experimental EtherType
			for {
				var err error
				switch wrote.Load() % 3 {
				case 0:
					_, err = d.Write([][]byte{f}, 0)
				case 1:
					_, err = d.WritePlain([][]byte{f[10:]})
				default:
					if d.MaxVec() >= 2 {
						err = d.WriteVec([][]byte{f[:10], f[10:]})
					}
				}
				if err != nil {
					errs <- err
					return
				}
				wrote.Add(1)
			}
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "writes under way", func() bool { return wrote.Load() >= 100 })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for g := 0; g < writers; g++ {
		select {
		case err := <-errs:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("write after close: %v, want os.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a writer kept writing after Close")
		}
	}
}

// TestMultiQueue: a TAP opened with two queues spreads the pod's flows over
// both, each flow on one queue and in order.
func TestMultiQueue(t *testing.T) {
	ns := testutil.Netns(t)
	var d *Device
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		var err error
		d, err = Open("eth0", Options{Offload: true, Queues: 2})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Queues() != 2 {
		t.Fatalf("%d queues, want 2", d.Queues())
	}
	testutil.Run(t, "ip", "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "eth0")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	testutil.Run(t, "ip", "-n", ns, "neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "eth0")

	// 32 flows (connected sockets, each with its own flow hash), 15
	// datagrams each, carrying the flow's number and a sequence number:
	// 480 in all, which one queue holds (500) should every flow land on it.
	const flows, each = 32, 15
	err = nsutil.Do(testutil.NetnsPath(ns), func() error {
		for f := 0; f < flows; f++ {
			c, err := net.Dial("udp4", "10.9.0.2:9")
			if err != nil {
				return err
			}
			for i := 0; i < each; i++ {
				if _, err := c.Write(binary.BigEndian.AppendUint32([]byte{0xab, byte(f)}, uint32(i))); err != nil {
					c.Close()
					return err
				}
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	type seen struct{ queue, next int }
	got := make([][]seen, 2) // per queue, in read order: flow, sequence
	done := make(chan error, 2)
	var total atomic.Int64
	for q := 0; q < 2; q++ {
		go func() {
			bufs, sizes := [][]byte{make([]byte, 2048), make([]byte, 2048)}, []int{0, 0}
			for {
				n, err := d.ReadQueue(q, bufs, sizes, 0)
				if err != nil {
					done <- err
					return
				}
				for i := 0; i < n; i++ {
					f := bufs[i][10:sizes[i]]
					if len(f) != 14+20+8+6 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14+9] != 17 || f[42] != 0xab {
						continue
					}
					got[q] = append(got[q], seen{int(f[43]), int(binary.BigEndian.Uint32(f[44:]))})
					total.Add(1)
				}
			}
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "every datagram read", func() bool { return total.Load() == flows*each })
	d.Close()
	for range 2 {
		if err := <-done; err != os.ErrClosed {
			t.Errorf("read after close: %v", err)
		}
	}
	queueOf := map[int]int{}
	for q, s := range got {
		next := map[int]int{}
		for _, x := range s {
			if prev, ok := queueOf[x.queue]; ok && prev != q {
				t.Fatalf("flow %d read from queues %d and %d", x.queue, prev, q)
			}
			queueOf[x.queue] = q
			if x.next != next[x.queue] {
				t.Fatalf("flow %d: datagram %d read where %d was due", x.queue, x.next, next[x.queue])
			}
			next[x.queue]++
		}
	}
	if len(got[0]) == 0 || len(got[1]) == 0 {
		t.Fatalf("flows not spread: %d and %d datagrams per queue", len(got[0]), len(got[1]))
	}
	t.Logf("datagrams per queue: %d, %d", len(got[0]), len(got[1]))
}

// TestReattachOtherKind: a persistent TAP re-opened asking for the other
// queue kind is taken as it is, not refused.
func TestReattachOtherKind(t *testing.T) {
	for _, tc := range []struct{ made, asked, want int }{{1, 4, 1}, {3, 1, 1}, {2, 2, 2}} {
		ns := testutil.Netns(t)
		err := nsutil.Do(testutil.NetnsPath(ns), func() error {
			d, err := Open("eth0", Options{Persist: true, Offload: true, Queues: tc.made})
			if err != nil {
				return err
			}
			d.Close()
			d, err = Open("eth0", Options{Persist: true, Offload: true, Queues: tc.asked})
			if err != nil {
				return fmt.Errorf("made with %d queues, re-opened asking %d: %w", tc.made, tc.asked, err)
			}
			defer d.Close()
			if d.Queues() != tc.want {
				return fmt.Errorf("made with %d queues, re-opened asking %d: got %d, want %d", tc.made, tc.asked, d.Queues(), tc.want)
			}
			return d.Unpersist()
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// TestCloseFreesRings: a device closed before any reader ran (a pod whose
// attachment failed) leaves no descriptor behind, io_uring rings included.
func TestCloseFreesRings(t *testing.T) {
	ns := testutil.Netns(t)
	// Only rings and TAP queues are counted: other parts of the process
	// (the runtime, an earlier test's goroutines) may open descriptors.
	fds := func() int {
		e, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range e {
			if l, err := os.Readlink("/proc/self/fd/" + f.Name()); err == nil && (l == "anon_inode:[io_uring]" || l == "/dev/net/tun") {
				n++
			}
		}
		return n
	}
	before := fds()
	for range 4 {
		err := nsutil.Do(testutil.NetnsPath(ns), func() error {
			d, err := Open("eth0", Options{Offload: true, Queues: 2})
			if err != nil {
				return err
			}
			return d.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if after := fds(); after != before {
		t.Fatalf("%d io_uring and TAP descriptors open before, %d after opening and closing four TAPs", before, after)
	}
}

// TestReadBatchFollowsQueue: a batched Read queues about as many reads as
// the queue holds frames: one frame leaves the next batch at two reads, an
// empty queue at one, and batches that come back full double up to the
// buffers given, so a long queue is still drained 32 frames at a time.
func TestReadBatchFollowsQueue(t *testing.T) {
	ns, d, _ := podTAP(t)
	if !d.Batched() {
		t.Skip("io_uring unavailable: reads go one frame per syscall")
	}
	bufs, sizes := make([][]byte, BatchSize), make([]int, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	send := func(n int, b byte) { sendFromPod(t, ns, n, b) }
	drainToMarker(t, ns, d, bufs, sizes)
	if !d.Batched() {
		t.Skip("this kernel's TAP cannot read without waiting: reads went back to one frame per syscall")
	}
	send(1, 1)
	got, err := d.Read(bufs, sizes, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1 || d.want != 2 {
		t.Fatalf("one frame queued: read %d, next batch %d reads; want 1 and 2", got, d.want)
	}
	send(200, 2)
	var batches []int
	for total := 0; total < 200; {
		got, err := d.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, got)
		total += got
	}
	want := []int{2, 4, 8, 16, 32, 32, 32, 32}
	for i, n := range want {
		if i >= len(batches) || batches[i] != n {
			t.Fatalf("200 frames queued read in batches %v; want them to start %v", batches, want)
		}
	}
}

// sendFromPod sends n one-byte datagrams holding b from the pod of ns to
// 10.9.0.2.
func sendFromPod(t *testing.T, ns string, n int, b byte) {
	t.Helper()
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		c, err := net.Dial("udp4", "10.9.0.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte{b}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// drainToMarker leaves nothing but the test's own datagrams to come out of
// d (no IPv6, so no router solicitations), then reads up to a marker
// datagram, past what came before. A Read still waiting after 10 s is
// ended by closing the TAP.
func drainToMarker(t *testing.T, ns string, d *Device, bufs [][]byte, sizes []int) {
	t.Helper()
	testutil.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	sendFromPod(t, ns, 1, 0xAA)
	stuck := time.AfterFunc(10*time.Second, func() { d.Close() })
	defer stuck.Stop()
	for marked := false; !marked; {
		got, err := d.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("the marker datagram did not come out of the TAP: %v", err)
		}
		for i := 0; i < got; i++ {
			f := bufs[i][10:sizes[i]] // after the virtio-net header
			marked = marked || (len(f) == 14+20+8+1 && f[14+9] == 17 && f[14+20+8] == 0xAA)
		}
	}
}

// TestTryRead: TryRead returns no frame and no error on an empty queue,
// and says it found it empty, where PollFD does not poll readable; once
// the pod sends, PollFD polls readable and TryRead takes the frames, in
// order. With one buffer, a call that took a frame has not found the
// queue empty (drained false) and one that took none has; after Close it
// says the device is closed.
func TestTryRead(t *testing.T) {
	ns, d, _ := podTAP(t)
	bufs, sizes := make([][]byte, BatchSize), make([]int, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	drainToMarker(t, ns, d, bufs, sizes)
	fd, err := d.PollFD()
	if err != nil {
		t.Fatal(err)
	}
	readable := func(timeout time.Duration) bool { return testutil.Readable(t, fd, timeout) }
	if got, drained, err := d.TryRead(bufs, sizes, 0); got != 0 || !drained || err != nil {
		t.Fatalf("TryRead of an empty TAP: %d frames, drained %v, %v; want 0, true, nil", got, drained, err)
	}
	if readable(0) {
		t.Fatal("PollFD polls readable with no frame queued")
	}
	for b := byte(1); b <= 3; b++ {
		sendFromPod(t, ns, 1, b)
	}
	if !readable(10 * time.Second) {
		t.Fatal("PollFD did not poll readable with frames queued")
	}
	var seen []byte
	for len(seen) < 3 {
		if !readable(10 * time.Second) {
			t.Fatalf("after %d of 3 frames, PollFD no longer polls readable", len(seen))
		}
		got, drained, err := d.TryRead(bufs[:1], sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		if drained != (got == 0) {
			t.Fatalf("one buffer, %d frames read, drained %v: a read that carries a frame has not found the queue empty", got, drained)
		}
		if got == 1 {
			f := bufs[0][10:sizes[0]]
			if len(f) != 14+20+8+1 || f[14+9] != 17 {
				t.Fatalf("frame %d is not the pod's datagram: % x", len(seen), f)
			}
			seen = append(seen, f[14+20+8])
		}
	}
	if string(seen) != "\x01\x02\x03" {
		t.Fatalf("read % x, want 01 02 03", seen)
	}
	if got, drained, err := d.TryRead(bufs, sizes, 0); got != 0 || !drained || err != nil {
		t.Fatalf("TryRead after the frames: %d frames, drained %v, %v; want 0, true, nil", got, drained, err)
	}
	d.Close()
	if _, _, err := d.TryRead(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("TryRead after Close: %v, want os.ErrClosed", err)
	}
}

// TestReadAllocatesNothing: a Read of queued frames allocates nothing,
// batched or not.
func TestReadAllocatesNothing(t *testing.T) {
	ns, d, _ := podTAP(t)
	sendFromPod(t, ns, 300, 1)
	// One buffer: each Read takes one frame, so the 101 Reads below all
	// find one queued and none waits.
	bufs, sizes := [][]byte{make([]byte, 2048)}, make([]int, 1)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Read(bufs, sizes, 64); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Read, want 0", allocs)
	}
}
