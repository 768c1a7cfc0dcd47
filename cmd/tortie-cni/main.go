// Command tortie-cni is tortie's CNI plugin. Container runtimes run it with
// the CNI environment and a network configuration on standard input; it
// hands the work to tortied. Install it as /opt/cni/bin/tortie.
//
// `tortie-cni install` is the DaemonSet's install-cni step: it copies
// itself into the host's CNI bin directory and writes the network
// configuration list from $CNI_NETWORK_CONFIG (Calico's variable) into the
// host's CNI configuration directory.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/tortie-net/tortie/cni/plugin"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install" {
		if err := install(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tortie-cni:", err)
			os.Exit(1)
		}
		return
	}
	skel.PluginMainFuncs(plugin.Funcs(), plugin.Versions, "tortie CNI plugin: pods on tortie's userspace dataplane")
}

func install(args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	binDir := fs.String("bin-dir", "/host/opt/cni/bin", "the host's CNI plugin directory, as mounted")
	confDir := fs.String("conf-dir", "/host/etc/cni/net.d", "the host's CNI configuration directory, as mounted")
	confName := fs.String("conf-name", "10-tortie.conflist", "file name of the network configuration list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conflist := os.Getenv("CNI_NETWORK_CONFIG")
	if conflist == "" {
		return fmt.Errorf("install: CNI_NETWORK_CONFIG holds no network configuration list")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := plugin.Install(self, *binDir, *confDir, *confName, []byte(conflist)); err != nil {
		return err
	}
	fmt.Printf("installed %s/tortie and %s/%s\n", *binDir, *confDir, *confName)
	return nil
}
