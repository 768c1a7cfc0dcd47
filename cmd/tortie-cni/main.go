// Command tortie-cni is tortie's CNI plugin. Container runtimes run it with
// the CNI environment and a network configuration on standard input; it
// hands the work to tortied. Install it as /opt/cni/bin/tortie.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/tortie-net/tortie/cni/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.Funcs(), plugin.Versions, "tortie CNI plugin: pods on tortie's userspace dataplane")
}
