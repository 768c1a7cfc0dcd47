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
	"reflect"
	"slices"
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
	MTU  int      `json:"mtu,omitempty"`
	IPAM IPAMConf `json:"ipam,omitempty"`
	// ValidAttachments is set by the runtime for GC.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

// IPAMConf is the network's "ipam" section, in Calico's calico-ipam shape.
// Addresses always come from tortied's IPAM (Calico's blocks, handles and
// pools in the datastore); no other IPAM plugin is delegated to.
type IPAMConf struct {
	// Type is "calico-ipam" or absent; anything else is refused.
	Type string `json:"type,omitempty"`
	// IPv4Pools restricts allocation to these pools (names or CIDRs), as
	// calico-ipam's ipv4_pools does; absent: every enabled pool that selects
	// the node.
	IPv4Pools []string `json:"ipv4_pools,omitempty"`
	// Pools is tortie's earlier name for IPv4Pools; both lists count.
	Pools []string `json:"pools,omitempty"`
	// IPv6Pools and AssignIPv6 are calico-ipam's IPv6 settings; tortie is
	// IPv4 only and refuses a network that asks for IPv6.
	IPv6Pools  []string `json:"ipv6_pools,omitempty"`
	AssignIPv6 string   `json:"assign_ipv6,omitempty"`
}

// IPAMTypes are the ipam.type values tortie-cni serves with tortied's IPAM.
var IPAMTypes = []string{"calico-ipam"}

// poolList is every pool the network restricts allocation to.
func (c *IPAMConf) poolList() []string {
	return append(append([]string(nil), c.IPv4Pools...), c.Pools...)
}

// decodeError turns a JSON error into a CNI error: a syntax error is a
// decoding failure; a value of the wrong type is an invalid configuration
// that names the field and what it should be.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "the network configuration"
		} else {
			field = fmt.Sprintf("field %q", field)
		}
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("%s: got a JSON %s, want %s", field, te.Value, typeName(te.Type)), err.Error())
	}
	return types.NewError(types.ErrDecodingFailure, "the network configuration is not valid JSON", err.Error())
}

// typeName says in JSON's words what a Go type decodes from.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(typeName(t.Elem()), "a "), "an ") + "s"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

func parse(stdin []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, decodeError(err)
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "the network configuration has no \"name\"", "")
	}
	if c.IPAM.Type != "" && !slices.Contains(IPAMTypes, c.IPAM.Type) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("ipam.type %q is not supported: tortie assigns addresses from its IP pools; use %q or leave ipam.type out",
				c.IPAM.Type, IPAMTypes[0]), "")
	}
	if len(c.IPAM.IPv6Pools) > 0 || c.IPAM.AssignIPv6 == "true" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			"ipam asks for IPv6 (ipv6_pools or assign_ipv6), which tortie does not support: pods are IPv4 only", "")
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
		Network:    c.Name, Netns: a.Netns, PodNamespace: ns, PodName: pod, Pools: c.IPAM.poolList(), MTU: c.MTU,
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
