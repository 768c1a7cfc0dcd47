// Package kubestore keeps tortie's cluster state in the Kubernetes API, as
// Calico's Kubernetes datastore does: it implements datastore.Store on
// Calico's CRDs (group crd.projectcalico.org, installed from
// deploy/crds.yaml), on the Kubernetes Node objects (Calico's
// projectcalico.org/* annotations) and on Leases, so the rest of tortie
// runs unchanged on either etcd or a cluster's own API.
//
// Each datastore directory maps to one kind of object; a key's last part is
// the object's name (and namespace). Revisions are the objects'
// resourceVersions, which every kube-apiserver takes from its etcd's one
// revision counter: a list's revision is a point a watch of any kind can
// start from, as with etcd. Writes that name a revision are the API's
// optimistic concurrency (a stale resourceVersion is a conflict).
//
// A Store is safe for concurrent use.
package kubestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/resources"
)

// Store is a datastore.Store on the Kubernetes API.
type Store struct {
	kinds []*kind // by directory
	// cancel ends the watches at Close.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ datastore.Store = (*Store)(nil)

// New returns a Store on the Kubernetes API cfg reaches. The CRDs of
// deploy/crds.yaml must be installed; New does not check, and calls on a
// kind whose CRD is missing fail with the API server's "not found".
func New(cfg *rest.Config) (*Store, error) {
	c := rest.CopyConfig(cfg)
	if c.QPS == 0 {
		// client-go's default (5 per second) would make IPAM, which
		// writes a few records per pod, the cluster's bottleneck.
		c.QPS, c.Burst = 200, 400
	}
	dyn, err := dynamic.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubestore: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{kinds: kinds(dyn), ctx: ctx, cancel: cancel}, nil
}

// Close ends the Store's watches.
func (s *Store) Close() error {
	s.cancel()
	return nil
}

// crdGroup is where Calico's Kubernetes datastore keeps its resources.
const crdGroup = "crd.projectcalico.org"

// heartbeatDir and leaseNamespace: nodes' heartbeats are Leases beside the
// kubelets' own.
const (
	heartbeatDir   = "/tortie/heartbeats/"
	leaseNamespace = "kube-node-lease"
)

func crd(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: crdGroup, Version: "v1", Resource: resource}
}

// kinds is the map of tortie's datastore directories to Kubernetes objects.
func kinds(dyn dynamic.Interface) []*kind {
	var out []*kind
	add := func(dir string, gvr schema.GroupVersionResource, c codec) {
		out = append(out, &kind{dir: dir, gvr: gvr, res: dyn.Resource(gvr), codec: c})
	}
	for _, k := range resources.Kinds {
		dir := resources.KindPrefix(k)
		if k == resources.KindNode {
			add(dir, schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, nodeCodec{})
			continue
		}
		add(dir, crd(strings.TrimSuffix(dir[strings.LastIndex(dir[:len(dir)-1], "/")+1:], "/")),
			resourceCodec{kind: k, namespaced: resources.Namespaced(k)})
	}
	add(resources.Prefix+"ipam/blocks/", crd("ipamblocks"), blockCodec{})
	add(resources.Prefix+"ipam/affinities/", crd("blockaffinities"), affinityCodec{})
	add(resources.Prefix+"ipam/handles/", crd("ipamhandles"), handleCodec{})
	add(heartbeatDir, schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}, leaseCodec{})
	sort.Slice(out, func(i, j int) bool { return out[i].dir < out[j].dir })
	return out
}

// ErrNoPlace means a key is in no directory the Kubernetes datastore maps
// to objects.
var ErrNoPlace = errors.New("kubestore: key has no place in the Kubernetes datastore")

// kindOf returns the kind whose directory holds key, and the key's rest.
func (s *Store) kindOf(key string) (*kind, string, error) {
	for _, k := range s.kinds {
		if rest, ok := strings.CutPrefix(key, k.dir); ok {
			return k, rest, nil
		}
	}
	return nil, "", fmt.Errorf("%w: %s", ErrNoPlace, key)
}

