package tap

import (
	"encoding/binary"
	"errors"
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
	ns = testutil.Netns(t)
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		var err error
		d, err = CreateOffload("eth0", false)
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
// the device's own virtio-net header, reach a socket in the pod in order.
func TestBatchedWriteDelivers(t *testing.T) {
	ns, d, mac := podTAP(t)
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
// or reports the close, and none touches the write ring after it closed.
func TestCloseWhileWriting(t *testing.T) {
	_, d, mac := podTAP(t)
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
