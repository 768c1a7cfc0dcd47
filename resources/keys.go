package resources

import "strings"

// KindOfKey returns the kind of the resources stored in the directory key
// is in, or "" for a key in no resource directory (IPAM's records, for
// one). Tools that handle whole prefixes, such as a migration, check each
// record against its kind with DecodeStored.
func KindOfKey(key string) string {
	for _, dirs := range []struct {
		prefix string
		dirs   map[string]string
	}{{Prefix, kindDirs}, {CalicoPrefix, calicoDirs}} {
		rest, ok := strings.CutPrefix(key, dirs.prefix)
		if !ok {
			continue
		}
		dir, _, ok := strings.Cut(rest, "/")
		if !ok {
			return ""
		}
		for kind, d := range dirs.dirs {
			if d == dir {
				return kind
			}
		}
	}
	return ""
}
