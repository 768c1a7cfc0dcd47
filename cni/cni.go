// Package cni is the daemon side of tortie's CNI plugin: the tortie-cni
// binary (package cni/plugin) validates what the container runtime gives it
// and forwards each command here over tortied's unix socket; this package
// allocates the address (IPAM), creates or removes the pod endpoint, and
// answers CHECK by really inspecting the pod's interface, addresses, routes
// and MTU, the FIB and the IPAM record.
package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/nsutil"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
)

// CNI error codes (CNI spec, "Error" section); 100 and up are tortie's.
const (
	CodeUnknownContainer = api.CodeUnknownContainer
	CodeInvalidEnv       = api.CodeInvalidEnv
	CodeIOFailure        = api.CodeIOFailure
	CodeInvalidConfig    = api.CodeInvalidConfig
	CodeTryAgainLater    = api.CodeTryAgainLater
	CodeNotAvailable     = api.CodeNotAvailable
	CodeExhausted        = api.CodeExhausted
	CodeCheckFailed      = api.CodeCheckFailed
)

// The CNI commands' wire types live in package api.
type (
	// Error is a failure with a CNI error code.
	Error = api.CNIError
	// Attachment names one container's interface on a network.
	Attachment = api.Attachment
	// Request is what the plugin sends for ADD, DEL and CHECK.
	Request = api.CNIRequest
	// Result is what ADD returns.
	Result = api.CNIResult
	// GCRequest lists the attachments the runtime still has on a network.
	GCRequest = api.GCRequest
)

