package labtest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/nsdial"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/nsutil"
)

// SendAll opens streams TCP connections from one pod to another and sends
// size/streams bytes over each at once, from the pod that opened it, or
// when reverse from the pod that accepted it (as iperf3 -R). It fails
// unless every connection's bytes arrive as they were sent (a SHA-256 on
// each end). Each receiver reads to the end of its connection, where
// iperf3's summary of a -n test counts what the receiver had when the
// sender finished, and so trails by whatever was still in flight. It
// returns the rate in bits per second.
func SendAll(t *testing.T, from, to *lab.Pod, streams, size int, reverse bool) float64 {
	t.Helper()
	if from == nil || to == nil {
		t.Fatal("SendAll: no such pod")
	}
	var ln net.Listener
	if err := nsutil.Do(testutil.NetnsPath(to.Netns), func() (err error) { ln, err = net.Listen("tcp4", ":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, size/streams)
	rng := rand.New(rand.NewPCG(uint64(size), uint64(streams)))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deadline, _ := ctx.Deadline()

	type result struct {
		sum [32]byte
		n   int64
	}
	// Each connection has a reader and a writer; every goroutine ends by
	// the deadline, and the channels hold all they can be sent.
	read := make(chan result, streams)
	errs := make(chan error, 3*streams)
	serve := func(c net.Conn, reads bool) {
		defer c.Close()
		c.SetDeadline(deadline)
		if reads {
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				errs <- fmt.Errorf("reading: %w", err)
				return
			}
			r := result{n: n}
			copy(r.sum[:], h.Sum(nil))
			read <- r
			return
		}
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		if err == nil {
			// Closed once the reader has read to the end and closed
			// its side, so that nothing in flight is reset.
			_, err = io.Copy(io.Discard, c)
		}
		errs <- err
	}
	go func() {
		for range streams {
			c, err := ln.Accept()
			if err != nil {
				return // the listener closed: sendAll returned
			}
			go serve(c, !reverse)
		}
	}()
	start := time.Now()
	addr := net.JoinHostPort(strings.Split(to.Address, "/")[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	for range streams {
		go func() {
			c, err := nsdial.Dial(ctx, testutil.NetnsPath(from.Netns), addr)
			if err != nil {
				errs <- err
				return
			}
			serve(c, reverse)
		}()
	}
	src, dst := from.Name, to.Name
	if reverse {
		src, dst = dst, src
	}
	var elapsed time.Duration
	for reads, writes := 0, 0; reads < streams || writes < streams; {
		select {
		case r := <-read:
			reads++
			if r.n != int64(len(data)) || r.sum != want {
				t.Fatalf("%s -> %s: a connection of %d carried %d of %d bytes, intact %v",
					src, dst, streams, r.n, len(data), r.sum == want)
			}
			if reads == streams {
				elapsed = time.Since(start)
			}
		case err := <-errs:
			if err != nil {
				t.Fatalf("%s -> %s: %v", src, dst, err)
			}
			writes++
		case <-ctx.Done():
			t.Fatalf("%s -> %s: %d of %d connections read to the end, %d written, in %v",
				src, dst, reads, streams, writes, time.Since(start).Round(time.Second))
		}
	}
	return float64(len(data)*streams*8) / elapsed.Seconds()
}
