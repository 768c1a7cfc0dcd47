// Package migrate copies a tortie cluster's state from one datastore to
// another, such as from etcd to the Kubernetes API and back: pools, nodes,
// BGP and Felix resources, IPAM blocks, affinities and handles, network
// policy and workload endpoints, each record exactly as it is, so that no
// pod's address, no block's owner and no policy changes on the way.
//
// A copy is meant to run while no tortied writes (stop them, copy, point
// every node at the new store, start them): it reads the source once,
// writes what the destination lacks, and re-reads both to check the
// result, reporting any record the source changed meanwhile.
package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

// Prefixes are the parts of the datastore a copy takes: everything tortie
// keeps, in its own layout and in Calico's. The nodes' heartbeats
// (/tortie/heartbeats/) are left out on purpose: they only say which
// tortied is alive right now, and each node writes its own again within
// seconds of starting on the new store, whereas a copied one would make a
// restarted node wait out a stale claim on its own name.
var Prefixes = []string{resources.Prefix, resources.CalicoPrefix}

// ErrDiffers means the destination already holds records that differ from
// the source's, and the options did not allow overwriting them.
var ErrDiffers = errors.New("the destination already holds records that differ from the source's")

// Options tune a copy.
type Options struct {
	// Overwrite replaces destination records that differ from the
	// source's. Without it a copy that meets one writes nothing: the
	// destination may be another cluster's, or hold newer state than an
	// old source.
	Overwrite bool
	// DryRun reads both stores and reports what a copy would do, writing
	// nothing.
	DryRun bool
}

// Dir counts one directory's records (e.g. /tortie/v1/ipam/blocks/).
type Dir struct {
	Dir string `json:"dir"`
	// Records is how many the source holds.
	Records int `json:"records"`
	// Created are written where the destination had none, Updated over a
	// differing record (with Overwrite); Unchanged are already the same in
	// the destination and are not written again. A dry run counts what it
	// would write.
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	// Invalid do not decode in the source; they are copied all the same.
	Invalid int `json:"invalid"`
	// Failed could not be written, or read back as written.
	Failed int `json:"failed"`
}

// Report says what a copy did, or, dry, would do.
type Report struct {
	DryRun bool  `json:"dryRun"`
	Dirs   []Dir `json:"dirs"`
	// Invalid are the source's records that do not decode as their
	// directory's kind. They are copied verbatim rather than dropped: a
	// migration must not lose state, and an unreadable IPAM block still
	// keeps its addresses from being handed out again on the new store,
	// as it did on the old one, until an operator repairs or deletes it.
	Invalid []resources.InvalidRecord `json:"invalid,omitempty"`
	// Differing are the destination's records that differed from the
	// source's: overwritten with Overwrite, else the reason nothing was
	// written.
	Differing []string `json:"differing,omitempty"`
	// Extra are records the destination holds and the source does not.
	// A copy never deletes: they stay, and the caller decides.
	Extra []string `json:"extra,omitempty"`
	// Failed are the records that could not be written or did not read
	// back as written.
	Failed []string `json:"failed,omitempty"`
	// SourceChanged are records the source created, changed or deleted
	// while the copy ran: a tortied still running. The destination may
	// hold their old state; copy again (overwriting) once every tortied
	// is stopped.
	SourceChanged []string `json:"sourceChanged,omitempty"`
}

// Total sums the directories.
func (r *Report) Total() Dir {
	t := Dir{Dir: "total"}
	for _, d := range r.Dirs {
		t.Records += d.Records
		t.Created += d.Created
		t.Updated += d.Updated
		t.Unchanged += d.Unchanged
		t.Invalid += d.Invalid
		t.Failed += d.Failed
	}
	return t
}

// record is one source record and what the copy does with it.
type record struct {
	kv        datastore.KV
	canonical []byte
	dir       *Dir
	op        op
}

type op uint8

const (
	opCreate op = iota
	opUpdate
	opKeep
)

