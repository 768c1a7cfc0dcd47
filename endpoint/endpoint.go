// Package endpoint manages pod endpoints: for each pod it creates the TAP
// device that is the pod's eth0 inside the pod's network namespace,
// configures it the way Calico configures a pod (a /32 address,
// "169.254.1.1 dev eth0 scope link", "default via 169.254.1.1"), and attaches
// it to the router, which installs the pod's /32 in the FIB.
package endpoint

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/nsutil"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/tap"
)

// Spec asks for a pod endpoint (the API's wire type; also the state file's record).
type Spec = api.EndpointSpec

// Info describes an attached endpoint.
type Info = api.EndpointInfo

// Manager owns the node's pod endpoints.
type Manager struct {
	log *zap.Logger
	r   *router.Router
	mtu int
	// state is the endpoint state file ("" keeps no state, and TAPs are
	// not persistent: they vanish with the daemon).
	state string
	// Offload opens pod TAPs with virtio-net headers and checksum/TSO
	// offload (set before the first Add).
	Offload bool
	// Queues is how many queues a new pod TAP gets (0 or 1: one; set
	// before the first Add).
	Queues int

	mu  sync.Mutex
	eps map[string]*entry // by Spec.Key
	// detached: Detach has let every endpoint go for the next run; the
	// state file keeps them, and nothing changes it any more.
	detached bool
}

type entry struct {
	info Info
	port *router.Port
	dev  *tap.Device
}

// New returns a manager that gives pods mtu and attaches them to r. With a
// state file, pod TAPs are persistent and the endpoints survive restarts.
func New(log *zap.Logger, r *router.Router, mtu int, stateFile string) *Manager {
	return &Manager{log: log, r: r, mtu: mtu, state: stateFile, eps: map[string]*entry{}}
}

// MTU is the MTU given to pods added now.
func (m *Manager) MTU() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mtu
}

// SetMTU changes the MTU given to pods added from now on.
func (m *Manager) SetMTU(mtu int) {
	m.mu.Lock()
	m.mtu = mtu
	m.mu.Unlock()
}

// ErrExists is returned when an endpoint's key or address, or its
// container's interface, is taken.
var ErrExists = errors.New("endpoint exists")

// ErrDetached refuses a change after Detach: tortied is stopping, and its
// state file must stay as Detach found it for the next start to restore.
// The caller tries again once tortied is back.
var ErrDetached = errors.New("endpoint: tortied is stopping; its pods are kept for its next start")

// Add creates and attaches a pod endpoint. On failure nothing is left behind.
func (m *Manager) Add(s Spec) (Info, error) {
	if s.Name == "" {
		return Info{}, errors.New("endpoint: name is required")
	}
	if !s.Address.Is4() {
		return Info{}, fmt.Errorf("endpoint %s: address %v is not IPv4", s.Name, s.Address)
	}
	if s.IfName == "" {
		s.IfName = "eth0"
	}
	if len(s.IfName) > 15 {
		return Info{}, fmt.Errorf("endpoint %s: interface name %q longer than 15 bytes", s.Name, s.IfName)
	}
	if _, err := os.Stat(s.Netns); err != nil {
		return Info{}, fmt.Errorf("endpoint %s: network namespace: %w", s.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.detached {
		return Info{}, ErrDetached
	}
	if err := m.conflict(s); err != nil {
		return Info{}, err
	}
	if s.MTU == 0 {
		s.MTU = m.mtu
	}
	e, err := m.attach(s)
	if err != nil {
		return Info{}, err
	}
	m.eps[s.Key()] = e
	if err := m.save(); err != nil {
		m.log.Error("endpoint state not saved", zap.Error(err))
	}
	m.log.Info("endpoint added", zap.String("name", s.Key()), zap.Stringer("address", s.Address), zap.String("netns", s.Netns))
	return e.info, nil
}

// conflict says why s cannot be added next to the existing endpoints.
// Callers hold m.mu.
func (m *Manager) conflict(s Spec) error {
	key := s.Key()
	if _, ok := m.eps[key]; ok {
		return fmt.Errorf("%w: name %s", ErrExists, key)
	}
	for k, e := range m.eps {
		if e.info.Address == s.Address {
			return fmt.Errorf("%w: address %s is used by %s", ErrExists, s.Address, k)
		}
		// A container's interface has one endpoint, whatever it is named,
		// so that CNI DEL and CHECK, which find it by container and
		// interface, never have two to choose from.
		if s.ContainerID != "" && e.info.ContainerID == s.ContainerID && e.info.IfName == s.IfName {
			return fmt.Errorf("%w: container %s interface %s is attached as %s", ErrExists, s.ContainerID, s.IfName, k)
		}
	}
	return nil
}

// attach opens (or re-opens) the pod's TAP inside its namespace, makes its
// configuration what the spec says, and attaches it to the router.
func (m *Manager) attach(s Spec) (*entry, error) {
	var (
		dev *tap.Device
		mac net.HardwareAddr
	)
	err := nsutil.Do(s.Netns, func() (err error) {
		dev, err = tap.Open(s.IfName, tap.Options{Persist: m.state != "", Offload: m.Offload, Queues: m.Queues})
		if err != nil {
			return err
		}
		mac, err = configure(s)
		return err
	})
	if err != nil {
		if dev != nil {
			_ = dev.Unpersist()
			dev.Close()
		}
		return nil, fmt.Errorf("endpoint %s: %w", s.Name, err)
	}
	if q := dev.Queues(); q < m.Queues {
		m.log.Info("pod TAP has fewer queues than asked: a persistent TAP made with another kind keeps it until the pod is re-created, and more than one queue needs eBPF for steering",
			zap.String("name", s.Key()), zap.Int("queues", q), zap.Int("asked", m.Queues))
	}
	// The port is named by the key: port names label the metrics, where
	// two pods' ports must not share a name.
	port, err := m.r.AddPort(router.PortConfig{Name: s.Key(), Addr: s.Address, MAC: header.MAC(mac), AllowSpoof: s.AllowSpoof,
		Offload: dev.Offload, PolicyKey: PolicyKey(s)}, dev)
	if err != nil {
		_ = dev.Unpersist()
		dev.Close()
		return nil, fmt.Errorf("endpoint %s: %w", s.Name, err)
	}
	return &entry{info: Info{EndpointSpec: s, MAC: mac.String(), MTU: s.MTU, Port: port.ID, Queues: dev.Queues()}, port: port, dev: dev}, nil
}

// configure makes the pod side of a TAP what the spec says; it runs inside
// the pod's namespace, with a netlink handle opened there, and is
// idempotent, so a re-attached TAP is checked and repaired the same way.
func configure(s Spec) (net.HardwareAddr, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(s.IfName)
	if err != nil {
		return nil, err
	}
	if err := h.LinkSetMTU(link, s.MTU); err != nil {
		return nil, fmt.Errorf("set MTU %d: %w", s.MTU, err)
	}
	// A superframe the pod's kernel hands over should fit one UDP GSO send
	// toward a VXLAN peer. Only a tuning: kernels that refuse it still work.
	_ = h.LinkSetGSOMaxSegs(link, router.SuperframeSegments(s.MTU))
	// IPv6 is off on pod ports until tortie routes it; this keeps router
	// solicitations and MLD reports off the wire.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+s.IfName+"/disable_ipv6", []byte("1"), 0o644)
	if err := h.LinkSetUp(link); err != nil {
		return nil, err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: s.Address.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := h.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("add address %s: %w", s.Address, err)
	}
	gw := net.IP(router.Gateway[:])
	if err := h.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		return nil, fmt.Errorf("add route to gateway: %w", err)
	}
	if err := h.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
		return nil, fmt.Errorf("add default route: %w", err)
	}
	link, err = h.LinkByName(s.IfName)
	if err != nil {
		return nil, err
	}
	return link.Attrs().HardwareAddr, nil
}

