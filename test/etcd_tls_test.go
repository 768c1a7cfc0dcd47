package test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/internal/nsdial"
	"github.com/tortie-net/tortie/internal/pki"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/resources"
)

// TestEtcdTLS: a lab whose etcd (embedded in n1) serves TLS only, with
// client-certificate authentication: every node's tortied reaches it with
// its certificate (the pod matrix passes across nodes, a CNI ADD on
// another node than the member's works), while a client without a
// certificate, one with a certificate of another CA, and plain HTTP are
// refused.
func TestEtcdTLS(t *testing.T) {
	l := up(t, lab.Options{Name: "tet", Nodes: 3, Pods: 1, Mode: "vxlan", EtcdTLS: true})
	if !strings.HasPrefix(l.EtcdURL, "https://") {
		t.Fatalf("etcd at %s", l.EtcdURL)
	}
	checkAll(t, l)

	n2 := l.Nodes[1]
	p := newPod(t, "tlsadd")
	if err := l.AddPodCNI(context.Background(), n2, p); err != nil {
		t.Fatalf("CNI ADD on %s: %v", n2.Name, err)
	}
	out, _ := exec.Command("ip", "netns", "exec", p.Netns, "ping", "-n", "-c", "2", "-i", "0.1", "-W", "1", l.Pod("n1p1").Address).CombinedOutput()
	if !strings.Contains(string(out), " 0% packet loss") {
		t.Fatalf("new pod %s cannot reach n1p1:\n%s", p.Address, out)
	}

	// A client with the lab's certificate reads the cluster's state.
	s := etcdClient(t, l)
	kvs, _, err := s.List(context.Background(), resources.Prefix+"ippools/")
	if err != nil || len(kvs) == 0 {
		t.Fatalf("client with a certificate: %d pools, %v", len(kvs), err)
	}

	other, err := pki.NewCA("not the lab's CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.WriteIssued(t.TempDir(), "intruder", pki.Client)
	if err != nil {
		t.Fatal(err)
	}
	good := l.EtcdClientFiles()
	ns := "/var/run/netns/" + l.Nodes[1].Netns
	dialNS := func(ctx context.Context, addr string) (net.Conn, error) { return nsdial.Dial(ctx, ns, addr) }
	for _, tc := range []struct {
		name     string
		endpoint string
		files    datastore.ClientTLS
		alert    string
	}{
		{"no certificate", l.EtcdURL, datastore.ClientTLS{CAFile: good.CA}, "certificate required"},
		{"certificate of another CA", l.EtcdURL, datastore.ClientTLS{CAFile: good.CA, CertFile: foreign.Cert, KeyFile: foreign.Key}, "unknown certificate authority"},
		{"plain http", strings.Replace(l.EtcdURL, "https://", "http://", 1), datastore.ClientTLS{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{tc.endpoint}, Timeout: 2 * time.Second, Dial: dialNS, TLS: tc.files})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, _, err := c.List(context.Background(), resources.Prefix); !errors.Is(err, datastore.ErrUnavailable) {
				t.Fatalf("want etcd to refuse, got %v", err)
			}
			if tc.alert == "" {
				return
			}
			cfg, err := tc.files.Config()
			if err != nil {
				t.Fatal(err)
			}
			if err := tlsProbe(ns, tc.endpoint, cfg); err == nil || !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("TLS handshake: want %q, got %v", tc.alert, err)
			}
		})
	}
	// Plain HTTP to the client URL gets no etcd answer.
	hc := nsdial.HTTPClient(ns, 5*time.Second)
	if resp, err := hc.Get(strings.Replace(l.EtcdURL, "https://", "http://", 1) + "/health"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain http answered: %s", body)
		}
	}
}

// tlsProbe opens a TLS connection from a namespace and sends a request:
// with TLS 1.3 a refused client certificate shows on the first read.
func tlsProbe(ns, rawURL string, cfg *tls.Config) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := nsdial.Dial(ctx, ns, u.Host)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	cfg = cfg.Clone()
	cfg.ServerName = u.Hostname()
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}