// under returns the kinds a prefix covers: each kind whose directory is
// within prefix (whole), or the one kind whose directory prefix is within
// (its records whose key starts with prefix).
func (s *Store) under(prefix string) ([]*kind, error) {
	var out []*kind
	for _, k := range s.kinds {
		if strings.HasPrefix(k.dir, prefix) || strings.HasPrefix(prefix, k.dir) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoPlace, prefix)
	}
	return out, nil
}

// Get returns key's value and revision, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (datastore.KV, error) {
	k, rest, err := s.kindOf(key)
	if err != nil {
		return datastore.KV{}, err
	}
	u, err := k.get(ctx, rest)
	if err != nil {
		return datastore.KV{}, err
	}
	kv, ok, err := k.record(u)
	if err != nil {
		return datastore.KV{}, err
	}
	if !ok || kv.Key != key {
		return datastore.KV{}, datastore.ErrNotFound
	}
	return kv, nil
}

// List returns every record under prefix and a revision a watch of prefix
// can start from without missing a change: the oldest of the lists' (a
// watch from it may see again a change the lists already showed).
func (s *Store) List(ctx context.Context, prefix string) ([]datastore.KV, int64, error) {
	ks, err := s.under(prefix)
	if err != nil {
		return nil, 0, err
	}
	var out []datastore.KV
	var rev int64
	for _, k := range ks {
		l, err := k.res.List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, 0, apiError(err)
		}
		r, err := parseRev(l.GetResourceVersion())
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 || r < rev {
			rev = r
		}
		for i := range l.Items {
			kv, ok, err := k.record(&l.Items[i])
			if err != nil {
				return nil, 0, err
			}
			if ok && strings.HasPrefix(kv.Key, prefix) {
				out = append(out, kv)
			}
		}
	}
	return out, rev, nil
}

// Create writes key only if it does not exist.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	k, rest, err := s.kindOf(key)
	if err != nil {
		return 0, err
	}
	return k.create(ctx, rest, value)
}

// Update writes key only if its revision is still rev.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	k, rest, err := s.kindOf(key)
	if err != nil {
		return 0, err
	}
	return k.update(ctx, rest, value, rev)
}

