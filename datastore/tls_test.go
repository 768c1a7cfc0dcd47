package datastore_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/internal/pki"
)

// tlsMember starts a TLS-only member and returns it with the files of a
// client certificate of its CA and of one from another CA.
func tlsMember(t *testing.T) (m *datastore.Embedded, good, foreign pki.Files) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test etcd CA")
	if err != nil {
		t.Fatal(err)
	}
	member, err := ca.WriteIssued(dir+"/ca", "member", pki.Peer, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if good, err = ca.WriteIssued(dir+"/ca", "client", pki.Client); err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	if foreign, err = other.WriteIssued(dir+"/other", "client", pki.Client); err != nil {
		t.Fatal(err)
	}
	foreign.CA = good.CA // it trusts the member; the member does not trust it
	m = etcdtest.StartMember(t, datastore.EmbeddedConfig{CertFile: member.Cert, KeyFile: member.Key, CAFile: member.CA})
	return m, good, foreign
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dial(t *testing.T, endpoint string, files pki.Files) *datastore.Etcd {
	t.Helper()
	c, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{endpoint}, Timeout: 2 * time.Second,
		TLS: datastore.ClientTLS{CAFile: files.CA, CertFile: files.Cert, KeyFile: files.Key}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestEtcdTLSClientAuth: a TLS-only member serves a client with a
// certificate of its CA, and refuses one without a certificate, one with a
// certificate of another CA, and plain http.
func TestEtcdTLSClientAuth(t *testing.T) {
	m, good, foreign := tlsMember(t)
	if !strings.HasPrefix(m.URL, "https://") {
		t.Fatalf("member URL %s", m.URL)
	}
	ctx := context.Background()
	c := dial(t, m.URL, good)
	if _, err := c.Put(ctx, "/k", []byte("v")); err != nil {
		t.Fatalf("client with a valid certificate: %v", err)
	}
	if kv, err := c.Get(ctx, "/k"); err != nil || string(kv.Value) != "v" {
		t.Fatalf("get: %+v %v", kv, err)
	}
	for _, tc := range []struct {
		name     string
		endpoint string
		files    pki.Files
		alert    string // what the member answers the TLS handshake
	}{
		{"no certificate", m.URL, pki.Files{CA: good.CA}, "certificate required"},
		{"certificate of another CA", m.URL, foreign, "unknown certificate authority"},
		{"plain http", strings.Replace(m.URL, "https://", "http://", 1), pki.Files{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dial(t, tc.endpoint, tc.files).Get(ctx, "/k")
			if !errors.Is(err, datastore.ErrUnavailable) {
				t.Fatalf("want the member to refuse, got %v", err)
			}
			if tc.alert == "" {
				return
			}
			// The same TLS configuration, handshaking by hand, shows why.
			cfg, err := datastore.ClientTLS{CAFile: tc.files.CA, CertFile: tc.files.Cert, KeyFile: tc.files.Key}.Config()
			if err != nil {
				t.Fatal(err)
			}
			if err := handshake(m.URL, cfg); err == nil || !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("handshake: want %q, got %v", tc.alert, err)
			}
		})
	}
	// Plain HTTP to the TLS port gets no answer from etcd.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(strings.Replace(m.URL, "https://", "http://", 1) + "/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain http answered")
		}
	}
}

// handshake opens a TLS connection to the host of rawURL and sends a
// request: with TLS 1.3 a refused client certificate shows on the first
// read.
func handshake(rawURL string, cfg *tls.Config) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	conn, err := tls.Dial("tcp", u.Host, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// TestEtcdTLSHTTPAndPeer: the member's HTTP endpoints and its peer URL
// need a client certificate too.
func TestEtcdTLSHTTPAndPeer(t *testing.T) {
	m, good, _ := tlsMember(t)
	caPEM := mustRead(t, good.CA)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(good.Cert, good.Key)
	if err != nil {
		t.Fatal(err)
	}
	get := func(certs []tls.Certificate) error {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
		resp, err := hc.Get(m.URL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status + ": " + string(b))
		}
		return nil
	}
	if err := get([]tls.Certificate{cert}); err != nil {
		t.Fatalf("health with a certificate: %v", err)
	}
	if err := get(nil); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("health without a client certificate: %v", err)
	}
	// The peer URL refuses a connection without a client certificate,
	// and accepts the handshake of one with a certificate of the CA.
	if err := handshake(m.PeerURL(), &tls.Config{RootCAs: roots}); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("peer URL without a certificate: %v", err)
	}
	if err := handshake(m.PeerURL(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}); err != nil {
		t.Fatalf("peer URL with a certificate: %v", err)
	}
}
