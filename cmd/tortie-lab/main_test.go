package main

import (
	"bytes"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"
)

// Every command's help lists every flag it defines, and up's the ones a
// hand-written usage once left out.
func TestHelpListsEveryFlag(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			fs, _ := c.flagSet(&out)
			if err := fs.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("--help: %v", err)
			}
			help := out.String()
			n := 0
			fs.VisitAll(func(f *flag.Flag) {
				n++
				if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `\s`).MatchString(help) {
					t.Errorf("help lacks -%s:\n%s", f.Name, help)
				}
				if !strings.Contains(help, f.Usage) {
					t.Errorf("help lacks the description of -%s", f.Name)
				}
			})
			if n == 0 || !strings.Contains(help, "usage: tortie-lab "+c.name) || !strings.Contains(help, c.doc) {
				t.Fatalf("help:\n%s", help)
			}
			if c.name == "up" {
				for _, f := range []string{"bgp", "bird-nodes", "static", "mtu", "log-level", "mode", "nodes", "pods", "kernel-nodes"} {
					if fs.Lookup(f) == nil || !strings.Contains(help, "-"+f) {
						t.Errorf("up --help lacks -%s", f)
					}
				}
			}
		})
	}
	var out bytes.Buffer
	usage(&out)
	for _, c := range commands {
		if !strings.Contains(out.String(), "  "+c.name+" ") {
			t.Errorf("usage lacks %s:\n%s", c.name, out.String())
		}
	}
}
