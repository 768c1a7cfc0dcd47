package fib

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
)

// naive is the reference: scan every route, keep the longest match.
func naive(routes map[netip.Prefix]NextHop, addr uint32) (NextHop, bool) {
	best, found := -1, NextHop{}
	for p, nh := range routes {
		if addr&Mask(p.Bits()) == AddrU32(p.Addr()) && p.Bits() > best {
			best, found = p.Bits(), nh
		}
	}
	return found, best >= 0
}

func prefixFrom(a uint32, bits int) netip.Prefix {
	a &= Mask(bits)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
}

// check compares every probe's Lookup with the naive search.
func check(t *testing.T, f *FIB, ref map[netip.Prefix]NextHop, probes []uint32) {
	t.Helper()
	tab := f.Load()
	if tab.Len() != len(ref) {
		t.Fatalf("table has %d routes, reference %d", tab.Len(), len(ref))
	}
	for _, a := range probes {
		want, ok := naive(ref, a)
		got := tab.Lookup(a)
		if ok != (got != nil) || (ok && *got != want) {
			t.Fatalf("lookup %08x: got %+v, want %+v (found %v)", a, got, want, ok)
		}
	}
}

// TestDifferential runs random inserts, deletes and lookups against the naive
// search, in a small address space so prefixes nest and collide often.
func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	f := New()
	ref := map[netip.Prefix]NextHop{}
	randAddr := func() uint32 { return 0x0a000000 | r.Uint32()&0x0000ffff | r.Uint32()&0x00300000 }
	for round := 0; round < 300; round++ {
		err := f.Update(func(tx Tx) error {
			for i := 0; i < 1+r.IntN(8); i++ {
				p := prefixFrom(randAddr(), []int{0, 8, 12, 16, 20, 24, 26, 28, 31, 32}[r.IntN(10)])
				if r.IntN(3) == 0 {
					tx.Delete(SourceStatic, p)
					delete(ref, p)
					continue
				}
				nh := NextHop{Kind: KindRemote, Node: [4]byte{192, 0, 2, byte(r.IntN(250))}, Mode: Mode(r.IntN(3))}
				if err := tx.Set(Route{Prefix: p, NextHop: nh, Source: SourceStatic}); err != nil {
					return err
				}
				ref[p] = nh
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		probes := make([]uint32, 64)
		for i := range probes {
			probes[i] = randAddr()
		}
		check(t, f, ref, probes)
	}
}

func TestSourcePriority(t *testing.T) {
	f := New()
	p := netip.MustParsePrefix("10.1.0.0/26")
	_ = f.Update(func(tx Tx) error {
		_ = tx.Set(Route{Prefix: p, Source: SourceBGP, NextHop: NextHop{Kind: KindRemote, Node: [4]byte{1, 1, 1, 1}}})
		return tx.Set(Route{Prefix: p, Source: SourceStatic, NextHop: NextHop{Kind: KindBlackhole}})
	})
	if nh := f.Load().Lookup(AddrU32(p.Addr())); nh == nil || nh.Kind != KindBlackhole {
		t.Fatalf("static should beat bgp, got %+v", nh)
	}
	_ = f.Update(func(tx Tx) error { tx.Delete(SourceStatic, p); return nil })
	tab := f.Load()
	if nh := tab.Lookup(AddrU32(p.Addr())); nh == nil || nh.Kind != KindRemote {
		t.Fatalf("bgp route should remain, got %+v", nh)
	}
	if !tab.IsNode([4]byte{1, 1, 1, 1}) || tab.IsNode([4]byte{1, 1, 1, 2}) {
		t.Fatal("known-node set wrong")
	}
	if err := f.Update(func(tx Tx) error {
		return tx.Set(Route{Prefix: netip.MustParsePrefix("fd00::/64")})
	}); err == nil {
		t.Fatal("IPv6 prefix accepted")
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	f := New()
	_ = f.Update(func(tx Tx) error {
		return tx.Set(Route{Prefix: netip.MustParsePrefix("10.0.0.0/8"), NextHop: NextHop{Kind: KindHost}})
	})
	tab := f.Load()
	if n := testing.AllocsPerRun(1000, func() { _ = tab.Lookup(0x0a010203) }); n != 0 {
		t.Fatalf("%v allocs per lookup", n)
	}
}

// FuzzFIB decodes the input as a program of inserts, deletes and lookups and
// checks every lookup against the naive search.
func FuzzFIB(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 0, 8, 2, 10, 1, 2, 3, 0})
	f.Add([]byte{0, 10, 1, 0, 0, 24, 0, 10, 1, 0, 64, 26, 1, 10, 1, 0, 0, 24, 2, 10, 1, 0, 65, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		fb := New()
		ref := map[netip.Prefix]NextHop{}
		for len(prog) >= 6 {
			op, a, bits := prog[0]%3, uint32(prog[1])<<24|uint32(prog[2])<<16|uint32(prog[3])<<8|uint32(prog[4]), int(prog[5]%33)
			prog = prog[6:]
			p := prefixFrom(a, bits)
			switch op {
			case 0:
				nh := NextHop{Kind: KindLocal, Port: a}
				_ = fb.Update(func(tx Tx) error { return tx.Set(Route{Prefix: p, NextHop: nh, Source: SourceEndpoint}) })
				ref[p] = nh
			case 1:
				_ = fb.Update(func(tx Tx) error { tx.Delete(SourceEndpoint, p); return nil })
				delete(ref, p)
			case 2:
				check(t, fb, ref, []uint32{a, a ^ 1, a ^ 0x80})
			}
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			routes := make([]Route, 0, n)
			seen := map[netip.Prefix]bool{}
			for len(routes) < n {
				p := prefixFrom(r.Uint32(), []int{32, 26, 24, 16}[r.IntN(4)])
				if !seen[p] {
					seen[p] = true
					routes = append(routes, Route{Prefix: p, NextHop: NextHop{Kind: KindHost}})
				}
			}
			tab := Build(routes)
			addrs := make([]uint32, 1024)
			for i := range addrs {
				addrs[i] = AddrU32(routes[r.IntN(n)].Prefix.Addr()) | r.Uint32()&0x3f
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_ = tab.Lookup(addrs[i&1023])
			}
		})
	}
}

func TestMatch(t *testing.T) {
	pfx := netip.MustParsePrefix
	tab := Build([]Route{
		{Prefix: pfx("10.0.0.0/8"), NextHop: NextHop{Kind: KindHost}, Source: SourceStatic},
		{Prefix: pfx("10.1.0.0/26"), NextHop: NextHop{Kind: KindRemote, Mode: ModeVXLAN}, Source: SourceBGP},
	})
	if r, ok := tab.Match(AddrU32(netip.MustParseAddr("10.1.0.5"))); !ok || r.Prefix != pfx("10.1.0.0/26") || r.NextHop.Mode != ModeVXLAN || r.Source != SourceBGP {
		t.Errorf("Match(10.1.0.5) = %+v, %v; want the /26", r, ok)
	}
	if r, ok := tab.Match(AddrU32(netip.MustParseAddr("10.2.0.5"))); !ok || r.Prefix != pfx("10.0.0.0/8") {
		t.Errorf("Match(10.2.0.5) = %+v, %v; want the /8", r, ok)
	}
	if _, ok := tab.Match(AddrU32(netip.MustParseAddr("192.168.0.1"))); ok {
		t.Error("Match(192.168.0.1) found a route")
	}
}
