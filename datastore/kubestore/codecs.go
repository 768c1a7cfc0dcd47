package kubestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tortie-net/tortie/resources"
)

// resourceCodec keeps a resource as Calico's CRD object of its kind: the
// record is the object (resources.EncodeCRD and resources.DecodeStored
// convert).
type resourceCodec struct {
	kind       string
	namespaced bool
}

func (c resourceCodec) ref(rest string) (string, string, error) {
	if c.namespaced {
		ns, name, ok := strings.Cut(rest, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return "", "", fmt.Errorf("kubestore: %s record %q: want NAMESPACE/NAME", c.kind, rest)
		}
		return ns, name, nil
	}
	if rest == "" || strings.Contains(rest, "/") {
		return "", "", fmt.Errorf("kubestore: %s record %q: want NAME", c.kind, rest)
	}
	return "", rest, nil
}

func (c resourceCodec) object(rest string, value []byte, _ *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	obj, err := resources.EncodeCRD(value)
	if err != nil {
		return nil, fmt.Errorf("kubestore: %s %s: %w", c.kind, rest, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	ns, name, err := c.ref(rest)
	if err != nil {
		return nil, err
	}
	if u.GetName() != name || u.GetNamespace() != ns {
		return nil, fmt.Errorf("kubestore: %s record %q names itself %s/%s: the Kubernetes datastore keeps a record under its own name only",
			c.kind, rest, u.GetNamespace(), u.GetName())
	}
	return u, nil
}

func (c resourceCodec) rest(u *unstructured.Unstructured) string {
	if c.namespaced {
		return u.GetNamespace() + "/" + u.GetName()
	}
	return u.GetName()
}

func (resourceCodec) value(u *unstructured.Unstructured) ([]byte, bool) {
	b, err := asJSON(u)
	return b, err == nil
}

func (resourceCodec) remove(*unstructured.Unstructured) *unstructured.Unstructured { return nil }

// specObject is a CRD object of kind whose spec is the record.
func specObject(kind string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crdGroup + "/v1", "kind": kind, "metadata": map[string]any{}, "spec": spec,
	}}
}

// jsonMap parses a record that must be a JSON object.
func jsonMap(what string, value []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(value, &m); err != nil || m == nil {
		return nil, fmt.Errorf("kubestore: %s record: want a JSON object", what)
	}
	return m, nil
}

func specJSON(u *unstructured.Unstructured) ([]byte, bool) {
	spec, ok := u.Object["spec"]
	if !ok {
		return nil, false
	}
	b, err := json.Marshal(spec)
	return b, err == nil
}

func specString(u *unstructured.Unstructured, field string) string {
	s, _, _ := unstructured.NestedString(u.Object, "spec", field)
	return s
}

// cidrName writes a CIDR (or the key form tortie uses, "10.0.0.0-26") as
// Calico names its IPAM objects: "10-0-0-0-26".
func cidrName(s string) string {
	return strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(s)
}

// keyCIDR is the form of a CIDR in tortie's IPAM keys ("10.0.0.0-26").
func keyCIDR(cidr string) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return ""
	}
	return strings.ReplaceAll(p.String(), "/", "-")
}

// cidrOfKey is the CIDR of a key's "10.0.0.0-26".
func cidrOfKey(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("kubestore: %q: want ADDRESS-BITS", s)
	}
	return netip.ParsePrefix(s[:i] + "/" + s[i+1:])
}

