package hostif

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// TestCreateTunnel: the tunnel TAP comes up with its address and the
// settings that let the kernel forward what comes in on it from the
// node's own address; a second of the same name is refused; Close
// removes it.
func TestCreateTunnel(t *testing.T) {
	ns := testutil.Netns(t)
	err := nsutil.Do(testutil.NetnsPath(ns), func() error {
		tun, err := CreateTunnel("tg0-gso")
		if err != nil {
			return err
		}
		link, err := netlink.LinkByName("tg0-gso")
		if err != nil {
			return err
		}
		if link.Attrs().Flags&net.FlagUp == 0 || link.Type() != "tuntap" || link.Attrs().HardwareAddr.String() != tun.MAC().String() {
			t.Errorf("link %s: flags %v, type %s, address %s (MAC says %s)", link.Attrs().Name, link.Attrs().Flags,
				link.Type(), link.Attrs().HardwareAddr, tun.MAC())
		}
		for key, want := range map[string]string{"ipv4/conf/tg0-gso/accept_local": "1", "ipv4/conf/tg0-gso/rp_filter": "0",
			"ipv4/conf/tg0-gso/forwarding": "1", "ipv6/conf/tg0-gso/disable_ipv6": "1"} {
			b, err := os.ReadFile("/proc/sys/net/" + key)
			if err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("%s = %q (%v), want %s", key, b, err, want)
			}
		}
		if _, err := CreateTunnel("tg0-gso"); err == nil {
			t.Error("a second tunnel TAP of the same name was opened")
		}
		if err := tun.Close(); err != nil {
			return err
		}
		if _, err := netlink.LinkByName("tg0-gso"); err == nil {
			t.Error("the TAP outlived Close")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
