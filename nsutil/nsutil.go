// Package nsutil is the one place where tortie enters network namespaces.
//
// A network namespace belongs to an OS thread, not to a goroutine, so every
// entry locks the goroutine to its thread, switches, runs the work, and
// switches back. If switching back fails the thread is left locked, and the
// Go runtime destroys it when the goroutine exits instead of reusing a
// thread in the wrong namespace. Long-lived goroutines never call Do.
package nsutil

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn with the calling goroutine inside the network namespace at
// path (e.g. /var/run/netns/pod1 or /proc/<pid>/ns/net). File descriptors
// created inside (sockets, TAP devices) keep their namespace afterwards.
func Do(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A fresh goroutine: its thread is thrown away if restoring fails,
	// without taking the caller's thread with it.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- fmt.Errorf("leave network namespace %s: %w (after: %v)", path, err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
