package datastore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Etcd is a Store on an etcd v3 cluster.
type Etcd struct {
	c       *clientv3.Client
	timeout time.Duration
}

// EtcdConfig says how to reach etcd.
type EtcdConfig struct {
	Endpoints []string
	// Timeout bounds every call, so an unreachable cluster gives a clear
	// error instead of a hang (default 5s).
	Timeout time.Duration
	Logger  *zap.Logger
	// Dial, if set, opens connections to the members (tests reach a lab's
	// etcd from inside a namespace through it).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// TLS names the CA, certificate and key files for https endpoints.
	TLS ClientTLS
}

// DialEtcd connects to etcd. It does not wait for the cluster: calls fail
// with ErrUnavailable while it is out of reach, and succeed once it is back.
func DialEtcd(cfg EtcdConfig) (*Etcd, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	var tlsCfg *tls.Config
	if !cfg.TLS.IsZero() || anyHTTPS(cfg.Endpoints) {
		var err error
		if tlsCfg, err = cfg.TLS.Config(); err != nil {
			return nil, err
		}
	}
	var dialOpts []grpc.DialOption
	if cfg.Dial != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(cfg.Dial))
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.Timeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		AutoSyncInterval:     30 * time.Second,
		Logger:               cfg.Logger,
		DialOptions:          dialOpts,
		TLS:                  tlsCfg,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return &Etcd{c: c, timeout: cfg.Timeout}, nil
}

func anyHTTPS(endpoints []string) bool {
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

func (e *Etcd) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Get returns key's value and revision, or ErrNotFound.
func (e *Etcd) Get(ctx context.Context, key string) (KV, error) {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	r, err := e.c.Get(ctx, key)
	if err != nil {
		return KV{}, unavailable(err)
	}
	if len(r.Kvs) == 0 {
		return KV{}, ErrNotFound
	}
	kv := r.Kvs[0]
	return KV{Key: string(kv.Key), Value: kv.Value, Rev: kv.ModRevision}, nil
}

// List returns every key under prefix and the store revision it read at.
func (e *Etcd) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	r, err := e.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, unavailable(err)
	}
	out := make([]KV, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, KV{Key: string(kv.Key), Value: kv.Value, Rev: kv.ModRevision})
	}
	return out, r.Header.Revision, nil
}

func (e *Etcd) txn(ctx context.Context, cmp clientv3.Cmp, op clientv3.Op, failErr error) (int64, error) {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	r, err := e.c.Txn(ctx).If(cmp).Then(op).Commit()
	if err != nil {
		return 0, unavailable(err)
	}
	if !r.Succeeded {
		return 0, failErr
	}
	return r.Header.Revision, nil
}

// Create writes key only if it does not exist, else returns ErrExists.
func (e *Etcd) Create(ctx context.Context, key string, value []byte) (int64, error) {
	return e.txn(ctx, clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.OpPut(key, string(value)), ErrExists)
}

// Update writes key only if its revision is still rev: ErrConflict if it
// changed, ErrNotFound if it is gone.
func (e *Etcd) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	r, err := e.txn(ctx, clientv3.Compare(clientv3.ModRevision(key), "=", rev), clientv3.OpPut(key, string(value)), ErrConflict)
	if errors.Is(err, ErrConflict) {
		if _, gerr := e.Get(ctx, key); errors.Is(gerr, ErrNotFound) {
			return 0, ErrNotFound
		}
	}
	return r, err
}

// Put writes key unconditionally and returns the new store revision.
func (e *Etcd) Put(ctx context.Context, key string, value []byte) (int64, error) {
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	r, err := e.c.Put(ctx, key, string(value))
	if err != nil {
		return 0, unavailable(err)
	}
	return r.Header.Revision, nil
}

// Delete removes key; with rev > 0 only if its revision is still rev
// (ErrConflict otherwise). A missing key gives ErrNotFound.
func (e *Etcd) Delete(ctx context.Context, key string, rev int64) error {
	if rev > 0 {
		_, err := e.txn(ctx, clientv3.Compare(clientv3.ModRevision(key), "=", rev), clientv3.OpDelete(key), ErrConflict)
		if errors.Is(err, ErrConflict) {
			if _, gerr := e.Get(ctx, key); errors.Is(gerr, ErrNotFound) {
				return ErrNotFound
			}
		}
		return err
	}
	ctx, cancel := e.ctx(ctx)
	defer cancel()
	r, err := e.c.Delete(ctx, key)
	if err != nil {
		return unavailable(err)
	}
	if r.Deleted == 0 {
		return ErrNotFound
	}
	return nil
}

// Watch streams changes under prefix after revision rev (rev 0: from now)
// until ctx ends; the channel closes on ctx done or a watch error.
func (e *Etcd) Watch(ctx context.Context, prefix string, rev int64) <-chan Event {
	out := make(chan Event)
	go func() {
		defer close(out)
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		for resp := range e.c.Watch(clientv3.WithRequireLeader(ctx), prefix, opts...) {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				t := EventPut
				if ev.Type == clientv3.EventTypeDelete {
					t = EventDelete
				}
				select {
				case out <- Event{Type: t, KV: KV{Key: string(ev.Kv.Key), Value: ev.Kv.Value, Rev: ev.Kv.ModRevision}}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Close closes the etcd client.
func (e *Etcd) Close() error { return e.c.Close() }
