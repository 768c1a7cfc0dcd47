// Package bgptest speaks just enough BGP-4 by hand (OPEN, KEEPALIVE, raw
// messages) to put malformed messages in front of a speaker, and holds the
// corpus of malformed messages the tests and the fuzz target start from.
package bgptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Message types.
const (
	Open         = 1
	Update       = 2
	Notification = 3
	Keepalive    = 4
)

// Frame wraps a body into a message with a correct header.
func Frame(typ byte, body []byte) []byte {
	m := make([]byte, 19, 19+len(body))
	for i := 0; i < 16; i++ {
		m[i] = 0xff
	}
	binary.BigEndian.PutUint16(m[16:], uint16(19+len(body)))
	m[18] = typ
	return append(m, body...)
}

// OpenMsg is an OPEN for IPv4 unicast with four-octet AS numbers.
func OpenMsg(asn uint32, id netip.Addr, hold uint16) []byte {
	as2 := uint16(23456)
	if asn <= 0xffff {
		as2 = uint16(asn)
	}
	caps := []byte{1, 4, 0, 1, 0, 1, 65, 4}
	caps = binary.BigEndian.AppendUint32(caps, asn)
	b := []byte{4}
	b = binary.BigEndian.AppendUint16(b, as2)
	b = binary.BigEndian.AppendUint16(b, hold)
	id4 := id.As4()
	b = append(b, id4[:]...)
	b = append(b, byte(2+len(caps)), 2, byte(len(caps)))
	b = append(b, caps...)
	return Frame(Open, b)
}

// Session is an established BGP session we drive by hand.
type Session struct{ C net.Conn }

// Establish runs the OPEN/KEEPALIVE exchange on c.
func Establish(c net.Conn, asn uint32, id netip.Addr) (*Session, error) {
	s := &Session{C: c}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(OpenMsg(asn, id, 90)); err != nil {
		return nil, err
	}
	typ, body, err := s.Read()
	if err != nil {
		return nil, fmt.Errorf("waiting for OPEN: %w", err)
	}
	if typ != Open {
		return nil, fmt.Errorf("got message type %d (%x), want OPEN", typ, body)
	}
	if _, err := c.Write(Frame(Keepalive, nil)); err != nil {
		return nil, err
	}
	for {
		typ, body, err := s.Read()
		if err != nil {
			return nil, fmt.Errorf("waiting for KEEPALIVE: %w", err)
		}
		switch typ {
		case Keepalive:
			_ = c.SetDeadline(time.Time{})
			return s, nil
		case Notification:
			return nil, fmt.Errorf("NOTIFICATION %x", body)
		}
	}
}

// Read reads one message.
func (s *Session) Read() (typ byte, body []byte, err error) {
	var h [19]byte
	if _, err := io.ReadFull(s.C, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(h[16:]))
	if n < 19 || n > 65535 {
		return 0, nil, errors.New("bad length from the speaker")
	}
	body = make([]byte, n-19)
	_, err = io.ReadFull(s.C, body)
	return h[18], body, err
}

// Outcome is what a speaker did with a message.
type Outcome struct {
	Notified bool // a NOTIFICATION came back
	Code     byte
	Subcode  byte
	Closed   bool // the connection ended
	Alive    bool // the session stays up (treat-as-withdraw, RFC 7606)
}

func (o Outcome) String() string {
	switch {
	case o.Notified:
		return fmt.Sprintf("NOTIFICATION %d/%d", o.Code, o.Subcode)
	case o.Closed:
		return "closed"
	}
	return "session kept (treat-as-withdraw)"
}

// Send writes raw bytes and reports how the speaker reacted within wait.
func (s *Session) Send(raw []byte, wait time.Duration) Outcome {
	if _, err := s.C.Write(raw); err != nil {
		return Outcome{Closed: true}
	}
	_ = s.C.SetReadDeadline(time.Now().Add(wait))
	defer s.C.SetReadDeadline(time.Time{})
	for {
		typ, body, err := s.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return Outcome{Alive: true}
			}
			return Outcome{Closed: true}
		}
		if typ == Notification {
			o := Outcome{Notified: true}
			if len(body) >= 2 {
				o.Code, o.Subcode = body[0], body[1]
			}
			return o
		}
	}
}

// attr builds a path attribute.
func attr(flags, typ byte, v []byte) []byte {
	if flags&0x10 != 0 {
		b := []byte{flags, typ, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(len(v)))
		return append(b, v...)
	}
	return append([]byte{flags, typ, byte(len(v))}, v...)
}

// update builds an UPDATE body.
func update(withdrawn, attrs, nlri []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(withdrawn)))
	b = append(b, withdrawn...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(attrs)))
	b = append(b, attrs...)
	return append(b, nlri...)
}

