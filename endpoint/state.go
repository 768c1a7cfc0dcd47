package endpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// stateVersion is bumped whenever the file's meaning changes; a file of
// another version is not trusted.
const stateVersion = 1

type stateFile struct {
	Version   int    `json:"version"`
	Endpoints []Spec `json:"endpoints"`
}

// ErrBadState means the state file is corrupt or of another version: the
// caller rebuilds from the datastore instead of trusting it.
var ErrBadState = errors.New("endpoint state file unusable")

// save writes every endpoint atomically (temporary file, fsync, rename).
// Callers hold m.mu. After Detach it writes nothing: the file is what the
// next run restores.
func (m *Manager) save() error {
	if m.detached {
		return ErrDetached
	}
	if m.state == "" {
		return nil
	}
	st := stateFile{Version: stateVersion}
	for _, e := range m.eps {
		st.Endpoints = append(st.Endpoints, e.info.EndpointSpec)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.state), 0o700); err != nil {
		return err
	}
	tmp := m.state + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, m.state)
}

// LoadState reads the endpoints a previous run left. A missing file is an
// empty list; a corrupt or old-version one is ErrBadState.
func LoadState(path string) ([]Spec, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%w: %s has version %d, want %d", ErrBadState, path, st.Version, stateVersion)
	}
	return st.Endpoints, nil
}

// Restore re-attaches endpoints of a previous run. Those whose network
// namespace is gone are not attached and are returned, so that the caller
// releases their addresses.
func (m *Manager) Restore(specs []Spec) (gone []Spec) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range specs {
		if _, err := os.Stat(s.Netns); err != nil {
			m.log.Info("endpoint's namespace is gone; cleaning up", zap.String("name", s.Key()), zap.String("netns", s.Netns))
			gone = append(gone, s)
			continue
		}
		if s.MTU == 0 {
			s.MTU = m.mtu
		}
		// A record that clashes with one already restored (a file edited
		// by hand) is skipped rather than attached twice.
		if err := m.conflict(s); err != nil {
			m.log.Error("endpoint not re-attached", zap.String("name", s.Key()), zap.Error(err))
			continue
		}
		e, err := m.attach(s)
		if err != nil {
			m.log.Error("endpoint not re-attached", zap.String("name", s.Key()), zap.Error(err))
			gone = append(gone, s)
			continue
		}
		m.eps[s.Key()] = e
		m.log.Info("endpoint re-attached", zap.String("name", s.Key()), zap.Stringer("address", s.Address))
	}
	if err := m.save(); err != nil {
		m.log.Error("endpoint state not saved", zap.Error(err))
	}
	return gone
}

// Detach stops serving every endpoint but leaves the persistent TAPs in
// place, and the state file as it is, for the next run (a planned
// restart). Changes after it are refused (ErrDetached): a removal saved
// now would write the file without the endpoints Detach let go, and the
// next run would restore none of them.
func (m *Manager) Detach() {
	m.mu.Lock()
	eps := m.eps
	m.eps = map[string]*entry{}
	m.detached = true
	m.mu.Unlock()
	for _, e := range eps {
		_ = m.r.RemovePort(e.port)
	}
}
