package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIssue: certificates verify against their CA for their usage and
// names only, and not against another CA.
func TestIssue(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	peerPEM, keyPEM, err := ca.Issue("member", Peer, "10.0.1.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(peerPEM, keyPEM); err != nil {
		t.Fatalf("key does not match: %v", err)
	}
	clientPEM, _, err := ca.Issue("n2", Client)
	if err != nil {
		t.Fatal(err)
	}
	foreignPEM, _, err := other.Issue("n2", Client)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(pemBytes []byte, name string, usage x509.ExtKeyUsage) error {
		_, err := parse(t, pemBytes).Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	for _, tc := range []struct {
		what  string
		cert  []byte
		name  string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"member as server at its IP", peerPEM, "10.0.1.1", x509.ExtKeyUsageServerAuth, true},
		{"member as server by DNS name", peerPEM, "localhost", x509.ExtKeyUsageServerAuth, true},
		{"member as peer client", peerPEM, "", x509.ExtKeyUsageClientAuth, true},
		{"member at another address", peerPEM, "10.0.1.2", x509.ExtKeyUsageServerAuth, false},
		{"client", clientPEM, "", x509.ExtKeyUsageClientAuth, true},
		{"client as server", clientPEM, "", x509.ExtKeyUsageServerAuth, false},
		{"client of another CA", foreignPEM, "", x509.ExtKeyUsageClientAuth, false},
	} {
		if err := verify(tc.cert, tc.name, tc.usage); (err == nil) != tc.ok {
			t.Errorf("%s: want ok=%v, got %v", tc.what, tc.ok, err)
		}
	}
	if _, _, err := ca.Issue("", Client); err == nil {
		t.Error("a certificate without a name was issued")
	}
	if _, _, err := ca.Issue("x", Usage(9)); err == nil {
		t.Error("an unknown usage was accepted")
	}
}

func TestIssueGroups(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.IssueGroups("system:node:n1", []string{"system:nodes"}, Client)
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, certPEM)
	if c.Subject.CommonName != "system:node:n1" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "system:nodes" {
		t.Fatalf("subject %v", c.Subject)
	}
}

// TestWritesNeverShowEmptyFiles: a reader of ca.crt, as a kubelet started
// while the next node's certificates are issued, never finds it empty or
// partial, and the files keep their permissions.
func TestWritesNeverShowEmptyFiles(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := ca.WriteIssued(dir, "first", Client); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range 50 {
			if _, err := ca.WriteIssued(dir, fmt.Sprintf("n%d", i%3), Client); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for reads := 0; ; reads++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(filepath.Join(dir, "n0.key"))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key: %v, mode %v", err, st.Mode())
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
			return
		default:
		}
		b, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
		if err != nil || !bytes.Equal(b, ca.CertPEM) {
			t.Fatalf("read %d: ca.crt has %d bytes (%v), want the CA's %d", reads, len(b), err, len(ca.CertPEM))
		}
	}
}