// GoodAttrs are ORIGIN IGP, an empty AS_PATH and NEXT_HOP nh (iBGP).
func GoodAttrs(nh netip.Addr) []byte {
	a := nh.As4()
	return cat(attr(0x40, 1, []byte{0}), attr(0x40, 2, nil), attr(0x40, 3, a[:]))
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// ValidUpdate announces prefix via nh.
func ValidUpdate(prefix netip.Prefix, nh netip.Addr) []byte {
	a := prefix.Addr().As4()
	nlri := append([]byte{byte(prefix.Bits())}, a[:(prefix.Bits()+7)/8]...)
	return Frame(Update, update(nil, GoodAttrs(nh), nlri))
}

// UpdateWithPath announces prefix via nh with AS path asPath (one
// AS_SEQUENCE of four-octet AS numbers, as OpenMsg negotiates).
func UpdateWithPath(prefix netip.Prefix, nh netip.Addr, asPath []uint32) []byte {
	seg := []byte{2, byte(len(asPath))}
	for _, as := range asPath {
		seg = binary.BigEndian.AppendUint32(seg, as)
	}
	n := nh.As4()
	a := prefix.Addr().As4()
	nlri := append([]byte{byte(prefix.Bits())}, a[:(prefix.Bits()+7)/8]...)
	return Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0}), attr(0x40, 2, seg), attr(0x40, 3, n[:])), nlri))
}

// Case is one malformed message and whether RFC 4271/7606 says the
// session must reset (framing and message-level errors) or may treat the
// update as withdrawn (attribute errors).
type Case struct {
	Name      string
	Msg       []byte
	MustReset bool
	// MayInstall: RFC 7606 keeps the first of duplicated attributes, so
	// the route may be installed.
	MayInstall bool
}

// Malformed is the corpus: bad lengths, bad markers, bad types, and
// broken attributes. Each announces 198.18.0.0/24 if it were accepted.
func Malformed(nh netip.Addr) []Case {
	nlri := []byte{24, 198, 18, 0}
	good := GoodAttrs(nh)
	raw := func(b []byte, f func([]byte)) []byte { c := append([]byte(nil), b...); f(c); return c }
	valid := Frame(Update, update(nil, good, nlri))
	nhb := nh.As4()
	return []Case{
		{Name: "length below 19", Msg: raw(valid, func(b []byte) { binary.BigEndian.PutUint16(b[16:], 18) }), MustReset: true},
		{Name: "length above 4096", Msg: raw(valid, func(b []byte) { binary.BigEndian.PutUint16(b[16:], 5000) }), MustReset: true},
		{Name: "bad marker", Msg: raw(valid, func(b []byte) { b[3] = 0 }), MustReset: true},
		{Name: "unknown message type", Msg: Frame(9, []byte{1, 2, 3}), MustReset: true},
		{Name: "keepalive with a body", Msg: Frame(Keepalive, []byte{0})},
		{Name: "update shorter than its fields", Msg: Frame(Update, []byte{0}), MustReset: true},
		{Name: "withdrawn length beyond the message", Msg: Frame(Update, []byte{0xff, 0xff, 0, 0}), MustReset: true},
		{Name: "attribute length beyond the attributes", Msg: Frame(Update, update(nil, append(good, 0x40, 1, 200), nlri))},
		{Name: "total attribute length beyond the message", Msg: Frame(Update, append([]byte{0, 0, 0x7f, 0xff}, good...)), MustReset: true},
		{Name: "second OPEN", Msg: OpenMsg(64512, netip.MustParseAddr("10.9.9.9"), 90)},
		{Name: "NLRI prefix length 33", Msg: Frame(Update, update(nil, good, []byte{33, 198, 18, 0, 0, 1})), MustReset: true},
		{Name: "ORIGIN value 7", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{7}), attr(0x40, 2, nil), attr(0x40, 3, nhb[:])), nlri)), MustReset: false},
		{Name: "ORIGIN two bytes", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0, 0}), attr(0x40, 2, nil), attr(0x40, 3, nhb[:])), nlri)), MustReset: false},
		{Name: "AS_PATH segment overruns", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0}), attr(0x40, 2, []byte{2, 9, 0, 0, 0xfd, 0xe8}), attr(0x40, 3, nhb[:])), nlri)), MustReset: false},
		{Name: "AS_PATH bad segment type", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0}), attr(0x40, 2, []byte{7, 1, 0, 0, 0xfd, 0xe8}), attr(0x40, 3, nhb[:])), nlri)), MustReset: false},
		{Name: "NEXT_HOP three bytes", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0}), attr(0x40, 2, nil), attr(0x40, 3, nhb[:3])), nlri)), MustReset: false},
		{Name: "missing NEXT_HOP", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0}), attr(0x40, 2, nil)), nlri)), MustReset: false},
		{Name: "duplicate ORIGIN", Msg: Frame(Update, update(nil, cat(attr(0x40, 1, []byte{0}), good), nlri)), MayInstall: true},
		{Name: "well-known attribute flagged optional", Msg: Frame(Update, update(nil, cat(attr(0xc0, 1, []byte{0}), attr(0x40, 2, nil), attr(0x40, 3, nhb[:])), nlri)), MustReset: false},
		{Name: "LOCAL_PREF five bytes", Msg: Frame(Update, update(nil, cat(good, attr(0x40, 5, []byte{0, 0, 0, 100, 1})), nlri)), MustReset: false},
		{Name: "MP_REACH_NLRI truncated", Msg: Frame(Update, update(nil, cat(good, attr(0x80, 14, []byte{0, 1, 1, 4})), nil)), MustReset: false},
		{Name: "extended-length attribute overrun", Msg: Frame(Update, update(nil, cat(good, []byte{0x90, 8, 0xff, 0xff, 1}), nlri))},
	}
}
