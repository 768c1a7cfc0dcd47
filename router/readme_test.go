package router

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The README lists exactly the drop reasons the router counts, in order.
func TestReadmeDropReasons(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)Drops are counted per reason:\\s*`([^`]*)`").FindSubmatch(b)
	if m == nil {
		t.Fatal("README: no \"Drops are counted per reason:\" followed by a `list`")
	}
	documented := strings.Fields(string(m[1]))
	var counted []string
	for d := DropReason(0); d < NumDropReasons; d++ {
		counted = append(counted, d.String())
	}
	if !slices.Equal(documented, counted) {
		t.Fatalf("README's drop reasons\n  %v\ndiffer from the router's\n  %v", documented, counted)
	}
}
