package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
)

func TestServeAndClient(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, "127.0.0.1:0", "pod-a", ready) }()
	addrs := <-ready
	var out bytes.Buffer
	if err := client("get", []string{"http://" + addrs[0].String() + "/"}, &out); err != nil {
		t.Fatal(err)
	}
	var r Reply
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if host, _, _ := net.SplitHostPort(r.Client); host != "127.0.0.1" || r.Hostname != "pod-a" {
		t.Errorf("HTTP reply %+v", r)
	}
	out.Reset()
	if err := client("get", []string{"http://" + addrs[0].String() + "/healthz"}, &out); err != nil || strings.TrimSpace(out.String()) != "ok" {
		t.Errorf("healthz: %v %q", err, out.String())
	}
	out.Reset()
	if err := client("udp", []string{addrs[1].String(), "hello"}, &out); err != nil {
		t.Fatal(err)
	}
	r = Reply{}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if host, _, _ := net.SplitHostPort(r.Client); host != "127.0.0.1" || r.Hostname != "pod-a" || r.Data != "hello" {
		t.Errorf("UDP reply %+v", r)
	}
	if err := client("get", nil, &out); err == nil {
		t.Error("get without URL: no error")
	}
	// Bulk bytes, checked against their trailer; a bad count refused.
	for _, n := range []int{0, 1, 3<<20 + 5} {
		out.Reset()
		if err := client("fetch", []string{fmt.Sprintf("http://%s/bytes?n=%d", addrs[0], n)}, &out); err != nil || out.String() != fmt.Sprintf("intact %d bytes\n", n) {
			t.Errorf("fetch %d: %v %q", n, err, out.String())
		}
	}
	for _, q := range []string{"n=-1", "n=x", fmt.Sprintf("n=%d", maxBytes+1)} {
		if err := client("fetch", []string{"http://" + addrs[0].String() + "/bytes?" + q}, &out); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("fetch %s: %v", q, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// The probe counts the server's answers until its input ends; with the
// server gone halfway, the gap covers the rest of the run.
func TestProbe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, "127.0.0.1:0", "pod-a", ready) }()
	addrs := <-ready
	in, w := io.Pipe()
	var out bytes.Buffer
	probed := make(chan error, 1)
	go func() { probed <- runProbe(addrs[1].String(), in, &out) }()
	// Stop once answers came, then stop the server and let sends go
	// unanswered for a while.
	var r ProbeResult
	conn, err := net.Dial("udp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	w.Close()
	if err := <-probed; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if r.Received > r.Sent || r.LongestGapMs <= 0 || (r.Received > 0) != (lines[0] == "answered") {
		t.Fatalf("probe result %+v", r)
	}
}

func TestParsePorts(t *testing.T) {
	for in, want := range map[string][]int{"8080": {8080}, "80,81": {80, 81}, " 80, 443 ": {80, 443}} {
		got, err := parsePorts(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parsePorts(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "http", "0", "65536", "80,", "80,80", "-1"} {
		if got, err := parsePorts(in); err == nil {
			t.Errorf("parsePorts(%q) = %v, want an error", in, got)
		}
	}
}

// Every address answers over TCP and UDP; one that cannot be bound stops
// the others and is the error returned.
func TestServeAll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 2)
	done := make(chan error, 1)
	go func() { done <- serveAll(ctx, []string{"127.0.0.1:0", "127.0.0.1:0"}, "pod-a", ready) }()
	bound := [][2]net.Addr{<-ready, <-ready}
	if bound[0][0].String() == bound[1][0].String() {
		t.Fatalf("both servers on %v", bound[0][0])
	}
	for _, a := range bound {
		var out bytes.Buffer
		if err := client("get", []string{"http://" + a[0].String() + "/healthz"}, &out); err != nil || strings.TrimSpace(out.String()) != "ok" {
			t.Errorf("healthz on %v: %v %q", a[0], err, out.String())
		}
		out.Reset()
		if err := client("udp", []string{a[1].String(), "hi"}, &out); err != nil || !strings.Contains(out.String(), `"data":"hi"`) {
			t.Errorf("UDP on %v: %v %q", a[1], err, out.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveAll: %v", err)
	}

	// An address in use: serveAll returns its error, having stopped the
	// server that did start.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ready = make(chan [2]net.Addr, 2)
	err = serveAll(context.Background(), []string{"127.0.0.1:0", busy.Addr().String()}, "pod-a", ready)
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Errorf("serveAll with %v in use: %v", busy.Addr(), err)
	}
}
