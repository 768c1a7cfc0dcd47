// Package api is tortied's control API: JSON over HTTP on a root-only unix
// socket. The lab (and, later, the CNI plugin) adds and deletes pod
// endpoints through it; tortiectl reads endpoints, routes and counters.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tortie-net/tortie/bgp"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
)

// Route is a FIB route as the API shows it.
type Route struct {
	Prefix   string `json:"prefix"`
	Kind     string `json:"kind"`
	Source   string `json:"source"`
	Mode     string `json:"mode,omitempty"`
	Node     string `json:"node,omitempty"`
	NodeName string `json:"nodeName,omitempty"`
	Port     string `json:"port,omitempty"`
}

// Status summarises the node.
type Status struct {
	Node        string `json:"node"`
	Address     string `json:"address"`
	Mode        string `json:"mode"`
	CrossSubnet bool   `json:"crossSubnet"`
	PodMTU      int    `json:"podMTU"`
	PathMTU     int    `json:"pathMTU"`
	FIBRoutes   int    `json:"fibRoutes"`
	Endpoints   int    `json:"endpoints"`
	VTEPMAC     string `json:"vtepMAC"`
	Ready       bool   `json:"ready"`
}

// Server serves the API.
type Server struct {
	Endpoints *endpoint.Manager
	Router    *router.Router
	Status    func() Status
	// CNI serves the plugin's commands (nil: not served).
	CNI *cni.Service
	// Resources reads and writes cluster resources (nil: no datastore).
	Resources *resources.Client
	// IPAM shows blocks and handles (nil: no datastore).
	IPAM *ipam.IPAM
	// BGP reports the speaker (nil: BGP is not the route source).
	BGP func() (BGPStatus, error)
	// Invalid lists the datastore records that do not decode (nil: no
	// datastore).
	Invalid func(context.Context) ([]InvalidRecord, error)
}

// InvalidRecord is a datastore record tortied skips because it does not
// decode or validate.
type InvalidRecord struct {
	Key      string `json:"key"`
	Kind     string `json:"kind"`
	Error    string `json:"error"`
	Revision int64  `json:"revision"`
}

// BGPStatus is what `tortiectl node status` shows.
type BGPStatus struct {
	Running    bool             `json:"running"`
	ASN        uint32           `json:"asNumber,omitempty"`
	RouterID   string           `json:"routerID,omitempty"`
	ClusterID  string           `json:"routeReflectorClusterID,omitempty"`
	Restarting bool             `json:"restarting,omitempty"`
	Peers      []bgp.PeerStatus `json:"peers"`
	Advertised []string         `json:"advertised"`
	Counters   bgp.Counters     `json:"counters"`
}

// fail replies with err, keeping a CNI code if it has one.
func fail(w http.ResponseWriter, status int, err error) {
	var ce *cni.Error
	if errors.As(err, &ce) {
		reply(w, status, Error{Error: ce.Msg, Code: ce.Code})
		return
	}
	reply(w, status, Error{Error: err.Error()})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Error is the body of every failed request. Code is a CNI error code
// when the request was a CNI command.
type Error struct {
	Error string `json:"error"`
	Code  uint   `json:"code,omitempty"`
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.Status()) })
	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.Endpoints.List()) })
	mux.HandleFunc("POST /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		var spec endpoint.Spec
		if err := decode(r, &spec); err != nil {
			reply(w, http.StatusBadRequest, Error{Error: "bad endpoint spec: " + err.Error()})
			return
		}
		info, err := s.Endpoints.Add(spec)
		switch {
		case errors.Is(err, endpoint.ErrExists):
			reply(w, http.StatusConflict, Error{Error: err.Error()})
		case err != nil:
			reply(w, http.StatusUnprocessableEntity, Error{Error: err.Error()})
		default:
			reply(w, http.StatusCreated, info)
		}
	})
	mux.HandleFunc("DELETE /v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Endpoints.Delete(r.PathValue("name")); err != nil {
			reply(w, http.StatusInternalServerError, Error{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, struct{}{})
	})
	if s.CNI != nil {
		s.cniRoutes(mux)
	}
	if s.Resources != nil {
		s.resourceRoutes(mux)
	}
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.routes()) })
	mux.HandleFunc("GET /v1/bgp", func(w http.ResponseWriter, r *http.Request) {
		if s.BGP == nil {
			reply(w, 200, BGPStatus{Peers: []bgp.PeerStatus{}, Advertised: []string{}})
			return
		}
		st, err := s.BGP()
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, 200, st)
	})
	mux.HandleFunc("GET /v1/invalid", func(w http.ResponseWriter, r *http.Request) {
		if s.Invalid == nil {
			reply(w, 200, []InvalidRecord{})
			return
		}
		recs, err := s.Invalid(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, 200, recs)
	})
	mux.HandleFunc("GET /v1/counters", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.Router.Stats()) })
	return mux
}

func (s *Server) routes() []Route {
	names := map[uint32]string{}
	for _, p := range s.Router.Ports() {
		names[p.ID] = p.Config().Name
	}
	var out []Route
	for _, r := range s.Router.FIB().Load().Routes() {
		a := Route{Prefix: r.Prefix.String(), Kind: r.NextHop.Kind.String(), Source: r.Source.String()}
		switch r.NextHop.Kind {
		case fib.KindRemote:
			a.Mode, a.Node, a.NodeName = r.NextHop.Mode.String(), netip.AddrFrom4(r.NextHop.Node).String(), r.NextHop.NodeName
		case fib.KindLocal:
			a.Port = names[r.NextHop.Port]
		}
		out = append(out, a)
	}
	return out
}

// Listen serves h on a unix socket at path, readable by root only. A stale
// socket file from a previous run is replaced.
func Listen(ctx context.Context, path string, h http.Handler) (*http.Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() { _ = srv.Serve(l) }()
	return srv, nil
}

// Client talks to a tortied socket.
type Client struct {
	Socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *Client) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.doRaw(method, path, body, out)
}

func (c *Client) doRaw(method, path string, body io.Reader, out any) error {
	req, err := http.NewRequest(method, "http://tortied"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("tortied at %s is not reachable: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			if e.Code != 0 {
				return &cni.Error{Code: e.Code, Msg: e.Error}
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("tortied: %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (c *Client) AddEndpoint(s endpoint.Spec) (info endpoint.Info, err error) {
	err = c.do("POST", "/v1/endpoints", s, &info)
	return
}

func (c *Client) DeleteEndpoint(name string) error {
	return c.do("DELETE", "/v1/endpoints/"+name, nil, nil)
}

func (c *Client) Endpoints() (out []endpoint.Info, err error) {
	err = c.do("GET", "/v1/endpoints", nil, &out)
	return
}

func (c *Client) Routes() (out []Route, err error) {
	err = c.do("GET", "/v1/routes", nil, &out)
	return
}

func (c *Client) Counters() (out router.Stats, err error) {
	err = c.do("GET", "/v1/counters", nil, &out)
	return
}

// BGP reports the BGP speaker and its sessions.
func (c *Client) BGP() (out BGPStatus, err error) {
	err = c.do("GET", "/v1/bgp", nil, &out)
	return
}

func (c *Client) Status() (out Status, err error) {
	err = c.do("GET", "/v1/status", nil, &out)
	return
}

// InvalidRecords lists the datastore records tortied skips as invalid.
func (c *Client) InvalidRecords() (out []InvalidRecord, err error) {
	err = c.do("GET", "/v1/invalid", nil, &out)
	return
}
