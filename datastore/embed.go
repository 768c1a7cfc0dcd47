package datastore

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is a single-member etcd running inside tortied: the default for
// one node or a lab. Other nodes reach it at its client URL.
type Embedded struct {
	e   *embed.Etcd
	URL string
}

// StartEmbedded starts a one-member etcd with its data in dir, serving
// clients on clientURL (e.g. http://10.0.1.1:2379) and peers on peerURL.
func StartEmbedded(dir, name, clientURL, peerURL string) (*Embedded, error) {
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd client URL: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd peer URL: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = name + "=" + peerURL
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
	return &Embedded{e: e, URL: clientURL}, nil
}

// Close stops the member. etcd's graceful close waits for its clients'
// watch streams (other nodes keep theirs open) for several seconds; after
// one second the member's raft is stopped hard instead, which is safe (the
// WAL is synced before every commit, as a kill -9 would find it) and keeps
// a planned restart of the node short.
func (m *Embedded) Close() {
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
}
