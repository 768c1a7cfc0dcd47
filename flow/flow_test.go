package flow

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/header"
)

func tcpKey(i int) Key {
	return Key{Src: 0x0af40000 | uint32(i), Dst: 0x0af40101, SrcPort: uint16(1024 + i), DstPort: 8080, Proto: header.ProtocolTCP}
}

func TestTrackReplyLookup(t *testing.T) {
	tb := New(Config{Size: 1024})
	k := tcpKey(1)
	if _, ok := tb.Reply(k, TCPAck, 0); ok {
		t.Fatal("found a flow in an empty table")
	}
	if !tb.Track(k, ViaHost, TCPSyn, 0) {
		t.Fatal("insert refused")
	}
	if f, ok := tb.Lookup(k, 1); !ok || f != ViaHost {
		t.Fatalf("lookup: %v %v", f, ok)
	}
	if _, ok := tb.Lookup(k.Reverse(), 1); ok {
		t.Fatal("the reversed key is another flow")
	}
	if f, ok := tb.Reply(k, TCPSyn|TCPAck, 1); !ok || f != ViaHost {
		t.Fatalf("reply: %v %v", f, ok)
	}
	if s := tb.Stats(); s.Entries != 1 || s.Inserts != 1 || s.Capacity != 1024 {
		t.Fatalf("stats %+v", s)
	}
	if k.Reverse().Reverse() != k {
		t.Fatal("Reverse is not an involution")
	}
}

func TestTimeouts(t *testing.T) {
	cfg := Config{Size: 64, TCPNew: 10 * time.Second, TCPEstablished: time.Hour, TCPClosing: 20 * time.Second,
		TCPReset: 5 * time.Second, UDP: 30 * time.Second, UDPStream: 100 * time.Second, ICMP: 7 * time.Second}
	sec := int64(time.Second)
	alive := func(tb *Table, k Key, at int64) bool { _, ok := tb.Lookup(k, at); return ok }

	tb := New(cfg)
	k := tcpKey(1)
	tb.Track(k, ViaHost, TCPSyn, 0)
	if !alive(tb, k, 9*sec) || alive(tb, k, 10*sec) {
		t.Fatal("a new TCP flow lives TCPNew")
	}
	// SYN, SYN-ACK, ACK: established.
	tb.Track(k, ViaHost, TCPSyn, 0)
	tb.Reply(k, TCPSyn|TCPAck, 0)
	tb.Track(k, ViaHost, TCPAck, 0)
	if !alive(tb, k, 3599*sec) || alive(tb, k, 3600*sec) {
		t.Fatal("an established TCP flow lives TCPEstablished")
	}
	tb.Reply(k, TCPFin|TCPAck, 0)
	if !alive(tb, k, 19*sec) || alive(tb, k, 20*sec) {
		t.Fatal("a closing TCP flow lives TCPClosing")
	}
	tb.Track(k, ViaHost, TCPRst, 0)
	if !alive(tb, k, 4*sec) || alive(tb, k, 5*sec) {
		t.Fatal("a reset TCP flow lives TCPReset")
	}

	u := Key{Src: 1, Dst: 2, SrcPort: 3, DstPort: 4, Proto: header.ProtocolUDP}
	tb.Track(u, ViaHost, 0, 0)
	if !alive(tb, u, 29*sec) || alive(tb, u, 30*sec) {
		t.Fatal("unreplied UDP lives UDP")
	}
	tb.Reply(u, 0, 0)
	if !alive(tb, u, 99*sec) || alive(tb, u, 100*sec) {
		t.Fatal("replied UDP lives UDPStream")
	}
	i := Key{Src: 1, Dst: 2, SrcPort: 9, DstPort: 9, Proto: header.ProtocolICMP}
	tb.Track(i, ViaHost, 0, 0)
	if !alive(tb, i, 6*sec) || alive(tb, i, 7*sec) {
		t.Fatal("ICMP lives ICMP")
	}
	// An expired flow is not answered, and its slot is reused.
	if _, ok := tb.Reply(i, 0, 7*sec); ok {
		t.Fatal("reply matched an expired flow")
	}
	tb.Track(i, 0, 0, 8*sec)
	if f, ok := tb.Lookup(i, 8*sec); !ok || f != 0 {
		t.Fatalf("a flow on an expired tuple kept the old flags: %v %v", f, ok)
	}
	if tb.Stats().Expired != 1 {
		t.Fatalf("expired %d, want 1", tb.Stats().Expired)
	}
}