func coded(code uint, format string, a ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// EndpointName is the endpoint name of an attachment that is not a
// Kubernetes pod's (a plain CNI runtime such as cnitool): the first 12
// characters of the container ID and the interface name. Endpoints made by
// earlier versions are named so for pods too.
func EndpointName(containerID, ifName string) string {
	id := containerID
	if len(id) > 12 {
		id = id[:12]
	}
	return id + "-" + ifName
}

// WorkloadEndpointName is the name Calico gives the WorkloadEndpoint of a
// Kubernetes pod's interface, "<node>-k8s-<pod>-<interface>", used as the
// name of the pod's endpoint: node "node-1", pod "web-0" and interface
// "eth0" make "node--1-k8s-web--0-eth0". Each part has its dashes doubled,
// so the name splits back into its parts at the single dashes. A part that
// is empty, or begins or ends with a dash, cannot be told apart once joined;
// Calico refuses it, and so does this (a *NameError naming the part). The
// pod's namespace is not in the name: Calico's WorkloadEndpoints live in it.
func WorkloadEndpointName(node, pod, ifName string) (string, error) {
	parts := []struct{ field, value string }{{"node", node}, {"orchestrator", "k8s"}, {"pod", pod}, {"interface", ifName}}
	out := make([]string, len(parts))
	for i, p := range parts {
		switch {
		case p.value == "":
			return "", &NameError{Field: p.field, Value: p.value, Reason: "is empty"}
		case strings.HasPrefix(p.value, "-"):
			return "", &NameError{Field: p.field, Value: p.value, Reason: "begins with a dash"}
		case strings.HasSuffix(p.value, "-"):
			return "", &NameError{Field: p.field, Value: p.value, Reason: "ends with a dash"}
		}
		out[i] = strings.ReplaceAll(p.value, "-", "--")
	}
	return strings.Join(out, "-"), nil
}

// NameError says which part of a WorkloadEndpoint name is unusable.
type NameError struct {
	Field  string // node, pod or interface
	Value  string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("%s name %q %s: it cannot be part of a WorkloadEndpoint name", e.Field, e.Value, e.Reason)
}

// endpointName names the endpoint of a request: as Calico names the
// WorkloadEndpoint when the request is a Kubernetes pod's, by container
// otherwise.
func (s *Service) endpointName(r Request) (string, *Error) {
	if r.PodNamespace == "" || r.PodName == "" {
		return EndpointName(r.ContainerID, r.IfName), nil
	}
	name, err := WorkloadEndpointName(s.Node, r.PodName, r.IfName)
	if err != nil {
		var ne *NameError
		if errors.As(err, &ne) && ne.Field == "node" {
			return "", coded(CodeInvalidConfig, "this node's name: %v", err)
		}
		return "", coded(CodeInvalidEnv, "pod %s/%s: %v", r.PodNamespace, r.PodName, err)
	}
	return name, nil
}

// timestampLayout is how Calico writes the "timestamp" attribute of an
// allocation: Go's time.Time String form, in UTC.
const timestampLayout = "2006-01-02 15:04:05.999999999 -0700 MST"

// ipamAttrs are the attributes stored with an attachment's IPAM handle.
// "node", "pod", "namespace" and "timestamp" are the ones Calico's IPAM
// plugin writes for a pod; the others are tortie's, and with "pod" and
// "namespace" let SpecFromHandle rebuild the endpoint.
func (s *Service) ipamAttrs(r Request, now time.Time) map[string]string {
	return map[string]string{"netns": r.Netns, "ifName": r.IfName, "containerID": r.ContainerID, "network": r.Network,
		"namespace": r.PodNamespace, "pod": r.PodName, "node": s.Node, "timestamp": now.UTC().Format(timestampLayout)}
}

// HandleID is the IPAM handle of an attachment, as Calico names it.
func HandleID(network, containerID string) string { return network + "." + containerID }

// Endpoints is what the service needs of the node's endpoints; an
// *endpoint.Manager is one.
type Endpoints interface {
	Add(endpoint.Spec) (endpoint.Info, error)
	Get(key string) (endpoint.Info, bool)
	Attachment(containerID, ifName string) (endpoint.Info, bool)
	Delete(key string) error
	DeleteAttachment(containerID, ifName string) error
	List() []endpoint.Info
	// Detached says tortied is stopping: its endpoints are set aside for
	// the next run, and changes are refused (endpoint.ErrDetached).
	Detached() bool
}

// errStopping answers a command that would change the node's endpoints
// while tortied stops: the runtime tries again, and the next tortied,
// which has restored every endpoint, serves it.
func errStopping() *Error {
	return coded(CodeTryAgainLater, "tortied is stopping; try again later")
}

// Service serves the CNI commands for one node.
type Service struct {
	Node       string
	NodeLabels map[string]string
	Endpoints  Endpoints
	IPAM       *ipam.IPAM
	Router     *router.Router
	// Ready says whether the datastore is reachable and synced.
	Ready func(context.Context) error
	// Routed returns once the node's kernel routes addr to tortie (its
	// pool is synced and routed to the host interface), or fails when ctx
	// ends first. nil: no wait.
	Routed func(ctx context.Context, addr netip.Addr) error
	// PolicyReady returns once the network policy in force includes the
	// pod's endpoint (key "<namespace>/<pod>"), or fails when ctx ends
	// first. nil: no wait.
	PolicyReady func(ctx context.Context, key string) error
	Log         *zap.Logger

	// ipamLock serialises this node's IPAM writes, as Calico's host-wide
	// IPAM lock does: concurrent ADDs on one node would otherwise race each
	// other on the same affine block and multiply datastore round trips.
	ipamLock hostLock
}

// hostLock is a mutex whose wait is bounded by a context.
type hostLock struct {
	once sync.Once
	ch   chan struct{}
}

func (l *hostLock) acquire(ctx context.Context) error {
	l.once.Do(func() { l.ch = make(chan struct{}, 1) })
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return coded(CodeTryAgainLater, "other address assignments on this node are still in progress (%v); try again later", ctx.Err())
	}
}

func (l *hostLock) release() { <-l.ch }

func validate(r Request, needNetns bool) *Error {
	switch {
	case r.ContainerID == "":
		return coded(CodeInvalidEnv, "CNI_CONTAINERID is empty")
	case r.IfName == "":
		return coded(CodeInvalidEnv, "CNI_IFNAME is empty")
	case len(r.IfName) > 15 || strings.ContainsAny(r.IfName, "/ :") || r.IfName == "." || r.IfName == "..":
		return coded(CodeInvalidEnv, "CNI_IFNAME %q is not a valid interface name", r.IfName)
	case r.Network == "":
		return coded(CodeInvalidConfig, "the network configuration has no name")
	case needNetns && r.Netns == "":
		return coded(CodeInvalidEnv, "CNI_NETNS is empty")
	}
	return nil
}

