// Package pki makes a small certificate authority and the certificates a
// TLS-only etcd and a lab's Kubernetes control plane need: server and peer
// certificates, and client certificates (with groups, which Kubernetes reads
// from the subject's organizations). Labs and tests use it; a production cluster would use its
// own PKI (the README shows the equivalent openssl commands).
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Usage says what a certificate is for.
type Usage int

const (
	// Server certificates are presented by a listener.
	Server Usage = iota
	// Client certificates authenticate a client.
	Client
	// Peer certificates serve both ways, as etcd members do with each
	// other (and as a member's certificate must, for its peer URL).
	Peer
)

// CA is a certificate authority.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM is the CA's certificate, for clients' and servers' trust.
	CertPEM []byte
}

// Validity of the certificates made here.
const Validity = 365 * 24 * time.Hour

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA makes a self-signed authority named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue makes a certificate and key for name. hosts are the IP addresses
// and DNS names a server or peer certificate is valid for.
func (ca *CA) Issue(name string, usage Usage, hosts ...string) (certPEM, keyPEM []byte, err error) {
	return ca.IssueGroups(name, nil, usage, hosts...)
}

// IssueGroups is Issue with groups: the subject's organizations, which a
// Kubernetes API server takes as the client's groups.
func (ca *CA) IssueGroups(name string, groups []string, usage Usage, hosts ...string) (certPEM, keyPEM []byte, err error) {
	if name == "" {
		return nil, nil, errors.New("pki: a certificate needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name, Organization: groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch usage {
	case Server:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case Peer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	default:
		return nil, nil, fmt.Errorf("pki: unknown usage %d", usage)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// Files are the paths of one certificate, its key and the CA that signed it.
type Files struct {
	CA, Cert, Key string
}

// WriteCA writes the CA's certificate as dir/ca.crt and returns its path.
func (ca *CA) WriteCA(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "ca.crt")
	if have, err := os.ReadFile(p); err == nil && bytes.Equal(have, ca.CertPEM) {
		return p, nil
	}
	return p, writeAtomic(p, ca.CertPEM, 0o644)
}

// writeAtomic replaces path with data through a temporary file and a
// rename: every issue rewrites ca.crt, and a process reading it meanwhile
// (a kubelet starting while the next node's certificates are issued) must
// see the old file or the new one, never an empty one.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), perm)); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// WriteIssued issues a certificate for name and writes dir/name.crt,
// dir/name.key (readable by its owner only) and dir/ca.crt.
func (ca *CA) WriteIssued(dir, name string, usage Usage, hosts ...string) (Files, error) {
	return ca.WriteIssuedGroups(dir, name, name, nil, usage, hosts...)
}

// WriteIssuedGroups issues a certificate for name with groups and writes
// it as dir/file.crt and dir/file.key, and dir/ca.crt.
func (ca *CA) WriteIssuedGroups(dir, file, name string, groups []string, usage Usage, hosts ...string) (Files, error) {
	caPath, err := ca.WriteCA(dir)
	if err != nil {
		return Files{}, err
	}
	certPEM, keyPEM, err := ca.IssueGroups(name, groups, usage, hosts...)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: caPath, Cert: filepath.Join(dir, file+".crt"), Key: filepath.Join(dir, file+".key")}
	if err := writeAtomic(f.Key, keyPEM, 0o600); err != nil {
		return Files{}, err
	}
	return f, writeAtomic(f.Cert, certPEM, 0o644)
}

// WriteKeyPair writes a new ECDSA P-256 key pair: the private key (SEC 1
// PEM, "EC PRIVATE KEY") to keyPath and its public key (PKIX PEM) to
// pubPath, such as the pair a Kubernetes API server signs service-account
// tokens with and checks them against.
func WriteKeyPair(keyPath, pubPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}
