package uring

import (
	"bytes"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestLayout(t *testing.T) {
	if s := unsafe.Sizeof(params{}); s != 120 {
		t.Errorf("io_uring_params is %d bytes, want 120", s)
	}
	if s := unsafe.Sizeof(sqe{}); s != 64 {
		t.Errorf("io_uring_sqe is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(cqe{}); s != 16 {
		t.Errorf("io_uring_cqe is %d bytes, want 16", s)
	}
}

func newRing(t *testing.T, n uint32) *Ring {
	t.Helper()
	r, err := New(n)
	if err != nil {
		t.Skipf("io_uring not available: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// A packet pipe keeps message boundaries, as a TAP does.
func packetPipe(t *testing.T) (rd, wr int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_DIRECT|unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func TestWritevThenReadInOrder(t *testing.T) {
	r := newRing(t, 8)
	rd, wr := packetPipe(t)
	hdr := []byte("H:")
	msgs := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	iov := make([]unix.Iovec, 2*len(msgs))
	for i, m := range msgs {
		iov[2*i].Base, iov[2*i+1].Base = &hdr[0], &m[0]
		iov[2*i].SetLen(len(hdr))
		iov[2*i+1].SetLen(len(m))
		if err := r.Writev(wr, iov[2*i:2*i+2], uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	wrote := map[uint64]int32{}
	if err := r.Submit(func(u uint64, res int32) { wrote[u] = res }); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if wrote[uint64(i)] != int32(len(hdr)+len(m)) {
			t.Errorf("write %d: result %d, want %d", i, wrote[uint64(i)], len(hdr)+len(m))
		}
	}
	// Five reads for three messages: the last two find nothing and say so.
	bufs := make([][]byte, 5)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
		if err := r.Read(rd, bufs[i], true, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint64]int32{}
	if err := r.Submit(func(u uint64, res int32) { got[u] = res }); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		want := append(append([]byte{}, hdr...), m...)
		if n := got[uint64(i)]; n < 0 || !bytes.Equal(bufs[i][:n], want) {
			t.Errorf("read %d: %d %q, want %q", i, n, bufs[i][:max(n, 0)], want)
		}
	}
	for i := len(msgs); i < len(bufs); i++ {
		if got[uint64(i)] != -int32(unix.EAGAIN) {
			t.Errorf("read %d of an empty pipe: %d, want -EAGAIN", i, got[uint64(i)])
		}
	}
}

func TestFull(t *testing.T) {
	r := newRing(t, 2)
	rd, _ := packetPipe(t)
	b := make([]byte, 8)
	for i := 0; i < r.Size(); i++ {
		if err := r.Read(rd, b, true, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Read(rd, b, true, 0); err != ErrFull {
		t.Fatalf("queueing past the ring: %v, want ErrFull", err)
	}
	n := 0
	if err := r.Submit(func(uint64, int32) { n++ }); err != nil || n != r.Size() {
		t.Fatalf("submit: %v, %d results, want %d", err, n, r.Size())
	}
}

func TestSubmitAllocatesNothing(t *testing.T) {
	r := newRing(t, 4)
	rd, wr := packetPipe(t)
	msg := []byte("x")
	iov := []unix.Iovec{{Base: &msg[0]}}
	iov[0].SetLen(1)
	buf := make([]byte, 8)
	done := func(uint64, int32) {}
	allocs := testing.AllocsPerRun(100, func() {
		_ = r.Writev(wr, iov, 0)
		_ = r.Read(rd, buf, true, 1)
		_ = r.Submit(done)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per submit, want 0", allocs)
	}
}