func (s *Service) storeErr(op string, err error) error {
	if errors.Is(err, datastore.ErrUnavailable) {
		return coded(CodeTryAgainLater, "%s: the datastore is unreachable (%v); try again later", op, err)
	}
	if errors.Is(err, ipam.ErrExhausted) {
		return coded(CodeExhausted, "%s: %v", op, err)
	}
	if errors.Is(err, ipam.ErrNoPool) {
		// The network names a pool that does not exist, or no pool is meant
		// for this node: configuration, not I/O.
		return coded(CodeInvalidConfig, "%s: %v", op, err)
	}
	return coded(CodeIOFailure, "%s: %v", op, err)
}

// Add allocates an address and attaches the pod. On failure nothing is
// left: the address is released and the interface removed.
func (s *Service) Add(ctx context.Context, r Request) (Result, error) {
	if e := validate(r, true); e != nil {
		return Result{}, e
	}
	// A retried ADD finds the endpoint by container, whatever it is
	// named, and then records and waits as the first did: the first may
	// have been cut short after its attach (tortied stopping, the
	// endpoint kept for the next run, its record maybe not written).
	info, retried := s.Endpoints.Attachment(r.ContainerID, r.IfName)
	// Stopping, the endpoints are set aside: a retried ADD would not find
	// its own, and IPAM would hand back the address the next run restores
	// it with, only for the refused attach to release it. Asked after the
	// lookup: Detach sets the endpoints aside and says so in one step, so
	// an endpoint not found by a tortied not stopping was not there.
	if s.Endpoints.Detached() {
		return Result{}, errStopping()
	}
	handle := HandleID(r.Network, r.ContainerID)
	if !retried {
		name, e := s.endpointName(r)
		if e != nil {
			return Result{}, e
		}
		addr, err := s.assign(ctx, ipam.Request{Handle: handle, Node: s.Node, NodeLabels: s.NodeLabels, Pools: r.Pools,
			Attrs: s.ipamAttrs(r, time.Now())})
		if err != nil {
			return Result{}, err
		}
		spec := endpoint.Spec{
			Name: name, Netns: r.Netns, Address: addr, IfName: r.IfName, MTU: r.MTU,
			ContainerID: r.ContainerID, Network: r.Network, Handle: handle, PodNamespace: r.PodNamespace, PodName: r.PodName,
		}
		s.replaceEarlierSandbox(spec)
		if info, err = s.Endpoints.Add(spec); err != nil {
			if rerr := s.release(context.WithoutCancel(ctx), handle); rerr != nil {
				s.Log.Error("rollback: address not released", zap.String("handle", handle), zap.Error(rerr))
			}
			if errors.Is(err, endpoint.ErrDetached) {
				return Result{}, errStopping()
			}
			return Result{}, coded(CodeIOFailure, "attaching the pod failed (address %s released): %v", addr, err)
		}
	}
	addr := info.Address
	// rollback takes the pod off again: its endpoint, then its
	// WorkloadEndpoint (if recorded) and address. When tortied is
	// stopping the endpoint stays in the state the next run restores, and
	// so does its address, and its record if written (a retried ADD
	// writes one); rollback then says false.
	rollback := func(recorded bool) bool {
		derr := s.Endpoints.DeleteAttachment(r.ContainerID, r.IfName)
		if errors.Is(derr, endpoint.ErrDetached) {
			return false
		}
		if derr != nil {
			s.Log.Error("rollback: endpoint not removed", zap.String("endpoint", info.Key()), zap.Error(derr))
		}
		if recorded {
			s.deleteWorkloadEndpoint(context.WithoutCancel(ctx), info.PodNamespace, info.Name, r.ContainerID)
		}
		if rerr := s.release(context.WithoutCancel(ctx), handle); rerr != nil {
			s.Log.Error("rollback: address not released", zap.String("handle", handle), zap.Error(rerr))
		}
		return true
	}
	// Policy selects the pod through its WorkloadEndpoint: a pod without
	// one would escape every policy, so ADD fails without it, as Calico's
	// does.
	if err := s.putWorkloadEndpoint(ctx, info); err != nil {
		if !rollback(false) {
			return Result{}, errStopping()
		}
		return Result{}, s.storeErr(fmt.Sprintf("recording the WorkloadEndpoint (address %s released)", addr), err)
	}
	// The pod's containers start when ADD returns: not before its policy
	// is in force, or a pod meant to be isolated would be open until the
	// next compilation.
	if s.PolicyReady != nil && info.PodNamespace != "" && info.PodName != "" {
		wctx, cancel := context.WithTimeout(ctx, policyWait)
		err := s.PolicyReady(wctx, info.PodNamespace+"/"+info.PodName)
		cancel()
		if err != nil {
			if !rollback(true) {
				return Result{}, errStopping()
			}
			return Result{}, coded(CodeTryAgainLater, "the pod's network policy is not in force yet (address %s released): %v; try again later", addr, err)
		}
	}
	// A kubelet probes the pod right after ADD: succeed only once the node
	// itself can reach it, which needs the kernel's route to its pool.
	if s.Routed != nil {
		wctx, cancel := context.WithTimeout(ctx, routedWait)
		err := s.Routed(wctx, addr)
		cancel()
		if err != nil {
			if !rollback(true) {
				return Result{}, errStopping()
			}
			return Result{}, coded(CodeTryAgainLater, "the node cannot route to %s yet (address released): %v; try again later", addr, err)
		}
	}
	return result(info), nil
}

