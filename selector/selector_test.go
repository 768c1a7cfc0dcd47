package selector

import "testing"

func TestSelectors(t *testing.T) {
	labels := map[string]string{"route-reflector": "true", "zone": "a", "kubernetes.io/hostname": "n1"}
	for src, want := range map[string]bool{
		"":                                       true,
		"all()":                                  true,
		"has(zone)":                              true,
		"!has(zone)":                             false,
		"has(rack)":                              false,
		"route-reflector == 'true'":              true,
		`route-reflector == "false"`:             false,
		"zone != 'b'":                            true,
		"rack != 'b'":                            true,
		"zone in {'a', 'c'}":                     true,
		"zone not in {'a'}":                      false,
		"rack in {'a'}":                          false,
		"kubernetes.io/hostname == 'n1'":         true,
		"has(zone) && zone == 'b'":               false,
		"zone == 'b' || has(zone) && !has(rack)": true,
		"!(zone == 'a')":                         false,
		"(zone == 'b' || zone == 'a') && route-reflector == 'true'": true,
	} {
		s, err := Parse(src)
		if err != nil {
			t.Errorf("Parse(%q): %v", src, err)
			continue
		}
		if got := s.Matches(labels); got != want {
			t.Errorf("%q matched %v, want %v", src, got, want)
		}
	}
	for _, bad := range []string{"zone ==", "zone = 'a'", "has(zone", "zone in {'a'", "(all()", "all() all()", "'a' == zone", "zone == 'a"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"all()", "a == 'b' && !has(c) || d in {'x','y'}", "((((a=='1'))))", "!!!has(x)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		s, err := Parse(src)
		if err == nil {
			s.Matches(map[string]string{"a": "1"})
		}
	})
}
