// Package datastore is tortie's cluster state store: a small key-value
// interface with compare-and-swap writes, implemented on etcd v3 (the engine
// Calico uses for the same data) and, for fast unit tests, in memory.
//
// Every write that depends on what was read names the revision it read, so
// concurrent writers never overwrite each other: the loser gets ErrConflict
// and retries from a fresh read.
package datastore

import (
	"context"
	"errors"
	"strings"
	"sync"
)

var (
	// ErrNotFound means the key does not exist.
	ErrNotFound = errors.New("datastore: not found")
	// ErrExists means Create found the key already there.
	ErrExists = errors.New("datastore: already exists")
	// ErrConflict means the key changed since the revision the caller read.
	ErrConflict = errors.New("datastore: revision conflict")
	// ErrUnavailable wraps failures to reach the store; callers must never
	// take it for "not found".
	ErrUnavailable = errors.New("datastore: unavailable")
)

// KV is one key, its value and the revision that last modified it.
type KV struct {
	Key   string
	Value []byte
	Rev   int64
}

// EventType says what happened to a key.
type EventType uint8

// Event types.
const (
	EventPut    EventType = iota // key created or updated
	EventDelete                  // key deleted
)

// Event is one change seen by Watch.
type Event struct {
	Type EventType
	KV   KV
}

// Store is the interface the rest of tortie uses.
type Store interface {
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key under prefix and the store revision it read at.
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Create writes key only if it does not exist.
	Create(ctx context.Context, key string, value []byte) (int64, error)
	// Update writes key only if its revision is still rev.
	Update(ctx context.Context, key string, value []byte, rev int64) (int64, error)
	// Put writes key unconditionally.
	Put(ctx context.Context, key string, value []byte) (int64, error)
	// Delete removes key; with rev > 0 only if its revision is still rev.
	Delete(ctx context.Context, key string, rev int64) error
	// Watch streams changes under prefix after revision rev until ctx ends;
	// rev 0 means from whenever the watch is established (racy: callers
	// that must not miss a change pass the revision of their last read).
	// The channel closes when the watch ends (ctx done or store error).
	Watch(ctx context.Context, prefix string, rev int64) <-chan Event
	Close() error
}

// Memory is an in-memory Store for tests.
type Memory struct {
	mu       sync.Mutex
	rev      int64
	kv       map[string]KV
	watchers map[*memWatch]struct{}
	// history is the latest changes, oldest first (memHistory to twice
	// that many), which a watch from a revision replays.
	history []Event
	// Down makes every call fail with ErrUnavailable (an unreachable store).
	Down bool
}

type memWatch struct {
	prefix string
	ch     chan Event
	// lost is closed (under Memory.mu) when a change did not fit in ch:
	// the watch ends rather than go on with a gap, and its caller
	// re-lists.
	lost chan struct{}
}

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{kv: map[string]KV{}, watchers: map[*memWatch]struct{}{}}
}

// memHistory is how many changes Memory keeps for watches from a revision;
// a watch from an older one ends at once, as etcd's does from a compacted
// revision, and its caller re-lists.
const memHistory = 4096

func (m *Memory) notify(e Event) {
	if len(m.history) == 2*memHistory {
		m.history = append(m.history[:0], m.history[memHistory:]...)
	}
	m.history = append(m.history, e)
	for w := range m.watchers {
		if strings.HasPrefix(e.KV.Key, w.prefix) {
			select {
			case w.ch <- e:
			default:
				select {
				case <-w.lost: // already ended
				default:
					close(w.lost)
				}
			}
		}
	}
}

// Get returns key's value and revision, or ErrNotFound.
func (m *Memory) Get(_ context.Context, key string) (KV, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Down {
		return KV{}, ErrUnavailable
	}
	kv, ok := m.kv[key]
	if !ok {
		return KV{}, ErrNotFound
	}
	return kv, nil
}

// List returns every key under prefix, in no particular order, and the
// current revision.
func (m *Memory) List(_ context.Context, prefix string) ([]KV, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Down {
		return nil, 0, ErrUnavailable
	}
	var out []KV
	for k, v := range m.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, v)
		}
	}
	return out, m.rev, nil
}

func (m *Memory) write(key string, value []byte, check func(KV, bool) error) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Down {
		return 0, ErrUnavailable
	}
	cur, ok := m.kv[key]
	if err := check(cur, ok); err != nil {
		return 0, err
	}
	m.rev++
	kv := KV{Key: key, Value: append([]byte(nil), value...), Rev: m.rev}
	m.kv[key] = kv
	m.notify(Event{Type: EventPut, KV: kv})
	return m.rev, nil
}

// Create writes key only if it does not exist, else returns ErrExists.
func (m *Memory) Create(_ context.Context, key string, value []byte) (int64, error) {
	return m.write(key, value, func(_ KV, ok bool) error {
		if ok {
			return ErrExists
		}
		return nil
	})
}

// Update writes key only if its revision is still rev: ErrNotFound if it
// is missing, ErrConflict if it changed.
func (m *Memory) Update(_ context.Context, key string, value []byte, rev int64) (int64, error) {
	return m.write(key, value, func(cur KV, ok bool) error {
		if !ok {
			return ErrNotFound
		}
		if cur.Rev != rev {
			return ErrConflict
		}
		return nil
	})
}

// Put writes key unconditionally and returns the new revision.
func (m *Memory) Put(_ context.Context, key string, value []byte) (int64, error) {
	return m.write(key, value, func(KV, bool) error { return nil })
}

// Delete removes key; with rev > 0 only if its revision is still rev
// (ErrConflict otherwise). A missing key gives ErrNotFound.
func (m *Memory) Delete(_ context.Context, key string, rev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Down {
		return ErrUnavailable
	}
	cur, ok := m.kv[key]
	if !ok {
		return ErrNotFound
	}
	if rev > 0 && cur.Rev != rev {
		return ErrConflict
	}
	delete(m.kv, key)
	m.rev++
	m.notify(Event{Type: EventDelete, KV: KV{Key: key, Rev: m.rev}})
	return nil
}

// Watch streams changes under prefix after revision rev (0: from now)
// until ctx ends: the changes since rev that it still keeps first (a
// revision older than those ends the watch at once), then new ones. A
// watcher that falls more than 1024 changes behind has its watch ended.
func (m *Memory) Watch(ctx context.Context, prefix string, rev int64) <-chan Event {
	w := &memWatch{prefix: prefix, ch: make(chan Event, 1024), lost: make(chan struct{})}
	out := make(chan Event)
	var replay []Event
	m.mu.Lock()
	if rev > 0 && rev < m.rev && (len(m.history) == 0 || m.history[0].KV.Rev > rev+1) {
		m.mu.Unlock()
		close(out) // compacted: the caller re-lists
		return out
	}
	if rev > 0 {
		for _, e := range m.history {
			if e.KV.Rev > rev && strings.HasPrefix(e.KV.Key, prefix) {
				replay = append(replay, e)
			}
		}
	}
	m.watchers[w] = struct{}{} // under the same lock: no change between replay and stream
	m.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			m.mu.Lock()
			delete(m.watchers, w)
			m.mu.Unlock()
		}()
		send := func(e Event) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
			case <-w.lost:
			}
			return false
		}
		for _, e := range replay {
			if !send(e) {
				return
			}
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.lost:
				return
			case e := <-w.ch:
				if !send(e) {
					return
				}
			}
		}
	}()
	return out
}

// Close does nothing.
func (m *Memory) Close() error { return nil }