// putWorkloadEndpoint records a Kubernetes pod's endpoint as Calico's CNI
// plugin does: namespace and name as the endpoint's, node, pod, address,
// the namespace's profile kns.<namespace>, and the labels Calico adds.
// The pod's own labels come from Kubernetes in Calico; here there is no
// Kubernetes, so labels already on a record of the same pod (set with
// `tortiectl label` or apply) are kept. Endpoints without a pod (attached
// by hand) get no record: no policy can name them.
func (s *Service) putWorkloadEndpoint(ctx context.Context, info endpoint.Info) error {
	if info.PodNamespace == "" || info.PodName == "" {
		return nil
	}
	rc := resources.Client{S: s.IPAM.S}
	labels := map[string]string{}
	if old, err := rc.WorkloadEndpoint(ctx, info.PodNamespace, info.Name); err == nil && old != nil && old.Spec.Pod == info.PodName {
		for k, v := range old.Metadata.Labels {
			labels[k] = v
		}
	}
	labels[resources.LabelNamespace] = info.PodNamespace
	labels[resources.LabelOrchestrator] = resources.OrchestratorK8s
	w := &resources.WorkloadEndpoint{
		Metadata: resources.NamespacedMeta{Name: info.Name, Namespace: info.PodNamespace, Labels: labels},
		Spec: resources.WorkloadEndpointSpec{
			Orchestrator: resources.OrchestratorK8s, Node: s.Node, Pod: info.PodName, ContainerID: info.ContainerID,
			Endpoint: info.IfName, IPNetworks: []string{info.Address.String() + "/32"},
			Profiles: []string{resources.NamespaceProfilePrefix + info.PodNamespace}, MAC: info.MAC,
		},
	}
	return rc.Apply(ctx, []resources.Object{w})
}

// deleteWorkloadEndpoint removes the pod's record, unless it now belongs
// to another container (a newer sandbox of the pod took the name over).
// Failures are logged: the record of a pod that is gone selects nothing
// local, and the next ADD of the name rewrites it.
func (s *Service) deleteWorkloadEndpoint(ctx context.Context, namespace, name, containerID string) {
	if namespace == "" || name == "" {
		return
	}
	if err := (resources.Client{S: s.IPAM.S}).DeleteWorkloadEndpoint(ctx, namespace, name, containerID); err != nil {
		s.Log.Warn("WorkloadEndpoint not removed", zap.String("namespace", namespace), zap.String("name", name), zap.Error(err))
	}
}

