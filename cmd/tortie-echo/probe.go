package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"
)

// ProbeResult is what "probe" prints when it ends: how many datagrams it
// sent and how many were answered, and the longest time without an
// answer (from the start, between answers, and up to the end), the
// forwarding gap a restart on the path caused.
type ProbeResult struct {
	Sent         int     `json:"sent"`
	Received     int     `json:"received"`
	LongestGapMs float64 `json:"longestGapMs"`
}

// probe sends a numbered datagram every interval on c, a connected UDP
// socket to an echo server, counts the answers, and returns when stop is
// closed. onFirst, if not nil, is called at the first answer.
func probe(c net.Conn, interval time.Duration, stop <-chan struct{}, onFirst func()) (ProbeResult, error) {
	start := time.Now()
	answers := make(chan time.Time, 1024)
	go func() {
		defer close(answers)
		buf := make([]byte, 65536)
		for {
			if _, err := c.Read(buf); err != nil {
				return // the socket closed
			}
			answers <- time.Now()
		}
	}()
	var r ProbeResult
	last := start
	note := func(at time.Time) {
		if r.Received == 0 && onFirst != nil {
			onFirst()
		}
		r.Received++
		r.LongestGapMs = max(r.LongestGapMs, float64(at.Sub(last))/float64(time.Millisecond))
		last = at
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			end := time.Now()
			c.Close()
			for at := range answers {
				note(at)
			}
			r.LongestGapMs = max(r.LongestGapMs, float64(end.Sub(last))/float64(time.Millisecond))
			return r, nil
		case at, ok := <-answers:
			if ok {
				note(at)
			}
		case <-tick.C:
			r.Sent++
			// A send can fail while the path is down (no route, or an
			// ICMP error from the last datagram): that is the gap.
			_, _ = fmt.Fprintf(c, "probe %d", r.Sent)
		}
	}
}

// runProbe is "probe HOST:PORT": it prints "answered" on a line of its
// own at the first answer, probes until its standard input ends (the
// caller closes it once what it measures is over) and prints the result
// as JSON on the last line.
func runProbe(addr string, in io.Reader, out io.Writer) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, in)
		close(stop)
	}()
	r, err := probe(c, 10*time.Millisecond, stop, func() { fmt.Fprintln(out, "answered") })
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(r)
}
