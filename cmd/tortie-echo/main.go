// Command tortie-echo is the lab's test workload, built static into the
// image images.Echo. As a server (the default) it answers on each port it
// is given (8080 unless --port says otherwise; --port 80,81 serves both):
//
//   - HTTP on TCP: GET / returns JSON with the client's source address as
//     the server saw it and the pod's hostname; GET /healthz returns "ok"
//     (a readiness endpoint); GET /bytes?n=N returns N pseudo-random bytes
//     (bulk TCP, at most 1 GiB) and their SHA-256 in the trailer Sha256;
//   - UDP: every datagram is answered with the same JSON and the datagram's
//     payload as "data".
//
// As a client it runs inside a pod (e.g. through the CRI's exec) and prints
// what a server answered:
//
//	tortie-echo [--port 8080[,81...]]    serve
//	tortie-echo get http://10.244.0.5:8080/
//	tortie-echo udp 10.244.0.5:8080 hello
//	tortie-echo resolve kubernetes.default     (through the pod's resolv.conf)
//	tortie-echo apiserver /api                 (https://kubernetes.default.svc with the pod's service-account token)
//	tortie-echo probe 10.244.0.5:8080          (a datagram every 10 ms until stdin ends; prints the longest gap)
//	tortie-echo fetch http://10.244.0.5:8080/bytes?n=67108864  (prints "intact N bytes" if the SHA-256 matches)
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Reply is what the server answers.
type Reply struct {
	Client   string `json:"client"`
	Hostname string `json:"hostname"`
	Data     string `json:"data,omitempty"`
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "probe" {
		if err := runProbe(os.Args[2], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tortie-echo:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && slices.Contains([]string{"get", "fetch", "udp", "resolve", "apiserver"}, os.Args[1]) {
		if err := client(os.Args[1], os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tortie-echo:", err)
			os.Exit(1)
		}
		return
	}
	portList := flag.String("port", "8080", "TCP (HTTP) and UDP port, or several, comma-separated")
	flag.Parse()
	ports, err := parsePorts(*portList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tortie-echo:", err)
		os.Exit(2)
	}
	host, _ := os.Hostname()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var addrs []string
	for _, p := range ports {
		addrs = append(addrs, fmt.Sprintf(":%d", p))
	}
	if err := serveAll(ctx, addrs, host, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tortie-echo:", err)
		os.Exit(1)
	}
}

// parsePorts reads --port: one port or several, comma-separated, each
// once.
func parsePorts(s string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("--port %q: %q is not a port (1-65535)", s, f)
		}
		if slices.Contains(ports, p) {
			return nil, fmt.Errorf("--port %q: %d twice", s, p)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// serveAll serves on every address until ctx ends; if one fails, the
// others stop too and its error is returned. ready, if not nil, receives
// each address's bound TCP and UDP addresses (as serve sends them).
func serveAll(ctx context.Context, addrs []string, host string, ready chan<- [2]net.Addr) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(addrs))
	for _, a := range addrs {
		go func() {
			err := serve(ctx, a, host, ready)
			if err != nil {
				err = fmt.Errorf("%s: %w", a, err)
			}
			cancel()
			errs <- err
		}()
	}
	var first error
	for range addrs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// serve answers on addr over TCP and UDP until ctx ends. ready, if not nil,
// receives the bound TCP and UDP addresses once both listen.
func serve(ctx context.Context, addr, host string, ready chan<- [2]net.Addr) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /bytes", serveBytes)
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Reply{Client: r.RemoteAddr, Hostname: host})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(ln) }()
	go func() { errs <- serveUDP(pc, host) }()
	if ready != nil {
		ready <- [2]net.Addr{ln.Addr(), pc.LocalAddr()}
	}
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	_ = srv.Close()
	_ = pc.Close()
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// maxBytes bounds GET /bytes.
const maxBytes = 1 << 30

// serveBytes answers GET /bytes?n=N: N pseudo-random bytes, then their
// SHA-256 (hex) in the trailer Sha256.
func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 || n > maxBytes {
		http.Error(w, fmt.Sprintf("n: want 0 to %d bytes", maxBytes), http.StatusBadRequest)
		return
	}
	w.Header().Set("Trailer", "Sha256")
	w.Header().Set("Content-Type", "application/octet-stream")
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{'t', 'o', 'r', 't', 'i', 'e'})
	buf := make([]byte, 64<<10)
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		_, _ = rng.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return
		}
		n -= int64(len(b))
	}
	w.Header().Set("Sha256", hex.EncodeToString(h.Sum(nil)))
}

// fetch reads url's body, checks it against the trailer Sha256, and says
// how many bytes came intact.
func fetch(url string, out io.Writer) error {
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("%s: after %d bytes: %w", url, n, err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), resp.Trailer.Get("Sha256"); got != want {
		return fmt.Errorf("%s: %d bytes whose SHA-256 is %s, the server's %q", url, n, got, want)
	}
	_, err = fmt.Fprintf(out, "intact %d bytes\n", n)
	return err
}

func serveUDP(pc net.PacketConn, host string) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(Reply{Client: from.String(), Hostname: host, Data: string(buf[:n])})
		_, _ = pc.WriteTo(b, from)
	}
}

// client runs "get URL" or "udp HOST:PORT PAYLOAD" and copies the answer to out.
func client(mode string, args []string, out io.Writer) error {
	const timeout = 10 * time.Second
	switch {
	case mode == "fetch" && len(args) == 1:
		return fetch(args[0], out)
	case mode == "get" && len(args) == 1:
		c := &http.Client{Timeout: timeout}
		resp, err := c.Get(args[0])
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", args[0], resp.Status)
		}
		_, err = io.Copy(out, resp.Body)
		return err
	case mode == "udp" && len(args) == 2:
		c, err := net.DialTimeout("udp", args[0], timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		if _, err := c.Write([]byte(args[1])); err != nil {
			return err
		}
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", buf[:n])
		return err
	case mode == "resolve" && len(args) == 1:
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, strings.Join(addrs, " "))
		return err
	case mode == "apiserver" && len(args) == 1:
		return apiserver(args[0], out)
	}
	return fmt.Errorf("usage: tortie-echo get URL | udp HOST:PORT PAYLOAD | resolve NAME | apiserver PATH")
}

// serviceAccount is where the kubelet mounts a pod's service-account token
// and the cluster's CA.
const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

// apiserver GETs path from the API server through the `kubernetes` Service,
// by name, with the pod's service-account token, as in-cluster clients do.
func apiserver(path string, out io.Writer) error {
	token, err := os.ReadFile(serviceAccount + "/token")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(serviceAccount + "/ca.crt")
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return errors.New("no certificate in the service account's ca.crt")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequest("GET", "https://kubernetes.default.svc"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	_, err = io.Copy(out, resp.Body)
	return err
}
