package bench

import (
	"encoding/binary"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func count(sizes []int) map[int]int {
	m := map[int]int{}
	for _, s := range sizes {
		m[s]++
	}
	return m
}

func TestIMIXFrames(t *testing.T) {
	for _, tc := range []struct {
		mtu     int
		largest int // without FCS
	}{
		{1500, 1514}, // the whole 1518-byte frame
		{9000, 1514}, // never larger than the IMIX's own
		{1480, 1494}, // IPIP
		{1450, 1464}, // VXLAN: 1468 bytes with FCS
	} {
		sizes, err := IMIXFrames(tc.mtu)
		if err != nil {
			t.Fatalf("MTU %d: %v", tc.mtu, err)
		}
		got := count(sizes)
		want := map[int]int{60: 7, 590: 4, tc.largest: 1}
		if len(got) != len(want) || got[60] != 7 || got[590] != 4 || got[tc.largest] != 1 {
			t.Fatalf("MTU %d: sizes %v, want counts %v", tc.mtu, sizes, want)
		}
		// Spread frame by frame: no two 594-byte frames and no more than
		// two 64-byte frames in a row, round robin included.
		for i := range sizes {
			a, b, c := sizes[i], sizes[(i+1)%len(sizes)], sizes[(i+2)%len(sizes)]
			if a == 590 && b == 590 || a == 60 && b == 60 && c == 60 {
				t.Fatalf("MTU %d: %v has a run of %d-byte frames at %d", tc.mtu, sizes, a, i)
			}
		}
	}
	mean := meanFrameBits([]int{60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514}) / 8
	if want := (7*64 + 4*594 + 1518) / 12.0; mean != want {
		t.Fatalf("mean frame %.3f bytes, want %.3f", mean, want)
	}
	if _, err := IMIXFrames(500); err == nil {
		t.Fatal("MTU 500: no error, but a 594-byte frame does not fit")
	}
}

func TestTrafgenConfig(t *testing.T) {
	sizes, err := IMIXFrames(1450)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParseAddr("10.65.0.2"), netip.MustParseAddr("10.65.1.2")
	conf, err := trafgenConfig("02:00:0a:41:00:02", src, dst, "9", sizes)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(conf), "\n")
	if len(lines) != len(sizes) {
		t.Fatalf("%d packets, want %d:\n%s", len(lines), len(sizes), conf)
	}
	fillRe := regexp.MustCompile(`fill\(0x00, (\d+)\) }$`)
	for i, line := range lines {
		for _, part := range []string{"eth(da=ee:ee:ee:ee:ee:ee, sa=02:00:0a:41:00:02, type=0x0800)",
			"ipv4(saddr=10.65.0.2, daddr=10.65.1.2, ttl=64)", "udp(sp=drnd(), dp=9)"} {
			if !strings.Contains(line, part) {
				t.Fatalf("packet %d %q lacks %q", i, line, part)
			}
		}
		m := fillRe.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("packet %d %q: no fill", i, line)
		}
		if fill, _ := strconv.Atoi(m[1]); fill+udpFrameHeaders != sizes[i] {
			t.Fatalf("packet %d: %d bytes of headers and fill, want %d", i, fill+udpFrameHeaders, sizes[i])
		}
	}
	for _, bad := range []struct {
		mac      string
		src, dst netip.Addr
		sizes    []int
	}{
		{"nope", src, dst, sizes},
		{"02:00:0a:41:00:02", netip.MustParseAddr("fd00::1"), dst, sizes},
		{"02:00:0a:41:00:02", src, dst, nil},
		{"02:00:0a:41:00:02", src, dst, []int{41}},
	} {
		if _, err := trafgenConfig(bad.mac, bad.src, bad.dst, "9", bad.sizes); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestUDPFrame(t *testing.T) {
	srcMAC, _ := net.ParseMAC("02:00:0a:41:00:02")
	gw, _ := net.ParseMAC(gatewayMAC)
	src, dst := netip.MustParseAddr("10.65.0.2"), netip.MustParseAddr("10.65.1.2")
	for _, size := range []int{60, 590, 1464} {
		f, err := udpFrame(size, srcMAC, gw, src, dst, 1024, 9)
		if err != nil {
			t.Fatal(err)
		}
		if len(f) != size {
			t.Fatalf("%d bytes, want %d", len(f), size)
		}
		if net.HardwareAddr(f[0:6]).String() != gatewayMAC || net.HardwareAddr(f[6:12]).String() != srcMAC.String() ||
			binary.BigEndian.Uint16(f[12:]) != 0x0800 {
			t.Fatalf("Ethernet header % x", f[:14])
		}
		ip := f[14:34]
		if ipv4Checksum(ip) != 0 { // a header with its checksum sums to all ones
			t.Fatalf("size %d: IPv4 checksum %#04x does not verify", size, binary.BigEndian.Uint16(ip[10:]))
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != size-14 || ip[9] != 17 || ip[8] != 64 ||
			netip.AddrFrom4([4]byte(ip[12:16])) != src || netip.AddrFrom4([4]byte(ip[16:20])) != dst {
			t.Fatalf("IPv4 header % x", ip)
		}
		if binary.BigEndian.Uint16(f[34:]) != 1024 || binary.BigEndian.Uint16(f[36:]) != 9 ||
			int(binary.BigEndian.Uint16(f[38:])) != size-34 || binary.BigEndian.Uint16(f[40:]) != 0 {
			t.Fatalf("UDP header % x", f[34:42])
		}
		setSourcePort(f, 65535)
		if binary.BigEndian.Uint16(f[34:]) != 65535 || ipv4Checksum(ip) != 0 {
			t.Fatal("setSourcePort changed more than the port")
		}
	}
	for _, size := range []int{41, 14 + 0x10000} {
		if _, err := udpFrame(size, srcMAC, gw, src, dst, 1, 9); err == nil {
			t.Errorf("size %d: no error", size)
		}
	}
	if _, err := udpFrame(60, srcMAC[:4], gw, src, dst, 1, 9); err == nil {
		t.Error("short MAC: no error")
	}
	if _, err := udpFrame(60, srcMAC, gw, netip.MustParseAddr("fd00::1"), dst, 1, 9); err == nil {
		t.Error("IPv6 source: no error")
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses, as a thread may name
	// itself; utime 1234 and stime 567.
	line := "4242 (tor (tied) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 100 2000000 3000 18446744073709551615\n"
	u, s, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if u != 1234 || s != 567 {
		t.Fatalf("utime %d, stime %d; want 1234, 567", u, s)
	}
	for _, bad := range []string{"", "4242 tortied S 1", "4242 (tortied) S 1 2 3", "4242 (tortied) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 567 0"} {
		if _, _, err := parseProcStat(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCPUPerGbit(t *testing.T) {
	m := cpuMeter{pids: []int{10, 0}} // a tortie node, a kernel node
	before := cpuReading{nodes: []float64{1, 0}, machine: 100}
	after := cpuReading{nodes: []float64{3, 0}, machine: 108}
	nodes, machine := m.cpuPerGbit(before, after, 4e9)
	if len(nodes) != 2 || nodes[0] != 0.5 || nodes[1] != -1 || machine != 2 {
		t.Fatalf("nodes %v, machine %v; want [0.5 -1] and 2", nodes, machine)
	}
	if nodes, _ := m.cpuPerGbit(before, after, 0); nodes != nil {
		t.Fatalf("nothing moved: nodes %v, want none", nodes)
	}
}