// replaceEarlierSandbox removes the endpoint another container of the same
// pod left under the name spec takes. A pod's endpoint is named after the
// pod, not its sandbox: when the runtime makes the pod a new sandbox before
// the old one's DEL has come, the new sandbox takes the name over, as
// Calico's WorkloadEndpoint is then rewritten for the new container. The
// old sandbox's address stays held until its DEL (or GC) releases it; its
// DEL finds no endpoint of its own and leaves the new one alone.
func (s *Service) replaceEarlierSandbox(spec endpoint.Spec) {
	old, ok := s.Endpoints.Get(spec.Key())
	if !ok || old.ContainerID == "" || old.ContainerID == spec.ContainerID {
		return
	}
	s.Log.Warn("a new sandbox of the pod replaces the endpoint of the earlier one", zap.String("endpoint", spec.Key()),
		zap.String("earlierContainer", old.ContainerID), zap.String("container", spec.ContainerID))
	if err := s.Endpoints.Delete(spec.Key()); err != nil {
		s.Log.Error("earlier sandbox's endpoint not removed", zap.String("endpoint", spec.Key()), zap.Error(err))
	}
}

// policyWait bounds how long ADD waits for the new pod's policy.
const policyWait = 10 * time.Second

// routedWait bounds how long ADD waits for the node's route to a new pod.
const routedWait = 10 * time.Second

// assign checks the datastore and allocates under the node's IPAM lock.
func (s *Service) assign(ctx context.Context, req ipam.Request) (netip.Addr, error) {
	if err := s.ipamLock.acquire(ctx); err != nil {
		return netip.Addr{}, err
	}
	defer s.ipamLock.release()
	if err := s.Ready(ctx); err != nil {
		return netip.Addr{}, coded(CodeTryAgainLater, "tortied cannot assign addresses now: %v; try again later", err)
	}
	addr, err := s.IPAM.Assign(ctx, req)
	if err != nil {
		return netip.Addr{}, s.storeErr("IP address assignment", err)
	}
	return addr, nil
}

// release frees a handle's addresses under the node's IPAM lock.
func (s *Service) release(ctx context.Context, handle string) error {
	if err := s.ipamLock.acquire(ctx); err != nil {
		return err
	}
	defer s.ipamLock.release()
	return s.IPAM.Release(ctx, handle)
}

func result(info endpoint.Info) Result {
	return Result{IfName: info.IfName, MAC: info.MAC, Sandbox: info.Netns, Address: info.Address.String() + "/32",
		Gateway: netip.AddrFrom4(router.Gateway).String(), MTU: info.MTU}
}

// Del removes the pod's endpoint and releases its address. A missing
// endpoint, interface or namespace is success.
func (s *Service) Del(ctx context.Context, r Request) error {
	if e := validate(r, false); e != nil {
		return e
	}
	// The endpoint is found by container, not by name: a DEL need not
	// carry the pod's name, and endpoints of earlier versions are named
	// otherwise. It goes first: while tortied stops the endpoints are set
	// aside for the next run, which restores them, and the pod's record
	// and address stay too, until a DEL it serves removes all three.
	info, attached := s.Endpoints.Attachment(r.ContainerID, r.IfName)
	err := s.Endpoints.DeleteAttachment(r.ContainerID, r.IfName)
	if errors.Is(err, endpoint.ErrDetached) {
		return errStopping()
	}
	if err != nil {
		s.Log.Warn("endpoint removal", zap.Error(err))
	}
	// The pod's record: by the attachment's name, or, when the endpoint
	// was already gone, by the name ADD would give.
	if attached {
		s.deleteWorkloadEndpoint(ctx, info.PodNamespace, info.Name, r.ContainerID)
	} else if r.PodNamespace != "" && r.PodName != "" {
		if name, e := s.endpointName(r); e == nil {
			s.deleteWorkloadEndpoint(ctx, r.PodNamespace, name, r.ContainerID)
		}
	}
	if err := s.release(ctx, HandleID(r.Network, r.ContainerID)); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			return err
		}
		return s.storeErr("releasing the address", err)
	}
	return nil
}