// Copy copies every record under Prefixes from one store to the other
// with unconditional writes, so running it again converges on the
// source's state (and writes nothing once it has). Records are compared
// by what tortie reads from them, so that a store that re-encodes a
// record (the Kubernetes API keeps them as custom resources) is not taken
// to differ. A failure to read either store writes nothing; a failure to
// write one record does not stop the others, and Copy then returns an
// error naming them.
func Copy(ctx context.Context, from, to datastore.Store, opts Options) (Report, error) {
	rep := Report{DryRun: opts.DryRun}
	src, err := listAll(ctx, from)
	if err != nil {
		return rep, fmt.Errorf("reading the source: %w", err)
	}
	dst, err := listAll(ctx, to)
	if err != nil {
		return rep, fmt.Errorf("reading the destination: %w", err)
	}
	dirs := map[string]*Dir{}
	var recs []*record
	for _, kv := range sorted(src) {
		name := dirOf(kv.Key)
		d := dirs[name]
		if d == nil {
			d = &Dir{Dir: name}
			dirs[name] = d
		}
		d.Records++
		r := &record{kv: kv, dir: d}
		var bad *resources.InvalidRecord
		r.canonical, bad = canonical(kv)
		if bad != nil {
			d.Invalid++
			rep.Invalid = append(rep.Invalid, *bad)
		}
		switch cur, ok := dst[kv.Key]; {
		case !ok:
			r.op = opCreate
			d.Created++
		case same(r.canonical, cur):
			r.op = opKeep
			d.Unchanged++
		default:
			r.op = opUpdate
			d.Updated++
			rep.Differing = append(rep.Differing, kv.Key)
		}
		recs = append(recs, r)
	}
	for _, kv := range sorted(dst) {
		if _, ok := src[kv.Key]; !ok {
			rep.Extra = append(rep.Extra, kv.Key)
		}
	}
	// finish copies the directories' counts, as they are now, into rep.
	finish := func() Report {
		rep.Dirs = rep.Dirs[:0]
		for _, name := range sortedKeys(dirs) {
			rep.Dirs = append(rep.Dirs, *dirs[name])
		}
		return rep
	}
	if len(rep.Differing) > 0 && !opts.Overwrite {
		return finish(), fmt.Errorf("%w (%d: %s); nothing was written: overwrite them, or copy into an empty store",
			ErrDiffers, len(rep.Differing), abbreviate(rep.Differing))
	}
	if opts.DryRun {
		return finish(), nil
	}

	var failed []error
	fail := func(r *record, err error) {
		r.dir.Failed++
		rep.Failed = append(rep.Failed, r.kv.Key)
		failed = append(failed, fmt.Errorf("%s: %w", r.kv.Key, err))
	}
	for _, r := range recs {
		if r.op == opKeep {
			continue
		}
		if err := ctx.Err(); err != nil {
			return finish(), err
		}
		if _, err := to.Put(ctx, r.kv.Key, r.kv.Value); err != nil {
			fail(r, err)
		}
	}
	// Read back what was written: a store that cannot keep a record as
	// tortie wrote it must be found now, not when a node reads it.
	written, err := listAll(ctx, to)
	if err != nil {
		return finish(), errors.Join(append(failed, fmt.Errorf("reading the destination back: %w", err))...)
	}
	failedKeys := map[string]bool{}
	for _, k := range rep.Failed {
		failedKeys[k] = true
	}
	for _, r := range recs {
		if failedKeys[r.kv.Key] {
			continue
		}
		cur, ok := written[r.kv.Key]
		switch {
		case !ok:
			fail(r, errors.New("not in the destination after it was written"))
		case !same(r.canonical, cur):
			fail(r, fmt.Errorf("the destination keeps it differently: wrote %s, read back %s", clip(r.kv.Value), clip(cur.Value)))
		}
	}
	if after, err := listAll(ctx, from); err == nil {
		rep.SourceChanged = changed(src, after)
	}
	if len(failed) > 0 {
		return finish(), fmt.Errorf("%d of %d records not copied: %w", len(failed), len(recs), errors.Join(failed...))
	}
	return finish(), nil
}

