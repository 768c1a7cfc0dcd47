package datastore

import (
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Defaults of an embedded member's housekeeping.
const (
	// DefaultCompactionRetention keeps an hour of history: etcd's periodic
	// compactor then drops, every hour, the revisions older than that.
	// Watchers more than an hour behind re-list, as tortie's do.
	DefaultCompactionRetention = "1h"
	// DefaultDefragInterval is how often the member checks whether its
	// database file is worth defragmenting.
	DefaultDefragInterval = time.Hour
	// DefaultDefragMinFree is the free space (bytes the file holds that no
	// live data uses) below which a defragmentation is not worth it.
	DefaultDefragMinFree = 16 << 20
)

// EmbeddedConfig configures a one-member etcd running inside tortied.
type EmbeddedConfig struct {
	// Dir holds the member's data.
	Dir string
	// Name of the member (the node's name).
	Name string
	// ClientURL serves clients, e.g. https://10.0.1.1:2379; PeerURL
	// serves peers. An https URL needs CertFile, KeyFile and CAFile.
	ClientURL, PeerURL string
	// CertFile and KeyFile are the member's certificate (with the
	// addresses of both URLs among its names, and both the server and
	// the client extended key usage, as peers use it both ways) and key.
	// With https URLs, every client and peer must present a certificate
	// signed by an authority in CAFile.
	CertFile, KeyFile, CAFile string
	// CompactionMode is etcd's auto-compaction mode: "periodic" (the
	// default; CompactionRetention is a duration such as "1h") or
	// "revision" (CompactionRetention is a number of revisions).
	CompactionMode string
	// CompactionRetention is how much history is kept (default
	// DefaultCompactionRetention). "0" turns compaction off.
	CompactionRetention string
	// DefragInterval is how often the member looks at its file (default
	// DefaultDefragInterval; negative: never). It defragments when at
	// least DefragMinFree bytes (default DefaultDefragMinFree) and at
	// least half the file are free, as compaction leaves them.
	DefragInterval time.Duration
	DefragMinFree  int64
	// QuotaBytes is the database size at which etcd refuses writes
	// (0: etcd's default, 2 GiB).
	QuotaBytes int64
	// Logger receives the housekeeping's messages (default: none).
	Logger *zap.Logger
}

// Embedded is a single-member etcd running inside tortied: the default for
// one node or a lab. Other nodes reach it at its client URL.
type Embedded struct {
	e      *embed.Etcd
	URL    string
	cfg    EmbeddedConfig
	defrag sync.Mutex // one defragmentation at a time
	closed sync.Once
	stop   chan struct{}
	done   chan struct{}
}

func (c *EmbeddedConfig) setDefaults() {
	if c.CompactionMode == "" {
		c.CompactionMode = embed.CompactorModePeriodic
	}
	if c.CompactionRetention == "" {
		c.CompactionRetention = DefaultCompactionRetention
	}
	if c.DefragInterval == 0 {
		c.DefragInterval = DefaultDefragInterval
	}
	if c.DefragMinFree == 0 {
		c.DefragMinFree = DefaultDefragMinFree
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// serverTLS is the TLS of one listener: required client certificates
// signed by the configured CA.
func (c *EmbeddedConfig) serverTLS(u *url.URL, which string) (transport.TLSInfo, error) {
	if u.Scheme != "https" {
		return transport.TLSInfo{}, nil
	}
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return transport.TLSInfo{}, fmt.Errorf("etcd %s URL %s: https needs the member's certificate, key and CA files", which, u)
	}
	return transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile, ClientCertAuth: true}, nil
}

// StartEmbedded starts a one-member etcd and waits until it serves.
func StartEmbedded(c EmbeddedConfig) (*Embedded, error) {
	c.setDefaults()
	cu, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd client URL: %w", err)
	}
	pu, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd peer URL: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = c.Name + "=" + c.PeerURL
	if cfg.ClientTLSInfo, err = c.serverTLS(cu, "client"); err != nil {
		return nil, err
	}
	if cfg.PeerTLSInfo, err = c.serverTLS(pu, "peer"); err != nil {
		return nil, err
	}
	if cu.Scheme != "https" && pu.Scheme != "https" && (c.CertFile != "" || c.KeyFile != "" || c.CAFile != "") {
		return nil, errors.New("etcd: TLS files given but the client and peer URLs are http")
	}
	cfg.AutoCompactionMode = c.CompactionMode
	cfg.AutoCompactionRetention = c.CompactionRetention
	cfg.QuotaBackendBytes = c.QuotaBytes
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 30s")
	}
	m := &Embedded{e: e, URL: c.ClientURL, cfg: c, stop: make(chan struct{}), done: make(chan struct{})}
	go m.housekeep()
	return m, nil
}

// PeerURL is the URL the member serves peers on.
func (m *Embedded) PeerURL() string { return m.cfg.PeerURL }

// Size returns the size of the member's database file and the part of it
// live data uses; the rest is free pages that compaction left and only a
// defragmentation gives back.
func (m *Embedded) Size() (size, inUse int64) {
	be := m.e.Server.Backend()
	return be.Size(), be.SizeInUse()
}

// DefragIfWorthwhile defragments the database when at least DefragMinFree
// bytes and half the file are free, and reports whether it did. The member
// does not serve while it runs (milliseconds for the megabytes tortie's
// data takes). Safe for concurrent use.
func (m *Embedded) DefragIfWorthwhile() (bool, error) {
	m.defrag.Lock()
	defer m.defrag.Unlock()
	size, inUse := m.Size()
	if free := size - inUse; free < m.cfg.DefragMinFree || free < size/2 {
		return false, nil
	}
	if err := m.e.Server.Defragment(); err != nil {
		return false, fmt.Errorf("etcd defragment: %w", err)
	}
	after, _ := m.Size()
	m.cfg.Logger.Info("defragmented the embedded etcd database", zap.Int64("before", size), zap.Int64("after", after))
	return true, nil
}

// housekeep defragments on a slow timer until Close.
func (m *Embedded) housekeep() {
	defer close(m.done)
	if m.cfg.DefragInterval < 0 {
		<-m.stop
		return
	}
	t := time.NewTicker(m.cfg.DefragInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			if _, err := m.DefragIfWorthwhile(); err != nil {
				m.cfg.Logger.Warn("embedded etcd housekeeping", zap.Error(err))
			}
		}
	}
}

// Close stops the member. etcd's graceful close waits for its clients'
// watch streams (other nodes keep theirs open) for several seconds; after
// one second the member's raft is stopped hard instead, which is safe (the
// WAL is synced before every commit, as a kill -9 would find it) and keeps
// a planned restart of the node short. Calls after the first do nothing.
func (m *Embedded) Close() {
	m.closed.Do(func() {
		close(m.stop)
		<-m.done
		done := make(chan struct{})
		go func() {
			m.e.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(time.Second):
			m.e.Server.HardStop()
		}
	})
}
