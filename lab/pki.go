package lab

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tortie-net/tortie/internal/nsdial"
	"github.com/tortie-net/tortie/internal/pki"
)

// Names of the lab's etcd certificates besides one client certificate per
// node (named after the node).
const (
	// etcdMemberCert is every etcd member's certificate: server and peer.
	etcdMemberCert = "etcd-member"
	// EtcdAdminCert is a client certificate for tools and tests.
	EtcdAdminCert = "admin"
)

func (l *Lab) pkiDir() string { return filepath.Join(Dir(l.Name), "pki") }

func (l *Lab) etcdScheme() string {
	if l.EtcdTLS {
		return "https"
	}
	return "http"
}

// etcdFiles are the CA, certificate and key of the lab certificate name.
func (l *Lab) etcdFiles(name string) pki.Files {
	d := l.pkiDir()
	return pki.Files{CA: filepath.Join(d, "ca.crt"), Cert: filepath.Join(d, name+".crt"), Key: filepath.Join(d, name+".key")}
}

// EtcdClientFiles are the CA, certificate and key of a client of the lab's
// TLS etcd (zero when the lab's etcd is plain).
func (l *Lab) EtcdClientFiles() pki.Files {
	if !l.EtcdTLS {
		return pki.Files{}
	}
	return l.etcdFiles(EtcdAdminCert)
}

// makePKI makes the lab's CA, the members' certificate (valid for n1's
// address, where the embedded member serves, the fabric address, where an
// external cluster does, and loopback), and a client certificate for every
// node and for tools.
func (l *Lab) makePKI() error {
	ca, err := pki.NewCA("tortie lab " + l.Name + " etcd CA")
	if err != nil {
		return err
	}
	d := l.pkiDir()
	if _, err := ca.WriteIssued(d, etcdMemberCert, pki.Peer, l.Nodes[0].Addr(), "10.0.1.254", "127.0.0.1", "localhost"); err != nil {
		return fmt.Errorf("lab PKI: %w", err)
	}
	for _, name := range append([]string{EtcdAdminCert}, nodeNames(l.Nodes)...) {
		if _, err := ca.WriteIssued(d, name, pki.Client); err != nil {
			return fmt.Errorf("lab PKI: %w", err)
		}
	}
	return nil
}

func nodeNames(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

// etcdHTTPClient reaches the lab's etcd over HTTP(S) from the fabric
// namespace, with the admin client certificate when the lab uses TLS.
func (l *Lab) etcdHTTPClient(timeout time.Duration) (*http.Client, error) {
	hc := nsdial.HTTPClient("/var/run/netns/"+l.Fabric, timeout)
	if !l.EtcdTLS {
		return hc, nil
	}
	f := l.etcdFiles(EtcdAdminCert)
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}
	return hc, nil
}
