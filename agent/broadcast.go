package agent

import "sync"

// broadcast wakes every waiter at once. A waiter takes next() before it
// looks at the state it waits on, so that a change after that look closes
// the channel it then waits on: no wake-up is lost. The zero value is
// ready; it is safe for concurrent use.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

// next is closed at the next fire.
func (b *broadcast) next() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// fire wakes every waiter of next.
func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
