package underlay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// WatchMTU follows the kernel's link updates in the calling thread's
// network namespace and calls changed with the named interface's MTU each
// time it differs from the one before (the first report included), until
// ctx ends; it returns then. If the subscription fails or ends (the kernel
// dropped updates for want of buffer, say), it calls failed and subscribes
// again after a pause (1 s, doubling up to 30 s), re-reading the MTU. Both
// functions are called on the calling goroutine, one at a time.
func WatchMTU(ctx context.Context, name string, changed func(mtu int), failed func(error)) {
	ns, err := netns.Get()
	if err != nil {
		failed(fmt.Errorf("underlay: watching %s's MTU: the network namespace: %w", name, err))
		return
	}
	defer ns.Close()
	last, pause := -1, time.Second
	for ctx.Err() == nil {
		err := watchOnce(ctx, ns, name, func(mtu int) {
			pause = time.Second // a working subscription: the next failure waits little
			if mtu != last {
				last = mtu
				changed(mtu)
			}
		})
		if ctx.Err() != nil {
			return
		}
		failed(fmt.Errorf("underlay: watching %s's MTU (again in %v): %w", name, pause, err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// watchOnce runs one subscription until it ends or ctx does.
func watchOnce(ctx context.Context, ns netns.NsHandle, name string, mtu func(int)) error {
	done := make(chan struct{})
	updates := make(chan netlink.LinkUpdate, 64)
	var subErr error
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace:     &ns,
		ListExisting:  true,
		ErrorCallback: func(err error) { subErr = err },
	}); err != nil {
		return err
	}
	defer func() {
		// The subscription's goroutine may be sending; it closes updates
		// once it sees done.
		close(done)
		go func() {
			for range updates {
			}
		}()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				// subErr was written by the subscription's goroutine
				// before it closed updates.
				if subErr == nil {
					return errors.New("the kernel's link updates ended")
				}
				return subErr
			}
			if a := u.Attrs(); a != nil && a.Name == name {
				mtu(a.MTU)
			}
		}
	}
}