// listAll reads every record under Prefixes, by key.
func listAll(ctx context.Context, s datastore.Store) (map[string]datastore.KV, error) {
	out := map[string]datastore.KV{}
	for _, p := range Prefixes {
		kvs, _, err := s.List(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", p, err)
		}
		for _, kv := range kvs {
			out[kv.Key] = kv
		}
	}
	return out, nil
}

// dirOf names the directory of key: its prefix and first level
// (/tortie/v1/ippools/), two levels for IPAM's (/tortie/v1/ipam/blocks/).
func dirOf(key string) string {
	for _, p := range Prefixes {
		rest, ok := strings.CutPrefix(key, p)
		if !ok {
			continue
		}
		first, after, ok := strings.Cut(rest, "/")
		if !ok {
			return p
		}
		if first == "ipam" {
			if second, _, ok := strings.Cut(after, "/"); ok {
				return p + first + "/" + second + "/"
			}
		}
		return p + first + "/"
	}
	return key
}

// canonical is what tortie reads from kv, encoded one way: the decoded
// resource or IPAM record for one that decodes (so that an encoding that
// orders fields differently, omits empty ones or writes the v3 apiVersion
// for tortie.io/v1 compares equal), and the JSON without the API server's
// bookkeeping otherwise, with the reason it did not decode.
func canonical(kv datastore.KV) ([]byte, *resources.InvalidRecord) {
	var kind string
	var v any
	var err error
	if kind = resources.KindOfKey(kv.Key); kind != "" {
		v, err = resources.DecodeStored(kind, kv)
	} else {
		kind, v, err = ipam.DecodeRecord(kv)
	}
	if kind != "" && err == nil {
		if b, err := json.Marshal(v); err == nil {
			return b, nil
		}
	}
	var bad *resources.InvalidRecord
	if err != nil {
		bad = &resources.InvalidRecord{Key: kv.Key, Kind: kind, Error: err.Error(), Rev: kv.Rev}
	}
	return plainJSON(kv.Value), bad
}

// serverMetadata are the fields an API server adds to an object's
// metadata; they say nothing about the record.
var serverMetadata = []string{"creationTimestamp", "resourceVersion", "uid", "generation", "managedFields", "selfLink"}

// plainJSON re-encodes a JSON value with sorted keys and without the
// server's metadata; bytes that are not JSON stay as they are.
func plainJSON(b []byte) []byte {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return b
	}
	if m, ok := v.(map[string]any); ok {
		if md, ok := m["metadata"].(map[string]any); ok {
			for _, f := range serverMetadata {
				delete(md, f)
			}
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		return b
	}
	return out
}

func canonicalOf(kv datastore.KV) []byte {
	c, _ := canonical(kv)
	return c
}

// same says whether the destination's record cur reads as canonical.
func same(canon []byte, cur datastore.KV) bool { return bytes.Equal(canon, canonicalOf(cur)) }

// changed lists the keys whose records differ between two readings.
func changed(before, after map[string]datastore.KV) []string {
	var out []string
	for k, kv := range before {
		if a, ok := after[k]; !ok || !bytes.Equal(a.Value, kv.Value) && !same(canonicalOf(kv), a) {
			out = append(out, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func sorted(m map[string]datastore.KV) []datastore.KV {
	out := make([]datastore.KV, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// abbreviate names the first few keys of a long list.
func abbreviate(keys []string) string {
	const show = 5
	if len(keys) <= show {
		return strings.Join(keys, ", ")
	}
	return strings.Join(keys[:show], ", ") + fmt.Sprintf(", and %d more", len(keys)-show)
}

// clip shortens a record for an error message.
func clip(b []byte) string {
	const limit = 200
	if len(b) <= limit {
		return string(b)
	}
	return string(b[:limit]) + "..."
}
