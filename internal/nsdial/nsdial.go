// Package nsdial dials TCP connections from inside a network namespace:
// the socket is created on a thread in that namespace, and keeps it after.
// The HTTP client built on it reaches services a lab runs in namespaces.
package nsdial

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/tortie-net/tortie/nsutil"
)

// Dial opens a TCP connection from inside the namespace at path.
func Dial(ctx context.Context, path, addr string) (net.Conn, error) {
	var c net.Conn
	err := nsutil.Do(path, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// HTTPClient returns a client whose connections start in the namespace.
func HTTPClient(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return Dial(ctx, path, addr)
		},
	}}
}

// DialFrom opens a TCP connection from inside the namespace at path, from
// the local address given.
func DialFrom(path, local, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := nsutil.Do(path, func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err = d.Dial("tcp", addr)
		return err
	})
	return c, err
}
