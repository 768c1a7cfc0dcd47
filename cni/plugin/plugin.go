// Package plugin is the tortie-cni executable's logic: it parses the
// network configuration and CNI environment (through the CNI library's
// skel), forwards ADD, DEL, CHECK, STATUS and GC to tortied over its unix
// socket, and prints the CNI result or error. It never touches the
// datastore itself.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tortie-net/tortie/api"
)

// DefaultSocket is tortied's control socket unless the config names another.
const DefaultSocket = "/run/tortie/tortied.sock"

// Versions are the CNI spec versions tortie-cni implements.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// NetConf is tortie's network configuration.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Socket is tortied's control socket.
	Socket string `json:"socket,omitempty"`
	// MTU for the pod interface; 0 lets tortied choose (underlay minus overhead).
	MTU  int `json:"mtu,omitempty"`
	IPAM struct {
		// Pools restricts allocation to these pools (names or CIDRs).
		Pools []string `json:"pools,omitempty"`
	} `json:"ipam,omitempty"`
	// ValidAttachments is set by the runtime for GC.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

func parse(stdin []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "the network configuration is not valid JSON", err.Error())
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "the network configuration has no \"name\"", "")
	}
	if c.MTU < 0 || (c.MTU != 0 && c.MTU < 576) || c.MTU > 65535 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %d: want 0 (auto) or 576-65535", c.MTU), "")
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	return &c, nil
}

// k8sArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS.
func k8sArgs(s string) (ns, pod string) {
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			ns = v
		case "K8S_POD_NAME":
			pod = v
		}
	}
	return
}

func request(c *NetConf, a *skel.CmdArgs) api.CNIRequest {
	ns, pod := k8sArgs(a.Args)
	return api.CNIRequest{
		Attachment: api.Attachment{ContainerID: a.ContainerID, IfName: a.IfName},
		Network:    c.Name, Netns: a.Netns, PodNamespace: ns, PodName: pod, Pools: c.IPAM.Pools, MTU: c.MTU,
	}
}

// asCNIError turns a daemon error into a CNI error with its code; an
// unreachable daemon is "try again later" (or "not available" for STATUS).
func asCNIError(err error, unreachable uint) error {
	var ce *api.CNIError
	if errors.As(err, &ce) {
		return types.NewError(ce.Code, ce.Msg, "")
	}
	return types.NewError(unreachable, err.Error(), "is tortied running on this node?")
}

func cmdAdd(a *skel.CmdArgs) error {
	c, err := parse(a.StdinData)
	if err != nil {
		return err
	}
	if a.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD", "")
	}
	res, err := api.NewClient(c.Socket).CNIAdd(request(c, a))
	if err != nil {
		return asCNIError(err, types.ErrTryAgainLater)
	}
	ip, ipnet, err := net.ParseCIDR(res.Address)
	if err != nil {
		return types.NewError(types.ErrInternal, "tortied returned a bad address "+res.Address, "")
	}
	ipnet.IP = ip
	idx := 0
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: res.IfName, Mac: res.MAC, Sandbox: res.Sandbox, Mtu: res.MTU}},
		IPs:        []*current.IPConfig{{Interface: &idx, Address: *ipnet, Gateway: net.ParseIP(res.Gateway)}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP(res.Gateway)}},
	}
	return types.PrintResult(r, c.CNIVersion)
}

func cmdDel(a *skel.CmdArgs) error {
	c, err := parse(a.StdinData)
	if err != nil {
		return err
	}
	if err := api.NewClient(c.Socket).CNIDel(request(c, a)); err != nil {
		return asCNIError(err, types.ErrTryAgainLater)
	}
	return nil
}

func cmdCheck(a *skel.CmdArgs) error {
	c, err := parse(a.StdinData)
	if err != nil {
		return err
	}
	if err := api.NewClient(c.Socket).CNICheck(request(c, a)); err != nil {
		return asCNIError(err, types.ErrTryAgainLater)
	}
	return nil
}

func cmdStatus(a *skel.CmdArgs) error {
	c, err := parse(a.StdinData)
	if err != nil {
		return err
	}
	if err := api.NewClient(c.Socket).CNIStatus(); err != nil {
		return asCNIError(err, types.ErrPluginNotAvailable)
	}
	return nil
}

func cmdGC(a *skel.CmdArgs) error {
	c, err := parse(a.StdinData)
	if err != nil {
		return err
	}
	req := api.GCRequest{Network: c.Name}
	for _, v := range c.ValidAttachments {
		req.Valid = append(req.Valid, api.Attachment{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	if err := api.NewClient(c.Socket).CNIGC(req); err != nil {
		return asCNIError(err, types.ErrTryAgainLater)
	}
	return nil
}

// Funcs are the plugin's commands for skel.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC}
}
