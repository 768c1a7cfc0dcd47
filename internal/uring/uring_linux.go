// Package uring is a minimal io_uring for batched reads and writes on one
// descriptor: many operations queued, one io_uring_enter to run them all
// and collect their results. It exists because a TAP descriptor moves one
// frame per read or write syscall, and a syscall is the dominant per-packet
// cost of a userspace router; it is not a general io_uring binding.
//
// A Ring is used by one goroutine at a time. Buffers handed to it must stay
// reachable until Submit returns; Submit waits for every operation it ran.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes and flags of the kernel's io_uring ABI (include/uapi/linux/io_uring.h).
const (
	opReadv  = 1
	opWritev = 2
	opRead   = 22
	opWrite  = 23

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0
)

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, rwFlags  uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFdIn    int32
	addr3, pad    uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Ring is one io_uring instance.
type Ring struct {
	fd             int
	sqMem, sqeMem  []byte
	cqMem          []byte
	cqOwn          bool // the CQ ring has its own mapping
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []sqe
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []cqe
	queued         uint32 // SQEs filled since the last Submit
	size           uint32
}

// ErrFull says more operations were queued than the ring holds.
var ErrFull = errors.New("uring: submission queue full")

// New sets up a ring with room for entries operations per Submit.
func New(entries uint32) (*Ring, error) {
	var p params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("uring: io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd), size: p.sqEntries}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mmap(p *params) error {
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	if p.features&featSingleMmap != 0 {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	const prot, flags = unix.PROT_READ | unix.PROT_WRITE, unix.MAP_SHARED | unix.MAP_POPULATE
	if r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("uring: mmap SQ ring: %w", err)
	}
	r.cqMem = r.sqMem
	if p.features&featSingleMmap == 0 {
		if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
			r.cqMem = nil
			return fmt.Errorf("uring: mmap CQ ring: %w", err)
		}
		r.cqOwn = true
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), prot, flags); err != nil {
		return fmt.Errorf("uring: mmap SQEs: %w", err)
	}
	sq, cq := unsafe.Pointer(&r.sqMem[0]), unsafe.Pointer(&r.cqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff.ringMask))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Add(sq, p.sqOff.array)), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(cq, p.cqOff.cqes)), p.cqEntries)
	return nil
}

// Size is how many operations one Submit can carry.
func (r *Ring) Size() int { return int(r.size) }

func (r *Ring) next() (*sqe, error) {
	if r.queued == r.size {
		return nil, ErrFull
	}
	tail := atomic.LoadUint32(r.sqTail) + r.queued
	i := tail & r.sqMask
	r.sqArray[i] = i
	e := &r.sqes[i]
	*e = sqe{}
	r.queued++
	return e, nil
}

// Read queues a read of up to len(b) bytes from fd into b. With nowait set
// the read fails with EAGAIN rather than waiting when nothing is ready.
func (r *Ring) Read(fd int, b []byte, nowait bool, user uint64) error {
	e, err := r.next()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.len, e.userData = opRead, int32(fd), uint32(len(b)), user
	e.off = ^uint64(0) // the file's own position: a stream
	if len(b) > 0 {
		e.addr = uint64(uintptr(unsafe.Pointer(&b[0])))
	}
	if nowait {
		e.rwFlags = unix.RWF_NOWAIT
	}
	return nil
}

// Writev queues one write of the buffers described by iov (which, and what
// it points to, must stay put until Submit returns).
func (r *Ring) Writev(fd int, iov []unix.Iovec, user uint64) error {
	e, err := r.next()
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.len, e.userData = opWritev, int32(fd), uint32(len(iov)), user
	e.off = ^uint64(0)
	if len(iov) > 0 {
		e.addr = uint64(uintptr(unsafe.Pointer(&iov[0])))
	}
	return nil
}

// Submit runs every queued operation, waits for all of them, and calls
// done with each one's user value and result (bytes, or a negative errno),
// in completion order.
func (r *Ring) Submit(done func(user uint64, res int32)) error {
	n := r.queued
	if n == 0 {
		return nil
	}
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+n)
	r.queued = 0
	unsubmitted, reaped := n, uint32(0)
	for reaped < n {
		// Raw: the operations queued here complete without waiting (reads
		// with RWF_NOWAIT, writes to devices that never block), so the
		// call is short and the scheduler's syscall bookkeeping is skipped.
		got, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(unsubmitted), uintptr(n-reaped), enterGetEvents, 0, 0)
		switch errno {
		case 0:
			unsubmitted -= min(uint32(got), unsubmitted)
		case unix.EINTR, unix.EAGAIN, unix.EBUSY:
			unsubmitted = atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
		default:
			return fmt.Errorf("uring: io_uring_enter: %w", errno)
		}
		reaped += r.reap(done)
	}
	return nil
}

func (r *Ring) reap(done func(uint64, int32)) uint32 {
	head, tail := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
	for h := head; h != tail; h++ {
		c := &r.cqes[h&r.cqMask]
		done(c.userData, c.res)
	}
	atomic.StoreUint32(r.cqHead, tail)
	return tail - head
}

// Close releases the ring.
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
	}
	if r.cqOwn {
		_ = unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		_ = unix.Munmap(r.sqMem)
	}
	r.sqMem, r.cqMem, r.sqeMem = nil, nil, nil
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}