// objectName checks a name the API server must take.
func objectName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("kubestore: %q is no object name: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// blockCodec keeps an IPAM block as an IPAMBlock, named after its CIDR as
// Calico names it; the record (tortie's block) is the spec.
type blockCodec struct{}

func (blockCodec) ref(rest string) (string, string, error) {
	if _, err := cidrOfKey(rest); err != nil {
		return "", "", err
	}
	return "", cidrName(rest), nil
}

func (blockCodec) object(_ string, value []byte, _ *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	spec, err := jsonMap("IPAM block", value)
	if err != nil {
		return nil, err
	}
	return specObject("IPAMBlock", spec), nil
}

func (blockCodec) rest(u *unstructured.Unstructured) string {
	if k := keyCIDR(specString(u, "cidr")); k != "" {
		return k
	}
	return u.GetName() // unreadable: its decoder reports it under this key
}

func (blockCodec) value(u *unstructured.Unstructured) ([]byte, bool) { return specJSON(u) }
func (blockCodec) remove(*unstructured.Unstructured) *unstructured.Unstructured {
	return nil
}

// affinityCodec keeps a node's claim on a block as a BlockAffinity named
// "<node>-<cidr>", with Calico's node, cidr and deleted beside tortie's
// state.
type affinityCodec struct{}

func (affinityCodec) ref(rest string) (string, string, error) {
	node, cidr, ok := strings.Cut(rest, "/")
	if !ok || node == "" {
		return "", "", fmt.Errorf("kubestore: affinity %q: want NODE/CIDR", rest)
	}
	if _, err := cidrOfKey(cidr); err != nil {
		return "", "", err
	}
	name := node + "-" + cidrName(cidr)
	return "", name, objectName(name)
}

func (affinityCodec) object(rest string, value []byte, _ *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	spec, err := jsonMap("block affinity", value)
	if err != nil {
		return nil, err
	}
	node, cidr, _ := strings.Cut(rest, "/")
	p, err := cidrOfKey(cidr)
	if err != nil {
		return nil, err
	}
	spec["node"], spec["cidr"], spec["deleted"] = node, p.String(), "false"
	return specObject("BlockAffinity", spec), nil
}

func (affinityCodec) rest(u *unstructured.Unstructured) string {
	node, cidr := specString(u, "node"), keyCIDR(specString(u, "cidr"))
	if node == "" || cidr == "" {
		return u.GetName() + "/" // unreadable: reported under this key
	}
	return node + "/" + cidr
}

func (affinityCodec) value(u *unstructured.Unstructured) ([]byte, bool) { return specJSON(u) }
func (affinityCodec) remove(*unstructured.Unstructured) *unstructured.Unstructured {
	return nil
}

// handleCodec keeps an IPAM handle as an IPAMHandle. Handle IDs need not
// be object names (Calico lowercases them); one that is not gets a name
// made of it and a hash of it, and the ID itself is the spec's handleID.
type handleCodec struct{}

func handleName(id string) string {
	if objectName(id) == nil {
		return id
	}
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	name := strings.Trim(b.String(), "-.")
	if len(name) > 200 {
		name = name[:200]
	}
	return fmt.Sprintf("%s-%08x", name, h.Sum32())
}

func (handleCodec) ref(rest string) (string, string, error) {
	if rest == "" {
		return "", "", errors.New("kubestore: empty handle ID")
	}
	return "", strings.TrimPrefix(handleName(rest), "-"), nil
}

func (handleCodec) object(rest string, value []byte, _ *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	spec, err := jsonMap("IPAM handle", value)
	if err != nil {
		return nil, err
	}
	spec["handleID"] = rest
	return specObject("IPAMHandle", spec), nil
}

func (handleCodec) rest(u *unstructured.Unstructured) string {
	if id := specString(u, "handleID"); id != "" {
		return id
	}
	return u.GetName()
}

func (handleCodec) value(u *unstructured.Unstructured) ([]byte, bool) { return specJSON(u) }
func (handleCodec) remove(*unstructured.Unstructured) *unstructured.Unstructured {
	return nil
}

// leaseCodec keeps a node's heartbeat as a Lease "tortie-<node>" in
// kube-node-lease, the record in an annotation; the record's time of
// renewal (a JSON field "renewed", RFC 3339) is also the Lease's
// spec.renewTime, and the node its holderIdentity, so that `kubectl get
// lease` shows them as it shows a kubelet's. A record without a valid
// time (an older release's, or one whose year MicroTime cannot hold)
// leaves spec.renewTime as it was.
type leaseCodec struct{}

const (
	leasePrefix         = "tortie-"
	heartbeatAnnotation = "tortie.io/heartbeat"
)

func (leaseCodec) ref(rest string) (string, string, error) {
	name := leasePrefix + rest
	return leaseNamespace, name, objectName(name)
}

func (leaseCodec) object(rest string, value []byte, cur *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": map[string]any{},
		"spec": map[string]any{"holderIdentity": rest},
	}}
	if cur != nil {
		u = cur.DeepCopy()
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[heartbeatAnnotation] = string(value)
	u.SetAnnotations(ann)
	if _, ok := u.Object["spec"].(map[string]any); !ok {
		u.Object["spec"] = map[string]any{} // none, or not an object (written by hand)
	}
	if err := unstructured.SetNestedField(u.Object, rest, "spec", "holderIdentity"); err != nil {
		return nil, fmt.Errorf("lease %s: %w", rest, err)
	}
	var beat struct {
		Renewed time.Time `json:"renewed"`
	}
	valid := json.Unmarshal(value, &beat) == nil && !beat.Renewed.IsZero()
	renewed := beat.Renewed.UTC()
	// A Lease's times are MicroTime: RFC 3339 with microseconds, and
	// four-digit years only.
	if valid && renewed.Year() >= 0 && renewed.Year() <= 9999 {
		if err := unstructured.SetNestedField(u.Object, renewed.Format(metav1.RFC3339Micro), "spec", "renewTime"); err != nil {
			return nil, fmt.Errorf("lease %s: %w", rest, err)
		}
	}
	return u, nil
}

func (leaseCodec) rest(u *unstructured.Unstructured) string {
	rest, ok := strings.CutPrefix(u.GetName(), leasePrefix)
	if !ok || u.GetNamespace() != leaseNamespace {
		return ""
	}
	return rest
}

func (leaseCodec) value(u *unstructured.Unstructured) ([]byte, bool) {
	v, ok := u.GetAnnotations()[heartbeatAnnotation]
	return []byte(v), ok
}

func (leaseCodec) remove(*unstructured.Unstructured) *unstructured.Unstructured { return nil }