// TestBound: a flood of new flows fills the table to its capacity and no
// further; flows not yet established are evicted (counted), established
// ones stay, and a bucket full of established flows refuses (counted).
func TestBound(t *testing.T) {
	tb := New(Config{Size: 256})
	// Establish 64 flows. A 256-entry table is 64 buckets of 4, and the
	// keys hash with a random seed: a bucket may get more than 4 of them
	// and refuse the rest, so only those the table took are checked.
	var est []Key
	for i := range 64 {
		k := tcpKey(i)
		if !tb.Track(k, ViaHost, TCPSyn, 0) {
			continue
		}
		tb.Reply(k, TCPSyn|TCPAck, 0)
		tb.Track(k, ViaHost, TCPAck, 0)
		est = append(est, k)
	}
	if len(est) < 32 {
		t.Fatalf("only %d of 64 flows added to an empty table of 256", len(est))
	}
	// A flood of SYNs.
	refusedOrAdded := 0
	for i := range 100000 {
		k := Key{Src: uint32(i), Dst: 7, SrcPort: uint16(i), DstPort: 80, Proto: header.ProtocolTCP}
		if tb.Track(k, ViaHost, TCPSyn, 1) {
			refusedOrAdded++
		}
	}
	s := tb.Stats()
	if s.Entries > s.Capacity || s.Capacity != 256 {
		t.Fatalf("entries %d over capacity %d", s.Entries, s.Capacity)
	}
	if s.Evictions == 0 {
		t.Fatalf("a flood into a full table evicted nothing: %+v", s)
	}
	for _, k := range est {
		if _, ok := tb.Lookup(k, 2); !ok {
			t.Fatalf("established flow %v evicted by the flood", k)
		}
	}
	// Fill with established flows only: newcomers are refused.
	tb = New(Config{Size: 64})
	for i := range 10000 {
		k := tcpKey(i)
		tb.Track(k, ViaHost, TCPSyn, 0)
		tb.Reply(k, TCPSyn|TCPAck, 0)
		tb.Track(k, ViaHost, TCPAck, 0)
	}
	s = tb.Stats()
	if s.Refusals == 0 || s.Entries != 64 {
		t.Fatalf("a table of established flows took more: %+v", s)
	}
}

// TestConcurrent: workers share the table (run under -race).
func TestConcurrent(t *testing.T) {
	tb := New(Config{Size: 4096})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				k := tcpKey(w*10000 + i%500)
				tb.Track(k, ViaHost, TCPSyn, int64(i))
				tb.Reply(k, TCPAck, int64(i))
				tb.Lookup(k.Reverse(), int64(i))
			}
		}()
	}
	wg.Wait()
	if s := tb.Stats(); s.Entries == 0 || s.Entries > 4096 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAllocs(t *testing.T) {
	tb := New(Config{Size: 1024})
	pkt := tcpPacket(0x0af40001, 0x0af40101, 1234, 80, TCPSyn)
	n := testing.AllocsPerRun(1000, func() {
		p := Parse(header.IPv4(pkt))
		tb.Track(p.Key, ViaHost, p.TCP, 1)
		tb.Reply(p.Key, TCPAck, 1)
		tb.Lookup(p.Key.Reverse(), 1)
		tb.Seen(p.Key, true, TCPAck, 1)
		tb.SetVerdict(p.Key, Verdict{Flags: PolicyAllowed, Gen: 1}, p.TCP, 1)
	})
	if n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

// tcpPacket builds an IPv4 TCP packet header (no payload).
func tcpPacket(src, dst uint32, sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 40)
	header.IPv4(b).Encode(&header.IPv4Fields{TotalLen: 40, TTL: 64, Protocol: header.ProtocolTCP,
		Src: u32(src), Dst: u32(dst)})
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[20+12] = 5 << 4
	b[20+13] = flags
	return b
}