// Put writes key whatever its revision.
func (s *Store) Put(ctx context.Context, key string, value []byte) (int64, error) {
	k, rest, err := s.kindOf(key)
	if err != nil {
		return 0, err
	}
	for {
		cur, err := k.get(ctx, rest)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			r, err := k.create(ctx, rest, value)
			if !errors.Is(err, datastore.ErrExists) {
				return r, err
			}
		case err != nil:
			return 0, err
		default:
			r, err := k.write(ctx, rest, value, cur)
			if !errors.Is(err, datastore.ErrConflict) {
				return r, err
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// Delete removes key; with rev > 0 only if its revision is still rev.
func (s *Store) Delete(ctx context.Context, key string, rev int64) error {
	k, rest, err := s.kindOf(key)
	if err != nil {
		return err
	}
	return k.delete(ctx, rest, rev)
}

// Watch streams changes under prefix after revision rev until ctx ends or
// a watch fails (its revision no longer kept, the API unreachable): then
// the channel closes and the caller lists again. Changes of one kind come
// in order; changes of different kinds are not ordered among themselves.
// The API server ending a watch (as it does every few minutes) is not a
// failure: the watch resumes where it was.
func (s *Store) Watch(ctx context.Context, prefix string, rev int64) <-chan datastore.Event {
	out := make(chan datastore.Event, 64)
	ks, err := s.under(prefix)
	if err != nil {
		close(out)
		return out
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	go func() {
		defer close(out)
		defer stop()
		defer cancel()
		if rev == 0 {
			// From now: any list's revision is the store's current one.
			l, err := ks[0].res.List(ctx, metav1.ListOptions{Limit: 1})
			if err != nil {
				return
			}
			if rev, err = parseRev(l.GetResourceVersion()); err != nil {
				return
			}
		}
		var wg sync.WaitGroup
		for _, k := range ks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer cancel() // one kind failing ends the watch
				k.watch(ctx, rev, prefix, out)
			}()
		}
		wg.Wait()
	}()
	return out
}

// kind is one directory of the datastore and the objects it maps to.
type kind struct {
	dir   string
	gvr   schema.GroupVersionResource
	res   dynamic.NamespaceableResourceInterface
	codec codec
}

// codec maps one directory's records to objects and back.
type codec interface {
	// ref is the namespace ("" for cluster-scoped objects) and name of
	// the object of a record named rest (the key less the directory).
	ref(rest string) (ns, name string, err error)
	// object is the object to store for a record, built on cur (nil:
	// a new object). For most kinds the record is the whole object.
	object(rest string, value []byte, cur *unstructured.Unstructured) (*unstructured.Unstructured, error)
	// rest is the name of the record an object holds or would hold; ""
	// when it can hold none (a kubelet's Lease).
	rest(u *unstructured.Unstructured) string
	// value is the record an object holds; ok false: it holds none (a
	// Node tortie does not run on).
	value(u *unstructured.Unstructured) (value []byte, ok bool)
	// remove is what deleting the record leaves of cur: nil when the
	// whole object goes.
	remove(cur *unstructured.Unstructured) *unstructured.Unstructured
}

func (k *kind) client(ns string) dynamic.ResourceInterface {
	if ns == "" {
		return k.res
	}
	return k.res.Namespace(ns)
}

// record is the record u holds; ok false: none.
func (k *kind) record(u *unstructured.Unstructured) (datastore.KV, bool, error) {
	rest := k.codec.rest(u)
	if rest == "" {
		return datastore.KV{}, false, nil
	}
	value, ok := k.codec.value(u)
	if !ok {
		return datastore.KV{}, false, nil
	}
	rev, err := parseRev(u.GetResourceVersion())
	if err != nil {
		return datastore.KV{}, false, err
	}
	return datastore.KV{Key: k.dir + rest, Value: value, Rev: rev}, true, nil
}

// get returns the object of record rest if it holds the record.
func (k *kind) get(ctx context.Context, rest string) (*unstructured.Unstructured, error) {
	ns, name, err := k.codec.ref(rest)
	if err != nil {
		return nil, datastore.ErrNotFound // no object can have that name
	}
	u, err := k.client(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, apiError(err)
	}
	if _, ok := k.codec.value(u); !ok || k.codec.rest(u) != rest {
		return nil, datastore.ErrNotFound
	}
	return u, nil
}

func (k *kind) create(ctx context.Context, rest string, value []byte) (int64, error) {
	ns, name, err := k.codec.ref(rest)
	if err != nil {
		return 0, err
	}
	u, err := k.client(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		o, err := k.codec.object(rest, value, nil)
		if err != nil {
			return 0, err
		}
		o.SetName(name)
		o.SetNamespace(ns)
		got, err := k.client(ns).Create(ctx, o, metav1.CreateOptions{})
		if err != nil {
			return 0, k.writeError(err, ns)
		}
		return parseRev(got.GetResourceVersion())
	case err != nil:
		return 0, apiError(err)
	}
	if _, ok := k.codec.value(u); ok {
		return 0, datastore.ErrExists
	}
	// The object exists and holds no record (a Node before tortie
	// registered on it): add the record to it.
	r, err := k.write(ctx, rest, value, u)
	if errors.Is(err, datastore.ErrConflict) {
		return 0, fmt.Errorf("%w: %s%s changed while being created; try again", datastore.ErrConflict, k.dir, rest)
	}
	return r, err
}

// write stores the record in place of cur, if cur is still current.
func (k *kind) write(ctx context.Context, rest string, value []byte, cur *unstructured.Unstructured) (int64, error) {
	ns, name, err := k.codec.ref(rest)
	if err != nil {
		return 0, err
	}
	o, err := k.codec.object(rest, value, cur)
	if err != nil {
		return 0, err
	}
	o.SetName(name)
	o.SetNamespace(ns)
	o.SetResourceVersion(cur.GetResourceVersion())
	got, err := k.client(ns).Update(ctx, o, metav1.UpdateOptions{})
	if err != nil {
		return 0, k.writeError(err, ns)
	}
	return parseRev(got.GetResourceVersion())
}

func (k *kind) update(ctx context.Context, rest string, value []byte, rev int64) (int64, error) {
	cur, err := k.get(ctx, rest)
	if err != nil {
		return 0, err
	}
	if cur.GetResourceVersion() != strconv.FormatInt(rev, 10) {
		return 0, datastore.ErrConflict
	}
	return k.write(ctx, rest, value, cur)
}

func (k *kind) delete(ctx context.Context, rest string, rev int64) error {
	ns, name, err := k.codec.ref(rest)
	if err != nil {
		return datastore.ErrNotFound
	}
	for {
		cur, err := k.get(ctx, rest)
		if err != nil {
			return err
		}
		rv := cur.GetResourceVersion()
		if rev > 0 && rv != strconv.FormatInt(rev, 10) {
			return datastore.ErrConflict
		}
		if left := k.codec.remove(cur); left != nil {
			left.SetResourceVersion(rv)
			_, err = k.client(ns).Update(ctx, left, metav1.UpdateOptions{})
		} else {
			err = k.client(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		}
		err = apiError(err)
		if rev == 0 && errors.Is(err, datastore.ErrConflict) {
			// An unconditional delete of an object someone else
			// wrote meanwhile: read it again.
			if err := ctx.Err(); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// watch sends the records under prefix that change after rev to out,
// until ctx ends or the watch fails.
func (k *kind) watch(ctx context.Context, rev int64, prefix string, out chan<- datastore.Event) {
	rv := strconv.FormatInt(rev, 10)
	// last is the value last sent per key, so objects other writers
	// touch without changing the record (a kubelet's Node status) send
	// nothing.
	last := map[string]string{}
	for {
		w, err := k.res.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			return
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				w.Stop()
				return // the revision is gone (410) or the API failed: list again
			}
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			rv = u.GetResourceVersion()
			if ev.Type == watch.Bookmark {
				continue
			}
			rest := k.codec.rest(u)
			if rest == "" || !strings.HasPrefix(k.dir+rest, prefix) {
				continue
			}
			kv, ours, err := k.record(u)
			if err != nil {
				continue
			}
			if !ours || ev.Type == watch.Deleted {
				// A record gone from an object that stays (a Node
				// tortie left) is a delete too; an object that never
				// held one since the watch began is nothing.
				key := k.dir + rest
				if _, seen := last[key]; !seen && !ours {
					continue
				}
				delete(last, key)
				r, _ := parseRev(rv)
				if !sendTo(ctx, out, datastore.Event{Type: datastore.EventDelete, KV: datastore.KV{Key: key, Rev: r}}) {
					w.Stop()
					return
				}
				continue
			}
			if v, ok := last[kv.Key]; ok && v == string(kv.Value) {
				continue
			}
			last[kv.Key] = string(kv.Value)
			if !sendTo(ctx, out, datastore.Event{Type: datastore.EventPut, KV: kv}) {
				w.Stop()
				return
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return
		}
		// The server ended the watch: resume from the last revision.
	}
}

func sendTo(ctx context.Context, out chan<- datastore.Event, e datastore.Event) bool {
	select {
	case out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

func (k *kind) writeError(err error, ns string) error {
	if ns != "" && apierrors.IsNotFound(err) {
		return fmt.Errorf("kubestore: namespace %q does not exist in the Kubernetes API: %v", ns, err)
	}
	return apiError(err)
}

// apiError maps the API's answers to the datastore's errors. What the API
// refuses (a malformed object, a missing permission) is an error of its
// own, not "unavailable": trying again would not help.
func apiError(err error) error {
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return datastore.ErrNotFound
	case apierrors.IsAlreadyExists(err):
		return datastore.ErrExists
	case apierrors.IsConflict(err):
		return datastore.ErrConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &status) && status.Status().Code >= 400 && status.Status().Code < 500 &&
		status.Status().Code != http.StatusTooManyRequests:
		return fmt.Errorf("kubestore: %w", err)
	}
	return fmt.Errorf("%w: %v", datastore.ErrUnavailable, err)
}

// parseRev reads a resourceVersion as the etcd revision it is.
func parseRev(rv string) (int64, error) {
	r, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("kubestore: resourceVersion %q is not a number: the API server must keep its objects in etcd", rv)
	}
	return r, nil
}

// asJSON is the JSON of an object without what only the API server keeps.
func asJSON(u *unstructured.Unstructured) ([]byte, error) {
	c := u.DeepCopy()
	c.SetManagedFields(nil)
	return json.Marshal(c.Object)
}
