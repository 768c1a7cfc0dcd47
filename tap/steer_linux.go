package tap

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A multi-queue TAP hands each frame its pod sends to one queue. Left to
// itself the kernel steers a flow to the queue its latest reply was written
// to ("automq"); tortied writes through whichever queue is free, so a flow
// would follow tortied's writers. A steering program decides instead: the
// queue is the frame's flow hash (the sending socket's, fixed for the
// socket's life unless TCP rehashes after a timeout) modulo the number of
// queues, so one flow stays on one queue, in order, and flows spread over
// the queues.
// The queue count is the kernel's at each frame: while a restarted daemon
// re-attaches a persistent TAP's queues one by one, flows may move once.

// bpfInsn is one eBPF instruction (struct bpf_insn).
type bpfInsn struct {
	code uint8
	regs uint8 // dst in the low nibble, src in the high one (little-endian machines)
	off  int16
	imm  int32
}

// skbHashOffset is the offset of hash in struct __sk_buff: len, pkt_type,
// mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto,
// priority, ingress_ifindex, ifindex, tc_index (12 × 4 bytes), cb[5].
const skbHashOffset = 12*4 + 5*4

// steerByHash is "return skb->hash": r0 = *(u32 *)(r1 + hash); exit.
var steerByHash = []bpfInsn{
	{code: unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W, regs: 0 | 1<<4, off: skbHashOffset},
	{code: unix.BPF_JMP | unix.BPF_EXIT},
}

// bpfProgLoad is the head of union bpf_attr for BPF_PROG_LOAD; the kernel
// takes the fields it is given and zero for the rest.
type bpfProgLoad struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

// bpfLicense is the program's license, NUL-terminated.
var bpfLicense = []byte("GPL\x00")

// loadSteering loads steerByHash as a socket filter program (the type a
// TAP's steering program has) and returns its descriptor.
func loadSteering() (int, error) {
	attr := bpfProgLoad{
		progType: unix.BPF_PROG_TYPE_SOCKET_FILTER,
		insnCnt:  uint32(len(steerByHash)),
		insns:    uint64(uintptr(unsafe.Pointer(&steerByHash[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&bpfLicense[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, fmt.Errorf("tap: load the steering program: %w", errno)
	}
	return int(fd), nil
}

// steer attaches the steering program to the TAP that fd is a queue of.
// The device keeps its own reference: the program's descriptor is closed.
func steer(fd int) error {
	prog, err := loadSteering()
	if err != nil {
		return err
	}
	defer unix.Close(prog)
	p := int32(prog)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETSTEERINGEBPF, uintptr(unsafe.Pointer(&p))); errno != 0 {
		return fmt.Errorf("tap: attach the steering program: %w", errno)
	}
	return nil
}