func u32(a uint32) [4]byte { var b [4]byte; binary.BigEndian.PutUint32(b[:], a); return b }

func TestParse(t *testing.T) {
	syn := tcpPacket(1, 2, 1000, 80, TCPSyn)
	p := Parse(header.IPv4(syn))
	if p.Kind != Plain || p.Key != (Key{Src: 1, Dst: 2, SrcPort: 1000, DstPort: 80, Proto: header.ProtocolTCP}) || p.TCP != TCPSyn {
		t.Fatalf("TCP: %+v", p)
	}
	// A non-first fragment: no ports.
	frag := append([]byte(nil), syn...)
	header.IPv4(frag).SetFlagsFrag(3)
	if p := Parse(header.IPv4(frag)); p.Kind != Fragment || p.Key != (Key{Src: 1, Dst: 2, Proto: header.ProtocolTCP}) {
		t.Fatalf("fragment: %+v", p)
	}
	// An ICMP port unreachable from 2 quoting the UDP packet 1:1000 -> 2:53.
	udp := make([]byte, 28)
	header.IPv4(udp).Encode(&header.IPv4Fields{TotalLen: 28, TTL: 64, Protocol: header.ProtocolUDP, Src: u32(1), Dst: u32(2)})
	binary.BigEndian.PutUint16(udp[20:], 1000)
	binary.BigEndian.PutUint16(udp[22:], 53)
	errPkt := make([]byte, 20+8+len(udp))
	header.IPv4(errPkt).Encode(&header.IPv4Fields{TotalLen: len(errPkt), TTL: 64, Protocol: header.ProtocolICMP, Src: u32(2), Dst: u32(1)})
	copy(errPkt[28:], udp)
	header.ICMP(errPkt[20:]).EncodeError(header.ICMPDestUnreach, 3, 0)
	if p := Parse(header.IPv4(errPkt)); p.Kind != Related || p.Key != (Key{Src: 1, Dst: 2, SrcPort: 1000, DstPort: 53, Proto: header.ProtocolUDP}) {
		t.Fatalf("ICMP error: %+v", p)
	}
	// Echo: the identifier in both ports, so a reply reverses to the request.
	echo := make([]byte, 28)
	header.IPv4(echo).Encode(&header.IPv4Fields{TotalLen: 28, TTL: 64, Protocol: header.ProtocolICMP, Src: u32(1), Dst: u32(2)})
	echo[20] = header.ICMPEcho
	binary.BigEndian.PutUint16(echo[24:], 77)
	req := Parse(header.IPv4(echo))
	header.IPv4(echo).Encode(&header.IPv4Fields{TotalLen: 28, TTL: 64, Protocol: header.ProtocolICMP, Src: u32(2), Dst: u32(1)})
	echo[20] = header.ICMPEchoReply
	if rep := Parse(header.IPv4(echo)); rep.Key.Reverse() != req.Key || req.Key.SrcPort != 77 {
		t.Fatalf("echo %+v, reply %+v", req, rep)
	}
	// A truncated transport header: no ports, no panic.
	short := tcpPacket(1, 2, 1, 2, 0)[:22]
	header.IPv4(short).SetTotalLen(22)
	if p := Parse(header.IPv4(short)); p.Key.SrcPort != 0 {
		t.Fatalf("short: %+v", p)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := New(Config{})
	for i := range 10000 {
		tb.Track(tcpKey(i), ViaHost, TCPSyn, 0)
	}
	k := tcpKey(4242)
	b.ReportAllocs()
	for b.Loop() {
		tb.Reply(k, TCPAck, 1)
	}
}

func BenchmarkParseAndLookupMiss(b *testing.B) {
	tb := New(Config{})
	pkt := header.IPv4(tcpPacket(0x0af40001, 0x0af40101, 1234, 80, TCPAck))
	b.ReportAllocs()
	for b.Loop() {
		p := Parse(pkt)
		tb.Reply(p.Key.Reverse(), p.TCP, 1)
	}
}

// TestVerdict: a policy verdict is kept with the flow, seen from both
// directions, replaced by the next one without touching ViaHost, and gone
// with the flow when it expires.
func TestVerdict(t *testing.T) {
	tb := New(Config{Size: 64, TCPNew: 10 * time.Second})
	sec := int64(time.Second)
	k := tcpKey(1)
	if _, _, ok := tb.Seen(k, false, TCPSyn, 0); ok {
		t.Fatal("seen in an empty table")
	}
	allowed := Verdict{Flags: PolicyAllowed, Gen: 3, Tag: 7}
	if !tb.SetVerdict(k, allowed, TCPSyn, 0) {
		t.Fatal("SetVerdict did not add the flow")
	}
	if f, v, ok := tb.Seen(k.Reverse().Reverse(), true, TCPSyn|TCPAck, 1); !ok || f != PolicyAllowed || v != allowed {
		t.Fatalf("reply: flags %v verdict %+v %v", f, v, ok)
	}
	if _, _, ok := tb.Seen(k.Reverse(), false, 0, 1); ok {
		t.Fatal("the reversed key is another flow")
	}
	tb.Track(k, ViaHost, TCPAck, 2) // established now: its timeout is 24 h
	denied := Verdict{Flags: PolicyDenied | ViaHost, Gen: 4, Tag: 1}
	tb.SetVerdict(k, denied, 0, 2)
	if f, v, _ := tb.Seen(k, false, TCPAck, 3); f != ViaHost|PolicyDenied || v.Flags != PolicyDenied || v.Gen != 4 || v.Tag != 1 {
		t.Fatalf("after a second verdict: flags %v verdict %+v", f, v)
	}
	if _, _, ok := tb.Seen(k, false, TCPAck, 3600*sec); !ok {
		t.Fatal("SetVerdict changed an established flow's timeout")
	}
	// A new flow expires as Track's would; a verdict on the expired tuple
	// starts a new flow without the old flags.
	k2 := tcpKey(2)
	tb.SetVerdict(k2, denied, TCPSyn, 0)
	if _, _, ok := tb.Seen(k2, false, 0, 10*sec); ok {
		t.Fatal("a new flow outlived TCPNew")
	}
	tb.SetVerdict(k2, allowed, TCPSyn, 11*sec)
	if f, v, ok := tb.Seen(k2, false, 0, 11*sec); !ok || f != PolicyAllowed || v != allowed {
		t.Fatalf("verdict on an expired tuple: flags %v verdict %+v %v", f, v, ok)
	}
	if s := tb.Stats(); s.Inserts != 3 || s.Expired != 1 {
		t.Fatalf("stats %+v: want 3 inserts, 1 expired reused", s)
	}
}

// FuzzTable: any sequence of operations keeps the table within its bound,
// finds what it just added, and never panics; Parse takes any bytes.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add(tcpPacket(1, 2, 3, 4, TCPSyn))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := New(Config{Size: 64})
		if ip, st := header.IPv4(data).Check(); st == header.IPv4OK {
			p := Parse(ip)
			tb.Track(p.Key, ViaHost, p.TCP, 0)
		}
		for len(data) >= 8 {
			op := data[0] % 5
			k := Key{Src: uint32(data[1] & 7), Dst: uint32(data[2] & 3), SrcPort: uint16(data[3]), DstPort: uint16(data[4] & 1),
				Proto: []uint8{header.ProtocolTCP, header.ProtocolUDP, header.ProtocolICMP, 47}[data[5]&3]}
			now := int64(data[6]) * int64(time.Second)
			tcp := data[7]
			switch op {
			case 0:
				if tb.Track(k, ViaHost, tcp, now) {
					if _, ok := tb.Lookup(k, now); !ok {
						t.Fatalf("%v tracked but not found", k)
					}
				}
			case 1:
				tb.Reply(k, tcp, now)
			case 2:
				tb.Lookup(k, now)
			case 3:
				tb.Seen(k, tcp&1 != 0, tcp, now)
			case 4:
				v := Verdict{Flags: Flags(tcp) & PolicyFlags, Gen: uint32(data[1]), Tag: uint32(data[2])}
				if v.Flags == PolicyFlags {
					v.Flags = PolicyDenied
				}
				if tb.SetVerdict(k, v, tcp, now) {
					if _, got, ok := tb.Seen(k, false, 0, now); !ok || got != v {
						t.Fatalf("%v: verdict %+v set, %+v (%v) seen", k, v, got, ok)
					}
				}
			}
			data = data[8:]
		}
		if s := tb.Stats(); s.Entries > s.Capacity {
			t.Fatalf("%d entries in a table of %d", s.Entries, s.Capacity)
		}
	})
}

