package node

import "testing"

// TestTunnelTAPName: the tunnel TAP's name is the host interface's with
// "-gso", cut to fit 15 characters, and never the host interface's own.
func TestTunnelTAPName(t *testing.T) {
	for in, want := range map[string]string{
		"tortie0":         "tortie0-gso",
		"abcdefghijklmno": "abcdefghijk-gso",
		"abcdefghijk":     "abcdefghijk-gso",
	} {
		if got := tunnelTAPName(in); got != want || len(got) > 15 || got == in {
			t.Errorf("tunnelTAPName(%q) = %q, want %q", in, got, want)
		}
	}
}
