// Package selector parses and evaluates Calico's label selectors, as used
// by IPPool.nodeSelector and BGPPeer.nodeSelector/peerSelector:
//
//	all()                       every resource
//	has(key)  !has(key)         key present / absent
//	key == 'v'   key != 'v'     equality (a missing key is != anything)
//	key in {'a', 'b'}           membership; "not in" negates
//	a && b   a || b   !a   (a)  combination; && binds tighter than ||
//
// An empty selector selects everything.
package selector

import (
	"fmt"
	"strings"
	"unicode"
)

// Selector is a parsed selector.
type Selector struct {
	src  string
	root node
}

// String returns the source text.
func (s *Selector) String() string { return s.src }

// Matches evaluates the selector against labels.
func (s *Selector) Matches(labels map[string]string) bool {
	if s == nil || s.root == nil {
		return true
	}
	return s.root.eval(labels)
}

type node interface{ eval(map[string]string) bool }

type (
	allNode struct{}
	hasNode struct{ key string }
	eqNode  struct {
		key, val string
		neq      bool
	}
	inNode struct {
		key  string
		vals []string
		not  bool
	}
	notNode struct{ n node }
	andNode struct{ a, b node }
	orNode  struct{ a, b node }
)

func (allNode) eval(map[string]string) bool     { return true }
func (n hasNode) eval(l map[string]string) bool { _, ok := l[n.key]; return ok }
func (n eqNode) eval(l map[string]string) bool {
	v, ok := l[n.key]
	if n.neq {
		return !ok || v != n.val
	}
	return ok && v == n.val
}
func (n inNode) eval(l map[string]string) bool {
	v, ok := l[n.key]
	in := false
	if ok {
		for _, x := range n.vals {
			if x == v {
				in = true
				break
			}
		}
	}
	return in != n.not
}
func (n notNode) eval(l map[string]string) bool { return !n.n.eval(l) }
func (n andNode) eval(l map[string]string) bool { return n.a.eval(l) && n.b.eval(l) }
func (n orNode) eval(l map[string]string) bool  { return n.a.eval(l) || n.b.eval(l) }

// Parse compiles a selector, or says where it is wrong.
func Parse(src string) (*Selector, error) {
	p := &parser{src: src}
	p.skip()
	if p.pos == len(p.src) {
		return &Selector{src: src}, nil
	}
	n, err := p.or(0)
	if err != nil {
		return nil, err
	}
	p.skip()
	if p.pos != len(p.src) {
		return nil, p.errf("unexpected %q", p.src[p.pos:])
	}
	return &Selector{src: src, root: n}, nil
}

type parser struct {
	src string
	pos int
}

const maxDepth = 64

func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("selector %q at offset %d: %s", p.src, p.pos, fmt.Sprintf(format, a...))
}

func (p *parser) skip() {
	for p.pos < len(p.src) && unicode.IsSpace(rune(p.src[p.pos])) {
		p.pos++
	}
}

func (p *parser) eat(tok string) bool {
	p.skip()
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *parser) or(depth int) (node, error) {
	a, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.eat("||") {
		b, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		a = orNode{a, b}
	}
	return a, nil
}

func (p *parser) and(depth int) (node, error) {
	a, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for p.eat("&&") {
		b, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		a = andNode{a, b}
	}
	return a, nil
}

func (p *parser) unary(depth int) (node, error) {
	if depth > maxDepth {
		return nil, p.errf("nested too deeply")
	}
	if p.eat("!") {
		if p.eat("has(") {
			return p.has(true)
		}
		n, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return notNode{n}, nil
	}
	if p.eat("(") {
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.eat(")") {
			return nil, p.errf("missing )")
		}
		return n, nil
	}
	if p.eat("all()") {
		return allNode{}, nil
	}
	if p.eat("has(") {
		return p.has(false)
	}
	key, err := p.ident()
	if err != nil {
		return nil, err
	}
	switch {
	case p.eat("=="):
		v, err := p.str()
		return eqNode{key: key, val: v}, err
	case p.eat("!="):
		v, err := p.str()
		return eqNode{key: key, val: v, neq: true}, err
	case p.eat("not in"):
		vs, err := p.set()
		return inNode{key: key, vals: vs, not: true}, err
	case p.eat("in"):
		vs, err := p.set()
		return inNode{key: key, vals: vs}, err
	}
	return nil, p.errf("expected ==, !=, in or not in after %q", key)
}

func (p *parser) has(neg bool) (node, error) {
	key, err := p.ident()
	if err != nil {
		return nil, err
	}
	if !p.eat(")") {
		return nil, p.errf("missing ) after has(%s", key)
	}
	if neg {
		return notNode{hasNode{key}}, nil
	}
	return hasNode{key}, nil
}

// ident reads a label key: letters, digits and -_./ (Kubernetes label keys).
func (p *parser) ident() (string, error) {
	p.skip()
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c < 0x80 && (unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c)) || strings.IndexByte("-_./", c) >= 0) {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		return "", p.errf("expected a label key")
	}
	return p.src[start:p.pos], nil
}

func (p *parser) str() (string, error) {
	p.skip()
	if p.pos >= len(p.src) || (p.src[p.pos] != '\'' && p.src[p.pos] != '"') {
		return "", p.errf("expected a quoted value")
	}
	q := p.src[p.pos]
	end := strings.IndexByte(p.src[p.pos+1:], q)
	if end < 0 {
		return "", p.errf("unterminated string")
	}
	v := p.src[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

func (p *parser) set() ([]string, error) {
	if !p.eat("{") {
		return nil, p.errf("expected {")
	}
	var vs []string
	if p.eat("}") {
		return vs, nil
	}
	for {
		v, err := p.str()
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
		if p.eat("}") {
			return vs, nil
		}
		if !p.eat(",") {
			return nil, p.errf("expected , or }")
		}
	}
}