func TestSnapshot(t *testing.T) {
	tb := New(Config{Size: 256})
	a := Key{Src: 1, Dst: 2, SrcPort: 1000, DstPort: 80, Proto: header.ProtocolTCP}
	b := Key{Src: 1, Dst: 3, SrcPort: 7, DstPort: 7, Proto: header.ProtocolICMP}
	c := Key{Src: 4, Dst: 5, SrcPort: 53, DstPort: 53, Proto: header.ProtocolUDP}
	tb.Track(a, ViaHost, TCPSyn, 1)
	tb.Reply(a, TCPSyn|TCPAck, 1)
	tb.Track(a, ViaHost, TCPAck, 1)
	tb.SetVerdict(b, Verdict{Flags: PolicyDenied, Gen: 3, Tag: 9}, 0, 1)
	tb.Track(c, 0, 0, 1)
	later := int64(31 * time.Second) // c (UDP, one way) has expired, b (ICMP) too
	got, more := tb.Snapshot(10, 2)
	if more || len(got) != 3 {
		t.Fatalf("Snapshot(10) = %d flows, more %v; want 3, false", len(got), more)
	}
	byKey := map[Key]Entry{}
	for _, e := range got {
		byKey[e.Key] = e
	}
	if e := byKey[a]; e.Flags != ViaHost || e.State != "established" || e.Verdict.Flags != 0 {
		t.Errorf("TCP flow = %+v; want ViaHost, established, no verdict", e)
	}
	if e := byKey[b]; e.Flags != PolicyDenied || e.Verdict != (Verdict{Flags: PolicyDenied, Gen: 3, Tag: 9}) || e.State != "new" {
		t.Errorf("ICMP flow = %+v; want denied, gen 3, tag 9", e)
	}
	if e := byKey[c]; e.State != "new" || e.Expires <= 2 {
		t.Errorf("UDP flow = %+v; want new, expiring later", e)
	}
	if got, more := tb.Snapshot(2, 2); len(got) != 2 || !more {
		t.Errorf("Snapshot(2) = %d flows, more %v; want 2, true", len(got), more)
	}
	if got, more := tb.Snapshot(0, 2); len(got) != 0 || !more {
		t.Errorf("Snapshot(0) = %d flows, more %v; want 0, true", len(got), more)
	}
	if got, _ := tb.Snapshot(10, later); len(got) != 1 || got[0].Key != a {
		t.Errorf("Snapshot after 31 s = %+v; want only the TCP flow", got)
	}
}
