package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Install puts the plugin where container runtimes find it, as Calico's
// install-cni init container does: the executable self is copied to
// binDir/tortie and conflist is written as confDir/confName, each through a
// temporary file renamed into place, so that a runtime never reads half a
// file. A node's pods start only once the conflist exists, which is why
// the DaemonSet runs this before tortied. conflist must be a network
// configuration list whose plugins include tortie.
func Install(self, binDir, confDir, confName string, conflist []byte) error {
	var c struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(conflist, &c); err != nil {
		return fmt.Errorf("install: the network configuration list is not valid JSON: %w", err)
	}
	tortie := false
	for _, p := range c.Plugins {
		tortie = tortie || p.Type == "tortie"
	}
	if c.Name == "" || !tortie {
		return errors.New(`install: the network configuration list needs a "name" and a plugin of type "tortie"`)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		return fmt.Errorf("install: reading the plugin: %w", err)
	}
	if err := writeAtomic(filepath.Join(binDir, "tortie"), exe, 0o755); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(confDir, confName), conflist, 0o644)
}

// writeAtomic replaces path with b unless it already holds exactly b.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("install: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("install: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}