// gcWorkloadEndpoints removes this node's WorkloadEndpoints whose
// container the runtime no longer has and whose endpoint is gone (left by
// pods that went while tortied was down): they would keep an address that
// another pod may get in policy's view. Failures are logged; the next GC
// tries again. Once tortied is stopping it removes nothing and says so.
func (s *Service) gcWorkloadEndpoints(ctx context.Context, validIDs map[string]bool) *Error {
	weps, err := s.workloadEndpoints(ctx)
	if err != nil {
		s.Log.Warn("GC: WorkloadEndpoints not read", zap.Error(err))
		return nil
	}
	attached := map[string]bool{}
	for _, info := range s.Endpoints.List() {
		attached[info.ContainerID] = true
	}
	if s.Endpoints.Detached() { // the list may have been taken after the stop
		return errStopping()
	}
	for _, w := range weps {
		id := w.Spec.ContainerID
		if w.Spec.Node != s.Node || id == "" || validIDs[id] || attached[id] {
			continue
		}
		s.Log.Info("GC: removing stale WorkloadEndpoint", zap.String("namespace", w.Metadata.Namespace), zap.String("name", w.Metadata.Name))
		s.deleteWorkloadEndpoint(ctx, w.Metadata.Namespace, w.Metadata.Name, id)
	}
	return nil
}

func (s *Service) workloadEndpoints(ctx context.Context) ([]*resources.WorkloadEndpoint, error) {
	v, err := (resources.Client{S: s.IPAM.S}).List(ctx, resources.KindWorkloadEndpoint)
	if err != nil {
		return nil, err
	}
	weps, _ := v.([]*resources.WorkloadEndpoint)
	return weps, nil
}

// Check verifies the attachment end to end.
func (s *Service) Check(ctx context.Context, r Request) error {
	if e := validate(r, true); e != nil {
		return e
	}
	info, ok := s.Endpoints.Attachment(r.ContainerID, r.IfName)
	if !ok {
		return coded(CodeUnknownContainer, "no endpoint for container %s interface %s", r.ContainerID, r.IfName)
	}
	var problems []string
	if info.Netns != r.Netns {
		problems = append(problems, fmt.Sprintf("endpoint is in %s, runtime says %s", info.Netns, r.Netns))
	}
	if err := nsutil.Do(r.Netns, func() error { return checkPodSide(info) }); err != nil {
		problems = append(problems, err.Error())
	}
	nh := s.Router.FIB().Load().Lookup(fib.AddrU32(info.Address))
	if nh == nil || nh.Kind != fib.KindLocal || nh.Port != info.Port {
		problems = append(problems, fmt.Sprintf("FIB does not route %s to this pod's port", info.Address))
	}
	h, err := s.IPAM.GetHandle(ctx, info.Handle)
	switch {
	case errors.Is(err, datastore.ErrUnavailable):
		problems = append(problems, "datastore unreachable: IPAM record not verified")
	case err != nil:
		problems = append(problems, fmt.Sprintf("IPAM handle %s: %v", info.Handle, err))
	case len(h.IPs) == 0 || h.IPs[0] != info.Address:
		problems = append(problems, fmt.Sprintf("IPAM handle %s holds %v, not %s", info.Handle, h.IPs, info.Address))
	}
	if len(problems) > 0 {
		return coded(CodeCheckFailed, "CHECK failed for %s: %s", info.Key(), strings.Join(problems, "; "))
	}
	return nil
}

