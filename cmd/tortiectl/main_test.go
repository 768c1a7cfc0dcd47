package main

import (
	"reflect"
	"testing"
)

func TestParseLabels(t *testing.T) {
	set, remove, err := parseLabels([]string{"app=web", "tier=", "old-", "a=b=c"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"app": "web", "tier": "", "a": "b=c"}; !reflect.DeepEqual(set, want) {
		t.Errorf("set %v, want %v", set, want)
	}
	if !reflect.DeepEqual(remove, []string{"old"}) {
		t.Errorf("remove %v", remove)
	}
	for _, bad := range []string{"app", "=v", "-"} {
		if _, _, err := parseLabels([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
