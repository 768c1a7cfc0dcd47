package underlay

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
)

// WatchMTU subscribes to the kernel's link updates in the calling thread's
// network namespace and calls changed with the named interface's MTU each
// time it differs from the one before (the first report included), on a
// goroutine of its own, until ctx ends. It returns once subscribed; failed
// is called, on that goroutine, if the subscription ends early (it may be
// nil).
func WatchMTU(ctx context.Context, name string, changed func(mtu int), failed func(error)) error {
	updates := make(chan netlink.LinkUpdate, 16)
	var subErr error
	if err := netlink.LinkSubscribeWithOptions(updates, ctx.Done(), netlink.LinkSubscribeOptions{
		ListExisting:  true,
		ErrorCallback: func(err error) { subErr = err },
	}); err != nil {
		return fmt.Errorf("underlay: watching %s's MTU: %w", name, err)
	}
	go func() {
		last := -1
		for u := range updates {
			if a := u.Attrs(); a != nil && a.Name == name && a.MTU != last {
				last = a.MTU
				changed(a.MTU)
			}
		}
		// subErr is written by the subscription's goroutine before it
		// closes updates.
		if ctx.Err() == nil && failed != nil {
			err := subErr
			if err == nil {
				err = fmt.Errorf("underlay: the kernel's link updates ended")
			}
			failed(err)
		}
	}()
	return nil
}