// checkPodSide runs inside the pod's namespace.
func checkPodSide(info endpoint.Info) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(info.IfName)
	if err != nil {
		return fmt.Errorf("interface %s: %v", info.IfName, err)
	}
	var problems []string
	if _, ok := link.(*netlink.Tuntap); !ok && link.Type() != "tuntap" {
		problems = append(problems, fmt.Sprintf("%s is a %s, not tortie's TAP", info.IfName, link.Type()))
	}
	if link.Attrs().OperState != netlink.OperUp && link.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, info.IfName+" is down")
	}
	if link.Attrs().MTU != info.MTU {
		problems = append(problems, fmt.Sprintf("MTU %d, want %d", link.Attrs().MTU, info.MTU))
	}
	if link.Attrs().HardwareAddr.String() != info.MAC {
		problems = append(problems, fmt.Sprintf("MAC %s, want %s", link.Attrs().HardwareAddr, info.MAC))
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	found := false
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		found = found || (a.IP.Equal(info.Address.AsSlice()) && ones == 32)
	}
	if !found {
		problems = append(problems, fmt.Sprintf("address %s/32 missing", info.Address))
	}
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	gw := net.IP(router.Gateway[:])
	var linkRoute, defRoute bool
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.Equal(gw) && r.Scope == netlink.SCOPE_LINK {
			linkRoute = true
		}
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw) {
			defRoute = true
		}
	}
	if !linkRoute {
		problems = append(problems, "route 169.254.1.1 scope link missing")
	}
	if !defRoute {
		problems = append(problems, "default route via 169.254.1.1 missing")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// SpecFromHandle rebuilds an endpoint spec from the attributes CNI ADD
// stored with the IPAM handle (used when the state file is lost). The
// endpoint is named as ADD names it now, with the handle's node (the node
// the address serves, which is the one rebuilding): a pod's endpoint made
// by an earlier version comes back under the pod's name, which DEL and
// CHECK find as well, since they look endpoints up by container. A pod whose
// names cannot make a WorkloadEndpoint name (ADD refuses those now) keeps
// the container's name rather than being dropped.
func SpecFromHandle(h ipam.Handle) (endpoint.Spec, bool) {
	a := h.Attrs
	if a["netns"] == "" || a["containerID"] == "" || len(h.IPs) == 0 {
		return endpoint.Spec{}, false
	}
	name := EndpointName(a["containerID"], a["ifName"])
	if a["namespace"] != "" && a["pod"] != "" {
		if wep, err := WorkloadEndpointName(h.Node, a["pod"], a["ifName"]); err == nil {
			name = wep
		}
	}
	return endpoint.Spec{Name: name, Netns: a["netns"], Address: h.IPs[0], IfName: a["ifName"],
		ContainerID: a["containerID"], Network: a["network"], Handle: h.ID, PodNamespace: a["namespace"], PodName: a["pod"]}, true
}

// Status reports whether ADD can be served.
func (s *Service) Status(ctx context.Context) error {
	if err := s.Ready(ctx); err != nil {
		return coded(CodeNotAvailable, "tortied cannot serve ADD: %v", err)
	}
	return nil
}

// GC removes attachments of the network that the runtime no longer lists,
// and releases addresses of this node leaked under that network's handles.
func (s *Service) GC(ctx context.Context, r GCRequest) error {
	if r.Network == "" {
		return coded(CodeInvalidConfig, "the network configuration has no name")
	}
	valid := map[Attachment]bool{}
	validIDs := map[string]bool{}
	for _, a := range r.Valid {
		valid[a] = true
		validIDs[a.ContainerID] = true
	}
	// Stopping, the endpoints are set aside: the list would be empty,
	// and IPAM's collection would free addresses the next run restores.
	// Asked after the list, which Detach empties in the same step.
	eps := s.Endpoints.List()
	if s.Endpoints.Detached() {
		return errStopping()
	}
	for _, info := range eps {
		if info.Network == r.Network && !valid[Attachment{ContainerID: info.ContainerID, IfName: info.IfName}] {
			s.Log.Info("GC: removing stale attachment", zap.String("endpoint", info.Key()))
			if err := s.Del(ctx, Request{Attachment: Attachment{ContainerID: info.ContainerID, IfName: info.IfName}, Network: r.Network}); err != nil {
				return err
			}
		}
	}
	if err := s.gcWorkloadEndpoints(ctx, validIDs); err != nil {
		return err
	}
	prefix := r.Network + "."
	if err := s.ipamLock.acquire(ctx); err != nil {
		return err
	}
	defer s.ipamLock.release()
	if s.Endpoints.Detached() { // the endpoints' addresses are the next run's
		return errStopping()
	}
	_, err := s.IPAM.GC(ctx, s.Node, func(h string) bool {
		id, ours := strings.CutPrefix(h, prefix)
		return !ours || validIDs[id]
	}, nil)
	if err != nil {
		return s.storeErr("IPAM garbage collection", err)
	}
	return nil
}