// Delete detaches and removes the endpoint of a key (Spec.Key). Unknown
// keys are not an error; after Detach every call is ErrDetached.
func (m *Manager) Delete(key string) error {
	m.mu.Lock()
	if m.detached {
		m.mu.Unlock()
		return ErrDetached
	}
	e, ok := m.eps[key]
	delete(m.eps, key)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	return m.detach(key, e)
}

// DeleteAttachment detaches and removes the endpoint of a container's
// interface, whatever it is named; none is not an error. Finding and
// removing are one step, so that an endpoint added meanwhile under the same
// key for another container is left alone. After Detach every call is
// ErrDetached.
func (m *Manager) DeleteAttachment(containerID, ifName string) error {
	m.mu.Lock()
	if m.detached {
		m.mu.Unlock()
		return ErrDetached
	}
	key, e := m.attachment(containerID, ifName)
	if e != nil {
		delete(m.eps, key)
	}
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	return m.detach(key, e)
}

// detach stops serving an endpoint already taken out of m.eps and removes
// its TAP. A Detach that came meanwhile (the endpoint was out of m.eps,
// so it saw the others only) leaves the state file as it was, this
// endpoint included: detach then says ErrDetached, and the caller's
// removal is tried again against the next run, which restores it first.
func (m *Manager) detach(key string, e *entry) error {
	m.log.Info("endpoint deleted", zap.String("name", key))
	// Without the persistent flag, closing the descriptor removes the TAP.
	_ = e.dev.Unpersist()
	rerr := m.r.RemovePort(e.port)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.detached {
		return ErrDetached // the state keeps the endpoint: see above
	}
	if rerr != nil && !errors.Is(rerr, os.ErrClosed) {
		return fmt.Errorf("endpoint %s: %w", key, rerr)
	}
	return m.save()
}

// Detached says Detach has let the endpoints go for the next run: every
// change is refused (ErrDetached).
func (m *Manager) Detached() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.detached
}

// Get returns the endpoint of a key (Spec.Key).
func (m *Manager) Get(key string) (Info, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.eps[key]
	if !ok {
		return Info{}, false
	}
	return e.info, true
}

// Attachment returns the endpoint of a container's interface, whatever it
// is named: a pod's endpoint is named after the pod, which a CNI DEL need
// not say, and endpoints made by earlier versions have other names.
func (m *Manager) Attachment(containerID, ifName string) (Info, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, e := m.attachment(containerID, ifName)
	if e == nil {
		return Info{}, false
	}
	return e.info, true
}

// attachment finds the endpoint of a container's interface. Callers hold
// m.mu. A linear scan: a node has at most a few hundred pods, and ADD,
// DEL and CHECK are rare next to the packets.
func (m *Manager) attachment(containerID, ifName string) (string, *entry) {
	if containerID == "" {
		return "", nil
	}
	for k, e := range m.eps {
		if e.info.ContainerID == containerID && e.info.IfName == ifName {
			return k, e
		}
	}
	return "", nil
}

// List returns every endpoint, sorted by key.
func (m *Manager) List() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.eps))
	for _, e := range m.eps {
		out = append(out, e.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return slices.Clip(out)
}

// PolicyKey names a pod's endpoint to the policy engine: "<namespace>/<pod>",
// as policy endpoints built from WorkloadEndpoints are keyed. An endpoint
// without a pod has none: no policy applies to it.
func PolicyKey(s Spec) string {
	if s.PodNamespace == "" || s.PodName == "" {
		return ""
	}
	return s.PodNamespace + "/" + s.PodName
}
