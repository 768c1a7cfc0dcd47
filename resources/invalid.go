package resources

import (
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// Kinds of IPAM records, as invalid-record reports name them.
const (
	KindIPAMBlock    = "IPAMBlock"
	KindIPAMHandle   = "IPAMHandle"
	KindIPAMAffinity = "IPAMAffinity"
)

// InvalidRecord is a stored record that could not be decoded or failed
// validation: it is skipped, never half-used.
type InvalidRecord struct {
	Key   string `json:"key"`
	Kind  string `json:"kind"`
	Error string `json:"error"`
	// Rev is the datastore revision that last wrote the record.
	Rev int64 `json:"revision"`
}

// Invalid remembers the invalid records the datastore readers of one node
// met, logs each once per revision and counts them by kind. A nil *Invalid
// remembers nothing.
type Invalid struct {
	log    *zap.Logger
	mu     sync.Mutex
	recs   map[string]InvalidRecord
	counts map[string]uint64
}

// NewInvalid returns an empty registry logging to log.
func NewInvalid(log *zap.Logger) *Invalid {
	return &Invalid{log: log, recs: map[string]InvalidRecord{}, counts: map[string]uint64{}}
}

// report records r; the caller holds v.mu.
func (v *Invalid) report(r InvalidRecord) {
	if old, ok := v.recs[r.Key]; ok && old.Rev == r.Rev && old.Error == r.Error {
		return
	}
	v.recs[r.Key] = r
	v.counts[r.Kind]++
	v.log.Warn("invalid datastore record skipped", zap.String("key", r.Key), zap.String("kind", r.Kind),
		zap.Int64("revision", r.Rev), zap.String("error", r.Error))
}

// Report records one invalid record; it is logged and counted unless it
// was already reported at the same revision.
func (v *Invalid) Report(r InvalidRecord) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.report(r)
}

// Clear forgets key: it was read and found valid, or is gone.
func (v *Invalid) Clear(key string) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.recs, key)
}

// Replace sets the invalid records under prefix after a full list of it:
// earlier ones not among recs were fixed or deleted and are forgotten.
func (v *Invalid) Replace(prefix string, recs []InvalidRecord) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	keep := make(map[string]bool, len(recs))
	for _, r := range recs {
		keep[r.Key] = true
		v.report(r)
	}
	for k := range v.recs {
		if strings.HasPrefix(k, prefix) && !keep[k] {
			delete(v.recs, k)
		}
	}
}

// List returns the records currently known to be invalid, by key.
func (v *Invalid) List() []InvalidRecord {
	out := []InvalidRecord{}
	if v == nil {
		return out
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.recs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Counts returns how many invalid records (counting each revision once)
// were met, by kind.
func (v *Invalid) Counts() map[string]uint64 {
	out := map[string]uint64{}
	if v == nil {
		return out
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, n := range v.counts {
		out[k] = n
	}
	return out
}
