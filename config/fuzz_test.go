package config

import "testing"

// FuzzParse: any bytes give a Config or an error, never a panic, and a
// Config that parsed validates again to the same derived settings.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(sample + "busyPoll: 50us\n"))
	f.Add([]byte("nodeName: n1\naddress: 10.0.1.1/24\ndatastore: {etcdEndpoints: [https://e:2379], etcdCACertFile: ca.crt, etcdCertFile: a, etcdKeyFile: b}\n"))
	f.Add([]byte("nodeName: n1\naddress: 10.0.1.1/24\ndatastore:\n  etcdCertFile: c\n  etcdKeyFile: k\n  embedded: {dataDir: /d, clientURL: https://10.0.1.1:2379, peerURL: https://10.0.1.1:2380, certFile: m, keyFile: k, trustedCAFile: ca, autoCompactionMode: revision, autoCompactionRetention: \"1000\", defragInterval: 10m}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		again, err := c.File.Validate()
		if err != nil {
			t.Fatalf("a parsed config does not validate again: %v", err)
		}
		if again.DefragInterval != c.DefragInterval || again.BusyPoll != c.BusyPoll || again.Addr != c.Addr || len(again.Peers) != len(c.Peers) {
			t.Fatalf("validating again changed the result")
		}
	})
}
