package datastore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientTLS names the PEM files a client of etcd uses, as Calico's
// etcdCACertFile, etcdCertFile and etcdKeyFile do. The zero value means no
// files: an https endpoint is then verified against the system's roots and
// no client certificate is sent.
type ClientTLS struct {
	// CAFile holds the certificates of the authorities that sign the
	// members' server certificates.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for
	// members that require client-certificate authentication. Both or
	// neither.
	CertFile, KeyFile string
}

// IsZero reports whether no file is named.
func (t ClientTLS) IsZero() bool { return t == ClientTLS{} }

// Config builds the client's TLS configuration. The certificate and key are
// read now, so that a wrong path or a key that does not match its
// certificate is reported at start, and read again on every new
// connection, so that a renewed certificate is used without a restart.
func (t ClientTLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate in it", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("etcd client certificate: set both the certificate and the key file, or neither")
	}
	if t.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cert, key := t.CertFile, t.KeyFile
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("etcd client certificate: %w", err)
			}
			return &c, nil
		}
	}
	return cfg, nil
}
