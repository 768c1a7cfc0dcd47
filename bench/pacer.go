package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/nsutil"
)

// The zero-loss search needs a steady offered rate, which trafgen does not
// give at these rates: its --rate sends a second's worth of frames back to
// back at full speed and then sleeps to the end of the second, and its
// --gap sleeps after every frame, which misses the gap asked (gaps of 20,
// 5 and 1 µs gave 14k, 15k and 57k frames/s here). The pacer sends from its own packet socket in
// bursts of a few frames: it wakes every pacerQuantum, sends what is due
// since the start at the rate asked, and after a stall (this machine's
// CPUs are shared) does not catch up with more than pacerMaxBurst frames at
// once, so no burst comes near a queue's length (a TAP's or the backlog's,
// 500-1000 frames); what it gives up shows as an offered rate below the
// one asked.
const (
	pacerQuantum  = 50 * time.Microsecond
	pacerBatch    = 64  // frames per sendmmsg
	pacerMaxBurst = 128 // frames sent without sleeping, at most
)

// pacer sends frames out of one interface at a paced rate.
type pacer struct {
	fd     int
	ring   [][]byte // the frames, round robin; each its own buffer
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
	pos    int
	sport  uint16
	closed bool
}

// newPacer opens a packet socket on ifname in the network namespace at
// nsPath that sends the frames of one round of sizes (from udpFrame),
// round robin, each with the next UDP source port (all 65,536 in turn,
// as trafgen's random ports spread flows).
func newPacer(nsPath, ifname string, sizes []int, src, dst netip.AddrPort) (*pacer, error) {
	if len(sizes) == 0 {
		return nil, errors.New("pacer: no frames")
	}
	p := &pacer{fd: -1, msgs: make([]unix.Mmsghdr, pacerBatch), iovs: make([]unix.Iovec, pacerBatch)}
	var srcMAC net.HardwareAddr
	err := nsutil.Do(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		srcMAC = ifi.HardwareAddr
		// Protocol 0: the socket only sends, and receives nothing.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to %s: %w", ifname, err)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		}
		p.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pacer: %w", err)
	}
	gw, _ := net.ParseMAC(gatewayMAC)
	// A ring of whole rounds, at least two batches long, so that a
	// batch never holds one buffer twice.
	rounds := (2*pacerBatch + len(sizes) - 1) / len(sizes)
	for range rounds {
		for _, size := range sizes {
			f, err := udpFrame(size, srcMAC, gw, src.Addr(), dst.Addr(), src.Port(), dst.Port())
			if err != nil {
				p.Close()
				return nil, fmt.Errorf("pacer: %w", err)
			}
			p.ring = append(p.ring, f)
		}
	}
	for i := range p.msgs {
		p.msgs[i].Hdr.Iov = &p.iovs[i]
		p.msgs[i].Hdr.SetIovlen(1)
	}
	return p, nil
}

// Close closes the socket.
func (p *pacer) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	return unix.Close(p.fd)
}

// Run sends at rate frames per second for d, or until ctx ends, and
// returns how many frames the kernel took and how many it gave up after
// stalls (pacerMaxBurst).
func (p *pacer) Run(ctx context.Context, rate float64, d time.Duration) (sent, skipped uint64, err error) {
	if !(rate > 0) {
		return 0, 0, fmt.Errorf("pacer: rate %v", rate)
	}
	type result struct {
		sent, skipped uint64
		err           error
	}
	done := make(chan result, 1)
	go func() {
		// The thread sleeps for microseconds at a time: a timer slack of
		// its own (50 µs by default) would make each sleep a burst. It
		// stays locked, so the runtime drops it afterwards instead of
		// handing another goroutine a thread with this slack.
		runtime.LockOSThread()
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
		var r result
		r.sent, r.skipped, r.err = p.loop(ctx, rate, d)
		done <- r
	}()
	r := <-done
	return r.sent, r.skipped, r.err
}

func (p *pacer) loop(ctx context.Context, rate float64, d time.Duration) (sent, skipped uint64, err error) {
	start := time.Now()
	sleep := unix.NsecToTimespec(int64(pacerQuantum))
	for ctx.Err() == nil {
		elapsed := time.Since(start)
		if elapsed >= d {
			break
		}
		due := int64(rate*elapsed.Seconds()) - int64(sent+skipped)
		if due > pacerMaxBurst {
			skipped += uint64(due - pacerMaxBurst)
			due = pacerMaxBurst
		}
		if due <= 0 {
			_ = unix.Nanosleep(&sleep, nil)
			continue
		}
		// Behind or on time, send without sleeping: a generator that
		// cannot keep up then sends back to back, as fast as it can.
		n, err := p.send(int(min(due, pacerBatch)))
		if err != nil {
			return sent, skipped, err
		}
		if n == 0 {
			_ = unix.Nanosleep(&sleep, nil) // a queue pushed back
		}
		sent += uint64(n)
	}
	return sent, skipped, nil
}

// send hands the next n frames of the ring to the kernel with one
// sendmmsg and returns how many it took. ENOBUFS (a queue full) and
// EAGAIN are no error: nothing went, the caller waits.
func (p *pacer) send(n int) (int, error) {
	for i := range n {
		f := p.ring[(p.pos+i)%len(p.ring)]
		setSourcePort(f, p.sport+uint16(i))
		p.iovs[i].Base = &f[0]
		p.iovs[i].SetLen(len(f))
	}
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&p.msgs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.ENOBUFS || e == unix.EAGAIN || e == unix.EINTR {
		return 0, nil
	}
	if e != 0 {
		return 0, fmt.Errorf("pacer: sendmmsg: %w", e)
	}
	p.pos = (p.pos + int(r)) % len(p.ring)
	p.sport += uint16(r)
	return int(r), nil
}
