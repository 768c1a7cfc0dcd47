// Package kubefake is client-go's fake clientset for tests that change
// objects under a running informer. The fake's watch starts empty and
// ignores the resourceVersion an informer lists at, so a change made
// after the informer has listed but before its watch is open is never
// seen (a real API server replays it); the informer has synced by then,
// so waiting for the sync is not enough. Clientset tells when each
// resource's watch is open, and WaitWatched waits for it.
package kubefake

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tortie-net/tortie/internal/testutil"
)

// Clientset is a fake clientset that counts the watches opened on each
// resource. It is safe for concurrent use, as the fake is.
type Clientset struct {
	*fake.Clientset
	mu     sync.Mutex
	opened map[string]int // by resource, plural ("pods")
}

// NewClientset returns a fake clientset holding objs.
func NewClientset(objs ...runtime.Object) *Clientset {
	c := &Clientset{Clientset: fake.NewClientset(objs...), opened: map[string]int{}}
	// The watch is registered with the tracker here, before it is
	// counted, so that a counted watch sees every later change.
	c.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		wa, ok := a.(k8stesting.WatchActionImpl)
		if !ok {
			return false, nil, nil
		}
		w, err := c.Tracker().Watch(wa.GetResource(), wa.GetNamespace(), wa.ListOptions)
		if err != nil {
			return true, nil, err
		}
		c.mu.Lock()
		c.opened[wa.GetResource().Resource]++
		c.mu.Unlock()
		return true, w, nil
	})
	return c
}

// WaitWatched waits until a watch is open on each of resources (plural
// names, as "pods" or "networkpolicies"), failing tb after a minute.
func (c *Clientset) WaitWatched(tb testing.TB, resources ...string) {
	tb.Helper()
	testutil.WaitFor(tb, time.Minute, fmt.Sprintf("watches of %v", resources), func() bool {
		for _, r := range resources {
			if !c.watched(r) {
				return false
			}
		}
		return true
	})
}

func (c *Clientset) watched(resource string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened[resource] > 0
}
